//! Dynamic SQL with bound values, run on either backend: the search and index code build
//! statements at run time (`?` placeholders, rewritten to `$n` for PostgreSQL).
use diesel::pg::Pg;
use diesel::query_builder::BoxedSqlQuery;
use diesel::query_dsl::RunQueryDsl;
use diesel::sql_types::{BigInt, Double, Nullable, Text};
use diesel::sqlite::Sqlite;
use diesel::{sql_query, QueryResult, QueryableByName};

use crate::store::backend::DbConn;

#[derive(Debug, Clone, PartialEq)]
pub enum Bind {
    Text(String),
    Int(i64),
    Float(f64),
    /// SQL NULL (text-typed).
    Null,
}

/// A statement under construction: SQL text with `?` placeholders and their values.
#[derive(Debug, Clone, Default)]
pub struct Sql {
    pub text: String,
    pub binds: Vec<Bind>,
}

impl Sql {
    pub fn new() -> Sql {
        Sql::default()
    }
    /// Append SQL text (never user input).
    pub fn push(&mut self, s: &str) -> &mut Self {
        self.text.push_str(s);
        self
    }
    /// Append a placeholder bound to a value.
    pub fn bind(&mut self, b: Bind) -> &mut Self {
        self.text.push('?');
        self.binds.push(b);
        self
    }
    pub fn text(&mut self, s: impl Into<String>) -> &mut Self {
        self.bind(Bind::Text(s.into()))
    }
    pub fn int(&mut self, i: i64) -> &mut Self {
        self.bind(Bind::Int(i))
    }
    pub fn float(&mut self, f: f64) -> &mut Self {
        self.bind(Bind::Float(f))
    }
    /// `(?, ?, …)` for a list of text values.
    pub fn text_list<'a>(&mut self, items: impl IntoIterator<Item = &'a String>) -> &mut Self {
        self.push("(");
        for (i, s) in items.into_iter().enumerate() {
            if i > 0 {
                self.push(", ");
            }
            self.text(s.clone());
        }
        self.push(")")
    }
    /// Append another statement fragment (its text and binds).
    pub fn append(&mut self, other: Sql) -> &mut Self {
        self.text.push_str(&other.text);
        self.binds.extend(other.binds);
        self
    }

    fn render_pg(&self) -> String {
        let mut out = String::with_capacity(self.text.len() + 16);
        let mut n = 0;
        for c in self.text.chars() {
            if c == '?' {
                n += 1;
                out.push('$');
                out.push_str(&n.to_string());
            } else {
                out.push(c);
            }
        }
        out
    }
}

macro_rules! with_binds {
    ($q:expr, $binds:expr) => {{
        let mut q = $q;
        for b in $binds {
            q = match b {
                Bind::Text(s) => q.bind::<Text, _>(s.clone()),
                Bind::Int(i) => q.bind::<BigInt, _>(*i),
                Bind::Float(f) => q.bind::<Double, _>(*f),
                Bind::Null => q.bind::<Nullable<Text>, _>(None::<String>),
            };
        }
        q
    }};
}

fn pg_query(sql: &Sql) -> BoxedSqlQuery<'static, Pg, diesel::query_builder::SqlQuery> {
    with_binds!(sql_query(sql.render_pg()).into_boxed::<Pg>(), &sql.binds)
}

fn sqlite_query(sql: &Sql) -> BoxedSqlQuery<'static, Sqlite, diesel::query_builder::SqlQuery> {
    with_binds!(
        sql_query(sql.text.clone()).into_boxed::<Sqlite>(),
        &sql.binds
    )
}

/// Run a statement that returns rows.
pub fn load<R>(conn: &mut DbConn, sql: &Sql) -> QueryResult<Vec<R>>
where
    R: QueryableByName<Pg> + QueryableByName<Sqlite> + 'static,
{
    match conn {
        DbConn::Pg(c) => pg_query(sql).load::<R>(c),
        DbConn::Sqlite(c) => sqlite_query(sql).load::<R>(c),
    }
}

/// Run a statement that returns no rows; the number of rows affected.
pub fn execute(conn: &mut DbConn, sql: &Sql) -> QueryResult<usize> {
    match conn {
        DbConn::Pg(c) => pg_query(sql).execute(c),
        DbConn::Sqlite(c) => sqlite_query(sql).execute(c),
    }
}

pub fn is_pg(conn: &DbConn) -> bool {
    matches!(conn, DbConn::Pg(_))
}
