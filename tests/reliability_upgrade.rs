//! Schema upgrade with data (issue 17): a database built with the oldest supported migration set
//! (the first schema: `resources`, `resource_history` and the search-index tables, before group
//! numbers, the audit trail, index versions and full-text rows), filled the way the first server
//! wrote it, is upgraded by the server's own start-up path (`Store::migrate`: pending migrations,
//! AuditEvents moved into the audit trail, the index rebuilt because INDEX_VERSION moved on). The
//! upgraded database passes `verify`, searches find the old data by the new index (also by
//! parameters the old one lacked), and no migration rewrote a stored resource: every content
//! text is byte-for-byte what was stored before.
mod common;
use common::*;
use diesel::connection::SimpleConnection;
use diesel::migration::MigrationSource;
use diesel::prelude::*;
use diesel_migrations::MigrationHarness;
use icm_fhir::store::backend::{PG_MIGRATIONS, SQLITE_MIGRATIONS};
use icm_fhir::store::Store;
use std::time::Duration;

/// Migrations of the first schema (the oldest set an upgrade is supported from).
const OLDEST: &[&str] = &[
    "2026-11-25-000001_resources",
    "2026-11-25-000100_search_index",
];

/// Apply exactly the OLDEST migrations.
fn run_oldest<DB, C>(conn: &mut C, source: diesel_migrations::EmbeddedMigrations)
where
    DB: diesel::backend::Backend,
    C: MigrationHarness<DB> + diesel::migration::MigrationConnection,
    diesel_migrations::EmbeddedMigrations: MigrationSource<DB>,
{
    conn.setup().unwrap();
    let mut all = MigrationSource::<DB>::migrations(&source).unwrap();
    all.sort_by_key(|m| m.name().to_string());
    let names: Vec<String> = all.iter().map(|m| m.name().to_string()).collect();
    assert!(
        names.len() > OLDEST.len(),
        "the current set adds migrations to the oldest: {names:?}"
    );
    for (m, want) in all.iter().zip(OLDEST) {
        let name = m.name().to_string();
        assert!(name.starts_with(want), "{name} is not {want}");
        conn.run_migration(&**m).unwrap();
    }
}

/// One stored version, as the first server wrote it: compact JSON with id and meta first, in
/// the order received otherwise, decimals kept as written (1.50, 3.0e2).
struct Row {
    ty: &'static str,
    id: String,
    version: i64,
    deleted: bool,
    content: Option<String>,
}

fn stamped(ty: &str, id: &str, version: i64, rest: &str) -> String {
    let lu = format!("2026-11-25T10:00:0{version}.000Z");
    format!(
        r#"{{"resourceType":"{ty}","id":"{id}","meta":{{"versionId":"{version}","lastUpdated":"{lu}"}},{rest}}}"#
    )
}

/// The history of the old database: Patients (two with a second version, one deleted),
/// Observations with decimals that must survive byte for byte, a CarePlan, an AuditEvent (kept
/// in `resources` before the audit trail existed).
fn rows() -> Vec<Row> {
    let mut out = Vec::new();
    for i in 0..20 {
        let id = format!("old-p{i}");
        let v1 = stamped(
            "Patient",
            &id,
            1,
            &format!(
                r#""name":[{{"family":"Ältere{i}","given":["Öld"]}}],"gender":"female","birthDate":"1940-0{}-15","identifier":[{{"system":"urn:old","value":"o-{i}"}}]"#,
                i % 9 + 1
            ),
        );
        out.push(Row {
            ty: "Patient",
            id: id.clone(),
            version: 1,
            deleted: false,
            content: Some(v1),
        });
        if i % 5 == 0 {
            out.push(Row {
                ty: "Patient",
                id: id.clone(),
                version: 2,
                deleted: false,
                content: Some(stamped(
                    "Patient",
                    &id,
                    2,
                    &format!(
                        r#""name":[{{"family":"Ältere{i}","given":["Updated"]}}],"active":true"#
                    ),
                )),
            });
        }
        if i == 7 {
            out.push(Row {
                ty: "Patient",
                id: id.clone(),
                version: 2,
                deleted: true,
                content: None,
            });
        }
        out.push(Row {
            ty: "Observation",
            id: format!("old-o{i}"),
            version: 1,
            deleted: false,
            content: Some(stamped(
                "Observation",
                &format!("old-o{i}"),
                1,
                &format!(
                    r#""status":"final","code":{{"coding":[{{"system":"http://loinc.org","code":"29463-7"}}]}},"subject":{{"reference":"Patient/old-p{i}"}},"effectiveDateTime":"2026-01-0{}","valueQuantity":{{"value":{}.50,"unit":"kg","system":"http://unitsofmeasure.org","code":"kg"}},"component":[{{"code":{{"coding":[{{"system":"http://loinc.org","code":"8480-6"}}]}},"valueQuantity":{{"value":1.20e2,"system":"http://unitsofmeasure.org","code":"mm[Hg]"}}}}]"#,
                    i % 9 + 1,
                    60 + i
                ),
            )),
        });
    }
    out.push(Row {
        ty: "CarePlan",
        id: "old-cp".into(),
        version: 1,
        deleted: false,
        content: Some(stamped(
            "CarePlan",
            "old-cp",
            1,
            r#""status":"active","intent":"plan","subject":{"reference":"Patient/old-p1"},"text":{"status":"generated","div":"<div xmlns=\"http://www.w3.org/1999/xhtml\">Diabetes follow-up plan</div>"}"#,
        )),
    });
    out.push(Row {
        ty: "AuditEvent",
        id: "old-ae".into(),
        version: 1,
        deleted: false,
        content: Some(stamped(
            "AuditEvent",
            "old-ae",
            1,
            r#""type":{"system":"http://terminology.hl7.org/CodeSystem/audit-event-type","code":"rest"},"recorded":"2026-11-25T10:00:00Z","agent":[{"who":{"reference":"Practitioner/x"},"requestor":true}],"source":{"observer":{"display":"icm-fhir"}}"#,
        )),
    });
    out
}

/// The lastUpdated column of version `v`: the instant its meta.lastUpdated says
/// (2026-11-25T10:00:0v.000Z), in microseconds.
fn micros(v: i64) -> i64 {
    (1_795_600_800 + v) * 1_000_000
}

fn q(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// SQL filling the old schema: history rows for every version, the current row per resource,
/// and index rows as the old indexer left them (here: one stale row per resource, which the
/// upgrade's reindex must remove).
fn fill_sql(pg: bool) -> String {
    let mut sql = String::new();
    let rows = rows();
    for r in &rows {
        let content = r.content.as_deref().map_or("NULL".into(), q);
        sql.push_str(&format!(
            "INSERT INTO resource_history (res_type, res_id, version_id, last_updated, method, deleted, content) \
             VALUES ({}, {}, {}, {}, {}, {}, {content});\n",
            q(r.ty),
            q(&r.id),
            r.version,
            micros(r.version),
            q(if r.version == 1 { "POST" } else if r.deleted { "DELETE" } else { "PUT" }),
            if r.deleted { "TRUE" } else { "FALSE" },
        ));
    }
    let mut current: Vec<&Row> = Vec::new();
    for r in &rows {
        current.retain(|c| !(c.ty == r.ty && c.id == r.id));
        current.push(r);
    }
    for r in current {
        let content = r.content.as_deref().map_or("NULL".into(), q);
        sql.push_str(&format!(
            "INSERT INTO resources (res_type, res_id, version_id, last_updated, deleted, content) \
             VALUES ({}, {}, {}, {}, {}, {content});\n",
            q(r.ty),
            q(&r.id),
            r.version,
            micros(r.version),
            if r.deleted { "TRUE" } else { "FALSE" },
        ));
        sql.push_str(&format!(
            "INSERT INTO search_string (resource_pk, res_type, param, value_norm, value_exact) \
             SELECT pk, res_type, 'name', 'stale', 'Stale' FROM resources WHERE res_type = {} AND res_id = {};\n",
            q(r.ty),
            q(&r.id)
        ));
    }
    if !pg {
        sql = sql.replace("TRUE", "1").replace("FALSE", "0");
    }
    sql
}

#[derive(QueryableByName, Debug, PartialEq, Eq, PartialOrd, Ord, Clone)]
struct Stored {
    #[diesel(sql_type = diesel::sql_types::Text)]
    t: String,
    #[diesel(sql_type = diesel::sql_types::Text)]
    res_type: String,
    #[diesel(sql_type = diesel::sql_types::Text)]
    res_id: String,
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    version_id: i64,
    #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::Text>)]
    content: Option<String>,
}

/// Every stored content text: current rows, history rows and the audit trail (if it exists).
const CONTENTS: &str =
    "SELECT 'resources' AS t, res_type, res_id, version_id, content FROM resources \
     UNION ALL SELECT 'history' AS t, res_type, res_id, version_id, content FROM resource_history";
const AUDIT: &str = "SELECT 'audit' AS t, res_type, res_id, version_id, content FROM audit_log";

fn contents_sql(with_audit: bool) -> String {
    if with_audit {
        format!("{CONTENTS} UNION ALL {AUDIT}")
    } else {
        CONTENTS.to_string()
    }
}

fn sorted(mut v: Vec<Stored>) -> Vec<Stored> {
    v.sort();
    v
}

fn contents_sqlite(conn: &mut SqliteConnection, with_audit: bool) -> Vec<Stored> {
    sorted(
        diesel::sql_query(contents_sql(with_audit))
            .load(conn)
            .unwrap(),
    )
}

fn contents_pg(conn: &mut PgConnection, with_audit: bool) -> Vec<Stored> {
    sorted(
        diesel::sql_query(contents_sql(with_audit))
            .load(conn)
            .unwrap(),
    )
}

/// Upgrade `url` (holding the old schema and data) and check the result; `before` is every
/// content text before the upgrade.
fn upgrade_and_check(url: &str, backend: Backend, before: Vec<Stored>) -> Vec<Stored> {
    let store = Store::new(url, 2, Duration::from_secs(10)).unwrap();
    let applied = store.migrate().expect("upgrade");
    assert!(applied >= 3, "{applied} migration(s) applied");
    let report = icm_fhir::store::verify::verify(&store).expect("verify runs");
    assert!(report.ok(), "{}", icm_fhir::store::verify::render(&report));
    assert_eq!(report.resources, 41, "{report:?}");
    assert_eq!(report.deleted, 1);
    assert_eq!(
        report.audit_events, 1,
        "the AuditEvent moved into the trail"
    );
    drop(store);

    let s = start_on(url, backend, |_| {});
    // The old data through the new index: a plain search, a parameter the old index rows lacked
    // (composite, needs group numbers), full text (index version 3), history.
    let b = s.get("Patient?family=altere3").json();
    assert_eq!(b["total"], 1, "{b}");
    let b = s
        .get("Observation?component-code-value-quantity=http://loinc.org|8480-6$120")
        .json();
    assert_eq!(b["total"], 20, "{b}");
    let b = s.get("CarePlan?_content=diabetes").json();
    assert_eq!(b["total"], 1, "{b}");
    let b = s.get("Patient?name=stale").json();
    assert_eq!(b["total"], 0, "the stale old index rows are gone: {b}");
    s.get("Patient/old-p7").expect(410);
    let h = s.get("Patient/old-p5/_history").json();
    assert_eq!(h["total"], 2, "{h}");
    let o = s.get("Observation/old-o3");
    o.expect(200);
    assert!(o.body.contains(r#""value":63.50"#), "{}", o.body);
    assert!(o.body.contains(r#""value":1.20e2"#), "{}", o.body);
    drop(s);

    // No content text changed: the resources and history rows are the same set of texts, and
    // the AuditEvent, moved into the audit trail, kept its text too.
    let after = match backend {
        Backend::Sqlite => {
            let mut c =
                SqliteConnection::establish(url.strip_prefix("sqlite://").unwrap()).unwrap();
            // The stopped server's last connections may still be closing (a checkpoint holds
            // the file for a moment): wait for them as the server's own connections do.
            c.batch_execute("PRAGMA busy_timeout = 10000;").unwrap();
            contents_sqlite(&mut c, true)
        }
        Backend::Postgres => {
            let mut c = PgConnection::establish(url).unwrap();
            contents_pg(&mut c, true)
        }
    };
    let strip = |v: &[Stored], skip_audit: bool| -> Vec<(String, String, i64, Option<String>)> {
        let mut out: Vec<_> = v
            .iter()
            .filter(|r| !(skip_audit && r.res_type == "AuditEvent"))
            // The shipped conformance resources the new server stored at its start (not old data).
            .filter(|r| {
                !icm_fhir::fhir::validate::profiles::RESOURCES
                    .iter()
                    .any(|(ty, id, _)| r.res_type == *ty && r.res_id == *id)
            })
            .map(|r| {
                (
                    r.t.clone(),
                    r.res_type.clone(),
                    r.res_id.clone(),
                    r.version_id,
                    r.content.clone(),
                )
            })
            .map(|(t, a, b, c, d)| (format!("{t}:{a}"), b, c, d))
            .collect();
        out.sort();
        out
    };
    assert_eq!(strip(&before, true), strip(&after, true));
    let old_ae = before
        .iter()
        .find(|r| r.res_type == "AuditEvent" && r.t == "resources")
        .unwrap();
    let new_ae = after
        .iter()
        .find(|r| r.t == "audit")
        .expect("the AuditEvent is in the audit trail");
    assert_eq!(
        new_ae.content, old_ae.content,
        "moving the AuditEvent into the audit trail rewrote its content"
    );
    after
}

#[test]
fn sqlite_upgrade_from_the_oldest_schema_keeps_content_and_verifies() {
    let dir = TempDir::new();
    let path = dir.0.join("old.db");
    let url = format!("sqlite://{}", path.display());
    let mut c = SqliteConnection::establish(path.to_str().unwrap()).unwrap();
    run_oldest(&mut c, SQLITE_MIGRATIONS);
    c.batch_execute(&fill_sql(false)).unwrap();
    let before = contents_sqlite(&mut c, false);
    assert_eq!(before.len(), 42 + 47);
    drop(c);
    upgrade_and_check(&url, Backend::Sqlite, before);
    // Starting again changes nothing: no migration pending, index current.
    let store = Store::new(&url, 1, Duration::from_secs(5)).unwrap();
    assert_eq!(store.migrate().unwrap(), 0);
}

#[test]
fn postgres_upgrade_from_the_oldest_schema_keeps_content_and_verifies() {
    let admin = pg_admin_url();
    let Ok(mut a) = PgConnection::establish(&admin) else {
        assert!(std::env::var("CI").is_err(), "PostgreSQL unreachable in CI");
        eprintln!("PostgreSQL unreachable: SKIPPED");
        return;
    };
    let name = format!("icm_upgrade_{}", uuid::Uuid::new_v4().simple());
    a.batch_execute(&format!("CREATE DATABASE \"{name}\""))
        .unwrap();
    let url = format!("{}/{name}", admin.rsplit_once('/').unwrap().0);
    let r = std::panic::catch_unwind(|| {
        let mut c = PgConnection::establish(&url).unwrap();
        run_oldest(&mut c, PG_MIGRATIONS);
        c.batch_execute(&fill_sql(true)).unwrap();
        let before = contents_pg(&mut c, false);
        assert_eq!(before.len(), 42 + 47);
        drop(c);
        upgrade_and_check(&url, Backend::Postgres, before);
    });
    let _ = a.batch_execute(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"));
    if let Err(e) = r {
        std::panic::resume_unwind(e);
    }
}
