//! Dynamic SQL with bound values, run on either backend: the search and index code build
//! statements at run time (`?` placeholders, rewritten to `$n` for PostgreSQL).
use diesel::pg::Pg;
use diesel::query_dsl::RunQueryDsl;
use diesel::sql_types::{Array, BigInt, Bool, Double, Nullable, Text};
use diesel::sqlite::Sqlite;
use diesel::{QueryResult, QueryableByName};

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
    /// Arrays with NULLs, PostgreSQL only.
    OptIntArray(Vec<Option<i64>>),
    OptFloatArray(Vec<Option<f64>>),
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
}

/// A statement as diesel runs it: the text split at its `?` placeholders, each followed by its
/// bound value. Unlike diesel's `sql_query` (which marks every statement unsafe to cache, so it
/// is parsed and planned again on every run), it may keep its prepared statement in the
/// connection's statement cache: see [`admit`].
struct Prepared {
    parts: Vec<String>,
    binds: Vec<Bind>,
    cache: bool,
}

impl Prepared {
    fn new(sql: Sql) -> Prepared {
        let cache = admit(&sql.text);
        Prepared::with_cache(sql, cache)
    }

    fn with_cache(sql: Sql, cache: bool) -> Prepared {
        let parts = sql.text.split('?').map(str::to_string).collect();
        Prepared {
            parts,
            binds: sql.binds,
            cache,
        }
    }
}

/// Distinct statement texts whose prepared statements connections keep, at most
/// [`CACHED_TEXTS`] per process. Fixed-shape statements (lookups by key, inserts, the common
/// search shapes) are admitted as soon as they run; once the limit is reached, statements of a
/// new shape are prepared for their run and dropped, so clients sending endless new search
/// shapes cannot make every connection's cache grow without bound.
const CACHED_TEXTS: usize = 512;

fn admit(text: &str) -> bool {
    static SEEN: std::sync::OnceLock<Admitted> = std::sync::OnceLock::new();
    SEEN.get_or_init(Admitted::default)
        .admit(text, CACHED_TEXTS)
}

/// The statement texts admitted to the statement caches (by hash).
#[derive(Default)]
struct Admitted {
    state: std::collections::hash_map::RandomState,
    seen: std::sync::Mutex<std::collections::HashSet<u64>>,
}

impl Admitted {
    /// Whether `text` is (now) admitted: it was already, or fewer than `limit` texts are.
    fn admit(&self, text: &str, limit: usize) -> bool {
        use std::hash::BuildHasher;
        let key = self.state.hash_one(text);
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        if seen.contains(&key) {
            return true;
        }
        if seen.len() < limit {
            seen.insert(key);
            return true;
        }
        false
    }
}

impl diesel::query_builder::QueryId for Prepared {
    type QueryId = ();
    const HAS_STATIC_QUERY_ID: bool = false;
}

impl diesel::query_builder::Query for Prepared {
    type SqlType = diesel::sql_types::Untyped;
}

impl<Conn> RunQueryDsl<Conn> for Prepared {}

/// A [`Prepared`] statement whose rows are read by position, as SQL type `ST`: no look-up of
/// each column by name in each row (which costs more than the values themselves when a report
/// reads 10⁵ rows of 20 columns).
pub(crate) struct Typed<ST> {
    inner: Prepared,
    _st: std::marker::PhantomData<ST>,
}

impl<ST> diesel::query_builder::QueryId for Typed<ST> {
    type QueryId = ();
    const HAS_STATIC_QUERY_ID: bool = false;
}

impl<ST: 'static> diesel::query_builder::Query for Typed<ST> {
    type SqlType = ST;
}

impl<ST, Conn> RunQueryDsl<Conn> for Typed<ST> {}

impl<ST> diesel::query_builder::QueryFragment<Pg> for Typed<ST> {
    fn walk_ast<'b>(&'b self, out: diesel::query_builder::AstPass<'_, 'b, Pg>) -> QueryResult<()> {
        self.inner.walk_ast(out)
    }
}

impl<ST> diesel::query_builder::QueryFragment<Sqlite> for Typed<ST> {
    fn walk_ast<'b>(
        &'b self,
        out: diesel::query_builder::AstPass<'_, 'b, Sqlite>,
    ) -> QueryResult<()> {
        self.inner.walk_ast(out)
    }
}

impl diesel::query_builder::QueryFragment<Pg> for Prepared {
    fn walk_ast<'b>(
        &'b self,
        mut out: diesel::query_builder::AstPass<'_, 'b, Pg>,
    ) -> QueryResult<()> {
        if !self.cache {
            out.unsafe_to_cache_prepared();
        }
        for (i, part) in self.parts.iter().enumerate() {
            out.push_sql(part);
            let Some(b) = self.binds.get(i) else { continue };
            match b {
                Bind::Text(s) => out.push_bind_param::<Text, _>(s)?,
                Bind::Int(v) => out.push_bind_param::<BigInt, _>(v)?,
                Bind::Float(v) => out.push_bind_param::<Double, _>(v)?,
                Bind::Null => out.push_bind_param::<Nullable<Text>, _>(&None::<String>)?,
                Bind::Bool(v) => out.push_bind_param::<Bool, _>(v)?,
                Bind::IntArray(v) => out.push_bind_param::<Array<BigInt>, _>(v)?,
                Bind::FloatArray(v) => out.push_bind_param::<Array<Double>, _>(v)?,
                Bind::TextArray(v) => out.push_bind_param::<Array<Nullable<Text>>, _>(v)?,
                Bind::BoolArray(v) => out.push_bind_param::<Array<Bool>, _>(v)?,
                Bind::OptIntArray(v) => out.push_bind_param::<Array<Nullable<BigInt>>, _>(v)?,
                Bind::OptFloatArray(v) => out.push_bind_param::<Array<Nullable<Double>>, _>(v)?,
            }
        }
        Ok(())
    }
}

impl diesel::query_builder::QueryFragment<Sqlite> for Prepared {
    fn walk_ast<'b>(
        &'b self,
        mut out: diesel::query_builder::AstPass<'_, 'b, Sqlite>,
    ) -> QueryResult<()> {
        if !self.cache {
            out.unsafe_to_cache_prepared();
        }
        for (i, part) in self.parts.iter().enumerate() {
            out.push_sql(part);
            let Some(b) = self.binds.get(i) else { continue };
            match b {
                Bind::Text(s) => out.push_bind_param::<Text, _>(s)?,
                Bind::Int(v) => out.push_bind_param::<BigInt, _>(v)?,
                Bind::Float(v) => out.push_bind_param::<Double, _>(v)?,
                Bind::Bool(v) => out.push_bind_param::<Bool, _>(v)?,
                // Arrays are only built for PostgreSQL (bulk_insert); SQLite never sees one.
                Bind::Null
                | Bind::IntArray(_)
                | Bind::FloatArray(_)
                | Bind::TextArray(_)
                | Bind::BoolArray(_)
                | Bind::OptIntArray(_)
                | Bind::OptFloatArray(_) => {
                    out.push_bind_param::<Nullable<Text>, _>(&None::<String>)?
                }
            }
        }
        Ok(())
    }
}

/// One column of a [`bulk_insert`], all its rows' values.
#[derive(Debug, Clone)]
pub enum Column {
    Int(Vec<i64>),
    Float(Vec<f64>),
    Text(Vec<Option<String>>),
    Bool(Vec<bool>),
    OptInt(Vec<Option<i64>>),
    OptFloat(Vec<Option<f64>>),
}

impl Column {
    fn len(&self) -> usize {
        match self {
            Column::Int(v) => v.len(),
            Column::Float(v) => v.len(),
            Column::Text(v) => v.len(),
            Column::Bool(v) => v.len(),
            Column::OptInt(v) => v.len(),
            Column::OptFloat(v) => v.len(),
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
            Column::OptInt(v) => v
                .into_iter()
                .map(|t| t.map_or(Bind::Null, Bind::Int))
                .collect(),
            Column::OptFloat(v) => v
                .into_iter()
                .map(|t| t.map_or(Bind::Null, Bind::Float))
                .collect(),
        };
        v.into_iter()
    }
    fn pg_array(self) -> (Bind, &'static str) {
        match self {
            Column::Int(v) => (Bind::IntArray(v), "bigint[]"),
            Column::Float(v) => (Bind::FloatArray(v), "float8[]"),
            Column::Text(v) => (Bind::TextArray(v), "text[]"),
            Column::Bool(v) => (Bind::BoolArray(v), "boolean[]"),
            Column::OptInt(v) => (Bind::OptIntArray(v), "bigint[]"),
            Column::OptFloat(v) => (Bind::OptFloatArray(v), "float8[]"),
        }
    }
}

/// Rows per multi-row INSERT on SQLite (well under its bound-variable limit).
const SQLITE_ROWS: usize = 200;
/// Rows per SQLite `VALUES` statement: the largest that fits what is left, so a statement has
/// one of five texts per table and stays in the statement cache (see [`admit`]).
const SQLITE_CHUNKS: [usize; 5] = [SQLITE_ROWS, 64, 16, 4, 1];

/// The rows of the next SQLite `VALUES` statement when `left` rows are left (at least one).
fn chunk(left: usize) -> usize {
    SQLITE_CHUNKS.into_iter().find(|&c| c <= left).unwrap_or(1)
}

/// The statements that insert rows given column by column into `table (cols…)`, each followed
/// by `suffix` (e.g. ` RETURNING pk`). PostgreSQL: one `INSERT … SELECT * FROM unnest($1::bigint[],
/// …)`, one bound array per column whatever the number of rows, so the statement text and the
/// number of parameters stay small. SQLite: multi-row `VALUES` in chunks of a few fixed sizes.
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
        let end = start + chunk(rows - start);
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
        DbConn::Pg(c) => Prepared::new(sql).load::<R>(c),
        DbConn::Sqlite(c) => Prepared::new(sql).load::<R>(c),
    }
}

/// Run a query whose columns are, in order, of SQL types `ST`, read its rows by position into
/// `R` (see [`Typed`]) and map each by `f` as it is decoded (rows it maps to None are left out),
/// into a vector sized for the whole result up front: no intermediate vector of rows and no
/// regrowing (collecting diesel's rows through `Result` loses the row count, so a large result
/// was copied again each time the vector doubled, with fresh pages faulted in each time).
///
/// Never from the statement cache: these are the large report queries (store::search::facts),
/// whose best plan depends on the bound values (a period, a list of 1,000 patients), and a
/// cached PostgreSQL statement switches to a generic plan after five runs. One such plan made
/// the contacts read of a quarter's `$icm-metrics` at 100,000 patients go from 40 ms to 5.8 s
/// (13 chunks of 1,000 patients, each a scan of every contact). Planning them each time costs
/// about a millisecond.
pub(crate) fn load_typed_map<ST, R, T>(
    conn: &mut DbConn,
    sql: impl IntoSql,
    f: impl FnMut(R) -> Option<T>,
) -> QueryResult<Vec<T>>
where
    for<'a> Typed<ST>: diesel::query_dsl::LoadQuery<'a, diesel::PgConnection, R>
        + diesel::query_dsl::LoadQuery<'a, diesel::SqliteConnection, R>,
{
    fn drain<R, T>(
        rows: impl Iterator<Item = QueryResult<R>>,
        mut f: impl FnMut(R) -> Option<T>,
    ) -> QueryResult<Vec<T>> {
        let mut out = Vec::with_capacity(rows.size_hint().0);
        for row in rows {
            if let Some(t) = f(row?) {
                out.push(t);
            }
        }
        Ok(out)
    }
    let sql = sql.into_sql();
    let typed = |sql| Typed::<ST> {
        inner: Prepared::with_cache(sql, false),
        _st: std::marker::PhantomData,
    };
    match conn {
        DbConn::Pg(c) => drain(typed(sql).load_iter::<R, _>(c)?, f),
        DbConn::Sqlite(c) => drain(typed(sql).load_iter::<R, _>(c)?, f),
    }
}

/// Run a statement that returns no rows; the number of rows affected.
pub fn execute(conn: &mut DbConn, sql: impl IntoSql) -> QueryResult<usize> {
    let sql = sql.into_sql();
    match conn {
        DbConn::Pg(c) => Prepared::new(sql).execute(c),
        DbConn::Sqlite(c) => Prepared::new(sql).execute(c),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlite_chunks_cover_the_rows_in_few_shapes() {
        for rows in 1..=1000usize {
            let (mut left, mut n) = (rows, 0);
            while left > 0 {
                let c = chunk(left);
                assert!(SQLITE_CHUNKS.contains(&c) && c <= left, "{rows}: {c}");
                left -= c;
                n += 1;
            }
            // At most the full chunks plus three of each smaller size.
            assert!(
                n <= rows / SQLITE_ROWS + 3 * 4,
                "{rows} rows in {n} statements"
            );
        }
    }

    #[test]
    fn admitted_texts_are_bounded() {
        let a = Admitted::default();
        assert!(a.admit("SELECT 1", 2));
        assert!(a.admit("SELECT 2", 2));
        assert!(!a.admit("SELECT 3", 2), "over the limit: run uncached");
        assert!(a.admit("SELECT 1", 2), "admitted texts stay admitted");
        assert!(!a.admit("SELECT 3", 2));
    }

    #[test]
    fn placeholders_split_the_text() {
        let mut q = Sql::new();
        q.push("SELECT a FROM t WHERE b = ")
            .text("x")
            .push(" AND c IN ");
        q.text_list(&["y".to_string(), "z".to_string()]);
        let p = Prepared::new(q);
        assert_eq!(p.parts.len(), p.binds.len() + 1);
        assert_eq!(p.parts[0], "SELECT a FROM t WHERE b = ");
        assert_eq!(p.parts[1], " AND c IN (");
        assert_eq!(p.parts.last().map(String::as_str), Some(")"));
    }
}
