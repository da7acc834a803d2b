//! Full-text rows (`_text`, `_content`; migration `2026-11-30-000002_fulltext`): one per current,
//! non-deleted resource row, keyed by `resources.pk`. PostgreSQL keeps two `tsvector` columns
//! (english configuration) with GIN indexes; SQLite an FTS5 table (porter tokenizer) whose rowid
//! is the pk. Rows are written and removed with the search index rows (store::index), so every
//! write, import and `icm-fhir reindex` keeps them; the text comes from
//! fhir::search::fulltext; the SQL of a `_text`/`_content` filter is in
//! store::search::predicates. Resources stored before the migration get theirs from the
//! reindex at start that index version 3 brings (index::ensure_current).
use serde_json::Value;

use crate::error::ApiResult;
use crate::fhir::search::fulltext::{content_text, narrative_text};
use crate::store::backend::{db_error, DbConn};
use crate::store::sql::{bulk_insert, execute, is_pg, Bind, Column, Sql};

pub const TABLE: &str = "search_fulltext";

/// Remove the full-text row of resource row `pk` (SQLite; on PostgreSQL index::delete_index
/// removes it with the index rows, in one statement).
pub fn delete(conn: &mut DbConn, pk: i64) -> ApiResult<()> {
    let mut q = Sql::new();
    if is_pg(conn) {
        q.push("DELETE FROM search_fulltext WHERE resource_pk = ")
            .int(pk);
    } else {
        q.push("DELETE FROM search_fulltext WHERE rowid = ").int(pk);
    }
    execute(conn, &q).map_err(db_error)?;
    Ok(())
}

/// Insert the full-text rows of resource rows that have none (one statement on PostgreSQL, a
/// few multi-row INSERTs on SQLite).
pub fn insert(conn: &mut DbConn, items: &[(i64, &Value)]) -> ApiResult<()> {
    if items.is_empty() {
        return Ok(());
    }
    let pks: Vec<i64> = items.iter().map(|(pk, _)| *pk).collect();
    let narrative: Vec<Option<String>> =
        items.iter().map(|(_, v)| Some(narrative_text(v))).collect();
    let content: Vec<Option<String>> = items.iter().map(|(_, v)| Some(content_text(v))).collect();
    if is_pg(conn) {
        let mut q = Sql::new();
        q.push(
            "INSERT INTO search_fulltext (resource_pk, narrative, content_text) \
             SELECT u.pk, to_tsvector('english', u.n), to_tsvector('english', u.c) FROM unnest(",
        )
        .bind(Bind::IntArray(pks))
        .push("::bigint[], ")
        .bind(Bind::TextArray(narrative))
        .push("::text[], ")
        .bind(Bind::TextArray(content))
        .push("::text[]) AS u(pk, n, c)");
        execute(conn, q).map_err(db_error)?;
        return Ok(());
    }
    let columns = vec![
        Column::Int(pks),
        Column::Text(narrative),
        Column::Text(content),
    ];
    for q in bulk_insert(
        conn,
        TABLE,
        &["rowid", "narrative", "content_text"],
        columns,
        "",
    ) {
        execute(conn, q).map_err(db_error)?;
    }
    Ok(())
}
