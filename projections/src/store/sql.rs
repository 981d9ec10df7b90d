//! A small SQL builder for the store's statements, run on the `Any` driver or on a native
//! PostgreSQL connection (the projections' batches, see `DESIGN.md`). sqlx's
//! `QueryBuilder<Any>` writes `?` placeholders, which PostgreSQL rejects; this one writes
//! `$1, $2, …`, which both PostgreSQL and SQLite accept, and keeps the bound values as
//! [`Value`]s until it knows which connection runs the statement.
use std::future::Future;

use sqlx::any::{AnyArguments, AnyRow};
use sqlx::postgres::PgArguments;
use sqlx::{Any, AnyConnection, Arguments, PgConnection};

/// A value bound to a statement: the few types the store binds.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Text(Option<String>),
    Int(Option<i64>),
    Bytes(Option<Vec<u8>>),
    /// A PostgreSQL array (`$n::text[]`): binary on a native connection, an array literal
    /// through `Any`.
    TextArray(Vec<Option<String>>),
    IntArray(Vec<Option<i64>>),
}

impl From<String> for Value {
    fn from(v: String) -> Self {
        Value::Text(Some(v))
    }
}
impl From<Option<String>> for Value {
    fn from(v: Option<String>) -> Self {
        Value::Text(v)
    }
}
impl From<i64> for Value {
    fn from(v: i64) -> Self {
        Value::Int(Some(v))
    }
}
impl From<Option<i64>> for Value {
    fn from(v: Option<i64>) -> Self {
        Value::Int(v)
    }
}
impl From<Vec<u8>> for Value {
    fn from(v: Vec<u8>) -> Self {
        Value::Bytes(Some(v))
    }
}
impl From<Option<Vec<u8>>> for Value {
    fn from(v: Option<Vec<u8>>) -> Self {
        Value::Bytes(v)
    }
}

impl Value {
    fn add_to_any(self, args: &mut AnyArguments<'static>) -> Result<(), sqlx::error::BoxDynError> {
        match self {
            Value::Text(v) => args.add(v),
            Value::Int(v) => args.add(v),
            Value::Bytes(v) => args.add(v),
            Value::TextArray(items) => args.add(array_literal(items)),
            Value::IntArray(items) => args.add(array_literal(items)),
        }
    }

    fn add_to_pg(self, args: &mut PgArguments) -> Result<(), sqlx::error::BoxDynError> {
        match self {
            Value::Text(v) => args.add(v),
            Value::Int(v) => args.add(v),
            Value::Bytes(v) => args.add(v),
            Value::TextArray(items) => args.add(items),
            Value::IntArray(items) => args.add(items),
        }
    }
}

/// A connection a store statement runs on: `Any`'s (PostgreSQL or SQLite), or a native
/// PostgreSQL one, which also has PostgreSQL's bulk path (`COPY`).
pub trait Exec: Send {
    fn is_postgres(&self) -> bool;
    fn run(&mut self, sql: Sql) -> impl Future<Output = Result<u64, sqlx::Error>> + Send;
    fn rows(&mut self, sql: Sql) -> impl Future<Output = Result<Vec<AnyRow>, sqlx::Error>> + Send;
    /// The connection's `COPY … FROM STDIN`, where it has one.
    fn bulk(&mut self) -> Option<&mut PgConnection> {
        None
    }
}

impl Exec for AnyConnection {
    fn is_postgres(&self) -> bool {
        self.backend_name() == "PostgreSQL"
    }

    async fn run(&mut self, sql: Sql) -> Result<u64, sqlx::Error> {
        let (text, args) = sql.into_any()?;
        Ok(sqlx::query_with(&text, args).execute(self).await?.rows_affected())
    }

    async fn rows(&mut self, sql: Sql) -> Result<Vec<AnyRow>, sqlx::Error> {
        let (text, args) = sql.into_any()?;
        sqlx::query_with(&text, args).fetch_all(self).await
    }
}

impl Exec for PgConnection {
    fn is_postgres(&self) -> bool {
        true
    }

    async fn run(&mut self, sql: Sql) -> Result<u64, sqlx::Error> {
        let (text, args) = sql.into_pg()?;
        Ok(sqlx::query_with(&text, args).execute(self).await?.rows_affected())
    }

    /// Rows as `Any`'s, so row readers are shared by both connections.
    async fn rows(&mut self, sql: Sql) -> Result<Vec<AnyRow>, sqlx::Error> {
        let (text, args) = sql.into_pg()?;
        let rows = sqlx::query_with(&text, args).fetch_all(self).await?;
        rows.iter().map(AnyRow::try_from).collect()
    }

    fn bulk(&mut self) -> Option<&mut PgConnection> {
        Some(self)
    }
}

/// A transaction runs statements on its connection.
impl<DB: sqlx::Database<Connection: Exec>> Exec for sqlx::Transaction<'_, DB> {
    fn is_postgres(&self) -> bool {
        (**self).is_postgres()
    }

    fn run(&mut self, sql: Sql) -> impl Future<Output = Result<u64, sqlx::Error>> + Send {
        (**self).run(sql)
    }

    fn rows(&mut self, sql: Sql) -> impl Future<Output = Result<Vec<AnyRow>, sqlx::Error>> + Send {
        (**self).rows(sql)
    }

    fn bulk(&mut self) -> Option<&mut PgConnection> {
        (**self).bulk()
    }
}

pub struct Sql {
    text: String,
    values: Vec<Value>,
}

/// Binds the values of one row inside `VALUES (…)`, comma separated.
pub struct RowValues<'a> {
    sql: &'a mut Sql,
    first: bool,
}

impl RowValues<'_> {
    pub fn bind(&mut self, value: impl Into<Value>) -> &mut Self {
        if !self.first {
            self.sql.text.push_str(", ");
        }
        self.first = false;
        self.sql.bind(value);
        self
    }
}

/// A column of rows gathered for one statement: its values, typed.
#[derive(Debug, Clone, PartialEq)]
pub enum Column {
    Text(Vec<Option<String>>),
    Int(Vec<Option<i64>>),
}

impl Column {
    /// The PostgreSQL type of its values, and of the array that carries them.
    fn pg_types(&self) -> (&'static str, &'static str) {
        match self {
            Column::Text(_) => ("text", "text[]"),
            Column::Int(_) => ("bigint", "bigint[]"),
        }
    }
}

/// A value one row of a projection table holds: bound as a parameter, or carried in its
/// column's [`Column`].
pub trait Cell: Into<Value> {
    /// An empty column of this cell's type.
    fn column() -> Column;
    /// Appends the value to `column` (made by [`Cell::column`]).
    fn push_to(self, column: &mut Column);
}

impl Cell for String {
    fn column() -> Column {
        Column::Text(Vec::new())
    }
    fn push_to(self, column: &mut Column) {
        Some(self).push_to(column)
    }
}

impl Cell for Option<String> {
    fn column() -> Column {
        Column::Text(Vec::new())
    }
    fn push_to(self, column: &mut Column) {
        match column {
            Column::Text(values) => values.push(self),
            // A state binds the same types in the same places on every row (`push_binds`).
            Column::Int(_) => debug_assert!(false, "text pushed to a bigint column"),
        }
    }
}

impl Cell for i64 {
    fn column() -> Column {
        Column::Int(Vec::new())
    }
    fn push_to(self, column: &mut Column) {
        Some(self).push_to(column)
    }
}

impl Cell for Option<i64> {
    fn column() -> Column {
        Column::Int(Vec::new())
    }
    fn push_to(self, column: &mut Column) {
        match column {
            Column::Int(values) => values.push(self),
            Column::Text(_) => debug_assert!(false, "bigint pushed to a text column"),
        }
    }
}

/// Where the values of one table row go: parameters of a `VALUES` list, or columns.
pub trait Binder {
    fn cell<T: Cell>(&mut self, value: T) -> &mut Self;
}

impl Binder for RowValues<'_> {
    fn cell<T: Cell>(&mut self, value: T) -> &mut Self {
        self.bind(value)
    }
}

/// The rows of one statement gathered by column. On PostgreSQL they go as one array per
/// column (`unnest($1::text[], …)`: the statement's text is the same whatever the number
/// of rows, so it is prepared once per connection and sent in one round trip), or as one
/// binary `COPY` ([`Columns::copy_binary`]).
pub struct Columns {
    columns: Vec<Column>,
    column: usize,
    rows: usize,
}

impl Columns {
    pub fn new() -> Self {
        Columns { columns: Vec::new(), column: 0, rows: 0 }
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
        for (i, column) in self.columns.into_iter().enumerate() {
            if i > 0 {
                sql.push(", ");
            }
            let array = column.pg_types().1;
            let value = match column {
                Column::Text(values) => Value::TextArray(values),
                Column::Int(values) => Value::IntArray(values),
            };
            sql.bind(value).push("::").push(array);
        }
        sql.push(")");
    }

    /// `name type, …` of a table that holds these columns under `names`.
    pub fn column_definitions(&self, names: &[&str]) -> String {
        let definitions: Vec<String> =
            names.iter().zip(&self.columns).map(|(name, column)| format!("{name} {}", column.pg_types().0)).collect();
        definitions.join(", ")
    }

    /// The rows in PostgreSQL's binary `COPY` format: a signature, a header, per row its
    /// field count and each field as length + bytes (-1: NULL), a trailer. Text is sent as
    /// UTF-8 bytes, `bigint` as 8 bytes big-endian.
    pub fn copy_binary(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(64 + self.rows * self.columns.len() * 16);
        Self::copy_header(&mut out);
        self.copy_tuples(&mut out);
        out.extend_from_slice(&(-1i16).to_be_bytes());
        out
    }

    /// Tuples made by [`Columns::copy_tuples`] framed as a whole binary `COPY`.
    pub fn copy_framed(tuples: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(tuples.len() + 21);
        Self::copy_header(&mut out);
        out.extend_from_slice(tuples);
        out.extend_from_slice(&(-1i16).to_be_bytes());
        out
    }

    /// The length of [`Columns::copy_header`].
    pub fn copy_header_len() -> usize {
        19
    }

    /// Forgets every row, keeping the columns' allocations for the next ones.
    pub fn clear(&mut self) {
        for column in &mut self.columns {
            match column {
                Column::Text(values) => values.clear(),
                Column::Int(values) => values.clear(),
            }
        }
        self.column = 0;
        self.rows = 0;
    }

    pub fn copy_header(out: &mut Vec<u8>) {
        out.extend_from_slice(b"PGCOPY\n\xff\r\n\0");
        out.extend_from_slice(&0i32.to_be_bytes()); // flags
        out.extend_from_slice(&0i32.to_be_bytes()); // header extension length
    }

    /// The rows as binary `COPY` tuples, without the header and trailer.
    pub fn copy_tuples(&self, out: &mut Vec<u8>) {
        let fields = self.columns.len() as i16;
        for row in 0..self.rows {
            out.extend_from_slice(&fields.to_be_bytes());
            for column in &self.columns {
                match column {
                    Column::Text(values) => match values.get(row).and_then(Option::as_deref) {
                        Some(text) => {
                            out.extend_from_slice(&(text.len() as i32).to_be_bytes());
                            out.extend_from_slice(text.as_bytes());
                        }
                        None => out.extend_from_slice(&(-1i32).to_be_bytes()),
                    },
                    Column::Int(values) => match values.get(row).copied().flatten() {
                        Some(v) => {
                            out.extend_from_slice(&8i32.to_be_bytes());
                            out.extend_from_slice(&v.to_be_bytes());
                        }
                        None => out.extend_from_slice(&(-1i32).to_be_bytes()),
                    },
                }
            }
        }
    }
}

impl Default for Columns {
    fn default() -> Self {
        Self::new()
    }
}

impl Binder for Columns {
    fn cell<T: Cell>(&mut self, value: T) -> &mut Self {
        if self.column == self.columns.len() {
            self.columns.push(T::column());
        }
        value.push_to(&mut self.columns[self.column]);
        self.column += 1;
        self
    }
}

/// Appends `item` as an element of a PostgreSQL array literal.
trait ArrayItem {
    fn array_item(&self, out: &mut String);
}

impl ArrayItem for Option<String> {
    fn array_item(&self, out: &mut String) {
        let Some(text) = self else { return out.push_str("NULL") };
        out.push('"');
        for c in text.chars() {
            if c == '"' || c == '\\' {
                out.push('\\');
            }
            out.push(c);
        }
        out.push('"');
    }
}

impl ArrayItem for Option<i64> {
    fn array_item(&self, out: &mut String) {
        match self {
            Some(v) => {
                use std::fmt::Write as _;
                let _ = write!(out, "{v}");
            }
            None => out.push_str("NULL"),
        }
    }
}

/// One PostgreSQL array literal of `items`, to bind as text and cast (`$1::text[]`).
fn array_literal<T: ArrayItem>(items: impl IntoIterator<Item = T>) -> String {
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

/// A text array value of `items` (`$n::text[]`).
pub fn text_array(items: impl IntoIterator<Item = String>) -> Value {
    Value::TextArray(items.into_iter().map(Some).collect())
}

impl Sql {
    pub fn new(text: impl Into<String>) -> Self {
        Sql { text: text.into(), values: Vec::new() }
    }

    pub fn push(&mut self, text: &str) -> &mut Self {
        self.text.push_str(text);
        self
    }

    pub fn bind(&mut self, value: impl Into<Value>) -> &mut Self {
        self.values.push(value.into());
        self.text.push('$');
        self.text.push_str(&self.values.len().to_string());
        self
    }

    /// `($1, $2, …)` for an `IN` list.
    pub fn list<T: Into<Value>>(&mut self, items: impl IntoIterator<Item = T>) -> &mut Self {
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

    fn into_any(self) -> Result<(String, AnyArguments<'static>), sqlx::Error> {
        let mut args = AnyArguments::default();
        for value in self.values {
            value.add_to_any(&mut args).map_err(sqlx::Error::Encode)?;
        }
        Ok((self.text, args))
    }

    fn into_pg(self) -> Result<(String, PgArguments), sqlx::Error> {
        let mut args = PgArguments::default();
        for value in self.values {
            value.add_to_pg(&mut args).map_err(sqlx::Error::Encode)?;
        }
        Ok((self.text, args))
    }

    /// Runs the statement on `conn`; the number of rows it affected.
    pub async fn execute<C: Exec>(self, conn: &mut C) -> Result<u64, sqlx::Error> {
        conn.run(self).await
    }

    /// The statement's rows, on `conn`.
    pub async fn rows<C: Exec>(self, conn: &mut C) -> Result<Vec<AnyRow>, sqlx::Error> {
        conn.rows(self).await
    }

    /// The statement's rows, on any of `Any`'s executors (a pool, a connection).
    pub async fn fetch_all<'e, E: sqlx::Executor<'e, Database = Any>>(
        self,
        executor: E,
    ) -> Result<Vec<AnyRow>, sqlx::Error> {
        let (text, args) = self.into_any()?;
        sqlx::query_with(&text, args).fetch_all(executor).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn array_literals_quote_text_escape_quotes_and_backslashes_and_spell_null() {
        assert_eq!(
            array_literal([Some(String::from("a")), Some(String::from(r#"b"c\d"#)), None]),
            r#"{"a","b\"c\\d",NULL}"#
        );
        assert_eq!(array_literal([Some(1i64), None, Some(-3)]), "{1,NULL,-3}");
        assert_eq!(array_literal(Vec::<Option<String>>::new()), "{}");
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

    #[test]
    fn copy_binary_frames_each_row_with_its_field_count_and_each_field_with_its_length() {
        let mut columns = Columns::new();
        columns.row().cell(String::from("ab")).cell(Some(258i64)).cell(None::<String>);
        let bytes = columns.copy_binary();
        let mut expected = b"PGCOPY\n\xff\r\n\0".to_vec();
        expected.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 0]);
        expected.extend_from_slice(&[0, 3]);
        expected.extend_from_slice(&[0, 0, 0, 2, b'a', b'b']);
        expected.extend_from_slice(&[0, 0, 0, 8, 0, 0, 0, 0, 0, 0, 1, 2]);
        expected.extend_from_slice(&[0xff, 0xff, 0xff, 0xff]);
        expected.extend_from_slice(&[0xff, 0xff]);
        assert_eq!(bytes, expected);
        assert_eq!(columns.column_definitions(&["a", "b", "c"]), "a text, b bigint, c text");
    }
}
