//! Connection pool over PostgreSQL or SQLite, chosen from the DATABASE_URL scheme; migrations.
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use diesel::connection::SimpleConnection;
use diesel::pg::PgConnection;
use diesel::r2d2::{self, ManageConnection, Pool, PooledConnection};
use diesel::sqlite::SqliteConnection;
use diesel::Connection;
use diesel_migrations::{embed_migrations, EmbeddedMigrations, MigrationHarness};

use crate::error::ApiError;

pub const PG_MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations/postgres");
pub const SQLITE_MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations/sqlite");

#[derive(diesel::MultiConnection)]
pub enum DbConn {
    Pg(PgConnection),
    Sqlite(SqliteConnection),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Postgres,
    Sqlite,
}

/// Where a DATABASE_URL points.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DbTarget {
    Postgres(String),
    Sqlite(String),
}

impl DbTarget {
    pub fn parse(url: &str) -> Result<DbTarget, String> {
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Ok(DbTarget::Postgres(url.to_string()))
        } else if let Some(path) = url.strip_prefix("sqlite://") {
            if path.is_empty() {
                return Err("sqlite:// URL needs a file path, e.g. sqlite://data/icm.db".into());
            }
            Ok(DbTarget::Sqlite(path.to_string()))
        } else if let Some(path) = url.strip_prefix("sqlite:") {
            Ok(DbTarget::Sqlite(path.to_string()))
        } else {
            Err(format!(
                "unsupported DATABASE_URL '{url}': use postgres://… or sqlite://PATH"
            ))
        }
    }

    pub fn backend(&self) -> Backend {
        match self {
            DbTarget::Postgres(_) => Backend::Postgres,
            DbTarget::Sqlite(_) => Backend::Sqlite,
        }
    }
}

/// r2d2 manager that connects to exactly the backend the URL names (never falls back).
#[derive(Debug)]
pub struct Manager {
    target: DbTarget,
    /// Keep PostgreSQL prepared statements per connection (diesel's statement cache). Off
    /// behind a pooler in transaction mode (PgBouncer), where a connection's named statements
    /// live on whichever server connection prepared them.
    statement_cache: bool,
}

impl Manager {
    pub fn new(target: DbTarget) -> Manager {
        Manager {
            target,
            statement_cache: true,
        }
    }
}

impl ManageConnection for Manager {
    type Connection = DbConn;
    type Error = r2d2::Error;

    fn connect(&self) -> Result<DbConn, r2d2::Error> {
        match &self.target {
            DbTarget::Postgres(url) => {
                let mut c = PgConnection::establish(url).map_err(r2d2::Error::ConnectionError)?;
                if !self.statement_cache {
                    c.set_prepared_statement_cache_size(diesel::connection::CacheSize::Disabled);
                }
                Ok(DbConn::Pg(c))
            }
            DbTarget::Sqlite(path) => {
                let mut c =
                    SqliteConnection::establish(path).map_err(r2d2::Error::ConnectionError)?;
                c.batch_execute(
                    "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; \
                     PRAGMA busy_timeout = 10000; \
                     PRAGMA cache_size = -32768; PRAGMA mmap_size = 1073741824; \
                     PRAGMA temp_store = MEMORY;",
                )
                .map_err(r2d2::Error::QueryError)?;
                Ok(DbConn::Sqlite(c))
            }
        }
    }

    /// Checked at every checkout. A PostgreSQL connection can go stale (the server restarted),
    /// so it is tested with a round trip; an SQLite connection is a file handle that cannot,
    /// and preparing `SELECT 1` cost about a fifth of a read by id (bench/cost_profile.sh).
    fn is_valid(&self, conn: &mut DbConn) -> Result<(), r2d2::Error> {
        match conn {
            DbConn::Sqlite(_) => Ok(()),
            DbConn::Pg(_) => conn
                .batch_execute("SELECT 1")
                .map_err(r2d2::Error::QueryError),
        }
    }

    /// A connection whose server went away (or whose transaction state is broken) is dropped
    /// when returned instead of going back to the pool.
    fn has_broken(&self, conn: &mut DbConn) -> bool {
        diesel::r2d2::R2D2Connection::is_broken(conn)
    }
}

/// The store: a pool plus, on SQLite, the in-process writer lock (SQLite allows one writer;
/// serialising writers here avoids lock-upgrade deadlocks between deferred transactions).
pub struct Store {
    pool: Pool<Manager>,
    backend: Backend,
    sqlite_writer: Option<Mutex<()>>,
    /// PostgreSQL hot standbys for reads (`with_replicas`).
    replicas: Option<std::sync::Arc<crate::store::replicas::Replicas>>,
    /// Where the pool connects (for connections outside it: the migration lock).
    target: DbTarget,
}

impl Store {
    /// Build the pool without connecting; `migrate` or the first request connects.
    pub fn new(url: &str, pool_size: u32, connect_timeout: Duration) -> Result<Store, String> {
        Store::with_options(url, pool_size, connect_timeout, true)
    }

    /// As `new`; `statement_cache` false disables PostgreSQL prepared-statement caching (for
    /// PgBouncer in transaction mode, `ICM_PG_STATEMENT_CACHE=off`).
    pub fn with_options(
        url: &str,
        pool_size: u32,
        connect_timeout: Duration,
        statement_cache: bool,
    ) -> Result<Store, String> {
        let target = DbTarget::parse(url)?;
        if let DbTarget::Sqlite(path) = &target {
            if let Some(dir) = std::path::Path::new(path).parent() {
                if !dir.as_os_str().is_empty() {
                    std::fs::create_dir_all(dir)
                        .map_err(|e| format!("cannot create folder {}: {e}", dir.display()))?;
                }
            }
        }
        let backend = target.backend();
        let pool = Pool::builder()
            .max_size(pool_size.max(1))
            .min_idle(Some(0))
            .connection_timeout(connect_timeout)
            .build_unchecked(Manager {
                target: target.clone(),
                statement_cache,
            });
        Ok(Store {
            pool,
            backend,
            sqlite_writer: (backend == Backend::Sqlite).then(|| Mutex::new(())),
            replicas: None,
            target,
        })
    }

    /// Serve reads that need not see the caller's own recent writes from these PostgreSQL
    /// standbys (store::replicas); `max_lag` bounds how stale a standby may be.
    pub fn with_replicas(
        mut self,
        urls: &[String],
        pool_size: u32,
        max_lag: Duration,
    ) -> Result<Store, String> {
        if urls.is_empty() {
            return Ok(self);
        }
        if self.backend != Backend::Postgres {
            return Err("read replicas need a PostgreSQL primary DATABASE_URL".into());
        }
        self.replicas = Some(crate::store::replicas::Replicas::start(
            self.pool.clone(),
            urls,
            pool_size,
            max_lag,
        )?);
        Ok(self)
    }

    /// A connection for a read by `reader` (the caller's key): a fresh-enough standby that has
    /// replayed the reader's own last write, else the primary.
    pub fn read_conn(&self, reader: &str) -> Result<PooledConnection<Manager>, ApiError> {
        if let Some(r) = &self.replicas {
            if let Some(c) = r.conn(reader) {
                return Ok(c);
            }
        }
        self.conn()
    }

    /// Another connection if one is free or can be opened within a moment (the pool keeps no
    /// idle ones: min_idle 0) — it does not wait for a busy pool: for a read that
    /// can use a second one. None with read replicas (the replica set decides where a reader
    /// goes).
    pub fn try_read_conn(&self) -> Option<PooledConnection<Manager>> {
        if self.replicas.is_some() {
            return None;
        }
        self.pool
            .try_get()
            .or_else(|| self.pool.get_timeout(Duration::from_millis(200)).ok())
    }

    /// After `writer` committed on the primary: its next reads wait for a standby that has
    /// replayed this write (or go to the primary). A no-op without replicas.
    pub fn note_write(&self, writer: &str) {
        if let Some(r) = &self.replicas {
            if let Ok(mut c) = self.conn() {
                r.note_write(writer, &mut c);
            }
        }
    }

    /// Reads served by standbys and by the primary since start (None without replicas).
    pub fn read_counts(&self) -> Option<(u64, u64)> {
        self.replicas.as_ref().map(|r| {
            (
                r.counts.replica.load(std::sync::atomic::Ordering::Relaxed),
                r.counts.primary.load(std::sync::atomic::Ordering::Relaxed),
            )
        })
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    pub fn conn(&self) -> Result<PooledConnection<Manager>, ApiError> {
        self.pool.get().map_err(|e| {
            log::warn!("database unavailable: {e}");
            ApiError::Unavailable("the database is unavailable; try again shortly".into())
        })
    }

    /// Held for the duration of a write transaction on SQLite; a no-op on PostgreSQL.
    pub fn writer_guard(&self) -> Option<MutexGuard<'_, ()>> {
        self.sqlite_writer
            .as_ref()
            .map(|m| m.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Apply pending migrations for this backend, then the work they leave for the server:
    /// AuditEvents moved into the audit trail, the full-text rows of resources stored before
    /// the full-text index existed (store::fulltext::backfill).
    pub fn migrate(&self) -> Result<usize, String> {
        // Several processes starting together on one PostgreSQL take turns: the first migrates
        // (and reindexes), the others then find nothing to do. The lock is held by a connection
        // of its own (outside the pool, which may have a single connection) and released when
        // that connection closes.
        let _lock = match self.backend {
            Backend::Postgres => {
                let mut c = Manager::new(self.target.clone())
                    .connect()
                    .map_err(|e| format!("cannot connect: {e}"))?;
                c.batch_execute(&format!("SELECT pg_advisory_lock({MIGRATION_LOCK})"))
                    .map_err(|e| format!("cannot take the migration lock: {e}"))?;
                Some(c)
            }
            Backend::Sqlite => None,
        };
        let mut conn = self
            .pool
            .get()
            .map_err(|e| format!("cannot connect: {e}"))?;
        let applied = match &mut *conn {
            DbConn::Pg(c) => c.run_pending_migrations(PG_MIGRATIONS).map(|v| v.len()),
            DbConn::Sqlite(c) => c.run_pending_migrations(SQLITE_MIGRATIONS).map(|v| v.len()),
        }
        .map_err(|e| format!("migration failed: {e}"))?;
        let moved = crate::store::audit::adopt_legacy(&mut conn)
            .map_err(|e| format!("moving AuditEvents into the audit trail failed: {e}"))?;
        if moved > 0 {
            log::info!("moved {moved} AuditEvent(s) from resources into the audit trail");
        }
        drop(conn);
        // Indexes an import deferred and did not build (it was stopped during its load).
        match self.build_deferred_indexes(2) {
            Ok(0) => {}
            Ok(n) => log::warn!("built {n} index(es) an interrupted import had deferred"),
            Err(e) => return Err(format!("building the deferred indexes failed: {e}")),
        }
        crate::store::index::ensure_current(self)
            .map_err(|e| format!("rebuilding the search index failed: {e}"))?;
        Ok(applied)
    }

    /// Refresh the planner's statistics after a bulk load: the planner otherwise knows nothing
    /// of the new rows and picks plans for empty tables. On PostgreSQL `VACUUM (ANALYZE)`: it
    /// also sets the visibility map of the freshly written pages, without which every
    /// index-only scan of the search index (the measures' fact queries probe it once or more
    /// per row) still reads the table's heap page (`Heap Fetches`) until autovacuum gets there.
    /// On SQLite `ANALYZE` (a VACUUM there rewrites the whole file and gains nothing here).
    pub fn analyze(&self) -> crate::error::ApiResult<()> {
        self.analyze_table(None)
    }

    /// [`analyze`](Self::analyze) of one table (e.g. `measure_facts` after its rows were all
    /// replaced), or of every table.
    pub(crate) fn analyze_table(&self, table: Option<&str>) -> crate::error::ApiResult<()> {
        let _guard = self.writer_guard();
        let mut conn = self.conn()?;
        let mut q = crate::store::sql::Sql::new();
        q.push(if crate::store::sql::is_pg(&conn) {
            "VACUUM (ANALYZE)"
        } else {
            "ANALYZE"
        });
        if let Some(t) = table {
            q.push(" ").push(t);
        }
        crate::store::sql::execute(&mut conn, &q).map_err(db_error)?;
        Ok(())
    }

    /// The most connections the pool opens.
    pub fn pool_size(&self) -> u32 {
        self.pool.max_size()
    }

    /// (connections in use, idle connections) of the pool.
    pub fn pool_state(&self) -> (u32, u32) {
        let s = self.pool.state();
        (s.connections - s.idle_connections, s.idle_connections)
    }

    /// Cheap liveness query used by /readyz.
    pub fn ping(&self) -> Result<(), ApiError> {
        let mut c = self.conn()?;
        c.batch_execute("SELECT 1")
            .map_err(|e| ApiError::Unavailable(format!("database query failed: {e}")))
    }
}

/// The PostgreSQL advisory lock key under which one process at a time migrates.
const MIGRATION_LOCK: i64 = 0x1c3f_0017;

/// Map a diesel error to the API error it means.
/// Run `f` in a write transaction. On SQLite it begins `IMMEDIATE`: the write lock is taken up
/// front (waiting up to `busy_timeout`), so two processes on one file never deadlock upgrading
/// a read snapshot to a write (a deferred transaction gets `SQLITE_BUSY` at once in that case,
/// without waiting). The in-process writer lock (`Store::writer_guard`) cannot see other
/// processes; this can.
pub fn write_transaction<T, E>(
    conn: &mut DbConn,
    f: impl FnOnce(&mut DbConn) -> Result<T, E>,
) -> Result<T, E>
where
    E: From<diesel::result::Error>,
{
    use diesel::connection::{AnsiTransactionManager, TransactionManager};
    type Tm = <DbConn as Connection>::TransactionManager;
    match conn {
        DbConn::Sqlite(c) => AnsiTransactionManager::begin_transaction_sql(c, "BEGIN IMMEDIATE")?,
        DbConn::Pg(_) => Tm::begin_transaction(conn)?,
    }
    match f(conn) {
        Ok(v) => {
            Tm::commit_transaction(conn)?;
            Ok(v)
        }
        Err(e) => match Tm::rollback_transaction(conn) {
            Ok(()) | Err(diesel::result::Error::BrokenTransactionManager) => Err(e),
            Err(rollback) => Err(rollback.into()),
        },
    }
}

pub fn db_error(e: diesel::result::Error) -> ApiError {
    use diesel::result::{DatabaseErrorKind, Error};
    match e {
        Error::DatabaseError(DatabaseErrorKind::ClosedConnection, _)
        | Error::DatabaseError(DatabaseErrorKind::UnableToSendCommand, _)
        | Error::BrokenTransactionManager => {
            ApiError::Unavailable("the database connection was lost; try again".into())
        }
        // SQLite's busy_timeout ran out: another process held the write lock all that time.
        Error::DatabaseError(_, ref info) if info.message().contains("database is locked") => {
            ApiError::Unavailable("the database is busy; try again shortly".into())
        }
        Error::DatabaseError(DatabaseErrorKind::SerializationFailure, _) => {
            ApiError::Conflict("a concurrent change conflicted with this one; retry".into())
        }
        Error::DatabaseError(_, ref info) => match storage_fault(info.message()) {
            Some(StorageFault::Full) => {
                log::error!("database write failed: {}", info.message());
                ApiError::InsufficientStorage(
                    "the database has no space left for this write; nothing of it was stored"
                        .into(),
                )
            }
            Some(StorageFault::Unwritable) => {
                log::error!("database write failed: {}", info.message());
                ApiError::Unavailable(
                    "the database storage cannot be written (read-only or failing); nothing was changed"
                        .into(),
                )
            }
            Some(StorageFault::ConnectionLost) => {
                log::warn!("database connection lost: {}", info.message());
                ApiError::Unavailable("the database connection was lost; try again".into())
            }
            None => ApiError::internal(format!("database error: {e}")),
        },
        other => ApiError::internal(format!("database error: {other}")),
    }
}

/// A fault of the storage under the database rather than of the request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StorageFault {
    /// No room left (SQLite `SQLITE_FULL`; PostgreSQL `53100 disk_full`): 507.
    Full,
    /// The file system is read-only or failing (SQLite `SQLITE_READONLY`, `SQLITE_IOERR`,
    /// `SQLITE_CANTOPEN`): 503.
    Unwritable,
    /// PostgreSQL ended the connection (`pg_terminate_backend`, shutdown, crash, network): 503.
    ConnectionLost,
}

/// Which storage fault a database error message reports. diesel gives SQLite's and libpq's
/// messages, not their codes; these are the fixed texts of `sqlite3_errstr` and of the
/// PostgreSQL server and libpq.
fn storage_fault(message: &str) -> Option<StorageFault> {
    let m = message.to_ascii_lowercase();
    let any = |needles: &[&str]| needles.iter().any(|n| m.contains(n));
    if any(&[
        "database or disk is full",
        "no space left on device",
        "could not extend file",
    ]) {
        Some(StorageFault::Full)
    } else if any(&[
        "attempt to write a readonly database",
        "disk i/o error",
        "unable to open database file",
        "read-only file system",
    ]) {
        Some(StorageFault::Unwritable)
    } else if any(&[
        "terminating connection",
        "server closed the connection",
        "connection to server",
        "no connection to the server",
        "could not receive data from server",
        "could not send data to server",
        "the database system is shutting down",
        "the database system is starting up",
        "the database system is in recovery mode",
    ]) {
        Some(StorageFault::ConnectionLost)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn storage_faults_from_messages() {
        assert_eq!(
            storage_fault("database or disk is full"),
            Some(StorageFault::Full)
        );
        assert_eq!(
            storage_fault("attempt to write a readonly database"),
            Some(StorageFault::Unwritable)
        );
        assert_eq!(
            storage_fault("disk I/O error"),
            Some(StorageFault::Unwritable)
        );
        assert_eq!(
            storage_fault("terminating connection due to administrator command"),
            Some(StorageFault::ConnectionLost)
        );
        assert_eq!(
            storage_fault("server closed the connection unexpectedly"),
            Some(StorageFault::ConnectionLost)
        );
        assert_eq!(storage_fault("syntax error at or near \"x\""), None);
        assert_eq!(
            storage_fault("UNIQUE constraint failed: resources.res_id"),
            None
        );
    }

    #[test]
    fn url_schemes() {
        assert_eq!(
            DbTarget::parse("sqlite://data/icm.db").unwrap(),
            DbTarget::Sqlite("data/icm.db".into())
        );
        assert_eq!(
            DbTarget::parse("sqlite:///tmp/x.db").unwrap(),
            DbTarget::Sqlite("/tmp/x.db".into())
        );
        assert_eq!(
            DbTarget::parse("postgresql://u@h/db").unwrap().backend(),
            Backend::Postgres
        );
        assert!(DbTarget::parse("mysql://x").is_err());
        assert!(DbTarget::parse("sqlite://").is_err());
    }
}
