//! `icm-fhir import`: Bundles and NDJSON through the write path; references resolved; resumable.
mod common;
use common::*;

fn write_fixture(dir: &std::path::Path) {
    let pid = "7d0c5b5e-1f0b-4e55-9d7a-0d3c2b1a0001";
    let oid = "7d0c5b5e-1f0b-4e55-9d7a-0d3c2b1a0002";
    let bundle = json!({
        "resourceType": "Bundle", "type": "transaction",
        "entry": [
            {"fullUrl": format!("urn:uuid:{pid}"), "resource": {"resourceType": "Patient", "id": pid, "name": [{"family": "Okafor"}], "managingOrganization": {"reference": format!("urn:uuid:{oid}")}}, "request": {"method": "POST", "url": "Patient"}},
            {"fullUrl": format!("urn:uuid:{oid}"), "resource": {"resourceType": "Organization", "name": "Clinic"}, "request": {"method": "POST", "url": "Organization"}},
            {"fullUrl": "urn:uuid:7d0c5b5e-1f0b-4e55-9d7a-0d3c2b1a0003", "resource": {"resourceType": "CareTeam", "status": "active", "subject": {"reference": format!("urn:uuid:{pid}")}}, "request": {"method": "POST", "url": "CareTeam"}},
            {"fullUrl": "urn:uuid:7d0c5b5e-1f0b-4e55-9d7a-0d3c2b1a0004", "resource": {"resourceType": "NotAType"}, "request": {"method": "POST", "url": "NotAType"}}
        ]
    });
    std::fs::write(dir.join("patient1.json"), bundle.to_string()).unwrap();
    let nd = [
        json!({"resourceType": "Task", "id": "t-1", "status": "requested", "intent": "order", "for": {"reference": format!("Patient/{pid}")}}),
        json!({"resourceType": "Task", "id": "t-2", "status": "completed", "intent": "order"}),
    ];
    let text: Vec<String> = nd.iter().map(|v| v.to_string()).collect();
    std::fs::write(dir.join("tasks.ndjson"), text.join("\n") + "\n").unwrap();
    std::fs::write(dir.join("broken.json"), "{not json").unwrap();
}

fn run_import(url: &str, dir: &std::path::Path) -> (i32, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_icm-fhir"))
        .args(["import", "--quiet", "--jobs", "2", "--batch", "2"])
        .arg(dir)
        .env("DATABASE_URL", url)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr),
    )
}

backend_tests!(import_bundles_and_ndjson_resumably, |s| {
    let dir = TempDir::new();
    write_fixture(&dir.0);
    let (code, out) = run_import(&s.database_url, &dir.0);
    assert_eq!(code, 3, "rejections give exit code 3: {out}");
    assert!(out.contains("5 created"), "{out}");
    assert!(
        out.contains("unsupported resource type 'NotAType'"),
        "{out}"
    );
    assert!(out.contains("broken.json"), "{out}");
    // references to bundle entries now point at the stored resources
    let p = s.get("Patient/7d0c5b5e-1f0b-4e55-9d7a-0d3c2b1a0001").json();
    assert_eq!(
        p["managingOrganization"]["reference"],
        "Organization/7d0c5b5e-1f0b-4e55-9d7a-0d3c2b1a0002"
    );
    s.get("Organization/7d0c5b5e-1f0b-4e55-9d7a-0d3c2b1a0002")
        .expect(200);
    let ct = s
        .get("CareTeam/7d0c5b5e-1f0b-4e55-9d7a-0d3c2b1a0003")
        .json();
    assert_eq!(
        ct["subject"]["reference"],
        "Patient/7d0c5b5e-1f0b-4e55-9d7a-0d3c2b1a0001"
    );
    assert_eq!(s.get("Task/t-1").json()["status"], "requested");
    // a second run skips everything already there: no new versions
    let (_, out2) = run_import(&s.database_url, &dir.0);
    assert!(out2.contains("0 created, 5 already present"), "{out2}");
    assert_eq!(s.get("Task/t-1").json()["meta"]["versionId"], "1");
});

#[derive(diesel::QueryableByName)]
struct Analyzed {
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    n: i64,
}

// An import leaves the planner statistics current, so the first searches after it get the
// plans they get on an analysed database (on PostgreSQL the index tables were analysed by the
// import; on SQLite `sqlite_stat1` describes them). On PostgreSQL the import also vacuums them
// (`last_vacuum`: a manual VACUUM, which only the import runs here), so index-only scans of the
// freshly loaded index do not read the heap.
backend_tests!(import_leaves_statistics, |s| {
    use diesel::prelude::*;
    let dir = TempDir::new();
    write_fixture(&dir.0);
    run_import(&s.database_url, &dir.0);
    let q = match s.backend {
        Backend::Postgres => {
            "SELECT COUNT(*) AS n FROM pg_stat_user_tables WHERE relname IN ('resources', 'search_token', 'search_reference') AND (last_analyze IS NOT NULL OR last_autoanalyze IS NOT NULL) AND last_vacuum IS NOT NULL"
        }
        Backend::Sqlite => {
            "SELECT COUNT(DISTINCT tbl) AS n FROM sqlite_stat1 WHERE tbl IN ('resources', 'search_token', 'search_reference')"
        }
    };
    let n: Vec<Analyzed> = match s.database_url.strip_prefix("sqlite://") {
        Some(p) => diesel::sql_query(q)
            .load(&mut diesel::SqliteConnection::establish(p).unwrap())
            .unwrap(),
        None => diesel::sql_query(q)
            .load(&mut diesel::PgConnection::establish(&s.database_url).unwrap())
            .unwrap(),
    };
    assert_eq!(n[0].n, 3);
});
