//! A small SQL builder for the `Any` driver. sqlx's `QueryBuilder<Any>` writes `?`
//! placeholders, which PostgreSQL rejects; this one writes `$1, $2, …`, which both
//! PostgreSQL and SQLite accept, and binds owned values in the same order.
use sqlx::any::{AnyArguments, AnyRow};
use sqlx::{Any, AnyConnection, Arguments, Encode, Type};

pub struct Sql {
    text: String,
    args: AnyArguments<'static>,
    count: usize,
    /// The first value that failed to encode; the statement fails with it.
    error: Option<sqlx::error::BoxDynError>,
}

/// Binds the values of one row inside `VALUES (…)`, comma separated.
pub struct RowValues<'a> {
    sql: &'a mut Sql,
    first: bool,
}

impl RowValues<'_> {
    pub fn bind<T: 'static + Encode<'static, Any> + Type<Any>>(&mut self, value: T) -> &mut Self {
        if !self.first {
            self.sql.text.push_str(", ");
        }
        self.first = false;
        self.sql.bind(value);
        self
    }
}

/// A value one row of a projection table holds: bound as a parameter, or (PostgreSQL)
/// carried as one element of its column's array.
pub trait Cell: 'static + Encode<'static, Any> + Type<Any> {
    /// The PostgreSQL array type of its column.
    const PG_ARRAY: &'static str;
    /// Appends the value as an element of a PostgreSQL array literal.
    fn array_item(&self, out: &mut String);
}

impl Cell for String {
    const PG_ARRAY: &'static str = "text[]";
    fn array_item(&self, out: &mut String) {
        out.push('"');
        for c in self.chars() {
            if c == '"' || c == '\\' {
                out.push('\\');
            }
            out.push(c);
        }
        out.push('"');
    }
}

impl Cell for i64 {
    const PG_ARRAY: &'static str = "bigint[]";
    fn array_item(&self, out: &mut String) {
        out.push_str(&self.to_string());
    }
}

impl<T: Cell> Cell for Option<T>
where
    Option<T>: Encode<'static, Any> + Type<Any>,
{
    const PG_ARRAY: &'static str = T::PG_ARRAY;
    fn array_item(&self, out: &mut String) {
        match self {
            Some(v) => v.array_item(out),
            None => out.push_str("NULL"),
        }
    }
}

/// Where the values of one table row go: parameters of a `VALUES` list, or columns of
/// arrays.
pub trait Binder {
    fn cell<T: Cell>(&mut self, value: T) -> &mut Self;
}

impl Binder for RowValues<'_> {
    fn cell<T: Cell>(&mut self, value: T) -> &mut Self {
        self.bind(value)
    }
}

/// The rows of one statement as PostgreSQL arrays, one per column, each bound as a single
/// text parameter and cast (`$1::text[]`): the statement's text is the same whatever the
/// number of rows, so it is prepared once per connection and sent in one round trip.
pub struct Columns {
    arrays: Vec<String>,
    types: Vec<&'static str>,
    column: usize,
    rows: usize,
}

impl Columns {
    pub fn new() -> Self {
        Columns { arrays: Vec::new(), types: Vec::new(), column: 0, rows: 0 }
    }

    /// Starts the next row.
    pub fn row(&mut self) -> &mut Self {
        self.column = 0;
        self.rows += 1;
        self
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    /// `unnest($n::t1[], $n+1::t2[], …)` over the columns, bound to `sql`.
    pub fn unnest_into(self, sql: &mut Sql) {
        sql.push("unnest(");
        for (i, (mut array, ty)) in self.arrays.into_iter().zip(self.types).enumerate() {
            if i > 0 {
                sql.push(", ");
            }
            array.push('}');
            sql.bind(array).push("::").push(ty);
        }
        sql.push(")");
    }
}

impl Default for Columns {
    fn default() -> Self {
        Self::new()
    }
}

impl Binder for Columns {
    fn cell<T: Cell>(&mut self, value: T) -> &mut Self {
        if self.column == self.arrays.len() {
            self.arrays.push(String::from("{"));
            self.types.push(T::PG_ARRAY);
        }
        let array = &mut self.arrays[self.column];
        if array.len() > 1 {
            array.push(',');
        }
        value.array_item(array);
        self.column += 1;
        self
    }
}

/// One PostgreSQL array literal of `items`, to bind as text and cast (`$1::text[]`).
pub fn array_literal<T: Cell>(items: impl IntoIterator<Item = T>) -> String {
    let mut out = String::from("{");
    for (i, item) in items.into_iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        item.array_item(&mut out);
    }
    out.push('}');
    out
}

impl Sql {
    pub fn new(text: impl Into<String>) -> Self {
        Sql { text: text.into(), args: AnyArguments::default(), count: 0, error: None }
    }

    pub fn push(&mut self, text: &str) -> &mut Self {
        self.text.push_str(text);
        self
    }

    pub fn bind<T: 'static + Encode<'static, Any> + Type<Any>>(&mut self, value: T) -> &mut Self {
        self.count += 1;
        self.text.push('$');
        self.text.push_str(&self.count.to_string());
        if let Err(e) = self.args.add(value) {
            self.error.get_or_insert(e);
        }
        self
    }

    /// `($1, $2, …)` for an `IN` list.
    pub fn list<T: 'static + Encode<'static, Any> + Type<Any>>(
        &mut self,
        items: impl IntoIterator<Item = T>,
    ) -> &mut Self {
        self.text.push('(');
        let mut row = RowValues { sql: self, first: true };
        for item in items {
            row.bind(item);
        }
        self.text.push(')');
        self
    }

    /// `VALUES (…), (…)`, one group per item.
    pub fn values<I: IntoIterator>(
        &mut self,
        items: I,
        mut each: impl FnMut(&mut RowValues<'_>, I::Item),
    ) -> &mut Self {
        self.text.push_str("VALUES ");
        for (i, item) in items.into_iter().enumerate() {
            if i > 0 {
                self.text.push_str(", ");
            }
            self.text.push('(');
            each(&mut RowValues { sql: self, first: true }, item);
            self.text.push(')');
        }
        self
    }

    fn checked(self) -> Result<(String, AnyArguments<'static>), sqlx::Error> {
        match self.error {
            Some(e) => Err(sqlx::Error::Encode(e)),
            None => Ok((self.text, self.args)),
        }
    }

    pub async fn execute(self, conn: &mut AnyConnection) -> Result<u64, sqlx::Error> {
        let (text, args) = self.checked()?;
        Ok(sqlx::query_with(&text, args).execute(conn).await?.rows_affected())
    }

    pub async fn fetch_all<'e, E: sqlx::Executor<'e, Database = Any>>(
        self,
        executor: E,
    ) -> Result<Vec<AnyRow>, sqlx::Error> {
        let (text, args) = self.checked()?;
        sqlx::query_with(&text, args).fetch_all(executor).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn array_literals_quote_text_escape_quotes_and_backslashes_and_spell_null() {
        assert_eq!(array_literal([String::from("a"), String::from(r#"b"c\d"#)]), r#"{"a","b\"c\\d"}"#);
        assert_eq!(array_literal([Some(1i64), None, Some(-3)]), "{1,NULL,-3}");
        assert_eq!(array_literal(Vec::<String>::new()), "{}");
    }

    #[test]
    fn columns_turn_rows_into_one_array_per_column_with_its_type() {
        let mut columns = Columns::new();
        columns.row().cell(String::from("x")).cell(7i64).cell(None::<i64>);
        columns.row().cell(String::from("y,z")).cell(8i64).cell(Some(9i64));
        assert_eq!(columns.rows(), 2);
        let mut sql = Sql::new("SELECT * FROM ");
        columns.unnest_into(&mut sql);
        assert_eq!(sql.text, "SELECT * FROM unnest($1::text[], $2::bigint[], $3::bigint[])");
    }
}
