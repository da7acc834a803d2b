//! `icm-fhir backup PATH` on SQLite: a consistent copy of a database that may be serving.
//! `VACUUM INTO` copies one read snapshot (WAL mode lets the server keep writing meanwhile) into
//! a new, compact file; SQLite's step-wise backup API would restart whenever the server writes,
//! so under a steady write load it might never finish. PostgreSQL is backed up with pg_dump
//! (see `icm-fhir backup` and the README).
use std::path::Path;

use diesel::connection::SimpleConnection;
use diesel::{Connection, SqliteConnection};

use crate::store::backend::DbTarget;

/// Copy the SQLite database at `source` (a DATABASE_URL) to the new file `dest`.
pub fn sqlite_backup(source: &str, dest: &Path) -> Result<(), String> {
    let path = match DbTarget::parse(source)? {
        DbTarget::Sqlite(p) => p,
        DbTarget::Postgres(_) => return Err("not a SQLite database URL".into()),
    };
    if !Path::new(&path).exists() {
        return Err(format!("no database at {path}"));
    }
    if dest.exists() {
        return Err(format!("{} exists; give a new file name", dest.display()));
    }
    let dest_text = dest
        .to_str()
        .ok_or_else(|| format!("{} is not a UTF-8 path", dest.display()))?;
    let mut c =
        SqliteConnection::establish(&path).map_err(|e| format!("cannot open {path}: {e}"))?;
    c.batch_execute("PRAGMA busy_timeout = 30000;")
        .map_err(|e| e.to_string())?;
    // A literal, quotes doubled: VACUUM INTO takes an expression but diesel's batch API no binds.
    c.batch_execute(&format!("VACUUM INTO '{}'", dest_text.replace('\'', "''")))
        .map_err(|e| format!("backup failed: {e}"))?;
    Ok(())
}
