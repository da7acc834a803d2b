//! The `export_jobs` table: the state of Bulk Data export jobs, shared by every server process
//! (the files themselves are on disk, written by the process that runs the job).
use diesel::sql_types::{BigInt, Nullable, Text};
use diesel::QueryableByName;

use crate::error::ApiResult;
use crate::store::backend::{db_error, DbConn};
use crate::store::sql::{execute, load, Bind, Sql};

/// One export job.
#[derive(Debug, Clone, QueryableByName)]
pub struct Job {
    #[diesel(sql_type = Text)]
    pub id: String,
    #[diesel(sql_type = Text)]
    pub owner: String,
    #[diesel(sql_type = Text)]
    pub status: String,
    #[diesel(sql_type = Text)]
    pub request: String,
    #[diesel(sql_type = BigInt)]
    pub transaction_time: i64,
    #[diesel(sql_type = Nullable<Text>)]
    pub progress: Option<String>,
    #[diesel(sql_type = Nullable<Text>)]
    pub manifest: Option<String>,
    #[diesel(sql_type = Nullable<Text>)]
    pub error: Option<String>,
    #[diesel(sql_type = BigInt)]
    pub heartbeat: i64,
    #[diesel(sql_type = BigInt)]
    pub created: i64,
}

pub const IN_PROGRESS: &str = "in-progress";
pub const COMPLETED: &str = "completed";
pub const FAILED: &str = "failed";

/// Record a new job (status in-progress).
pub fn insert(conn: &mut DbConn, j: &Job) -> ApiResult<()> {
    let mut q = Sql::new();
    q.push("INSERT INTO export_jobs (id, owner, status, request, transaction_time, progress, heartbeat, created) VALUES (")
        .text(j.id.clone())
        .push(", ")
        .text(j.owner.clone())
        .push(", ")
        .text(j.status.clone())
        .push(", ")
        .text(j.request.clone())
        .push(", ")
        .int(j.transaction_time)
        .push(", ")
        .text(j.progress.clone().unwrap_or_default())
        .push(", ")
        .int(j.heartbeat)
        .push(", ")
        .int(j.created)
        .push(")");
    execute(conn, q).map_err(db_error)?;
    Ok(())
}

/// The job with this id, if any.
pub fn get(conn: &mut DbConn, id: &str) -> ApiResult<Option<Job>> {
    let mut q = Sql::new();
    q.push("SELECT id, owner, status, request, transaction_time, progress, manifest, error, heartbeat, created FROM export_jobs WHERE id = ")
        .text(id);
    Ok(load::<Job>(conn, q).map_err(db_error)?.pop())
}

/// Report progress of a running job; false when the job is no longer in progress (cancelled,
/// or declared failed): the worker then stops.
pub fn progress(conn: &mut DbConn, id: &str, text: &str, now: i64) -> ApiResult<bool> {
    let mut q = Sql::new();
    q.push("UPDATE export_jobs SET progress = ")
        .text(text)
        .push(", heartbeat = ")
        .int(now)
        .push(" WHERE id = ")
        .text(id)
        .push(" AND status = ")
        .text(IN_PROGRESS);
    Ok(execute(conn, q).map_err(db_error)? == 1)
}

/// End a running job: completed with its manifest parts, or failed with a reason. False when
/// the job was cancelled (or already ended) meanwhile.
pub fn finish(
    conn: &mut DbConn,
    id: &str,
    status: &str,
    manifest: Option<&str>,
    error: Option<&str>,
    now: i64,
) -> ApiResult<bool> {
    let opt = |v: Option<&str>| v.map_or(Bind::Null, |s| Bind::Text(s.to_string()));
    let mut q = Sql::new();
    q.push("UPDATE export_jobs SET status = ")
        .text(status)
        .push(", manifest = ")
        .bind(opt(manifest))
        .push(", error = ")
        .bind(opt(error))
        .push(", heartbeat = ")
        .int(now)
        .push(" WHERE id = ")
        .text(id)
        .push(" AND status = ")
        .text(IN_PROGRESS);
    Ok(execute(conn, q).map_err(db_error)? == 1)
}

/// Remove a job (cancelled or deleted by its owner); false when there was none.
pub fn delete(conn: &mut DbConn, id: &str) -> ApiResult<bool> {
    let mut q = Sql::new();
    q.push("DELETE FROM export_jobs WHERE id = ").text(id);
    Ok(execute(conn, q).map_err(db_error)? == 1)
}
