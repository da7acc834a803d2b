//! Persistence of R4 Subscriptions' delivery state: the `subscription_access` rows (criteria
//! type and subscriber of each Subscription) and the `subscription_outbox` with its leases.
//! Rules (what matches, who may see it, when to give up) are service::subscriptions'.
use diesel::sql_types::{BigInt, Nullable, Text};
use diesel::QueryableByName;

use crate::error::ApiResult;
use crate::store::backend::{db_error, DbConn};
use crate::store::sql::{execute, is_pg, load, Sql};

/// Record (or update) the criteria type of a Subscription and its subscriber (an existing
/// subscriber is replaced only when `replace`).
pub fn register(
    conn: &mut DbConn,
    subscription_id: &str,
    criteria_type: &str,
    principal: &str,
    replace: bool,
) -> ApiResult<()> {
    let mut q = Sql::new();
    q.push("INSERT INTO subscription_access (subscription_id, criteria_type, principal) VALUES (")
        .text(subscription_id)
        .push(", ")
        .text(criteria_type)
        .push(", ")
        .text(principal)
        .push(
            ") ON CONFLICT (subscription_id) DO UPDATE SET criteria_type = excluded.criteria_type",
        );
    if replace {
        q.push(", principal = excluded.principal");
    }
    execute(conn, &q).map_err(db_error)?;
    Ok(())
}

/// A current Subscription on some type, with its subscriber.
#[derive(QueryableByName, Debug)]
pub struct Registered {
    #[diesel(sql_type = Text)]
    pub subscription_id: String,
    #[diesel(sql_type = Text)]
    pub principal: String,
    #[diesel(sql_type = Nullable<Text>)]
    pub content: Option<String>,
}

/// The current (not deleted) Subscriptions whose criteria are on `ty`.
pub fn on_type(conn: &mut DbConn, ty: &str) -> ApiResult<Vec<Registered>> {
    let mut q = Sql::new();
    q.push(
        "SELECT s.subscription_id, s.principal, r.content FROM subscription_access s \
         JOIN resources r ON r.res_type = 'Subscription' AND r.res_id = s.subscription_id \
         WHERE NOT r.deleted AND s.criteria_type = ",
    )
    .text(ty)
    .push(" ORDER BY s.subscription_id");
    load(conn, &q).map_err(db_error)
}

/// One notification to send.
#[allow(clippy::too_many_arguments)]
pub fn enqueue(
    conn: &mut DbConn,
    subscription_id: &str,
    channel: &str,
    ty: &str,
    id: &str,
    version: i64,
    now: i64,
) -> ApiResult<()> {
    let mut q = Sql::new();
    q.push(
        "INSERT INTO subscription_outbox (subscription_id, channel, res_type, res_id, version_id, \
         created_at, next_attempt_at) VALUES (",
    )
    .text(subscription_id)
    .push(", ")
    .text(channel)
    .push(", ")
    .text(ty)
    .push(", ")
    .text(id)
    .push(", ")
    .int(version)
    .push(", ")
    .int(now)
    .push(", ")
    .int(now)
    .push(")");
    execute(conn, &q).map_err(db_error)?;
    Ok(())
}

/// A leased outbox row.
#[derive(QueryableByName, Debug, Clone)]
pub struct Claimed {
    #[diesel(sql_type = BigInt)]
    pub pk: i64,
    #[diesel(sql_type = Text)]
    pub subscription_id: String,
    #[diesel(sql_type = Text)]
    pub res_type: String,
    #[diesel(sql_type = Text)]
    pub res_id: String,
    #[diesel(sql_type = BigInt)]
    pub version_id: i64,
    #[diesel(sql_type = BigInt)]
    pub attempts: i64,
}

/// Lease up to `limit` pending rows of `channel` that are due and not leased by anyone else
/// (or whose lease ran out), to `owner` until `now + lease`. PostgreSQL skips rows another
/// process is claiming at the same moment (`FOR UPDATE SKIP LOCKED`); on SQLite the single
/// conditional UPDATE runs under the database's one writer lock. `only` restricts the claim
/// to these subscriptions (websocket: those bound to this process).
pub fn claim(
    conn: &mut DbConn,
    owner: &str,
    channel: &str,
    only: Option<&[String]>,
    now: i64,
    lease: i64,
    limit: i64,
) -> ApiResult<Vec<Claimed>> {
    let due = |q: &mut Sql| {
        q.push("state = 'pending' AND channel = ")
            .text(channel)
            .push(" AND next_attempt_at <= ")
            .int(now)
            .push(" AND (leased_until IS NULL OR leased_until < ")
            .int(now)
            .push(")");
        if let Some(ids) = only {
            q.push(" AND subscription_id IN ").text_list(ids);
        }
    };
    if only.is_some_and(|ids| ids.is_empty()) {
        return Ok(vec![]);
    }
    let mut q = Sql::new();
    q.push("UPDATE subscription_outbox SET lease_owner = ")
        .text(owner)
        .push(", leased_until = ")
        .int(now + lease)
        .push(" WHERE pk IN (SELECT pk FROM subscription_outbox WHERE ");
    due(&mut q);
    q.push(" ORDER BY pk").limit(limit);
    if is_pg(conn) {
        q.push(" FOR UPDATE SKIP LOCKED");
    }
    q.push(") AND ");
    due(&mut q);
    q.push(" RETURNING pk, subscription_id, res_type, res_id, version_id, attempts");
    let mut rows: Vec<Claimed> = load(conn, &q).map_err(db_error)?;
    rows.sort_by_key(|r| r.pk);
    Ok(rows)
}

/// Close a leased row: `state` 'delivered', 'failed' or 'dropped'. False when the lease was
/// lost (another worker took the row after the lease ran out).
pub fn finish(
    conn: &mut DbConn,
    pk: i64,
    owner: &str,
    state: &str,
    now: i64,
    error: Option<&str>,
) -> ApiResult<bool> {
    let mut q = Sql::new();
    q.push("UPDATE subscription_outbox SET state = ")
        .text(state)
        .push(", finished_at = ")
        .int(now)
        .push(", leased_until = NULL, attempts = attempts + ")
        .int(i64::from(state != "dropped"));
    if let Some(e) = error {
        q.push(", last_error = ").text(e);
    }
    q.push(" WHERE pk = ")
        .int(pk)
        .push(" AND lease_owner = ")
        .text(owner)
        .push(" AND state = 'pending'");
    Ok(execute(conn, &q).map_err(db_error)? == 1)
}

/// A failed attempt on a leased row: try again at `next_at`.
pub fn retry_later(
    conn: &mut DbConn,
    pk: i64,
    owner: &str,
    next_at: i64,
    error: &str,
) -> ApiResult<bool> {
    let mut q = Sql::new();
    q.push("UPDATE subscription_outbox SET attempts = attempts + 1, next_attempt_at = ")
        .int(next_at)
        .push(", leased_until = NULL, lease_owner = NULL, last_error = ")
        .text(error)
        .push(" WHERE pk = ")
        .int(pk)
        .push(" AND lease_owner = ")
        .text(owner)
        .push(" AND state = 'pending'");
    Ok(execute(conn, &q).map_err(db_error)? == 1)
}

/// Give a leased row back untouched (a websocket client went away before it was pinged).
pub fn release(conn: &mut DbConn, pk: i64, owner: &str) -> ApiResult<bool> {
    let mut q = Sql::new();
    q.push("UPDATE subscription_outbox SET leased_until = NULL, lease_owner = NULL WHERE pk = ")
        .int(pk)
        .push(" AND lease_owner = ")
        .text(owner)
        .push(" AND state = 'pending'");
    Ok(execute(conn, &q).map_err(db_error)? == 1)
}

/// Outbox rows by state (for /metrics and tests): (state, count).
pub fn counts(conn: &mut DbConn) -> ApiResult<Vec<(String, i64)>> {
    #[derive(QueryableByName)]
    struct C {
        #[diesel(sql_type = Text)]
        state: String,
        #[diesel(sql_type = BigInt)]
        n: i64,
    }
    let mut q = Sql::new();
    q.push("SELECT state, COUNT(*) AS n FROM subscription_outbox GROUP BY state ORDER BY state");
    let rows: Vec<C> = load(conn, &q).map_err(db_error)?;
    Ok(rows.into_iter().map(|c| (c.state, c.n)).collect())
}
