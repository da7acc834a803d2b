//! Deferred secondary indexes for a bulk load into an empty PostgreSQL database.
//!
//! An import into an empty database drops the search-side indexes that the write path and the
//! care rules never read ([`DEFERRABLE`]), loads, and then builds them once, from sorted input,
//! instead of inserting into each of them row by row (measured in the README, "Bulk import").
//! Their definitions are kept in `deferred_index` (migration `2026-12-01-000003`) in the same
//! transaction that drops them, so nothing is lost if the import stops half-way: every
//! migration run (server start, the next import, `icm-fhir migrate`) builds what is recorded
//! there. Until then searches stay correct, only slower. Builders take one recorded index at a
//! time (`FOR UPDATE SKIP LOCKED`) and build it in the transaction that removes its record, so
//! several builders, in one process or several, share the work and never build one twice.
//!
//! The indexes the write path does read stay: the unique `(res_type, res_id)` keys (existence
//! checks, reads), every `(resource_pk, …)` index (an update removes a resource's index rows
//! by its row key), the reference-target index (the care rules' compartment look-ups), the
//! token, string and uri look-ups (conditional references, canonical URLs) and the small
//! `measure_facts` indexes. SQLite keeps all of its indexes.
use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use diesel::sql_types::{Bool, Text};

use crate::error::ApiResult;
use crate::store::backend::{db_error, Backend, DbConn, Store};

/// The indexes an import into an empty PostgreSQL database builds after its load.
pub const DEFERRABLE: &[&str] = &[
    "search_date_low",
    "search_date_high",
    "search_reference_lookup",
    "search_reference_url",
    "search_number_lookup",
    "search_quantity_lookup",
    "search_fulltext_narrative",
    "search_fulltext_content",
    "resources_type_pk",
    "resources_type_updated",
    "history_type_hid",
    "history_updated",
];

/// Memory for one index build (PostgreSQL's default, 64 MB, makes a GIN build of a large
/// full-text table flush many times).
const BUILD_MEMORY: &str = "256MB";

#[derive(QueryableByName)]
struct Stored {
    #[diesel(sql_type = Bool)]
    stored: bool,
}

#[derive(QueryableByName)]
struct Deferred {
    #[diesel(sql_type = Text)]
    name: String,
    #[diesel(sql_type = Text)]
    definition: String,
}

impl Store {
    /// On PostgreSQL with no resource stored: record the definitions of the [`DEFERRABLE`]
    /// indexes in `deferred_index` and drop them, in one transaction. The number dropped (0 on
    /// SQLite, on a database that holds resources, or when they are already deferred).
    pub fn defer_indexes(&self) -> ApiResult<usize> {
        if self.backend() != Backend::Postgres {
            return Ok(0);
        }
        let mut conn = self.conn()?;
        let DbConn::Pg(c) = &mut *conn else {
            return Ok(0);
        };
        c.transaction(|c| {
            // A resource stored after this check only makes the database non-empty: harmless.
            let stored = diesel::sql_query("SELECT EXISTS (SELECT 1 FROM resources) AS stored")
                .get_result::<Stored>(c)?
                .stored;
            if stored {
                return Ok(0);
            }
            let names: Vec<String> = DEFERRABLE.iter().map(|s| s.to_string()).collect();
            let found = diesel::sql_query(
                "SELECT c.relname::text AS name, pg_get_indexdef(c.oid) AS definition \
                 FROM pg_class c WHERE c.relkind = 'i' AND c.relname = ANY($1) \
                 AND pg_table_is_visible(c.oid) ORDER BY c.relname",
            )
            .bind::<diesel::sql_types::Array<Text>, _>(&names)
            .load::<Deferred>(c)?;
            for d in &found {
                diesel::sql_query(
                    "INSERT INTO deferred_index (name, definition) VALUES ($1, $2) \
                     ON CONFLICT (name) DO NOTHING",
                )
                .bind::<Text, _>(&d.name)
                .bind::<Text, _>(&d.definition)
                .execute(c)?;
                c.batch_execute(&format!("DROP INDEX {}", quote_ident(&d.name)))?;
            }
            Ok(found.len())
        })
        .map_err(db_error)
    }

    /// Build every index recorded in `deferred_index` with up to `builders` connections at
    /// once, removing each record in the transaction that builds its index. The number built
    /// by this call.
    pub fn build_deferred_indexes(&self, builders: usize) -> ApiResult<usize> {
        if self.backend() != Backend::Postgres {
            return Ok(0);
        }
        // Each builder holds a pooled connection while it builds.
        let builders = builders.clamp(1, self.pool_size().max(1) as usize);
        let built = std::sync::atomic::AtomicUsize::new(0);
        let failed = std::sync::Mutex::new(None);
        std::thread::scope(|s| {
            for _ in 0..builders.max(1) {
                s.spawn(|| loop {
                    match self.build_one() {
                        Ok(Some(name)) => {
                            log::info!("built deferred index {name}");
                            built.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        }
                        Ok(None) => break,
                        Err(e) => {
                            *failed.lock().unwrap_or_else(|p| p.into_inner()) = Some(e);
                            break;
                        }
                    }
                });
            }
        });
        match failed.into_inner().unwrap_or_else(|p| p.into_inner()) {
            Some(e) => Err(e),
            None => Ok(built.into_inner()),
        }
    }

    /// Build one recorded index nobody else is building; its name, or None when none is left.
    fn build_one(&self) -> ApiResult<Option<String>> {
        let mut conn = self.conn()?;
        let DbConn::Pg(c) = &mut *conn else {
            return Ok(None);
        };
        c.transaction(|c| {
            let next = diesel::sql_query(
                "SELECT name, definition FROM deferred_index ORDER BY name LIMIT 1 \
                 FOR UPDATE SKIP LOCKED",
            )
            .load::<Deferred>(c)?;
            let Some(d) = next.into_iter().next() else {
                return Ok(None);
            };
            c.batch_execute(&format!(
                "SET LOCAL maintenance_work_mem = '{BUILD_MEMORY}'; {}",
                if_not_exists(&d.definition)
            ))?;
            diesel::sql_query("DELETE FROM deferred_index WHERE name = $1")
                .bind::<Text, _>(&d.name)
                .execute(c)?;
            Ok(Some(d.name))
        })
        .map_err(db_error)
    }
}

/// `CREATE [UNIQUE] INDEX name …` (as `pg_get_indexdef` writes it) with `IF NOT EXISTS`.
fn if_not_exists(definition: &str) -> String {
    for head in ["CREATE UNIQUE INDEX ", "CREATE INDEX "] {
        if let Some(rest) = definition.strip_prefix(head) {
            if !rest.starts_with("IF NOT EXISTS ") {
                return format!("{head}IF NOT EXISTS {rest}");
            }
        }
    }
    definition.to_string()
}

fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn definitions_gain_if_not_exists_once() {
        assert_eq!(
            if_not_exists("CREATE INDEX a ON public.t USING btree (x)"),
            "CREATE INDEX IF NOT EXISTS a ON public.t USING btree (x)"
        );
        assert_eq!(
            if_not_exists("CREATE UNIQUE INDEX a ON public.t USING btree (x)"),
            "CREATE UNIQUE INDEX IF NOT EXISTS a ON public.t USING btree (x)"
        );
        assert_eq!(
            if_not_exists("CREATE INDEX IF NOT EXISTS a ON t (x)"),
            "CREATE INDEX IF NOT EXISTS a ON t (x)"
        );
    }
}
