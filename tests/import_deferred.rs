//! An import into an empty PostgreSQL database builds the search-side indexes after its load
//! (store::deferred): every index comes back with its exact definition, an interrupted import's
//! indexes are built by the next migration, and a database that holds data keeps its indexes.
mod common;
use common::*;
use diesel::prelude::*;
use icm_fhir::store::deferred::DEFERRABLE;
use icm_fhir::store::Store;

#[derive(QueryableByName, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct IndexDef {
    #[diesel(sql_type = diesel::sql_types::Text)]
    name: String,
    #[diesel(sql_type = diesel::sql_types::Text)]
    definition: String,
}

/// Every index of the public schema with its definition, by name.
fn indexes(url: &str) -> Vec<IndexDef> {
    let mut c = PgConnection::establish(url).unwrap();
    let mut v: Vec<IndexDef> = diesel::sql_query(
        "SELECT indexname::text AS name, indexdef AS definition FROM pg_indexes \
         WHERE schemaname = 'public'",
    )
    .load(&mut c)
    .unwrap();
    v.sort();
    v
}

fn recorded(url: &str) -> Vec<String> {
    #[derive(QueryableByName)]
    struct Name {
        #[diesel(sql_type = diesel::sql_types::Text)]
        name: String,
    }
    let mut c = PgConnection::establish(url).unwrap();
    let v: Vec<Name> = diesel::sql_query("SELECT name FROM deferred_index ORDER BY name")
        .load(&mut c)
        .unwrap();
    v.into_iter().map(|n| n.name).collect()
}

/// A migrated store, with the fact kinds installed as the server and `icm-fhir` install them
/// (each kind gets its `measure_facts` partition when the store is migrated).
fn store(url: &str) -> Store {
    icm_fhir::service::measures::install_fact_kinds();
    let s = Store::new(url, 3, std::time::Duration::from_secs(10)).unwrap();
    s.migrate().unwrap();
    s
}

fn write_data(dir: &std::path::Path) {
    let mut lines = Vec::new();
    for i in 0..30 {
        lines.push(json!({"resourceType": "Patient", "id": format!("p{i}"),
            "name": [{"family": format!("Deferred{i}")}], "birthDate": format!("19{:02}-03-04", 40 + i)}));
        lines.push(
            json!({"resourceType": "Task", "id": format!("t{i}"), "status": "requested",
            "intent": "order", "for": {"reference": format!("Patient/p{i}")},
            "executionPeriod": {"start": format!("2026-0{}-10", 1 + i % 9)},
            "description": format!("call about the inhaler number {i}")}),
        );
    }
    let text: Vec<String> = lines.iter().map(|v| v.to_string()).collect();
    std::fs::write(dir.join("data.ndjson"), text.join("\n") + "\n").unwrap();
}

fn import(url: &str, dir: &std::path::Path, extra: &[&str]) -> String {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_icm-fhir"))
        .args(["import", "--quiet"])
        .args(extra)
        .arg(dir)
        .env("DATABASE_URL", url)
        .env("RUST_LOG", "info")
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{text}");
    text
}

#[test]
fn import_into_empty_postgres_builds_indexes_after_the_load() {
    let Some(reference) = fresh_database(Backend::Postgres) else {
        return;
    };
    let Some(db) = fresh_database(Backend::Postgres) else {
        return;
    };
    store(&reference.url);
    let want = indexes(&reference.url);
    for name in DEFERRABLE {
        assert!(
            want.iter().any(|i| i.name == *name),
            "{name} is not an index of the schema"
        );
    }
    let dir = TempDir::new();
    write_data(&dir.0);
    let out = import(&db.url, &dir.0, &[]);
    assert!(out.contains("60 created"), "{out}");
    assert!(
        out.contains(&format!(
            "{} secondary indexes are built after the load",
            DEFERRABLE.len()
        )),
        "the import did not defer the indexes: {out}"
    );
    assert!(out.contains("deferred indexes built"), "{out}");
    assert_eq!(indexes(&db.url), want, "the indexes after the import");
    assert!(recorded(&db.url).is_empty());
    // the searches those indexes serve answer
    let mut s = start_on(&db.url, Backend::Postgres, |_| {});
    let b = s
        .get("Patient?birthdate=ge1955-01-01&_count=100")
        .expect(200)
        .json();
    assert_eq!(b["total"], 15, "{b}");
    let b = s.get("Task?patient=Patient/p7").expect(200).json();
    assert_eq!(b["entry"][0]["resource"]["id"], "t7", "{b}");
    let b = s.get("Task?_content=inhaler&_count=100").expect(200).json();
    assert_eq!(b["total"], 30, "{b}");
    s.stop();
    // a second import into the now non-empty database keeps every index
    let dir2 = TempDir::new();
    std::fs::write(
        dir2.0.join("more.ndjson"),
        json!({"resourceType": "Patient", "id": "later"}).to_string() + "\n",
    )
    .unwrap();
    let out = import(&db.url, &dir2.0, &[]);
    assert!(!out.contains("built after the load"), "{out}");
    assert_eq!(indexes(&db.url), want);
}

#[test]
fn keep_indexes_maintains_them_during_the_load() {
    let Some(db) = fresh_database(Backend::Postgres) else {
        return;
    };
    let dir = TempDir::new();
    write_data(&dir.0);
    let out = import(&db.url, &dir.0, &["--keep-indexes"]);
    assert!(out.contains("60 created"), "{out}");
    assert!(!out.contains("built after the load"), "{out}");
    assert!(recorded(&db.url).is_empty());
}

#[test]
fn an_interrupted_import_leaves_its_indexes_to_the_next_migration() {
    let Some(db) = fresh_database(Backend::Postgres) else {
        return;
    };
    let s = store(&db.url);
    let want = indexes(&db.url);
    // what an import does before its load, then stops
    assert_eq!(s.defer_indexes().unwrap(), DEFERRABLE.len());
    let names: Vec<String> = DEFERRABLE.iter().map(|n| n.to_string()).collect();
    let mut sorted = names.clone();
    sorted.sort();
    assert_eq!(recorded(&db.url), sorted);
    let now = indexes(&db.url);
    for n in &names {
        assert!(!now.iter().any(|i| &i.name == n), "{n} was not dropped");
    }
    // deferring again finds nothing more to drop and loses no definition
    assert_eq!(s.defer_indexes().unwrap(), 0);
    assert_eq!(recorded(&db.url), sorted);
    drop(s);
    // the next start migrates: every index is back, as it was defined
    let s = store(&db.url);
    assert_eq!(indexes(&db.url), want);
    assert!(recorded(&db.url).is_empty());
    drop(s);
}

#[test]
fn two_processes_building_share_the_work() {
    let Some(db) = fresh_database(Backend::Postgres) else {
        return;
    };
    let s = store(&db.url);
    let want = indexes(&db.url);
    assert_eq!(s.defer_indexes().unwrap(), DEFERRABLE.len());
    // two stores (as two server processes starting together), two builders each
    let a = Store::new(&db.url, 3, std::time::Duration::from_secs(10)).unwrap();
    let b = Store::new(&db.url, 3, std::time::Duration::from_secs(10)).unwrap();
    let (na, nb) = std::thread::scope(|sc| {
        let ta = sc.spawn(|| a.build_deferred_indexes(2).unwrap());
        let tb = sc.spawn(|| b.build_deferred_indexes(2).unwrap());
        (ta.join().unwrap(), tb.join().unwrap())
    });
    // every index built once, by one of them
    assert_eq!(na + nb, DEFERRABLE.len());
    assert_eq!(indexes(&db.url), want);
    assert!(recorded(&db.url).is_empty());
}

#[test]
fn a_database_with_resources_keeps_its_indexes() {
    let Some(db) = fresh_database(Backend::Postgres) else {
        return;
    };
    let dir = TempDir::new();
    std::fs::write(
        dir.0.join("one.ndjson"),
        json!({"resourceType": "Patient", "id": "first"}).to_string() + "\n",
    )
    .unwrap();
    import(&db.url, &dir.0, &["--keep-indexes"]);
    let s = store(&db.url);
    let want = indexes(&db.url);
    assert_eq!(s.defer_indexes().unwrap(), 0);
    assert_eq!(indexes(&db.url), want);
    assert!(recorded(&db.url).is_empty());
}

#[test]
fn sqlite_defers_nothing() {
    let db = fresh_database(Backend::Sqlite).unwrap();
    let s = Store::new(&db.url, 2, std::time::Duration::from_secs(10)).unwrap();
    s.migrate().unwrap();
    assert_eq!(s.defer_indexes().unwrap(), 0);
    assert_eq!(s.build_deferred_indexes(2).unwrap(), 0);
}
