//! On PostgreSQL the stored measure facts are partitioned by kind (migration
//! `2026-12-01-000004_measure_facts_by_kind`, store::search::facts::ensure_partitions): every
//! installed kind has its own partition, a write stores its facts there, an update or delete
//! removes them from there (the delete names only the kinds of the resource's type), and a
//! kind whose facts sit in the default partition gets its partition, with those facts moved
//! into it, at the next migration.
mod common;
use common::*;
use diesel::prelude::*;
use icm_fhir::store::search::facts::partition_name;
use icm_fhir::store::Store;

#[derive(QueryableByName)]
struct N {
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    n: i64,
}

fn count(url: &str, sql: &str) -> i64 {
    let mut c = PgConnection::establish(url).unwrap();
    diesel::sql_query(sql).get_result::<N>(&mut c).unwrap().n
}

fn exec(url: &str, sql: &str) {
    let mut c = PgConnection::establish(url).unwrap();
    diesel::connection::SimpleConnection::batch_execute(&mut c, sql).unwrap();
}

fn rows_in(url: &str, table: &str) -> i64 {
    count(url, &format!("SELECT COUNT(*) AS n FROM {table}"))
}

fn reading(id: &str, systolic: f64, diastolic: f64) -> Value {
    json!({"resourceType": "Observation", "id": id, "status": "final",
        "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category", "code": "vital-signs"}]}],
        "code": {"coding": [{"system": "http://loinc.org", "code": "85354-9"}]},
        "subject": {"reference": "Patient/pp"}, "effectiveDateTime": "2025-03-04",
        "component": [
            {"code": {"coding": [{"system": "http://loinc.org", "code": "8480-6"}]},
             "valueQuantity": {"value": systolic, "unit": "mm[Hg]", "system": "http://unitsofmeasure.org", "code": "mm[Hg]"}},
            {"code": {"coding": [{"system": "http://loinc.org", "code": "8462-4"}]},
             "valueQuantity": {"value": diastolic, "unit": "mm[Hg]", "system": "http://unitsofmeasure.org", "code": "mm[Hg]"}}]})
}

/// Patient `pp` and their reading `o1` at 150/95.
fn patient_with_reading(s: &TestServer) {
    s.put(
        "Patient/pp",
        &json!({"resourceType": "Patient", "id": "pp"}),
    )
    .expect(201);
    s.put("Observation/o1", &reading("o1", 150.0, 95.0))
        .expect(201);
}

#[test]
fn facts_live_in_their_kinds_partition() {
    let Some(db) = fresh_database(Backend::Postgres) else {
        return;
    };
    let s = start_on(&db.url, Backend::Postgres, |_| {});
    let bp = partition_name("blood-pressure");
    assert_eq!(bp, "measure_facts_blood_pressure");
    // every installed kind has its partition
    for k in icm_fhir::store::search::facts::kinds() {
        let name = partition_name(k.kind.unwrap());
        assert_eq!(
            count(
                &db.url,
                &format!(
                    "SELECT COUNT(*) AS n FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid \
                     WHERE i.inhparent = 'measure_facts'::regclass AND c.relname = '{name}'"
                )
            ),
            1,
            "no partition {name}"
        );
    }
    patient_with_reading(&s);
    // one fact per component, in the kind's partition, none in the default one
    assert_eq!(rows_in(&db.url, &bp), 2);
    assert_eq!(rows_in(&db.url, "measure_facts_default"), 0);
    let values = count(
        &db.url,
        &format!("SELECT CAST(SUM(pv) AS BIGINT) AS n FROM {bp}"),
    );
    assert_eq!(values, 245);
    // an update replaces them (the delete reaches the partition), a delete removes them
    s.put("Observation/o1", &reading("o1", 120.0, 70.0))
        .expect(200);
    assert_eq!(rows_in(&db.url, &bp), 2);
    let values = count(
        &db.url,
        &format!("SELECT CAST(SUM(pv) AS BIGINT) AS n FROM {bp}"),
    );
    assert_eq!(values, 190);
    s.delete("Observation/o1").expect(204);
    assert_eq!(rows_in(&db.url, &bp), 0);
    assert_eq!(rows_in(&db.url, "measure_facts"), 0);
}

#[test]
fn a_kind_without_its_partition_gets_one_with_its_facts() {
    let Some(db) = fresh_database(Backend::Postgres) else {
        return;
    };
    let mut s = start_on(&db.url, Backend::Postgres, |_| {});
    patient_with_reading(&s);
    s.stop();
    let bp = partition_name("blood-pressure");
    // as a database whose facts of this kind went to the default partition
    exec(
        &db.url,
        &format!(
            "BEGIN; ALTER TABLE measure_facts DETACH PARTITION {bp}; \
             INSERT INTO measure_facts SELECT * FROM {bp}; DROP TABLE {bp}; COMMIT;"
        ),
    );
    assert_eq!(rows_in(&db.url, "measure_facts_default"), 2);
    icm_fhir::service::measures::install_fact_kinds();
    let store = Store::new(&db.url, 2, std::time::Duration::from_secs(10)).unwrap();
    store.migrate().unwrap();
    assert_eq!(rows_in(&db.url, &bp), 2);
    assert_eq!(rows_in(&db.url, "measure_facts_default"), 0);
    // and the report reads them
    let s = start_on(&db.url, Backend::Postgres, |_| {});
    s.put("Observation/o1", &reading("o1", 120.0, 70.0))
        .expect(200);
    assert_eq!(rows_in(&db.url, &bp), 2);
    assert_eq!(rows_in(&db.url, "measure_facts_default"), 0);
}
