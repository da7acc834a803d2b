//! Full-text rows (`_text`, `_content`; migration `2026-11-30-000002_fulltext`): one per current,
//! non-deleted resource row, keyed by `resources.pk`. PostgreSQL keeps two `tsvector` columns
//! (english configuration) with GIN indexes; SQLite an FTS5 table (porter tokenizer) whose rowid
//! is the pk. Rows are written and removed with the search index rows (store::index), so every
//! write, import and `icm-fhir reindex` keeps them; the text comes from
//! fhir::search::fulltext; the SQL of a `_text`/`_content` filter is in
//! store::search::predicates. [`backfill`] fills them for resources stored before the
//! migration.
use diesel::sql_types::BigInt;
use diesel::QueryableByName;
use serde_json::Value;

use crate::error::ApiResult;
use crate::fhir::search::fulltext::{content_text, narrative_text};
use crate::store::backend::{db_error, DbConn, Store};
use crate::store::sql::{bulk_insert, execute, is_pg, load, Bind, Column, Sql};

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

#[derive(QueryableByName)]
struct AfterRow {
    #[diesel(sql_type = BigInt)]
    after_pk: i64,
}

#[derive(QueryableByName)]
struct ResourceRow {
    #[diesel(sql_type = BigInt)]
    pk: i64,
    #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::Text>)]
    content: Option<String>,
}

/// Resources per backfill transaction.
const BACKFILL_BATCH: i64 = 500;

/// Fill the full-text rows of the resources stored before the full-text migration, when that
/// migration left its `store_backfill` task: batch by batch in pk order, each batch in its own
/// write transaction that records its progress, so an interrupted start resumes where it
/// stopped, and several processes starting together share the work (on PostgreSQL the task row
/// and the batch's resource rows are locked, so a concurrent write of one of them waits and its
/// own full-text row stands). Returns the number of resources done (0 when nothing was
/// pending).
pub fn backfill(store: &Store) -> ApiResult<u64> {
    let mut done = 0u64;
    loop {
        let step = store.write_tx(|conn| {
            let pg = is_pg(conn);
            let mut q = Sql::new();
            q.push("SELECT after_pk FROM store_backfill WHERE task = 'fulltext'");
            if pg {
                q.push(" FOR UPDATE");
            }
            let Some(after) = load::<AfterRow>(conn, &q)
                .map_err(db_error)?
                .first()
                .map(|r| r.after_pk)
            else {
                return Ok(None);
            };
            let mut q = Sql::new();
            q.push("SELECT pk, content FROM resources WHERE pk > ")
                .int(after)
                .push(" AND NOT deleted ORDER BY pk LIMIT ")
                .int(BACKFILL_BATCH);
            if pg {
                q.push(" FOR UPDATE");
            }
            let rows: Vec<ResourceRow> = load(conn, &q).map_err(db_error)?;
            let Some(last) = rows.last().map(|r| r.pk) else {
                let mut q = Sql::new();
                q.push("DELETE FROM store_backfill WHERE task = 'fulltext'");
                execute(conn, &q).map_err(db_error)?;
                return Ok(None);
            };
            let parsed: Vec<(i64, Value)> = rows
                .iter()
                .filter_map(|r| {
                    let v = serde_json::from_str(r.content.as_deref()?).ok()?;
                    Some((r.pk, v))
                })
                .collect();
            // A row written since the migration (by the write path) is replaced, not doubled.
            for (pk, _) in &parsed {
                delete(conn, *pk)?;
            }
            let items: Vec<(i64, &Value)> = parsed.iter().map(|(pk, v)| (*pk, v)).collect();
            insert(conn, &items)?;
            let mut q = Sql::new();
            q.push("UPDATE store_backfill SET after_pk = ")
                .int(last)
                .push(" WHERE task = 'fulltext'");
            execute(conn, &q).map_err(db_error)?;
            Ok(Some(rows.len() as u64))
        })?;
        match step {
            Some(n) => {
                done += n;
                if done % 50_000 < BACKFILL_BATCH as u64 {
                    log::info!("full-text index: {done} resource(s) done");
                }
            }
            None => return Ok(done),
        }
    }
}
