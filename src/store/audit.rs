//! Storage of the audit trail. AuditEvents live in `audit_log`, one append-only row each with
//! the values of the AuditEvent search parameters in indexed columns, instead of a `resources`
//! row, a history row and a dozen search-index rows: the server writes one AuditEvent per
//! request, so this cost is paid by every request (README, "Cost of auditing").
//!
//! The row carries the columns of `resources` that reads and searches use, so read, vread,
//! history and the search engine (`store::search`, which swaps the index-table lookups for the
//! column predicates of [`column`]) work on it unchanged. AuditEvents are never updated or
//! deleted, so every AuditEvent has exactly one version.
use diesel::prelude::*;
use serde_json::Value;

use crate::error::{ApiError, ApiResult};
use crate::fhir::resource;
use crate::fhir::search::extract::split_reference;
use crate::fhir::search::params::AUDIT_EVENT_PARAMS;
use crate::fhir::search::values::{date_range, fold};
use crate::store::backend::{db_error, DbConn};
use crate::store::history::{HistoryQuery, HistoryRow};
use crate::store::read::StoredVersion;
use crate::store::schema::audit_log as a;
use crate::store::sql::{bulk_insert, execute, load, Column, Sql};

pub const TYPE: &str = "AuditEvent";

/// Whether resources of `ty` live in the audit trail's table (the registry's storage kind).
pub fn is_audit_log(ty: &str) -> bool {
    crate::fhir::registry::Registry::get().storage(ty) == crate::fhir::registry::Storage::AuditLog
}
pub const TABLE: &str = "audit_log";

/// The audit_log column holding a search parameter's (first) value, for the parameters this
/// server supports on AuditEvent (`fhir::search::params::AUDIT_EVENT_PARAMS`): named after the
/// parameter, except `date` (AuditEvent.recorded).
pub fn column(param: &str) -> Option<&'static str> {
    AUDIT_EVENT_PARAMS
        .iter()
        .find(|p| **p == param)
        .map(|p| if *p == "date" { "recorded" } else { p })
}

/// An AuditEvent ready to store: id, lastUpdated, JSON text, search values.
pub type Record = (String, i64, String, Values);

/// Search values of one AuditEvent, each list in document order without repeats.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Values {
    pub recorded: Option<i64>,
    pub patient: Vec<String>,
    pub agent: Vec<String>,
    pub altid: Vec<String>,
    pub entity: Vec<String>,
    pub action: Option<String>,
    pub outcome: Option<String>,
    /// (system, code)
    pub subtype: Vec<(Option<String>, String)>,
    pub address: Vec<String>,
}

fn push(v: &mut Vec<String>, s: String) {
    if !v.contains(&s) {
        v.push(s);
    }
}

/// `Type/id` of a relative (or versioned) reference, the URL otherwise; and the Patient id when
/// it points at a Patient.
pub fn reference_key(r: &str) -> (String, Option<String>) {
    match split_reference(r) {
        (Some(t), Some(id), _) => {
            let patient = (t == "Patient").then(|| id.clone());
            (format!("{t}/{id}"), patient)
        }
        _ => (r.to_string(), None),
    }
}

/// The values of the supported search parameters, as R4 defines them:
/// agent = agent.who, altid = agent.altId, address = agent.network.address,
/// entity = entity.what, patient = agent.who | entity.what that are Patients,
/// date = recorded, action, outcome, subtype.
pub fn values(ev: &Value) -> Values {
    let mut out = Values {
        recorded: ev["recorded"].as_str().and_then(date_range).map(|r| r.0),
        action: ev["action"].as_str().map(str::to_string),
        outcome: ev["outcome"].as_str().map(str::to_string),
        ..Values::default()
    };
    for ag in ev["agent"].as_array().into_iter().flatten() {
        if let Some(r) = ag["who"]["reference"].as_str() {
            let (key, patient) = reference_key(r);
            push(&mut out.agent, key);
            if let Some(p) = patient {
                push(&mut out.patient, p);
            }
        }
        if let Some(s) = ag["altId"].as_str() {
            push(&mut out.altid, s.to_string());
        }
        if let Some(s) = ag["network"]["address"].as_str() {
            push(&mut out.address, fold(s));
        }
    }
    for en in ev["entity"].as_array().into_iter().flatten() {
        if let Some(r) = en["what"]["reference"].as_str() {
            let (key, patient) = reference_key(r);
            push(&mut out.entity, key);
            if let Some(p) = patient {
                push(&mut out.patient, p);
            }
        }
    }
    for c in ev["subtype"].as_array().into_iter().flatten() {
        if let Some(code) = c["code"].as_str() {
            let s = (c["system"].as_str().map(str::to_string), code.to_string());
            if !out.subtype.contains(&s) {
                out.subtype.push(s);
            }
        }
    }
    out
}

#[derive(diesel::QueryableByName)]
struct NewRow {
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    pk: i64,
    #[diesel(sql_type = diesel::sql_types::Text)]
    res_id: String,
}

/// A new AuditEvent id: a version-7 UUID, ordered by time, so the id index grows at its end.
pub fn new_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

/// An AuditEvent as the trail stores it: stamped with its id (a new one for None), version 1 and
/// lastUpdated `at`, serialised, its search values extracted; and the stamped resource.
fn record(id: Option<String>, ev: Value, at: i64) -> (Record, Value) {
    let id = id.unwrap_or_else(new_id);
    let v = resource::stamp(ev, &id, 1, at);
    let text = v.to_string();
    let vals = values(&v);
    ((id, at, text, vals), v)
}

/// Store AuditEvents (each with its id or None, and its lastUpdated) as version 1; returns the
/// stored resources.
pub fn insert(
    conn: &mut DbConn,
    items: Vec<(Option<String>, Value, i64)>,
) -> ApiResult<Vec<Value>> {
    let (records, stored): (Vec<Record>, Vec<Value>) = items
        .into_iter()
        .map(|(id, ev, at)| record(id, ev, at))
        .unzip();
    write(conn, &records)?;
    Ok(stored)
}

/// Store AuditEvents ready for the trail: one bulk INSERT for the rows and one for the further
/// values. Borrowed, so a failed transaction can be retried with the same batch.
pub fn write(conn: &mut DbConn, records: &[Record]) -> ApiResult<()> {
    let n = records.len();
    if n == 0 {
        return Ok(());
    }
    let first = |f: &dyn Fn(&Values) -> Option<String>| -> Column {
        Column::Text(records.iter().map(|r| f(&r.3)).collect())
    };
    let columns = vec![
        Column::Text(records.iter().map(|r| Some(r.0.clone())).collect()),
        Column::Int(records.iter().map(|r| r.1).collect()),
        Column::Text(records.iter().map(|r| Some(r.2.clone())).collect()),
        Column::Int(
            records
                .iter()
                .map(|r| r.3.recorded.unwrap_or(r.1))
                .collect(),
        ),
        first(&|v| v.patient.first().cloned()),
        first(&|v| v.agent.first().cloned()),
        first(&|v| v.altid.first().cloned()),
        first(&|v| v.entity.first().cloned()),
        first(&|v| v.action.clone()),
        first(&|v| v.outcome.clone()),
        first(&|v| v.subtype.first().map(|s| s.1.clone())),
        first(&|v| v.subtype.first().and_then(|s| s.0.clone())),
        first(&|v| v.address.first().cloned()),
    ];
    let names = [
        "res_id",
        "last_updated",
        "content",
        "recorded",
        "patient",
        "agent",
        "altid",
        "entity",
        "action",
        "outcome",
        "subtype",
        "subtype_system",
        "address",
    ];
    // Values past the first go to audit_value, keyed by the row's pk; most events have none,
    // and then the rows are inserted without reading their pks back.
    let extras = |v: &Values| {
        v.patient.len() > 1
            || v.agent.len() > 1
            || v.altid.len() > 1
            || v.entity.len() > 1
            || v.subtype.len() > 1
            || v.address.len() > 1
    };
    if !records.iter().any(|r| extras(&r.3)) {
        for q in bulk_insert(conn, TABLE, &names, columns, "") {
            execute(conn, q).map_err(db_error)?;
        }
        return Ok(());
    }
    let mut pks = std::collections::HashMap::with_capacity(n);
    for q in bulk_insert(conn, TABLE, &names, columns, " RETURNING pk, res_id") {
        for r in load::<NewRow>(conn, q).map_err(db_error)? {
            pks.insert(r.res_id, r.pk);
        }
    }
    let (mut epk, mut eparam, mut evalue) = (Vec::new(), Vec::new(), Vec::new());
    for (id, _, _, v) in records {
        let pk = *pks
            .get(id)
            .ok_or_else(|| ApiError::internal("audit insert: inserted rows do not match"))?;
        let subtypes: Vec<String> = v.subtype.iter().map(|s| s.1.clone()).collect();
        for (param, list) in [
            ("patient", &v.patient),
            ("agent", &v.agent),
            ("altid", &v.altid),
            ("entity", &v.entity),
            ("subtype", &subtypes),
            ("address", &v.address),
        ] {
            for x in list.iter().skip(1) {
                epk.push(pk);
                eparam.push(Some(param.to_string()));
                evalue.push(Some(x.clone()));
            }
        }
    }
    let extra = vec![Column::Int(epk), Column::Text(eparam), Column::Text(evalue)];
    for q in bulk_insert(
        conn,
        "audit_value",
        &["audit_pk", "param", "value"],
        extra,
        "",
    ) {
        execute(conn, q).map_err(db_error)?;
    }
    Ok(())
}

/// Move AuditEvents stored as ordinary resources (before the audit_log table existed) into the
/// audit trail, keeping their ids and lastUpdated, and remove their resource, history and index
/// rows. Runs after the migrations; returns how many were moved.
pub fn adopt_legacy(conn: &mut DbConn) -> ApiResult<u64> {
    use crate::store::schema::{resource_history, resources};
    let mut moved = 0u64;
    loop {
        let mut failed: Option<ApiError> = None;
        let step = |conn: &mut DbConn| -> ApiResult<usize> {
            let rows: Vec<(i64, String, i64, bool, Option<String>)> = resources::table
                .filter(resources::res_type.eq(TYPE))
                .select((
                    resources::pk,
                    resources::res_id,
                    resources::last_updated,
                    resources::deleted,
                    resources::content,
                ))
                .order(resources::pk.asc())
                .limit(500)
                .load(conn)
                .map_err(db_error)?;
            let items = rows
                .iter()
                .filter(|r| !r.3)
                .filter_map(|r| {
                    let v = serde_json::from_str::<Value>(r.4.as_deref()?).ok()?;
                    Some((Some(r.1.clone()), v, r.2))
                })
                .collect();
            insert(conn, items)?;
            for (pk, id, ..) in &rows {
                crate::store::index::delete_index(conn, *pk)?;
                diesel::delete(resources::table.filter(resources::pk.eq(*pk)))
                    .execute(conn)
                    .map_err(db_error)?;
                diesel::delete(
                    resource_history::table
                        .filter(resource_history::res_type.eq(TYPE))
                        .filter(resource_history::res_id.eq(id)),
                )
                .execute(conn)
                .map_err(db_error)?;
            }
            Ok(rows.len())
        };
        let r = conn.transaction::<usize, diesel::result::Error, _>(|c| {
            step(c).map_err(|e| {
                failed = Some(e);
                diesel::result::Error::RollbackTransaction
            })
        });
        let n = match r {
            Ok(n) => n,
            Err(e) => return Err(failed.take().unwrap_or_else(|| db_error(e))),
        };
        if n == 0 {
            return Ok(moved);
        }
        moved += n as u64;
    }
}

/// Whether an AuditEvent with this id exists.
pub fn exists(conn: &mut DbConn, id: &str) -> ApiResult<bool> {
    Ok(read(conn, id)?.is_some())
}

/// The AuditEvent with this id.
pub fn read(conn: &mut DbConn, id: &str) -> ApiResult<Option<StoredVersion>> {
    a::table
        .filter(a::res_id.eq(id))
        .select((
            a::version_id,
            a::last_updated,
            a::deleted,
            a::content.nullable(),
        ))
        .first::<StoredVersion>(conn)
        .optional()
        .map_err(db_error)
}

/// History of AuditEvents (instance or type level; each has one version), newest first, paged
/// by keyset on the row's pk.
pub fn history(conn: &mut DbConn, q: &HistoryQuery) -> ApiResult<Vec<HistoryRow>> {
    let query = a::table
        .select((
            a::pk,
            a::res_type,
            a::res_id,
            a::version_id,
            a::last_updated,
            diesel::dsl::sql::<diesel::sql_types::Text>("'POST'"),
            a::deleted,
            a::content.nullable(),
        ))
        .into_boxed();
    crate::store::history::history_page!(query, a, pk, q, conn)
}

/// Number of versions of one AuditEvent (0 or 1).
pub fn history_count(conn: &mut DbConn, id: &str) -> ApiResult<i64> {
    a::table
        .filter(a::res_id.eq(id))
        .count()
        .get_result(conn)
        .map_err(db_error)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// AuditEvents stored as ordinary resources by an earlier version move into the trail on
    /// start, with their id and lastUpdated, and leave no resource, history or index rows.
    #[test]
    fn legacy_audit_events_are_adopted() {
        use crate::store::schema::{resource_history, resources};
        let dir = std::env::temp_dir().join(format!("icm-adopt-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let url = format!("sqlite://{}/t.db", dir.display());
        let store = crate::store::Store::new(&url, 2, std::time::Duration::from_secs(5)).unwrap();
        store.migrate().unwrap();
        let mut conn = store.conn().unwrap();
        let ev = json!({"resourceType": "AuditEvent", "id": "old-1",
            "meta": {"versionId": "1", "lastUpdated": "2026-01-02T03:04:05.000Z"},
            "type": {"system": "http://terminology.hl7.org/CodeSystem/audit-event-type", "code": "rest"},
            "recorded": "2026-01-02T03:04:05Z", "action": "R", "outcome": "0",
            "agent": [{"who": {"reference": "Practitioner/7"}, "requestor": true}],
            "source": {"observer": {"display": "x"}},
            "entity": [{"what": {"reference": "Patient/p1"}}]});
        let at = date_range("2026-01-02T03:04:05Z").unwrap().0;
        let pk: i64 = diesel::insert_into(resources::table)
            .values((
                resources::res_type.eq(TYPE),
                resources::res_id.eq("old-1"),
                resources::version_id.eq(1i64),
                resources::last_updated.eq(at),
                resources::deleted.eq(false),
                resources::content.eq(Some(ev.to_string())),
            ))
            .returning(resources::pk)
            .get_result(&mut *conn)
            .unwrap();
        diesel::insert_into(resource_history::table)
            .values((
                resource_history::res_type.eq(TYPE),
                resource_history::res_id.eq("old-1"),
                resource_history::version_id.eq(1i64),
                resource_history::last_updated.eq(at),
                resource_history::method.eq("POST"),
                resource_history::deleted.eq(false),
                resource_history::content.eq(Some(ev.to_string())),
            ))
            .execute(&mut *conn)
            .unwrap();
        crate::store::index::insert_index(&mut conn, pk, TYPE, Some(&ev)).unwrap();
        assert_eq!(adopt_legacy(&mut conn).unwrap(), 1);
        let got = read(&mut conn, "old-1").unwrap().expect("adopted");
        assert_eq!(got.last_updated, at);
        let v: Value = serde_json::from_str(got.content.as_deref().unwrap()).unwrap();
        assert_eq!(v["entity"][0]["what"]["reference"], "Patient/p1");
        let left: i64 = resources::table
            .filter(resources::res_type.eq(TYPE))
            .count()
            .get_result(&mut *conn)
            .unwrap();
        let hist: i64 = resource_history::table
            .filter(resource_history::res_type.eq(TYPE))
            .count()
            .get_result(&mut *conn)
            .unwrap();
        let q = crate::store::search::count(
            &mut conn,
            &crate::fhir::search::query::SearchQuery::parse(TYPE, "patient=p1").unwrap(),
            &crate::store::visibility::Everything,
        )
        .unwrap();
        let idx: Vec<i64> = diesel::sql_query(format!(
            "SELECT resource_pk AS n FROM search_reference WHERE resource_pk = {pk}"
        ))
        .load::<Pk>(&mut *conn)
        .unwrap()
        .into_iter()
        .map(|r| r.n)
        .collect();
        assert_eq!((left, hist, q, idx.len()), (0, 0, 1, 0));
        assert_eq!(adopt_legacy(&mut conn).unwrap(), 0, "runs once");
        drop(conn);
        std::fs::remove_dir_all(&dir).ok();
    }

    #[derive(diesel::QueryableByName)]
    struct Pk {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        n: i64,
    }

    #[test]
    fn values_follow_the_r4_parameter_paths() {
        let ev = json!({
            "resourceType": "AuditEvent", "recorded": "2026-01-02T03:04:05Z",
            "action": "R", "outcome": "0",
            "subtype": [{"system": "http://hl7.org/fhir/restful-interaction", "code": "read"}],
            "agent": [
                {"who": {"reference": "Practitioner/7"}, "altId": "alice", "requestor": true,
                 "network": {"address": "10.0.0.1"}},
                {"who": {"reference": "Patient/p1"}, "requestor": false}
            ],
            "entity": [
                {"what": {"reference": "CarePlan/cp1/_history/3"}},
                {"what": {"reference": "Patient/p2"}},
                {"what": {"reference": "Patient/p1"}}
            ]
        });
        let v = values(&ev);
        assert_eq!(v.agent, vec!["Practitioner/7", "Patient/p1"]);
        assert_eq!(v.patient, vec!["p1", "p2"]);
        assert_eq!(v.entity, vec!["CarePlan/cp1", "Patient/p2", "Patient/p1"]);
        assert_eq!(v.altid, vec!["alice"]);
        assert_eq!(v.address, vec!["10.0.0.1"]);
        assert_eq!(v.action.as_deref(), Some("R"));
        assert_eq!(v.outcome.as_deref(), Some("0"));
        assert_eq!(
            v.subtype,
            vec![(
                Some("http://hl7.org/fhir/restful-interaction".to_string()),
                "read".to_string()
            )]
        );
        assert_eq!(v.recorded, date_range("2026-01-02T03:04:05Z").map(|r| r.0));
    }
}

#[derive(diesel::QueryableByName)]
struct IdRow {
    #[diesel(sql_type = diesel::sql_types::Text)]
    res_id: String,
}

/// Which of `ids` the audit trail already holds (a replayed spool may overlap what was
/// written just before a crash).
pub fn existing_ids(conn: &mut DbConn, ids: &[String]) -> ApiResult<Vec<String>> {
    let mut out = Vec::new();
    for chunk in ids.chunks(500) {
        let mut q = Sql::new();
        q.push(&format!("SELECT res_id FROM {TABLE} WHERE res_id IN "))
            .text_list(chunk);
        out.extend(
            load::<IdRow>(conn, &q)
                .map_err(db_error)?
                .into_iter()
                .map(|r| r.res_id),
        );
    }
    Ok(out)
}
