//! The audit trail: one FHIR AuditEvent per /fhir request. Writes carry theirs into the write
//! transaction (store::write::apply_in); everything else is queued and written in batches by a
//! background thread, each batch in one transaction through the one write path.
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::{Arc, Mutex, Weak};

use base64::Engine;
use serde_json::{json, Value};

use super::policy::{Interaction, Principal};
use crate::error::{ApiError, ApiResult};
use crate::fhir::datetime::{format_instant, now_micros};
use crate::fhir::resource;
use crate::http::AppState;
use crate::store::backend::{db_error, DbConn};
use crate::store::index::insert_index_bulk;
use crate::store::sql::{execute, load, Sql};

/// What one request did, for its AuditEvent.
#[derive(Debug, Clone, Default)]
pub struct AuditFacts {
    pub sub: Option<String>,
    pub fhir_user: Option<String>,
    pub client_id: Option<String>,
    pub interaction: Option<Interaction>,
    pub method: String,
    pub path: String,
    pub query: String,
    pub ty: Option<String>,
    pub id: Option<String>,
    /// Set on success for writes: Type/id/_history/version.
    pub version_ref: Option<String>,
    pub patients: Vec<String>,
    pub status: u16,
    pub ip: Option<String>,
}

impl AuditFacts {
    pub fn with_principal(mut self, p: &Principal) -> Self {
        self.sub = Some(p.sub.clone());
        self.fhir_user = p.fhir_user.clone();
        self.client_id = p.client_id.clone();
        self
    }
}

fn action(i: Option<Interaction>) -> &'static str {
    match i {
        Some(Interaction::Create) => "C",
        Some(Interaction::Update) | Some(Interaction::Patch) => "U",
        Some(Interaction::Delete) => "D",
        Some(Interaction::Read)
        | Some(Interaction::Vread)
        | Some(Interaction::HistoryInstance)
        | Some(Interaction::HistoryType)
        | Some(Interaction::HistorySystem)
        | Some(Interaction::Public) => "R",
        _ => "E",
    }
}

/// The AuditEvent resource for a request (http://hl7.org/fhir/R4/auditevent.html).
pub fn audit_event(f: &AuditFacts) -> Value {
    let outcome = match f.status {
        0..=399 => "0",
        400..=499 => "4",
        _ => "8",
    };
    let mut who =
        json!({"identifier": {"value": f.sub.clone().unwrap_or_else(|| "anonymous".into())}});
    if let Some(u) = &f.fhir_user {
        who = json!({"reference": u});
    }
    let mut agent = json!({
        "type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/extra-security-role-type", "code": "humanuser", "display": "human user"}]},
        "who": who,
        "requestor": true,
    });
    if let Some(s) = &f.sub {
        agent["altId"] = json!(s);
    }
    if let Some(ip) = &f.ip {
        agent["network"] = json!({"address": ip, "type": "2"});
    }
    let mut agents = vec![agent];
    if let Some(c) = &f.client_id {
        agents.push(json!({
            "type": {"coding": [{"system": "http://dicom.nema.org/resources/ontology/DCM", "code": "110150", "display": "Application"}]},
            "who": {"identifier": {"value": c}},
            "requestor": false,
        }));
    }
    let mut entities = Vec::new();
    let what = f.version_ref.clone().or_else(|| match (&f.ty, &f.id) {
        (Some(t), Some(i)) => Some(format!("{t}/{i}")),
        _ => None,
    });
    let mut e = json!({
        "type": {"system": "http://terminology.hl7.org/CodeSystem/audit-entity-type", "code": "2", "display": "System Object"},
        "description": format!("{} {}", f.method, f.path),
    });
    if let Some(w) = what {
        e["what"] = json!({"reference": w});
    } else if let (Some(t), true) = (&f.ty, f.query.is_empty()) {
        // sev-1: an entity has a name or a query, not both (the query names the type's search).
        e["name"] = json!(t);
    }
    if !f.query.is_empty() {
        e["query"] = json!(base64::engine::general_purpose::STANDARD.encode(f.query.as_bytes()));
    }
    entities.push(e);
    for p in &f.patients {
        entities.push(json!({
            "what": {"reference": format!("Patient/{p}")},
            "type": {"system": "http://terminology.hl7.org/CodeSystem/audit-entity-type", "code": "1", "display": "Person"},
            "role": {"system": "http://terminology.hl7.org/CodeSystem/object-role", "code": "1", "display": "Patient"},
        }));
    }
    let subtype = f.interaction.map(|i| i.code()).unwrap_or("operation");
    json!({
        "resourceType": "AuditEvent",
        "type": {"system": "http://terminology.hl7.org/CodeSystem/audit-event-type", "code": "rest", "display": "RESTful Operation"},
        "subtype": [{"system": "http://hl7.org/fhir/restful-interaction", "code": subtype}],
        "action": action(f.interaction),
        "recorded": format_instant(now_micros()),
        "outcome": outcome,
        "outcomeDesc": format!("HTTP {}", f.status),
        "agent": agents,
        "source": {"observer": {"display": "icm-fhir"}, "type": [{"system": "http://terminology.hl7.org/CodeSystem/security-source-type", "code": "4", "display": "Application Server"}]},
        "entity": entities,
    })
}

/// Queue of AuditEvents waiting for the background writer.
pub struct AuditSink {
    tx: SyncSender<Value>,
}

impl AuditSink {
    /// Start the writer threads for `state` (they stop when the sink is dropped): one on SQLite
    /// (a single writer anyway), two on PostgreSQL.
    pub fn start(state: Weak<AppState>) -> AuditSink {
        let (tx, rx) = sync_channel::<Value>(10_000);
        let threads = match state.upgrade().map(|s| s.store.backend()) {
            Some(crate::store::Backend::Postgres) => 2,
            _ => 1,
        };
        let rx = Arc::new(Mutex::new(rx));
        for n in 0..threads {
            let (rx, state) = (rx.clone(), state.clone());
            std::thread::Builder::new()
                .name(format!("icm-audit-{n}"))
                .spawn(move || writer(rx, state))
                .expect("spawn audit writer");
        }
        AuditSink { tx }
    }

    pub fn enqueue(&self, event: Value) {
        if self.tx.send(event).is_err() {
            log::error!("audit writer is gone; an AuditEvent was lost");
        }
    }
}

fn writer(rx: Arc<Mutex<Receiver<Value>>>, state: Weak<AppState>) {
    loop {
        let batch = {
            let Ok(rx) = rx.lock() else { break };
            let Ok(first) = rx.recv() else { break };
            let mut batch = vec![first];
            while batch.len() < 200 {
                match rx.try_recv() {
                    Ok(v) => batch.push(v),
                    Err(_) => break,
                }
            }
            batch
        };
        let Some(st) = state.upgrade() else { break };
        write_batch(&st, &batch);
    }
}

#[derive(diesel::QueryableByName)]
struct NewRow {
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    pk: i64,
    #[diesel(sql_type = diesel::sql_types::Text)]
    res_id: String,
}

/// Store a batch of AuditEvents as version 1 of new resources: one multi-row INSERT each for
/// the current rows, the history rows and each index table (an AuditEvent is never updated,
/// so the general per-resource path is not needed).
pub fn insert_batch(conn: &mut DbConn, events: &[Value]) -> ApiResult<()> {
    if events.is_empty() {
        return Ok(());
    }
    let now = now_micros();
    let stamped: Vec<(String, Value, String)> = events
        .iter()
        .map(|e| {
            let id = uuid::Uuid::new_v4().to_string();
            let v = resource::stamp(e.clone(), &id, 1, now);
            let text = v.to_string();
            (id, v, text)
        })
        .collect();
    let mut q = Sql::new();
    q.push("INSERT INTO resources (res_type, res_id, version_id, last_updated, deleted, content) VALUES ");
    for (n, (id, _, text)) in stamped.iter().enumerate() {
        if n > 0 {
            q.push(", ");
        }
        q.push("('AuditEvent', ")
            .text(id.clone())
            .push(", 1, ")
            .int(now)
            .push(", false, ")
            .text(text.clone())
            .push(")");
    }
    q.push(" RETURNING pk, res_id");
    let rows: Vec<NewRow> = load(conn, &q).map_err(db_error)?;
    let mut h = Sql::new();
    h.push("INSERT INTO resource_history (res_type, res_id, version_id, last_updated, method, deleted, content) VALUES ");
    for (n, (id, _, text)) in stamped.iter().enumerate() {
        if n > 0 {
            h.push(", ");
        }
        h.push("('AuditEvent', ")
            .text(id.clone())
            .push(", 1, ")
            .int(now)
            .push(", 'POST', false, ")
            .text(text.clone())
            .push(")");
    }
    execute(conn, &h).map_err(db_error)?;
    let by_id: std::collections::HashMap<&str, i64> =
        rows.iter().map(|r| (r.res_id.as_str(), r.pk)).collect();
    let items: Vec<(i64, &Value)> = stamped
        .iter()
        .filter_map(|(id, v, _)| by_id.get(id.as_str()).map(|pk| (*pk, v)))
        .collect();
    if items.len() != stamped.len() {
        return Err(ApiError::internal(
            "audit batch: inserted rows do not match",
        ));
    }
    insert_index_bulk(conn, "AuditEvent", &items)
}

fn write_batch(st: &Arc<AppState>, batch: &[Value]) {
    for attempt in 0..3 {
        match st.store.write_tx(|c| insert_batch(c, batch)) {
            Ok(()) => return,
            Err(e) => {
                log::error!(
                    "writing {} AuditEvent(s) failed (attempt {}): {e}",
                    batch.len(),
                    attempt + 1
                );
                std::thread::sleep(std::time::Duration::from_millis(200));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_shape() {
        let f = AuditFacts {
            sub: Some("alice".into()),
            fhir_user: Some("Practitioner/1".into()),
            client_id: Some("app".into()),
            interaction: Some(Interaction::Search),
            method: "GET".into(),
            path: "/fhir/Task".into(),
            query: "status=ready".into(),
            ty: Some("Task".into()),
            patients: vec!["a".into()],
            status: 403,
            ip: Some("127.0.0.1".into()),
            ..AuditFacts::default()
        };
        let e = audit_event(&f);
        assert_eq!(e["outcome"], "4");
        assert_eq!(e["action"], "E");
        assert_eq!(e["agent"][0]["who"]["reference"], "Practitioner/1");
        assert_eq!(e["agent"][0]["altId"], "alice");
        assert_eq!(e["agent"][0]["network"]["address"], "127.0.0.1");
        assert_eq!(e["agent"][1]["who"]["identifier"]["value"], "app");
        assert_eq!(e["entity"][0]["query"], "c3RhdHVzPXJlYWR5");
        assert_eq!(e["entity"][1]["what"]["reference"], "Patient/a");
        assert!(e["recorded"].as_str().unwrap().ends_with('Z'));
        // The server's own AuditEvents must pass R4 validation (sev-1: name or query, not both).
        let report = crate::fhir::validate::validate(&e);
        assert!(report.issues.is_empty(), "{:?}", report.issues);
    }
}
