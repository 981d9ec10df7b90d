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
