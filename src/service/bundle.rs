//! Transaction and batch Bundles. A transaction is one unit of work (one database
//! transaction, the spec's processing order, `urn:uuid` and conditional references resolved,
//! reference checks deferred to its end); a batch is one unit of work per entry. Every entry
//! goes through the same doors as its REST twin: writes through [`UnitOfWork::apply`] and its
//! conditional forms, searches through the one search service, reads and history through
//! service::read — all with the request's context.
use std::collections::HashMap;

use actix_web::http::StatusCode;
use serde::ser::{Serialize, SerializeMap, Serializer};
use serde_json::value::RawValue;
use serde_json::{json, Value};

use super::access::policy::{classify, decide, Interaction, Refusal};
use super::context::RequestContext;
use super::read;
use super::write::conditional::{nothing_deleted, Created};
use super::write::{run, Change, UnitOfWork};
use crate::error::{ApiError, ApiResult};
use crate::fhir::bundle::bundle;
use crate::fhir::datetime::format_instant;
use crate::fhir::outcome::{Issue, OperationOutcome};
use crate::fhir::resource::etag;
use crate::fhir::transaction::{self as tx, Entry, Kind, Method};
use crate::store::lookup::read_current;
use crate::store::write::{WriteKind, WriteResult};
use crate::store::{DbConn, Store};

/// What one entry did.
enum Outcome {
    Written(WriteResult),
    /// A resource created in bulk, its stored content kept as JSON text for the response (a
    /// transaction of thousands of POST entries does not hold them all as JSON trees).
    Created(WriteResult, Box<RawValue>),
    /// Conditional create that matched one existing resource.
    Existing {
        ty: String,
        id: String,
    },
    Read {
        ty: String,
        id: String,
        version: i64,
        last_updated: i64,
        content: Option<String>,
        head: bool,
    },
    /// A search or history entry: its Bundle.
    Listing(Value),
    Failed(ApiError),
}

/// Prefix an error's messages with the entry it came from, keeping its status.
pub fn at_entry(e: ApiError, label: &str) -> ApiError {
    let p = |m: String| format!("{label}: {m}");
    match e {
        ApiError::BadRequest {
            code,
            msg,
            expression,
        } if !msg.starts_with("Bundle.entry[") => ApiError::BadRequest {
            code,
            msg: p(msg),
            expression,
        },
        ApiError::NotFound(m) => ApiError::NotFound(p(m)),
        ApiError::MethodNotAllowed(m) => ApiError::MethodNotAllowed(p(m)),
        ApiError::Conflict(m) => ApiError::Conflict(p(m)),
        ApiError::BusinessRule(m) => ApiError::BusinessRule(p(m)),
        ApiError::Gone(m) => ApiError::Gone(p(m)),
        ApiError::PreconditionFailed(m) => ApiError::PreconditionFailed(p(m)),
        ApiError::Forbidden(m) => ApiError::Forbidden(p(m)),
        ApiError::Unprocessable(issues) => ApiError::Unprocessable(
            issues
                .into_iter()
                .map(|mut i| {
                    if !i.diagnostics.starts_with("Bundle.entry[") {
                        i.diagnostics = p(i.diagnostics);
                    }
                    i
                })
                .collect(),
        ),
        other => other,
    }
}

/// A GET entry: read, vread, search, or history.
fn get_entry(
    store: &Store,
    u: &mut UnitOfWork,
    e: &Entry,
    pairs: &[(String, String)],
) -> ApiResult<Outcome> {
    let ty = e.target.ty.as_str();
    let ctx = u.ctx;
    match (ty, e.target.id.as_deref(), e.target.version.as_deref()) {
        ("_history", None, _) => Ok(Outcome::Listing(read::history(
            store, ctx, None, None, pairs,
        )?)),
        (_, Some("_history"), None) => Ok(Outcome::Listing(read::history(
            store,
            ctx,
            Some(ty),
            None,
            pairs,
        )?)),
        (_, None, _) => Ok(Outcome::Listing(super::search::search(
            u.conn(),
            ctx,
            ty,
            pairs,
            false,
        )?)),
        (_, Some(id), version) => {
            let row = match version {
                None => read::read(u.conn(), ctx, ty, id)?,
                Some(v) => {
                    let n = v.parse::<i64>().ok().filter(|n| *n > 0).ok_or_else(|| {
                        ApiError::NotFound(format!("{ty}/{id} has no version '{v}'"))
                    })?;
                    read::vread(u.conn(), ctx, ty, id, n)?
                }
            };
            Ok(Outcome::Read {
                ty: ty.to_string(),
                id: id.to_string(),
                version: row.version_id,
                last_updated: row.last_updated,
                content: row.content,
                head: e.method == Method::Head,
            })
        }
    }
}

/// The scope decision for one entry, as for the same request on its own (a batch answers a
/// refused entry with its own 403; a transaction fails as a whole).
fn check_scopes(ctx: &RequestContext, e: &Entry) -> ApiResult<()> {
    let t = &e.target;
    let mut segs: Vec<&str> = vec![t.ty.as_str()];
    segs.extend(t.id.as_deref());
    if let Some(v) = t.version.as_deref() {
        segs.extend(["_history", v]);
    }
    let target = classify(e.method.as_str(), &segs);
    if target.interaction == Interaction::Bundle {
        return Err(ApiError::Forbidden("nested bundles are not allowed".into()));
    }
    decide(&ctx.principal, &target)
        .map(|_| ())
        .map_err(|Refusal::Forbidden(m)| ApiError::Forbidden(m))
}

/// Run one entry (references already rewritten) inside the unit of work.
fn run_entry(
    store: &Store,
    u: &mut UnitOfWork,
    e: &Entry,
    resource: Option<Value>,
    new_id: Option<&String>,
) -> ApiResult<Outcome> {
    check_scopes(u.ctx, e)?;
    let ty = e.target.ty.as_str();
    let id = e.target.id.clone();
    let q = e.target.query.as_deref();
    let body = || {
        resource
            .clone()
            .ok_or_else(|| ApiError::bad_request("the entry has no resource"))
    };
    Ok(match e.method {
        Method::Delete => match (id, q) {
            (Some(id), _) => Outcome::Written(u.apply(
                ty,
                Change::Delete {
                    id,
                    if_match: e.if_match,
                },
            )?),
            (None, Some(q)) => Outcome::Written(
                u.conditional_delete(ty, q)?
                    .into_iter()
                    .last()
                    .unwrap_or_else(|| nothing_deleted(ty)),
            ),
            _ => return Err(ApiError::bad_request("DELETE needs an id or criteria")),
        },
        Method::Post => {
            let id = new_id
                .cloned()
                .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
            match &e.if_none_exist {
                Some(c) => match u.conditional_create(ty, c, id, body()?)? {
                    Created::Written(r) => Outcome::Written(r),
                    Created::Existing { ty, id } => Outcome::Existing { ty, id },
                },
                None => Outcome::Written(u.apply(ty, Change::CreateWithId { id, body: body()? })?),
            }
        }
        Method::Put => match (id, q) {
            (Some(id), _) => Outcome::Written(u.apply(
                ty,
                Change::Update {
                    id,
                    body: body()?,
                    if_match: e.if_match,
                },
            )?),
            (None, Some(q)) => {
                Outcome::Written(u.conditional_update(ty, q, body()?, e.if_match)?)
            }
            _ => return Err(ApiError::bad_request("PUT needs an id or criteria")),
        },
        Method::Patch => {
            // The entry's resource after reference rewriting: a Parameters (FHIRPath Patch)
            // or a Binary holding a JSON Patch or JSON Merge Patch.
            let (format, patch) = tx::patch_document(e, body()?)?;
            Outcome::Written(match (id, q) {
                (Some(id), _) => u.apply(
                    ty,
                    Change::Patch {
                        id,
                        patch,
                        if_match: e.if_match,
                        format,
                    },
                )?,
                (None, Some(q)) => u.conditional_patch(ty, q, patch, format, e.if_match)?,
                _ => return Err(ApiError::bad_request("PATCH needs an id or criteria")),
            })
        }
        Method::Get | Method::Head => {
            let pairs = super::search::pairs(q.unwrap_or(""));
            get_entry(store, u, e, &pairs)?
        }
    })
}

/// The server-assigned id and reference map of a transaction: POST entries get their ids
/// now (so every urn:uuid can be rewritten before any write); PUT entries map to Type/id.
pub fn assign_ids(entries: &[Entry]) -> (HashMap<usize, String>, HashMap<String, String>) {
    let mut ids = HashMap::new();
    let mut refs = HashMap::new();
    for e in entries {
        let target = match e.method {
            Method::Post => {
                let id = uuid::Uuid::new_v4().to_string();
                ids.insert(e.index, id.clone());
                Some(format!("{}/{id}", e.target.ty))
            }
            Method::Put | Method::Patch => e
                .target
                .id
                .as_ref()
                .map(|id| format!("{}/{id}", e.target.ty)),
            _ => None,
        };
        if let (Some(full), Some(t)) = (&e.full_url, target) {
            refs.insert(full.clone(), t);
        }
    }
    (ids, refs)
}

/// Resolve conditional references (`Type?criteria`) in a resource to `Type/id` (exactly one
/// visible match required).
fn resolve_conditional_refs(
    u: &mut UnitOfWork,
    resource: &mut Value,
    cache: &mut HashMap<String, String>,
) -> ApiResult<()> {
    let mut found = vec![];
    tx::conditional_references(resource, &mut found);
    if found.is_empty() {
        return Ok(());
    }
    let ctx = u.ctx;
    let mut map = HashMap::new();
    for r in found {
        if let Some(t) = cache.get(&r) {
            map.insert(r, t.clone());
            continue;
        }
        let Some((ty, q)) = r.split_once('?') else {
            continue;
        };
        let ids = super::search::criteria_ids(u.conn(), ctx, ty, q)?;
        let t = match ids.as_slice() {
            [one] => format!("{ty}/{one}"),
            [] => {
                return Err(ApiError::PreconditionFailed(format!(
                    "conditional reference '{r}' matches no resource"
                )))
            }
            _ => {
                return Err(ApiError::PreconditionFailed(format!(
                    "conditional reference '{r}' matches {} resources",
                    ids.len()
                )))
            }
        };
        cache.insert(r.clone(), t.clone());
        map.insert(r, t);
    }
    tx::rewrite_references(resource, &map);
    Ok(())
}

/// How many POST entries of a transaction are prepared and stored together: bounds the
/// resources held as JSON trees at once.
const CREATE_CHUNK: usize = 500;

/// A POST entry written in bulk: its index, the result, the stored text for the response.
type BulkCreated = (usize, WriteResult, Option<Box<RawValue>>);

/// What a transaction knows while it runs (one attempt of its unit of work).
struct TxState {
    /// Server-assigned ids of the POST entries (by entry index).
    ids: HashMap<usize, String>,
    /// fullUrl → `Type/id`.
    refs: HashMap<String, String>,
    /// Resolved conditional references.
    cache: HashMap<String, String>,
    /// Conditional creates that matched an existing resource (by entry index).
    pre: HashMap<usize, Outcome>,
}

/// The POST entries of a transaction (`group`, indexes into `entries`), references rewritten,
/// created through [`UnitOfWork::create_batch`] a chunk at a time, all at lastUpdated `ts`;
/// conditional creates that matched an existing resource are answered without a write. The
/// stored resources are kept as JSON text for the response (not at all with `minimal`).
fn create_all(
    u: &mut UnitOfWork,
    st: &mut TxState,
    entries: &[Entry],
    group: &[usize],
    ts: i64,
    minimal: bool,
    out: &mut [Option<Outcome>],
) -> ApiResult<Vec<BulkCreated>> {
    let mut done = Vec::with_capacity(group.len());
    for chunk in group.chunks(CREATE_CHUNK) {
        let mut items = Vec::with_capacity(chunk.len());
        let mut at = Vec::with_capacity(chunk.len());
        for &j in chunk {
            let e = &entries[j];
            if let Some(o) = st.pre.remove(&e.index) {
                out[j] = Some(o);
                continue;
            }
            let label = |x| at_entry(x, &e.label());
            check_scopes(u.ctx, e).map_err(label)?;
            let mut r = e
                .resource()
                .ok_or_else(|| label(ApiError::bad_request("the entry has no resource")))?;
            tx::rewrite_references(&mut r, &st.refs);
            resolve_conditional_refs(u, &mut r, &mut st.cache).map_err(label)?;
            let id = st
                .ids
                .get(&e.index)
                .cloned()
                .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
            items.push((e.target.ty.clone(), id, r));
            at.push(j);
        }
        let written = u
            .create_batch(items, ts)
            .map_err(|(n, x)| at_entry(x, &entries[at[n]].label()))?;
        for (j, mut r) in at.into_iter().zip(written) {
            // The response needs the stored text only: the JSON tree goes now.
            let text = match r.resource.take() {
                Some(v) if !minimal => RawValue::from_string(v.to_string()).ok(),
                _ => None,
            };
            done.push((j, r, text));
        }
    }
    Ok(done)
}

/// A transaction: all entries in one unit of work, in the spec's order; the first failure
/// rolls everything back and is reported naming its entry.
fn run_transaction(
    store: &Store,
    ctx: &RequestContext,
    entries: &[Entry],
    minimal: bool,
) -> ApiResult<Vec<Outcome>> {
    let order = tx::processing_order(entries);
    let out = run(store, ctx, |u| {
        let (ids, refs) = assign_ids(entries);
        let mut st = TxState {
            ids,
            refs,
            cache: HashMap::new(),
            pre: HashMap::new(),
        };
        // Conditional creates that match an existing resource point their fullUrl at it.
        for e in entries.iter().filter(|e| e.method == Method::Post) {
            if let Some(c) = &e.if_none_exist {
                if let Some(existing) = u
                    .conditional_match(&e.target.ty, c)
                    .map_err(|x| at_entry(x, &e.label()))?
                {
                    if let Some(f) = &e.full_url {
                        st.refs
                            .insert(f.clone(), format!("{}/{existing}", e.target.ty));
                    }
                    st.pre.insert(
                        e.index,
                        Outcome::Existing {
                            ty: e.target.ty.clone(),
                            id: existing,
                        },
                    );
                }
            }
        }
        let mut out: Vec<Option<Outcome>> = (0..entries.len()).map(|_| None).collect();
        let mut touched: std::collections::HashSet<(String, String)> = Default::default();
        // The spec: resource identities changed by two entries fail the transaction.
        let mut once = |e: &Entry, r: &WriteResult| {
            if !r.id.is_empty() && !touched.insert((r.ty.clone(), r.id.clone())) {
                return Err(ApiError::invalid_at(
                    format!(
                        "{}: {}/{} is changed by more than one entry of the transaction",
                        e.label(),
                        r.ty,
                        r.id
                    ),
                    format!("Bundle.entry[{}]", e.index),
                ));
            }
            Ok(())
        };
        // Entries reference each other in any order: their references are checked at the end.
        u.with_deferred_references(|u| {
            let mut k = 0;
            while k < order.len() {
                let e = &entries[order[k]];
                if e.method == Method::Post {
                    // The POST entries, together: new resources, stored in bulk.
                    let end = k + order[k..]
                        .iter()
                        .take_while(|&&j| entries[j].method == Method::Post)
                        .count();
                    let ts = crate::fhir::datetime::now_micros();
                    let written =
                        create_all(u, &mut st, entries, &order[k..end], ts, minimal, &mut out)?;
                    for (j, r, text) in written {
                        once(&entries[j], &r)?;
                        out[j] = Some(match text {
                            Some(t) => Outcome::Created(r, t),
                            None => Outcome::Written(r),
                        });
                    }
                    k = end;
                    continue;
                }
                k += 1;
                let mut resource = e.resource();
                if let Some(r) = resource.as_mut() {
                    tx::rewrite_references(r, &st.refs);
                    resolve_conditional_refs(u, r, &mut st.cache)
                        .map_err(|x| at_entry(x, &e.label()))?;
                }
                let o = run_entry(store, u, e, resource, st.ids.get(&e.index))
                    .map_err(|x| at_entry(x, &e.label()))?;
                if let Outcome::Written(r) = &o {
                    once(e, r)?;
                }
                out[e.index] = Some(o);
            }
            Ok(())
        })?;
        u.audit_request()?;
        Ok(out
            .into_iter()
            .map(|o| o.unwrap_or_else(|| Outcome::Failed(ApiError::internal("entry not run"))))
            .collect())
    })?;
    ctx.mark_audited();
    Ok(out)
}

/// A batch: every entry on its own, in its own unit of work; failures are reported per entry.
fn run_batch(
    store: &Store,
    ctx: &RequestContext,
    parsed: Vec<Result<Entry, ApiError>>,
) -> Vec<Outcome> {
    parsed
        .into_iter()
        .map(|p| {
            let e = match p {
                Ok(e) => e,
                Err(err) => return Outcome::Failed(err),
            };
            run(store, ctx, |u| {
                let mut resource = e.resource();
                if let Some(r) = resource.as_mut() {
                    resolve_conditional_refs(u, r, &mut HashMap::new())?;
                }
                run_entry(store, u, &e, resource, None)
            })
            .unwrap_or_else(|err| Outcome::Failed(at_entry(err, &e.label())))
        })
        .collect()
}

fn status_line(code: u16) -> String {
    let s = StatusCode::from_u16(code).unwrap_or(StatusCode::OK);
    format!("{} {}", s.as_u16(), s.canonical_reason().unwrap_or(""))
}

/// The response entry for one outcome.
fn response_entry(conn: &mut DbConn, ctx: &RequestContext, o: Outcome, minimal: bool) -> EntryOut {
    match o {
        Outcome::Created(r, text) => EntryOut(
            response_value(conn, ctx, Outcome::Written(r), true),
            (!minimal).then_some(text),
        ),
        o => EntryOut(response_value(conn, ctx, o, minimal), None),
    }
}

/// A response entry as JSON (the resource of a bulk-created entry is added when serialized).
fn response_value(conn: &mut DbConn, ctx: &RequestContext, o: Outcome, minimal: bool) -> Value {
    let base = &ctx.base;
    match o {
        Outcome::Created(r, _) => response_value(conn, ctx, Outcome::Written(r), true),
        Outcome::Written(r) => {
            let code = match r.kind {
                WriteKind::Created => 201,
                WriteKind::Updated => 200,
                WriteKind::Deleted | WriteKind::NoChange => 204,
            };
            let mut resp = json!({"status": status_line(code)});
            let mut entry = serde_json::Map::new();
            if matches!(r.kind, WriteKind::Created | WriteKind::Updated) {
                entry.insert("fullUrl".into(), json!(format!("{base}/{}/{}", r.ty, r.id)));
                resp["location"] = json!(format!("{}/{}/_history/{}", r.ty, r.id, r.version));
            }
            if r.kind != WriteKind::NoChange {
                resp["etag"] = json!(etag(r.version));
                resp["lastModified"] = json!(format_instant(r.last_updated));
            }
            if !r.cancelled_tasks.is_empty() {
                resp["outcome"] = OperationOutcome::single(Issue::information(
                    crate::care::cancelled_message(&r.cancelled_tasks),
                ))
                .to_json();
            }
            if let (false, Some(res)) = (minimal, r.resource) {
                entry.insert("resource".into(), res);
            }
            entry.insert("response".into(), resp);
            Value::Object(entry)
        }
        Outcome::Existing { ty, id } => {
            let mut entry = json!({"fullUrl": format!("{base}/{ty}/{id}")});
            let mut resp = json!({"status": status_line(200)});
            if let Ok(Some(row)) = read_current(conn, ctx, &ty, &id) {
                resp["location"] = json!(format!("{ty}/{id}/_history/{}", row.version_id));
                resp["etag"] = json!(etag(row.version_id));
                resp["lastModified"] = json!(format_instant(row.last_updated));
                if let (false, Some(c)) = (
                    minimal,
                    row.content
                        .and_then(|c| serde_json::from_str::<Value>(&c).ok()),
                ) {
                    entry["resource"] = c;
                }
            }
            entry["response"] = resp;
            entry
        }
        Outcome::Read {
            ty,
            id,
            version,
            last_updated,
            content,
            head,
        } => {
            let mut entry = json!({"fullUrl": format!("{base}/{ty}/{id}")});
            if !head {
                if let Some(c) = content.and_then(|c| serde_json::from_str::<Value>(&c).ok()) {
                    entry["resource"] = c;
                }
            }
            entry["response"] = json!({
                "status": status_line(200),
                "etag": etag(version),
                "lastModified": format_instant(last_updated),
            });
            entry
        }
        Outcome::Listing(b) => json!({
            "resource": b,
            "response": {"status": status_line(200)},
        }),
        Outcome::Failed(e) => {
            use actix_web::ResponseError;
            json!({"response": {
                "status": status_line(e.status_code().as_u16()),
                "outcome": e.outcome().to_json(),
            }})
        }
    }
}

/// Process a transaction or batch Bundle for `ctx`: the response Bundle, as JSON text.
pub fn process(
    store: &Store,
    ctx: &RequestContext,
    body: impl AsRef<[u8]>,
    max_entries: usize,
    minimal: bool,
) -> ApiResult<String> {
    let (kind, parsed) = tx::parse(body.as_ref(), &ctx.base, max_entries)?;
    // The entries hold their own copies of what they need: the body goes now.
    drop(body);
    let outcomes = match kind {
        Kind::Transaction => {
            let entries: Vec<Entry> = parsed.into_iter().collect::<Result<_, _>>()?;
            run_transaction(store, ctx, &entries, minimal)?
        }
        Kind::Batch => run_batch(store, ctx, parsed),
    };
    let mut conn = store.conn()?;
    let entries: Vec<EntryOut> = outcomes
        .into_iter()
        .map(|o| response_entry(&mut conn, ctx, o, minimal))
        .collect();
    let kind_name = match kind {
        Kind::Transaction => "transaction-response",
        Kind::Batch => "batch-response",
    };
    let out = BundleOut {
        shell: bundle(kind_name, None, &[], vec![]),
        entries,
    };
    serde_json::to_string(&out).map_err(|e| ApiError::internal(format!("response Bundle: {e}")))
}

/// A response entry: its members, and the stored text of a bulk-created resource (written
/// as `resource`, after `fullUrl`).
struct EntryOut(Value, Option<Box<RawValue>>);

impl Serialize for EntryOut {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let (Value::Object(m), Some(raw)) = (&self.0, &self.1) else {
            return self.0.serialize(s);
        };
        let mut map = s.serialize_map(Some(m.len() + 1))?;
        if !m.contains_key("fullUrl") {
            map.serialize_entry("resource", raw)?;
        }
        for (k, v) in m {
            map.serialize_entry(k, v)?;
            if k == "fullUrl" {
                map.serialize_entry("resource", raw)?;
            }
        }
        map.end()
    }
}

/// The response Bundle: the members of `shell` and then the entries.
struct BundleOut {
    shell: Value,
    entries: Vec<EntryOut>,
}

impl Serialize for BundleOut {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(None)?;
        if let Value::Object(m) = &self.shell {
            for (k, v) in m {
                map.serialize_entry(k, v)?;
            }
        }
        if !self.entries.is_empty() {
            map.serialize_entry("entry", &self.entries)?;
        }
        map.end()
    }
}
