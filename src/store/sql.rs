//! Dynamic SQL with bound values, run on either backend: the search and index code build
//! statements at run time (`?` placeholders, rewritten to `$n` for PostgreSQL).
use diesel::pg::Pg;
use diesel::query_builder::BoxedSqlQuery;
use diesel::query_dsl::RunQueryDsl;
use diesel::sql_types::{Array, BigInt, Bool, Double, Nullable, Text};
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
    Bool(bool),
    /// Arrays, PostgreSQL only (`unnest` in [`bulk_insert`]).
    IntArray(Vec<i64>),
    FloatArray(Vec<f64>),
    TextArray(Vec<Option<String>>),
    BoolArray(Vec<bool>),
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
    /// ` LIMIT n` with the number written into the statement, not bound: SQLite re-prepares a
    /// statement whose `LIMIT` is a bound parameter at its first step (the planner reads the
    /// bound value), which doubled the cost of preparing every search (bench/cost_profile.sh).
    pub fn limit(&mut self, n: i64) -> &mut Self {
        self.text.push_str(" LIMIT ");
        self.text.push_str(&n.to_string());
        self
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

fn pg_query(sql: Sql) -> BoxedSqlQuery<'static, Pg, diesel::query_builder::SqlQuery> {
    let mut q = sql_query(sql.render_pg()).into_boxed::<Pg>();
    for b in sql.binds {
        q = match b {
            Bind::Text(s) => q.bind::<Text, _>(s),
            Bind::Int(i) => q.bind::<BigInt, _>(i),
            Bind::Float(f) => q.bind::<Double, _>(f),
            Bind::Null => q.bind::<Nullable<Text>, _>(None::<String>),
            Bind::Bool(v) => q.bind::<Bool, _>(v),
            Bind::IntArray(v) => q.bind::<Array<BigInt>, _>(v),
            Bind::FloatArray(v) => q.bind::<Array<Double>, _>(v),
            Bind::TextArray(v) => q.bind::<Array<Nullable<Text>>, _>(v),
            Bind::BoolArray(v) => q.bind::<Array<Bool>, _>(v),
        };
    }
    q
}

fn sqlite_query(sql: Sql) -> BoxedSqlQuery<'static, Sqlite, diesel::query_builder::SqlQuery> {
    let mut q = sql_query(sql.text).into_boxed::<Sqlite>();
    for b in sql.binds {
        q = match b {
            Bind::Text(s) => q.bind::<Text, _>(s),
            Bind::Int(i) => q.bind::<BigInt, _>(i),
            Bind::Float(f) => q.bind::<Double, _>(f),
            Bind::Bool(v) => q.bind::<Bool, _>(v),
            // Arrays are only built for PostgreSQL (bulk_insert); SQLite never sees one.
            Bind::Null
            | Bind::IntArray(_)
            | Bind::FloatArray(_)
            | Bind::TextArray(_)
            | Bind::BoolArray(_) => q.bind::<Nullable<Text>, _>(None::<String>),
        };
    }
    q
}

/// One column of a [`bulk_insert`], all its rows' values.
#[derive(Debug, Clone)]
pub enum Column {
    Int(Vec<i64>),
    Float(Vec<f64>),
    Text(Vec<Option<String>>),
    Bool(Vec<bool>),
}

impl Column {
    fn len(&self) -> usize {
        match self {
            Column::Int(v) => v.len(),
            Column::Float(v) => v.len(),
            Column::Text(v) => v.len(),
            Column::Bool(v) => v.len(),
        }
    }
    fn into_binds(self) -> std::vec::IntoIter<Bind> {
        let v: Vec<Bind> = match self {
            Column::Int(v) => v.into_iter().map(Bind::Int).collect(),
            Column::Float(v) => v.into_iter().map(Bind::Float).collect(),
            Column::Text(v) => v
                .into_iter()
                .map(|t| t.map_or(Bind::Null, Bind::Text))
                .collect(),
            Column::Bool(v) => v.into_iter().map(Bind::Bool).collect(),
        };
        v.into_iter()
    }
    fn pg_array(self) -> (Bind, &'static str) {
        match self {
            Column::Int(v) => (Bind::IntArray(v), "bigint[]"),
            Column::Float(v) => (Bind::FloatArray(v), "float8[]"),
            Column::Text(v) => (Bind::TextArray(v), "text[]"),
            Column::Bool(v) => (Bind::BoolArray(v), "boolean[]"),
        }
    }
}

/// Rows per multi-row INSERT on SQLite (well under its bound-variable limit).
const SQLITE_ROWS: usize = 200;

/// The statements that insert rows given column by column into `table (cols…)`, each followed
/// by `suffix` (e.g. ` RETURNING pk`). PostgreSQL: one `INSERT … SELECT * FROM unnest($1::bigint[],
/// …)`, one bound array per column whatever the number of rows, so the statement text and the
/// number of parameters stay small. SQLite: multi-row `VALUES` in chunks.
pub fn bulk_insert(
    conn: &DbConn,
    table: &str,
    cols: &[&str],
    columns: Vec<Column>,
    suffix: &str,
) -> Vec<Sql> {
    let rows = columns.first().map_or(0, Column::len);
    debug_assert!(columns.iter().all(|c| c.len() == rows));
    debug_assert_eq!(cols.len(), columns.len());
    if rows == 0 {
        return Vec::new();
    }
    let head = format!("INSERT INTO {table} ({}) ", cols.join(", "));
    if is_pg(conn) {
        let mut q = Sql::new();
        q.push(&head).push("SELECT * FROM unnest(");
        for (n, c) in columns.into_iter().enumerate() {
            if n > 0 {
                q.push(", ");
            }
            let (b, ty) = c.pg_array();
            q.bind(b).push("::").push(ty);
        }
        q.push(")").push(suffix);
        return vec![q];
    }
    let mut out = Vec::new();
    let mut start = 0;
    let mut values: Vec<std::vec::IntoIter<Bind>> =
        columns.into_iter().map(Column::into_binds).collect();
    while start < rows {
        let end = (start + SQLITE_ROWS).min(rows);
        let mut q = Sql::new();
        q.push(&head).push("VALUES ");
        for i in start..end {
            q.push(if i > start { ", (" } else { "(" });
            for (n, c) in values.iter_mut().enumerate() {
                if n > 0 {
                    q.push(", ");
                }
                q.bind(c.next().unwrap_or(Bind::Null));
            }
            q.push(")");
        }
        q.push(suffix);
        out.push(q);
        start = end;
    }
    out
}

/// A statement to run: owned (its values move into the query, as bulk inserts do) or borrowed
/// (copied).
pub trait IntoSql {
    fn into_sql(self) -> Sql;
}

impl IntoSql for Sql {
    fn into_sql(self) -> Sql {
        self
    }
}

impl IntoSql for &Sql {
    fn into_sql(self) -> Sql {
        self.clone()
    }
}

/// Run a statement that returns rows.
pub fn load<R>(conn: &mut DbConn, sql: impl IntoSql) -> QueryResult<Vec<R>>
where
    R: QueryableByName<Pg> + QueryableByName<Sqlite> + 'static,
{
    let sql = sql.into_sql();
    match conn {
        DbConn::Pg(c) => pg_query(sql).load::<R>(c),
        DbConn::Sqlite(c) => sqlite_query(sql).load::<R>(c),
    }
}

/// Run a statement that returns no rows; the number of rows affected.
pub fn execute(conn: &mut DbConn, sql: impl IntoSql) -> QueryResult<usize> {
    let sql = sql.into_sql();
    match conn {
        DbConn::Pg(c) => pg_query(sql).execute(c),
        DbConn::Sqlite(c) => sqlite_query(sql).execute(c),
    }
}

pub fn is_pg(conn: &DbConn) -> bool {
    matches!(conn, DbConn::Pg(_))
}

/// A search-index reference column (`target_type`, `target_id`: collation "C" on PostgreSQL)
/// as the `resources` key columns' collation, for a join on `(res_type, res_id)`. Without it
/// PostgreSQL cannot use the `(res_type, res_id)` index for the join (the two sides' collations
/// differ) and scans every resource of the type per row: `$icm-metrics` took 3.6 s instead of
/// 67 ms on 1,000 patients, quadratically more on more. SQLite compares both as BINARY.
pub fn as_resource_key(pg: bool, column: &str) -> String {
    if pg {
        format!("{column} COLLATE \"default\"")
    } else {
        column.to_string()
    }
}
