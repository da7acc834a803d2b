//! The audit trail: one FHIR AuditEvent per /fhir request. A write carries its event into its
//! own transaction (service::write::UnitOfWork); everything else is queued and written in
//! batches by a background thread, each batch in one transaction (storage: store::audit).
use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine;
use serde::Serialize;

use super::access::policy::{Interaction, Principal};
use crate::fhir::datetime::{format_instant, now_micros};
use crate::store::audit::{Record, Values};
use crate::store::Store;

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

const SUBTYPE_SYSTEM: &str = "http://hl7.org/fhir/restful-interaction";

#[cfg(test)]
#[derive(Serialize)]
struct Coding {
    system: &'static str,
    code: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    display: Option<&'static str>,
}

#[cfg(test)]
const fn coding(system: &'static str, code: &'static str, display: &'static str) -> Coding {
    Coding {
        system,
        code,
        display: Some(display),
    }
}

#[cfg(test)]
#[derive(Serialize)]
struct Concept {
    coding: [Coding; 1],
}

#[cfg(test)]
#[derive(Serialize)]
struct Meta {
    #[serde(rename = "versionId")]
    version_id: &'static str,
    #[serde(rename = "lastUpdated")]
    last_updated: String,
}

#[cfg(test)]
#[derive(Serialize)]
struct Ident<'a> {
    value: &'a str,
}

#[cfg(test)]
#[derive(Serialize)]
struct Who<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    reference: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    identifier: Option<Ident<'a>>,
}

#[cfg(test)]
#[derive(Serialize)]
struct Network<'a> {
    address: &'a str,
    #[serde(rename = "type")]
    ty: &'static str,
}

#[cfg(test)]
#[derive(Serialize)]
struct Agent<'a> {
    #[serde(rename = "type")]
    ty: Concept,
    who: Who<'a>,
    #[serde(rename = "altId", skip_serializing_if = "Option::is_none")]
    alt_id: Option<&'a str>,
    requestor: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    network: Option<Network<'a>>,
}

#[cfg(test)]
#[derive(Serialize)]
struct Reference {
    reference: String,
}

#[cfg(test)]
#[derive(Serialize)]
struct Entity<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    what: Option<Reference>,
    #[serde(rename = "type")]
    ty: Coding,
    #[serde(skip_serializing_if = "Option::is_none")]
    role: Option<Coding>,
    #[serde(skip_serializing_if = "Option::is_none")]
    description: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    query: Option<String>,
}

#[cfg(test)]
#[derive(Serialize)]
struct Observer {
    display: &'static str,
}

#[cfg(test)]
#[derive(Serialize)]
struct Source {
    observer: Observer,
    #[serde(rename = "type")]
    ty: [Coding; 1],
}

#[cfg(test)]
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Event<'a> {
    resource_type: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    meta: Option<Meta>,
    #[serde(rename = "type")]
    ty: Coding,
    subtype: [Coding; 1],
    action: &'static str,
    recorded: String,
    outcome: &'static str,
    outcome_desc: String,
    agent: Vec<Agent<'a>>,
    source: Source,
    entity: Vec<Entity<'a>>,
}

fn outcome(status: u16) -> &'static str {
    match status {
        0..=399 => "0",
        400..=499 => "4",
        _ => "8",
    }
}

/// The entity the request was about: Type/id (with its version after a write).
fn what(f: &AuditFacts) -> Option<String> {
    f.version_ref.clone().or_else(|| match (&f.ty, &f.id) {
        (Some(t), Some(i)) => Some(format!("{t}/{i}")),
        _ => None,
    })
}

/// The AuditEvent of a request (http://hl7.org/fhir/R4/auditevent.html) as a typed model: the
/// reference that [`event_text`] (which writes the same text without building it) is tested
/// against. With `stored`, it carries its id and meta (version 1, lastUpdated).
#[cfg(test)]
fn event<'a>(f: &'a AuditFacts, recorded: i64, stored: Option<&'a str>) -> Event<'a> {
    let who = match &f.fhir_user {
        Some(u) => Who {
            reference: Some(u),
            identifier: None,
        },
        None => Who {
            reference: None,
            identifier: Some(Ident {
                value: f.sub.as_deref().unwrap_or("anonymous"),
            }),
        },
    };
    let mut agents = vec![Agent {
        ty: Concept {
            coding: [coding(
                "http://terminology.hl7.org/CodeSystem/extra-security-role-type",
                "humanuser",
                "human user",
            )],
        },
        who,
        alt_id: f.sub.as_deref(),
        requestor: true,
        network: f.ip.as_deref().map(|address| Network { address, ty: "2" }),
    }];
    if let Some(c) = &f.client_id {
        agents.push(Agent {
            ty: Concept {
                coding: [coding(
                    "http://dicom.nema.org/resources/ontology/DCM",
                    "110150",
                    "Application",
                )],
            },
            who: Who {
                reference: None,
                identifier: Some(Ident { value: c }),
            },
            alt_id: None,
            requestor: false,
            network: None,
        });
    }
    let what = what(f);
    // sev-1: an entity has a name or a query, not both (the query names the type's search).
    let name = match (&what, &f.ty) {
        (None, Some(t)) if f.query.is_empty() => Some(t.as_str()),
        _ => None,
    };
    let mut entities = vec![Entity {
        what: what.map(|reference| Reference { reference }),
        ty: coding(
            "http://terminology.hl7.org/CodeSystem/audit-entity-type",
            "2",
            "System Object",
        ),
        role: None,
        description: Some(format!("{} {}", f.method, f.path)),
        name,
        query: (!f.query.is_empty())
            .then(|| base64::engine::general_purpose::STANDARD.encode(f.query.as_bytes())),
    }];
    for p in &f.patients {
        entities.push(Entity {
            what: Some(Reference {
                reference: format!("Patient/{p}"),
            }),
            ty: coding(
                "http://terminology.hl7.org/CodeSystem/audit-entity-type",
                "1",
                "Person",
            ),
            role: Some(coding(
                "http://terminology.hl7.org/CodeSystem/object-role",
                "1",
                "Patient",
            )),
            description: None,
            name: None,
            query: None,
        });
    }
    let recorded_text = format_instant(recorded);
    Event {
        resource_type: "AuditEvent",
        id: stored,
        meta: stored.map(|_| Meta {
            version_id: "1",
            last_updated: recorded_text.clone(),
        }),
        ty: coding(
            "http://terminology.hl7.org/CodeSystem/audit-event-type",
            "rest",
            "RESTful Operation",
        ),
        subtype: [Coding {
            system: SUBTYPE_SYSTEM,
            code: subtype(f),
            display: None,
        }],
        action: action(f.interaction),
        recorded: recorded_text,
        outcome: outcome(f.status),
        outcome_desc: format!("HTTP {}", f.status),
        agent: agents,
        source: Source {
            observer: Observer {
                display: "icm-fhir",
            },
            ty: [coding(
                "http://terminology.hl7.org/CodeSystem/security-source-type",
                "4",
                "Application Server",
            )],
        },
        entity: entities,
    }
}

/// The text of a request's AuditEvent, stored with `id` (version 1, lastUpdated = recorded):
/// the constant parts are written as they are and only the request's own values are escaped,
/// since one is written per request (the typed serialisation cost ~38,000 instructions an
/// event; `bench/cost_profile.sh`). The same text as serialising [`event`] (test
/// `text_is_the_typed_event`).
fn event_text(f: &AuditFacts, recorded: i64, id: &str) -> String {
    fn esc(o: &mut Vec<u8>, v: &str) {
        // Writing a &str to a Vec cannot fail.
        let _ = serde_json::to_writer(&mut *o, v);
    }
    let recorded_text = format_instant(recorded);
    let mut o: Vec<u8> = Vec::with_capacity(1536);
    o.extend_from_slice(br#"{"resourceType":"AuditEvent","id":"#);
    esc(&mut o, id);
    o.extend_from_slice(br#","meta":{"versionId":"1","lastUpdated":"#);
    esc(&mut o, &recorded_text);
    o.extend_from_slice(
        br#"},"type":{"system":"http://terminology.hl7.org/CodeSystem/audit-event-type","code":"rest","display":"RESTful Operation"},"subtype":[{"system":"http://hl7.org/fhir/restful-interaction","code":"#,
    );
    esc(&mut o, subtype(f));
    o.extend_from_slice(br#"}],"action":""#);
    o.extend_from_slice(action(f.interaction).as_bytes());
    o.extend_from_slice(br#"","recorded":"#);
    esc(&mut o, &recorded_text);
    o.extend_from_slice(br#","outcome":""#);
    o.extend_from_slice(outcome(f.status).as_bytes());
    o.extend_from_slice(br#"","outcomeDesc":"HTTP "#);
    o.extend_from_slice(f.status.to_string().as_bytes());
    o.extend_from_slice(
        br#"","agent":[{"type":{"coding":[{"system":"http://terminology.hl7.org/CodeSystem/extra-security-role-type","code":"humanuser","display":"human user"}]},"who":{"#,
    );
    match &f.fhir_user {
        Some(u) => {
            o.extend_from_slice(br#""reference":"#);
            esc(&mut o, u);
        }
        None => {
            o.extend_from_slice(br#""identifier":{"value":"#);
            esc(&mut o, f.sub.as_deref().unwrap_or("anonymous"));
            o.push(b'}');
        }
    }
    o.push(b'}');
    if let Some(sub) = &f.sub {
        o.extend_from_slice(br#","altId":"#);
        esc(&mut o, sub);
    }
    o.extend_from_slice(br#","requestor":true"#);
    if let Some(ip) = &f.ip {
        o.extend_from_slice(br#","network":{"address":"#);
        esc(&mut o, ip);
        o.extend_from_slice(br#","type":"2"}"#);
    }
    o.push(b'}');
    if let Some(c) = &f.client_id {
        o.extend_from_slice(
            br#",{"type":{"coding":[{"system":"http://dicom.nema.org/resources/ontology/DCM","code":"110150","display":"Application"}]},"who":{"identifier":{"value":"#,
        );
        esc(&mut o, c);
        o.extend_from_slice(br#"}},"requestor":false}"#);
    }
    o.extend_from_slice(
        br#"],"source":{"observer":{"display":"icm-fhir"},"type":[{"system":"http://terminology.hl7.org/CodeSystem/security-source-type","code":"4","display":"Application Server"}]},"entity":[{"#,
    );
    let what = what(f);
    if let Some(w) = &what {
        o.extend_from_slice(br#""what":{"reference":"#);
        esc(&mut o, w);
        o.extend_from_slice(b"},");
    }
    o.extend_from_slice(
        br#""type":{"system":"http://terminology.hl7.org/CodeSystem/audit-entity-type","code":"2","display":"System Object"},"description":"#,
    );
    esc(&mut o, &format!("{} {}", f.method, f.path));
    // sev-1: an entity has a name or a query, not both (the query names the type's search).
    if let (None, Some(t), true) = (&what, &f.ty, f.query.is_empty()) {
        o.extend_from_slice(br#","name":"#);
        esc(&mut o, t);
    }
    if !f.query.is_empty() {
        o.extend_from_slice(br#","query":""#);
        o.extend_from_slice(
            base64::engine::general_purpose::STANDARD
                .encode(f.query.as_bytes())
                .as_bytes(),
        );
        o.push(b'"');
    }
    o.push(b'}');
    for p in &f.patients {
        o.extend_from_slice(br#",{"what":{"reference":"#);
        esc(&mut o, &format!("Patient/{p}"));
        o.extend_from_slice(
            br#"},"type":{"system":"http://terminology.hl7.org/CodeSystem/audit-entity-type","code":"1","display":"Person"},"role":{"system":"http://terminology.hl7.org/CodeSystem/object-role","code":"1","display":"Patient"}}"#,
        );
    }
    o.extend_from_slice(b"]}");
    String::from_utf8(o).unwrap_or_default()
}

fn subtype(f: &AuditFacts) -> &'static str {
    f.interaction.map(|i| i.code()).unwrap_or("operation")
}

/// A request's AuditEvent ready for the audit trail: its text, and its search values taken
/// from the facts directly (the same as `store::audit::values` of the text; see the tests).
pub fn audit_record(f: &AuditFacts, recorded: i64) -> Record {
    let id = crate::store::audit::new_id();
    let text = event_text(f, recorded, &id);
    let mut v = Values {
        recorded: Some(recorded - recorded.rem_euclid(1000)),
        action: Some(action(f.interaction).to_string()),
        outcome: Some(outcome(f.status).to_string()),
        subtype: vec![(Some(SUBTYPE_SYSTEM.to_string()), subtype(f).to_string())],
        ..Values::default()
    };
    let add = |list: &mut Vec<String>, s: String| {
        if !list.contains(&s) {
            list.push(s);
        }
    };
    if let Some(u) = &f.fhir_user {
        let (key, patient) = crate::store::audit::reference_key(u);
        add(&mut v.agent, key);
        if let Some(p) = patient {
            add(&mut v.patient, p);
        }
    }
    if let Some(s) = &f.sub {
        add(&mut v.altid, s.clone());
    }
    if let Some(ip) = &f.ip {
        add(&mut v.address, crate::fhir::search::values::fold(ip));
    }
    if let Some(w) = what(f) {
        let (key, patient) = crate::store::audit::reference_key(&w);
        add(&mut v.entity, key);
        if let Some(p) = patient {
            add(&mut v.patient, p);
        }
    }
    for p in &f.patients {
        add(&mut v.entity, format!("Patient/{p}"));
        add(&mut v.patient, p.clone());
    }
    (id, recorded, text, v)
}

/// Most events per batch (one transaction, a few bulk INSERTs).
const MAX_BATCH: usize = 1000;
/// How long the writer waits for more events before writing a batch: bigger batches, fewer
/// commits; an AuditEvent search waits for the queue to drain (see [`AuditSink::flush`]).
const LINGER: Duration = Duration::from_millis(5);
/// Events kept in memory before the writer moves the rest to the spool file (bounded memory
/// when the database is slower than the requests).
const MEMORY_LIMIT: usize = 50_000;
/// How often the writer retries the database while events wait in the spool.
const RETRY: Duration = Duration::from_secs(1);

/// Queue of AuditEvents waiting for the background writer. Queuing never blocks a request:
/// it appends to an in-memory queue. The writer stores events in batches; when the database
/// fails (or the queue outgrows [`MEMORY_LIMIT`]) it appends them to a spool file (JSON lines,
/// synced to disk) and writes them to the database when it is back — also after a restart.
pub struct AuditSink {
    queue: Arc<Mutex<VecDeque<(AuditFacts, i64)>>>,
    progress: Arc<Progress>,
}

/// Events queued and events stored or spooled (durable), for [`AuditSink::flush`].
#[derive(Default)]
struct Progress {
    queued: AtomicU64,
    done: AtomicU64,
    /// Events in the spool file, waiting for the database.
    spooled: AtomicU64,
    /// Events ever appended to the spool by this process.
    spilled: AtomicU64,
    stop: std::sync::atomic::AtomicBool,
}

impl AuditSink {
    /// Start the writer thread for `store`, spooling to `spool` when the database is away.
    /// Events left in the spool by an earlier run are written first.
    pub fn start(store: Arc<Store>, spool: PathBuf) -> AuditSink {
        AuditSink::start_with_limit(store, spool, MEMORY_LIMIT)
    }

    /// As [`AuditSink::start`], keeping at most `memory_limit` events in memory before the
    /// writer moves the excess to the spool.
    pub fn start_with_limit(store: Arc<Store>, spool: PathBuf, memory_limit: usize) -> AuditSink {
        let queue = Arc::new(Mutex::new(VecDeque::new()));
        let progress = Arc::new(Progress::default());
        let (q, p) = (queue.clone(), progress.clone());
        std::thread::Builder::new()
            .name("icm-audit".into())
            .spawn(move || Writer::new(store, spool, q, p, memory_limit).run())
            .expect("spawn audit writer");
        AuditSink { queue, progress }
    }

    /// Queue a request's AuditEvent (recorded now). Never blocks on the database or on a full
    /// queue; the writer thread builds and stores the event.
    pub fn enqueue(&self, facts: AuditFacts) {
        self.progress.queued.fetch_add(1, Ordering::AcqRel);
        self.queue
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push_back((facts, now_micros()));
    }

    /// Wait (at most `timeout`) until every event queued before this call is stored (or, while
    /// the database is away, safely spooled), so a search of the audit trail sees the requests
    /// that came before it.
    pub async fn flush(&self, timeout: Duration) {
        let target = self.progress.queued.load(Ordering::Acquire);
        let end = Instant::now() + timeout;
        while self.progress.done.load(Ordering::Acquire) < target && Instant::now() < end {
            actix_web::rt::time::sleep(Duration::from_millis(2)).await;
        }
    }

    /// Events waiting in the spool file for the database.
    pub fn spooled(&self) -> u64 {
        self.progress.spooled.load(Ordering::Acquire)
    }

    /// Events this process ever moved to the spool (database away or behind).
    pub fn spilled(&self) -> u64 {
        self.progress.spilled.load(Ordering::Acquire)
    }
}

impl Drop for AuditSink {
    fn drop(&mut self) {
        self.progress.stop.store(true, Ordering::Release);
    }
}

/// One spooled event: what `store::audit::write` needs, its search values rebuilt on replay.
#[derive(Serialize, serde::Deserialize)]
struct Spooled {
    id: String,
    at: i64,
    text: String,
}

struct Writer {
    store: Arc<Store>,
    spool: PathBuf,
    queue: Arc<Mutex<VecDeque<(AuditFacts, i64)>>>,
    progress: Arc<Progress>,
    last_retry: Instant,
    /// A write to the database failed and has not succeeded since: new events go to the
    /// spool, and the database is tried again every [`RETRY`].
    down: bool,
    /// Bytes at the start of the spool file already written to the database.
    replayed: u64,
    /// Events kept in memory before the excess goes to the spool.
    memory_limit: usize,
}

impl Writer {
    fn new(
        store: Arc<Store>,
        spool: PathBuf,
        queue: Arc<Mutex<VecDeque<(AuditFacts, i64)>>>,
        progress: Arc<Progress>,
        memory_limit: usize,
    ) -> Writer {
        let left = read_spool(&spool).len() as u64;
        // A run that crashed while appending may have left a torn last line: end it, so the
        // next event starts a line of its own (the torn one is skipped when read).
        if let Ok(text) = std::fs::read(&spool) {
            if text.last().is_some_and(|&b| b != b'\n') {
                use std::io::Write;
                let ended = std::fs::OpenOptions::new()
                    .append(true)
                    .open(&spool)
                    .and_then(|mut f| f.write_all(b"\n"));
                if let Err(e) = ended {
                    log::error!("cannot end the torn audit spool {}: {e}", spool.display());
                }
            }
        }
        if left > 0 {
            log::warn!(
                "{left} AuditEvent(s) of an earlier run wait in {}; writing them",
                spool.display()
            );
        }
        progress.spooled.store(left, Ordering::Release);
        Writer {
            store,
            spool,
            queue,
            progress,
            last_retry: Instant::now() - RETRY,
            down: left > 0,
            replayed: 0,
            memory_limit,
        }
    }

    fn take(&self, n: usize) -> Vec<(AuditFacts, i64)> {
        let mut q = self.queue.lock().unwrap_or_else(|p| p.into_inner());
        let k = n.min(q.len());
        q.drain(..k).collect()
    }

    fn pending(&self) -> usize {
        self.queue.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    fn run(mut self) {
        loop {
            // Sleep rather than wait on a condition: a waiting writer costs every request a
            // wake-up (a context switch); a sleeping one costs it nothing.
            std::thread::sleep(LINGER);
            if self.down && self.last_retry.elapsed() >= RETRY {
                self.last_retry = Instant::now();
                self.replay_chunk();
            }
            loop {
                let batch = self.take(MAX_BATCH);
                if batch.is_empty() {
                    break;
                }
                let n = batch.len() as u64;
                let records: Vec<Record> =
                    batch.iter().map(|(f, at)| audit_record(f, *at)).collect();
                let waiting = self.progress.spooled.load(Ordering::Acquire) > 0;
                if self.down || waiting || self.pending() > self.memory_limit {
                    // The database is away, or behind (events already wait in the spool, or
                    // more than MEMORY_LIMIT in memory): append to the spool, and, while the
                    // database is up, write it the spool's next chunk. So the database writes
                    // as fast as it can, memory stays bounded, and the spool holds the excess.
                    self.spool_records(&records);
                    if !self.down {
                        self.replay_chunk();
                    }
                } else if !self.store_batch(&records) {
                    self.down = true;
                    self.last_retry = Instant::now();
                    self.spool_records(&records);
                }
                self.progress.done.fetch_add(n, Ordering::AcqRel);
            }
            if !self.down && self.progress.spooled.load(Ordering::Acquire) > 0 {
                self.replay_chunk();
            }
            if self.progress.stop.load(Ordering::Acquire) && self.pending() == 0 {
                return;
            }
        }
    }

    fn store_batch(&self, records: &[Record]) -> bool {
        match self
            .store
            .write_tx(|c| crate::store::audit::write(c, records))
        {
            Ok(()) => true,
            Err(e) => {
                log::error!(
                    "writing {} AuditEvent(s) failed ({e}); keeping them in {} until the database is back",
                    records.len(),
                    self.spool.display()
                );
                false
            }
        }
    }

    /// Append records to the spool file and sync it. If even that fails the events stay in
    /// memory at the head of the queue (logged), so nothing is dropped while the process lives.
    fn spool_records(&self, records: &[Record]) {
        use std::io::Write;
        let mut text = String::new();
        for (id, at, body, _) in records {
            let line = Spooled {
                id: id.clone(),
                at: *at,
                text: body.clone(),
            };
            if let Ok(l) = serde_json::to_string(&line) {
                text.push_str(&l);
                text.push('\n');
            }
        }
        let written = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.spool)
            .and_then(|mut f| {
                f.write_all(text.as_bytes())?;
                f.sync_data()
            });
        match written {
            Ok(()) => {
                self.progress
                    .spooled
                    .fetch_add(records.len() as u64, Ordering::AcqRel);
                self.progress
                    .spilled
                    .fetch_add(records.len() as u64, Ordering::AcqRel);
            }
            Err(e) => {
                log::error!(
                    "cannot write the audit spool {}: {e}; {} AuditEvent(s) stay in memory",
                    self.spool.display(),
                    records.len()
                );
                std::thread::sleep(RETRY);
                let store = self.store.clone();
                let again = records.to_vec();
                // Retry the database until it takes them: the events must not be lost.
                while store
                    .write_tx(|c| crate::store::audit::write(c, &again))
                    .is_err()
                {
                    if self.progress.stop.load(Ordering::Acquire) {
                        log::error!("{} AuditEvent(s) lost at shutdown", again.len());
                        return;
                    }
                    std::thread::sleep(RETRY);
                }
            }
        }
    }

    /// Write the next events of the spool (at most [`MAX_BATCH`], skipping those already
    /// there) to the database; remove the spool once all of it is written. A failure marks the
    /// database down. Only this thread appends to the spool, so reading it here is safe.
    fn replay_chunk(&mut self) {
        let (lines, end) = match read_spool_from(&self.spool, self.replayed, MAX_BATCH) {
            Ok(x) => x,
            Err(e) => {
                log::error!("cannot read the audit spool {}: {e}", self.spool.display());
                return;
            }
        };
        if !lines.is_empty() {
            let ids: Vec<String> = lines.iter().map(|s| s.id.clone()).collect();
            let result = self.store.write_tx(|c| {
                let have = crate::store::audit::existing_ids(c, &ids)?;
                let records: Vec<Record> = lines
                    .iter()
                    .filter(|s| !have.contains(&s.id))
                    .filter_map(|s| {
                        let v: serde_json::Value = serde_json::from_str(&s.text).ok()?;
                        Some((
                            s.id.clone(),
                            s.at,
                            s.text.clone(),
                            crate::store::audit::values(&v),
                        ))
                    })
                    .collect();
                crate::store::audit::write(c, &records)
            });
            if let Err(e) = result {
                if !self.down {
                    log::warn!("the database is unavailable for the audit spool: {e}");
                }
                self.down = true;
                self.last_retry = Instant::now();
                return;
            }
            if self.down {
                log::info!("the database is back; writing the audit spool to it");
            }
            self.down = false;
            self.replayed = end;
            let left = self.progress.spooled.load(Ordering::Acquire);
            self.progress
                .spooled
                .store(left.saturating_sub(lines.len() as u64), Ordering::Release);
        }
        let size = std::fs::metadata(&self.spool).map(|m| m.len()).unwrap_or(0);
        if self.replayed >= size {
            // All of it is in the database (or it does not exist).
            if let Err(e) = std::fs::remove_file(&self.spool) {
                if e.kind() != std::io::ErrorKind::NotFound {
                    log::error!(
                        "cannot remove the audit spool {}: {e}",
                        self.spool.display()
                    );
                    return;
                }
            }
            self.down = false;
            self.replayed = 0;
            self.progress.spooled.store(0, Ordering::Release);
        }
    }
}

/// Up to `max` events of a spool file from byte `offset`, and the offset after them (a torn
/// last line, still being written by a crashed run, is skipped).
fn read_spool_from(path: &Path, offset: u64, max: usize) -> std::io::Result<(Vec<Spooled>, u64)> {
    use std::io::{BufRead, Seek, SeekFrom};
    let f = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((Vec::new(), 0)),
        Err(e) => return Err(e),
    };
    let mut r = std::io::BufReader::new(f);
    r.seek(SeekFrom::Start(offset))?;
    let (mut out, mut pos, mut line) = (Vec::new(), offset, String::new());
    while out.len() < max {
        line.clear();
        let n = r.read_line(&mut line)?;
        if n == 0 {
            break;
        }
        pos += n as u64;
        if let Ok(s) = serde_json::from_str(line.trim_end()) {
            out.push(s);
        }
    }
    Ok((out, pos))
}

/// The events in a spool file (none if it does not exist; a torn last line is skipped).
fn read_spool(path: &Path) -> Vec<Spooled> {
    std::fs::read_to_string(path)
        .map(|t| {
            t.lines()
                .filter_map(|l| serde_json::from_str(l).ok())
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

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
        let e: Value = serde_json::from_str(&audit_record(&f, now_micros()).2).unwrap();
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

    /// The hand-written text is, byte for byte, the typed event's serialisation, whatever the
    /// facts (optional parts present or not, values needing escapes).
    #[test]
    fn text_is_the_typed_event() {
        let interactions = [
            None,
            Some(Interaction::Read),
            Some(Interaction::Search),
            Some(Interaction::Create),
            Some(Interaction::Delete),
        ];
        let mut n = 0;
        for (i, interaction) in interactions.into_iter().enumerate() {
            for mask in 0..64u32 {
                let on = |b: u32| mask & (1 << b) != 0;
                let f = AuditFacts {
                    sub: on(0).then(|| "al\"ice\u{7}".to_string()),
                    fhir_user: on(1).then(|| "Practitioner/1".to_string()),
                    client_id: on(2).then(|| "app é".to_string()),
                    interaction,
                    method: "GET".into(),
                    path: "/fhir/Task/\"x\"".into(),
                    query: if on(3) {
                        "status=ready&x=\n".into()
                    } else {
                        String::new()
                    },
                    ty: on(4).then(|| "Task".to_string()),
                    id: (on(5) && i % 2 == 0).then(|| "t1".to_string()),
                    version_ref: (i == 3).then(|| "Task/t1/_history/2".to_string()),
                    patients: (0..(mask as usize % 3)).map(|k| format!("p{k}")).collect(),
                    status: [200u16, 404, 500][mask as usize % 3],
                    ip: on(2).then(|| "::1".to_string()),
                };
                let at = 1_764_000_000_123_456 + i64::from(mask);
                let typed = serde_json::to_string(&event(&f, at, Some("ae-1"))).unwrap();
                assert_eq!(event_text(&f, at, "ae-1"), typed, "{f:?}");
                n += 1;
            }
        }
        assert_eq!(n, 5 * 64);
    }

    /// The search values the writer takes from the facts are those the stored text has.
    #[test]
    fn record_values_match_the_text() {
        let base = AuditFacts {
            sub: Some("bob".into()),
            interaction: Some(Interaction::Read),
            method: "GET".into(),
            path: "/fhir/CarePlan/cp1".into(),
            ty: Some("CarePlan".into()),
            id: Some("cp1".into()),
            patients: vec!["p1".into(), "p2".into()],
            status: 200,
            ip: Some("::1".into()),
            ..AuditFacts::default()
        };
        let cases = vec![
            base.clone(),
            AuditFacts {
                fhir_user: Some("Patient/p9".into()),
                client_id: Some("app".into()),
                ..base.clone()
            },
            AuditFacts {
                fhir_user: Some("Practitioner/7".into()),
                ty: Some("Patient".into()),
                id: Some("p1".into()),
                version_ref: Some("Patient/p1/_history/2".into()),
                interaction: Some(Interaction::Update),
                status: 422,
                ..base.clone()
            },
            AuditFacts {
                id: None,
                query: "status=active".into(),
                interaction: Some(Interaction::Search),
                patients: vec![],
                ip: None,
                ..base
            },
        ];
        for f in cases {
            let (id, at, text, v) = audit_record(&f, 1_764_000_000_123_456);
            let parsed: Value = serde_json::from_str(&text).unwrap();
            assert_eq!(parsed["id"], id.as_str());
            assert_eq!(parsed["meta"]["versionId"], "1");
            assert_eq!(at, 1_764_000_000_123_456);
            assert_eq!(crate::store::audit::values(&parsed), v, "{f:?}");
            let report = crate::fhir::validate::validate(&parsed);
            assert!(report.issues.is_empty(), "{:?}", report.issues);
        }
    }
}
