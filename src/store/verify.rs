//! `icm-fhir verify`: check a database without changing it. Every current resource parses and
//! names itself (type, id, versionId), its search index rows are exactly what the indexer
//! (store::index, fhir::search::extract) would write today, it has a full-text row unless
//! deleted, its history is gap-free (versions 1..=current, the newest equal to the current row),
//! and no index or history row belongs to no resource. Runs in one read snapshot, so it may run
//! against a serving database.
use std::collections::BTreeMap;

use diesel::connection::SimpleConnection;
use diesel::sql_types::{BigInt, Bool, Double, Nullable, Text};
use diesel::QueryableByName;
use serde_json::Value;

use crate::error::ApiResult;
use crate::fhir::search::extract::extract;
use crate::store::backend::{db_error, DbConn, Store};
use crate::store::sql::{is_pg, load, Sql};

/// What `verify` found.
#[derive(Debug, Default)]
pub struct Report {
    pub resources: u64,
    pub deleted: u64,
    pub history_rows: u64,
    pub index_rows: u64,
    pub audit_events: u64,
    /// One line per problem (empty: the database is consistent).
    pub problems: Vec<String>,
}

impl Report {
    pub fn ok(&self) -> bool {
        self.problems.is_empty()
    }
    fn problem(&mut self, p: String) {
        self.problems.push(p);
    }
}

#[derive(Clone, QueryableByName)]
struct ResRow {
    #[diesel(sql_type = BigInt)]
    pk: i64,
    #[diesel(sql_type = Text)]
    res_type: String,
    #[diesel(sql_type = Text)]
    res_id: String,
    #[diesel(sql_type = BigInt)]
    version_id: i64,
    #[diesel(sql_type = Bool)]
    deleted: bool,
    #[diesel(sql_type = Nullable<Text>)]
    content: Option<String>,
}

/// An index row of the text-valued tables (string, token, reference, uri), up to three values.
#[derive(QueryableByName)]
struct TextIdx {
    #[diesel(sql_type = BigInt)]
    resource_pk: i64,
    #[diesel(sql_type = Text)]
    res_type: String,
    #[diesel(sql_type = Text)]
    param: String,
    #[diesel(sql_type = BigInt)]
    grp: i64,
    #[diesel(sql_type = Nullable<Text>)]
    a: Option<String>,
    #[diesel(sql_type = Nullable<Text>)]
    b: Option<String>,
    #[diesel(sql_type = Nullable<Text>)]
    c: Option<String>,
}

/// An index row of the numeric tables (number, quantity: a value and up to three texts).
#[derive(QueryableByName)]
struct NumIdx {
    #[diesel(sql_type = BigInt)]
    resource_pk: i64,
    #[diesel(sql_type = Text)]
    res_type: String,
    #[diesel(sql_type = Text)]
    param: String,
    #[diesel(sql_type = BigInt)]
    grp: i64,
    #[diesel(sql_type = Double)]
    value: f64,
    #[diesel(sql_type = Nullable<Text>)]
    a: Option<String>,
    #[diesel(sql_type = Nullable<Text>)]
    b: Option<String>,
    #[diesel(sql_type = Nullable<Text>)]
    c: Option<String>,
}

#[derive(QueryableByName)]
struct DateIdx {
    #[diesel(sql_type = BigInt)]
    resource_pk: i64,
    #[diesel(sql_type = Text)]
    res_type: String,
    #[diesel(sql_type = Text)]
    param: String,
    #[diesel(sql_type = BigInt)]
    grp: i64,
    #[diesel(sql_type = BigInt)]
    low: i64,
    #[diesel(sql_type = BigInt)]
    high: i64,
}

#[derive(QueryableByName)]
struct Pk {
    #[diesel(sql_type = BigInt)]
    pk: i64,
}

#[derive(QueryableByName)]
struct Count {
    #[diesel(sql_type = BigInt)]
    n: i64,
}

#[derive(QueryableByName)]
struct HistoryProblem {
    #[diesel(sql_type = Text)]
    res_type: String,
    #[diesel(sql_type = Text)]
    res_id: String,
    #[diesel(sql_type = BigInt)]
    version_id: i64,
    #[diesel(sql_type = BigInt)]
    n: i64,
    #[diesel(sql_type = Nullable<BigInt>)]
    lo: Option<i64>,
    #[diesel(sql_type = Nullable<BigInt>)]
    hi: Option<i64>,
}

#[derive(QueryableByName)]
struct TypeId {
    #[diesel(sql_type = Text)]
    res_type: String,
    #[diesel(sql_type = Text)]
    res_id: String,
}

#[derive(QueryableByName)]
struct AuditRow {
    #[diesel(sql_type = BigInt)]
    pk: i64,
    #[diesel(sql_type = Text)]
    res_id: String,
    #[diesel(sql_type = Text)]
    content: String,
}

/// Resources checked per round trip.
const BATCH: i64 = 500;
/// Problems listed in full; beyond this only counted.
const MAX_LISTED: usize = 200;

fn opt(s: &Option<String>) -> String {
    match s {
        Some(v) => format!("{v:?}"),
        None => "NULL".into(),
    }
}

/// The canonical text of an index row: table, parameter, group and values. Expected and stored
/// rows are compared as sorted lists of these.
fn key(table: &str, param: &str, grp: i64, values: &[String]) -> String {
    format!("{table} {param} grp={grp} {}", values.join(" "))
}

/// The rows re-indexing `resource` (of type `ty`) would write, as canonical texts.
fn expected_rows(ty: &str, resource: &Value) -> Vec<String> {
    let rows = extract(ty, resource);
    let mut out = Vec::new();
    for r in rows.strings {
        out.push(key(
            "search_string",
            &r.param,
            r.grp,
            &[
                format!("{:?}", r.norm),
                format!("{:?}", r.exact),
                "NULL".into(),
            ],
        ));
    }
    for r in rows.tokens {
        out.push(key(
            "search_token",
            &r.param,
            r.grp,
            &[opt(&r.system), opt(&r.code), opt(&r.display)],
        ));
    }
    for r in rows.dates {
        out.push(key(
            "search_date",
            &r.param,
            r.grp,
            &[r.low.to_string(), r.high.to_string()],
        ));
    }
    for r in rows.references {
        out.push(key(
            "search_reference",
            &r.param,
            r.grp,
            &[opt(&r.target_type), opt(&r.target_id), opt(&r.target_url)],
        ));
    }
    for r in rows.numbers {
        out.push(key(
            "search_number",
            &r.param,
            r.grp,
            &[
                format!("{:?}", r.value),
                "NULL".into(),
                "NULL".into(),
                "NULL".into(),
            ],
        ));
    }
    for r in rows.quantities {
        out.push(key(
            "search_quantity",
            &r.param,
            r.grp,
            &[
                format!("{:?}", r.value),
                opt(&r.system),
                opt(&r.code),
                opt(&r.unit),
            ],
        ));
    }
    for r in rows.uris {
        out.push(key(
            "search_uri",
            &r.param,
            r.grp,
            &[format!("{:?}", r.value), "NULL".into(), "NULL".into()],
        ));
    }
    out.sort();
    out
}

/// Text-valued index tables and the columns read as (a, b, c).
const TEXT_TABLES: &[(&str, &str)] = &[
    (
        "search_string",
        "value_norm AS a, value_exact AS b, CAST(NULL AS TEXT) AS c",
    ),
    ("search_token", "system AS a, code AS b, display_norm AS c"),
    (
        "search_reference",
        "target_type AS a, target_id AS b, target_url AS c",
    ),
    (
        "search_uri",
        "value AS a, CAST(NULL AS TEXT) AS b, CAST(NULL AS TEXT) AS c",
    ),
];

const NUM_TABLES: &[(&str, &str)] = &[
    (
        "search_number",
        "CAST(NULL AS TEXT) AS a, CAST(NULL AS TEXT) AS b, CAST(NULL AS TEXT) AS c",
    ),
    ("search_quantity", "system AS a, code AS b, unit AS c"),
];

const ALL_TABLES: &[&str] = &[
    "search_string",
    "search_token",
    "search_date",
    "search_reference",
    "search_number",
    "search_quantity",
    "search_uri",
];

fn range(q: &mut Sql, col: &str, lo: i64, hi: i64) {
    q.push(" WHERE ")
        .push(col)
        .push(" >= ")
        .int(lo)
        .push(" AND ")
        .push(col)
        .push(" <= ")
        .int(hi);
}

/// The stored index rows of resource rows lo..=hi, by pk, as canonical texts (plus the type
/// each row was filed under, which must be the resource's).
fn stored_rows(
    conn: &mut DbConn,
    lo: i64,
    hi: i64,
) -> ApiResult<BTreeMap<i64, Vec<(String, String)>>> {
    let mut by_pk: BTreeMap<i64, Vec<(String, String)>> = BTreeMap::new();
    for (table, cols) in TEXT_TABLES {
        let mut q = Sql::new();
        q.push(&format!(
            "SELECT resource_pk, res_type, param, grp, {cols} FROM {table}"
        ));
        range(&mut q, "resource_pk", lo, hi);
        let rows: Vec<TextIdx> = load(conn, &q).map_err(db_error)?;
        for r in rows {
            // Text tables keep strings quoted like the expected side (`{:?}`); a NULL in a NOT
            // NULL column cannot happen.
            let vals = [opt(&r.a), opt(&r.b), opt(&r.c)];
            by_pk
                .entry(r.resource_pk)
                .or_default()
                .push((r.res_type, key(table, &r.param, r.grp, &vals)));
        }
    }
    for (table, cols) in NUM_TABLES {
        let mut q = Sql::new();
        q.push(&format!(
            "SELECT resource_pk, res_type, param, grp, value, {cols} FROM {table}"
        ));
        range(&mut q, "resource_pk", lo, hi);
        let rows: Vec<NumIdx> = load(conn, &q).map_err(db_error)?;
        for r in rows {
            let vals = [format!("{:?}", r.value), opt(&r.a), opt(&r.b), opt(&r.c)];
            by_pk
                .entry(r.resource_pk)
                .or_default()
                .push((r.res_type, key(table, &r.param, r.grp, &vals)));
        }
    }
    let mut q = Sql::new();
    q.push("SELECT resource_pk, res_type, param, grp, low, high FROM search_date");
    range(&mut q, "resource_pk", lo, hi);
    let rows: Vec<DateIdx> = load(conn, &q).map_err(db_error)?;
    for r in rows {
        let vals = [r.low.to_string(), r.high.to_string()];
        by_pk
            .entry(r.resource_pk)
            .or_default()
            .push((r.res_type, key("search_date", &r.param, r.grp, &vals)));
    }
    Ok(by_pk)
}

/// Resource rows lo..=hi that have a full-text row.
fn fulltext_pks(conn: &mut DbConn, lo: i64, hi: i64) -> ApiResult<std::collections::HashSet<i64>> {
    let col = if is_pg(conn) { "resource_pk" } else { "rowid" };
    let mut q = Sql::new();
    q.push(&format!("SELECT {col} AS pk FROM search_fulltext"));
    range(&mut q, col, lo, hi);
    let rows: Vec<Pk> = load(conn, &q).map_err(db_error)?;
    Ok(rows.into_iter().map(|r| r.pk).collect())
}

/// A multiset difference, for the report: rows in `a` not in `b` (both sorted).
fn missing(a: &[String], b: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    let (mut i, mut j) = (0, 0);
    while i < a.len() {
        if j < b.len() && a[i] == b[j] {
            i += 1;
            j += 1;
        } else if j < b.len() && b[j] < a[i] {
            j += 1;
        } else {
            out.push(a[i].clone());
            i += 1;
        }
    }
    out
}

/// Check one resource row: content, index rows, full-text row.
fn check_resource(
    report: &mut Report,
    r: &ResRow,
    stored: Vec<(String, String)>,
    has_fulltext: bool,
) {
    let name = format!("{}/{} (row {})", r.res_type, r.res_id, r.pk);
    let mut expected = Vec::new();
    if r.deleted {
        report.deleted += 1;
        if r.content.is_some() {
            report.problem(format!("{name}: deleted but still has content"));
        }
    } else {
        match r.content.as_deref().map(serde_json::from_str::<Value>) {
            None => report.problem(format!("{name}: no content and not deleted")),
            Some(Err(e)) => report.problem(format!("{name}: content is not JSON: {e}")),
            Some(Ok(v)) => {
                let rt = v.get("resourceType").and_then(Value::as_str);
                let id = v.get("id").and_then(Value::as_str);
                let vid = v.pointer("/meta/versionId").and_then(Value::as_str);
                if rt != Some(r.res_type.as_str()) {
                    report.problem(format!("{name}: content has resourceType {rt:?}"));
                }
                if id != Some(r.res_id.as_str()) {
                    report.problem(format!("{name}: content has id {id:?}"));
                }
                if vid != Some(r.version_id.to_string().as_str()) {
                    report.problem(format!(
                        "{name}: content has meta.versionId {vid:?}, the row {}",
                        r.version_id
                    ));
                }
                expected = expected_rows(&r.res_type, &v);
            }
        }
        if !has_fulltext {
            report.problem(format!("{name}: no full-text row"));
        }
    }
    if r.deleted && has_fulltext {
        report.problem(format!("{name}: deleted but has a full-text row"));
    }
    for (ty, k) in &stored {
        if *ty != r.res_type {
            report.problem(format!("{name}: index row filed under type {ty}: {k}"));
        }
    }
    let mut actual: Vec<String> = stored.into_iter().map(|(_, k)| k).collect();
    actual.sort();
    report.index_rows += actual.len() as u64;
    if actual != expected {
        for m in missing(&expected, &actual) {
            report.problem(format!("{name}: index row missing: {m}"));
        }
        for m in missing(&actual, &expected) {
            report.problem(format!("{name}: unexpected index row: {m}"));
        }
    }
}

fn count(conn: &mut DbConn, sql: &str) -> ApiResult<i64> {
    let mut q = Sql::new();
    q.push(sql);
    let rows: Vec<Count> = load(conn, &q).map_err(db_error)?;
    Ok(rows.first().map_or(0, |c| c.n))
}

fn run_checks(conn: &mut DbConn, report: &mut Report) -> ApiResult<()> {
    // Index rows are compared with today's extraction rules; a database indexed by older rules
    // is reindexed at the next start (index::ensure_current), so say that instead of listing
    // every row.
    let stored_version = crate::store::index::stored_version(conn)?;
    let any = count(conn, "SELECT COUNT(*) AS n FROM resources")?;
    let compare_index = stored_version >= crate::store::index::INDEX_VERSION || any == 0;
    if !compare_index {
        report.problem(format!(
            "search index built with rules version {stored_version}, the server's are {}: \
             start the server or run `icm-fhir reindex` to rebuild it",
            crate::store::index::INDEX_VERSION
        ));
    }

    // Resources, in pk batches.
    let mut after = 0i64;
    loop {
        let mut q = Sql::new();
        q.push(
            "SELECT pk, res_type, res_id, version_id, deleted, content FROM resources \
             WHERE pk > ",
        )
        .int(after)
        .push(" ORDER BY pk")
        .limit(BATCH);
        let rows: Vec<ResRow> = load(conn, &q).map_err(db_error)?;
        let Some(last) = rows.last() else {
            break;
        };
        // From just after the previous batch: index rows of pks no resource row has are found.
        let (lo, hi) = (after + 1, last.pk);
        let mut stored = if compare_index {
            stored_rows(conn, lo, hi)?
        } else {
            BTreeMap::new()
        };
        let ft = fulltext_pks(conn, lo, hi)?;
        for r in &rows {
            report.resources += 1;
            let mine = stored.remove(&r.pk).unwrap_or_default();
            if compare_index {
                if r.res_type == "Group" && !r.deleted {
                    // Members kept as rows (store::members) are indexed as the read Group.
                    let mut g = r.clone();
                    g.content = crate::store::members::fill(conn, "Group", g.content.take())?;
                    check_resource(report, &g, mine, ft.contains(&r.pk));
                    continue;
                }
                check_resource(report, r, mine, ft.contains(&r.pk));
            }
        }
        // Index rows in this pk range whose resource row does not exist.
        for (pk, rows) in stored {
            report.problem(format!(
                "{} index row(s) of resource row {pk}, which does not exist",
                rows.len()
            ));
        }
        after = hi;
    }
    // Index rows beyond the last resource row (or in an empty database).
    for t in ALL_TABLES {
        let n = count(
            conn,
            &format!(
                "SELECT COUNT(*) AS n FROM {t} WHERE resource_pk > {after} OR resource_pk < 1"
            ),
        )?;
        if n > 0 {
            report.problem(format!(
                "{t}: {n} row(s) of resource rows that do not exist"
            ));
        }
    }

    // History: versions 1..=current for every resource, nothing else.
    report.history_rows = count(conn, "SELECT COUNT(*) AS n FROM resource_history")? as u64;
    let mut q = Sql::new();
    q.push(
        "SELECT r.res_type, r.res_id, r.version_id, COUNT(h.hid) AS n, MIN(h.version_id) AS lo, \
         MAX(h.version_id) AS hi FROM resources r LEFT JOIN resource_history h \
         ON h.res_type = r.res_type AND h.res_id = r.res_id \
         GROUP BY r.pk, r.res_type, r.res_id, r.version_id \
         HAVING COUNT(h.hid) <> r.version_id OR MIN(h.version_id) <> 1 \
         OR MAX(h.version_id) <> r.version_id",
    );
    let gaps: Vec<HistoryProblem> = load(conn, &q).map_err(db_error)?;
    for g in gaps {
        report.problem(format!(
            "{}/{}: current version {} but history has {} version(s) ({}..{})",
            g.res_type,
            g.res_id,
            g.version_id,
            g.n,
            g.lo.map_or("-".into(), |v| v.to_string()),
            g.hi.map_or("-".into(), |v| v.to_string()),
        ));
    }
    let mut q = Sql::new();
    q.push(
        "SELECT DISTINCT h.res_type, h.res_id FROM resource_history h LEFT JOIN resources r \
         ON r.res_type = h.res_type AND r.res_id = h.res_id WHERE r.pk IS NULL",
    );
    let orphans: Vec<TypeId> = load(conn, &q).map_err(db_error)?;
    for o in orphans {
        report.problem(format!(
            "{}/{}: history without a current row",
            o.res_type, o.res_id
        ));
    }
    let mut q = Sql::new();
    q.push(
        "SELECT r.res_type, r.res_id FROM resources r JOIN resource_history h \
         ON h.res_type = r.res_type AND h.res_id = r.res_id AND h.version_id = r.version_id \
         WHERE h.deleted <> r.deleted OR COALESCE(h.content, '') <> COALESCE(r.content, '')",
    );
    let differ: Vec<TypeId> = load(conn, &q).map_err(db_error)?;
    for d in differ {
        report.problem(format!(
            "{}/{}: the newest history version differs from the current row",
            d.res_type, d.res_id
        ));
    }

    // The audit trail: every AuditEvent parses and names itself.
    let mut after = 0i64;
    loop {
        let mut q = Sql::new();
        q.push("SELECT pk, res_id, content FROM audit_log WHERE pk > ")
            .int(after)
            .push(" ORDER BY pk")
            .limit(BATCH);
        let rows: Vec<AuditRow> = load(conn, &q).map_err(db_error)?;
        let Some(last) = rows.last() else { break };
        after = last.pk;
        for a in &rows {
            report.audit_events += 1;
            match serde_json::from_str::<Value>(&a.content) {
                Ok(v)
                    if v.get("resourceType").and_then(Value::as_str) == Some("AuditEvent")
                        && v.get("id").and_then(Value::as_str) == Some(a.res_id.as_str()) => {}
                Ok(_) => report.problem(format!(
                    "AuditEvent/{} (audit row {}): content is not that AuditEvent",
                    a.res_id, a.pk
                )),
                Err(e) => report.problem(format!(
                    "AuditEvent/{} (audit row {}): content is not JSON: {e}",
                    a.res_id, a.pk
                )),
            }
        }
    }
    Ok(())
}

/// Verify the database behind `store` in one read snapshot.
pub fn verify(store: &Store) -> Result<Report, String> {
    let mut report = Report::default();
    let mut conn = store.conn().map_err(|e| e.to_string())?;
    let pending = match &mut *conn {
        DbConn::Pg(c) => diesel_migrations::MigrationHarness::has_pending_migration(
            c,
            crate::store::backend::PG_MIGRATIONS,
        ),
        DbConn::Sqlite(c) => diesel_migrations::MigrationHarness::has_pending_migration(
            c,
            crate::store::backend::SQLITE_MIGRATIONS,
        ),
    }
    .map_err(|e| format!("cannot read the migration table: {e}"))?;
    if pending {
        return Err(
            "the database schema is behind this server's: run `icm-fhir migrate` first".into(),
        );
    }
    let begin = if is_pg(&conn) {
        "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY"
    } else {
        "BEGIN"
    };
    conn.batch_execute(begin)
        .map_err(|e| format!("cannot start a read transaction: {e}"))?;
    let r = run_checks(&mut conn, &mut report);
    let _ = conn.batch_execute("ROLLBACK");
    r.map_err(|e| e.to_string())?;
    Ok(report)
}

/// The report as printed by `icm-fhir verify`.
pub fn render(r: &Report) -> String {
    let mut out = format!(
        "checked {} resource(s) ({} deleted), {} history row(s), {} index row(s), {} AuditEvent(s)\n",
        r.resources, r.deleted, r.history_rows, r.index_rows, r.audit_events
    );
    if r.ok() {
        out.push_str("OK: no problems found\n");
        return out;
    }
    for p in r.problems.iter().take(MAX_LISTED) {
        out.push_str("problem: ");
        out.push_str(p);
        out.push('\n');
    }
    if r.problems.len() > MAX_LISTED {
        out.push_str(&format!("… and {} more\n", r.problems.len() - MAX_LISTED));
    }
    out.push_str(&format!("FAILED: {} problem(s)\n", r.problems.len()));
    out
}
