//! `icm-fhir import PATH...`: bulk load of FHIR Bundles (transaction, batch, collection) and NDJSON
//! files through the same unit of work as the API (service::write, with a server-internal
//! context), batched, parallel, resumable, with progress.
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use indicatif::{ProgressBar, ProgressStyle};
use serde_json::Value;

use crate::config::WritePolicy;
use crate::error::ApiError;
use crate::fhir::registry::Registry;
use crate::fhir::resource::is_valid_id;
use crate::service::context::RequestContext;
use crate::service::write::{self, Change, UnitOfWork};
use crate::store::Store;

/// One resource ready to write: type, id, body (references already resolved).
#[derive(Debug, Clone)]
pub struct Item {
    pub ty: String,
    pub id: String,
    pub body: Value,
    /// Where it came from (file and entry/line), for the rejection report.
    pub origin: String,
}

#[derive(Debug, Default)]
pub struct Summary {
    /// type → (created, skipped because already present)
    pub per_type: BTreeMap<String, (u64, u64)>,
    /// (origin, reason)
    pub rejected: Vec<(String, String)>,
    pub files: usize,
}

impl Summary {
    pub fn created(&self) -> u64 {
        self.per_type.values().map(|v| v.0).sum()
    }
    pub fn skipped(&self) -> u64 {
        self.per_type.values().map(|v| v.1).sum()
    }
}

/// Every .json / .ndjson file under the given paths, practitioner/hospital files first (Synthea
/// writes shared Organizations and Practitioners there), then by name.
pub fn collect_files(paths: &[PathBuf]) -> std::io::Result<Vec<PathBuf>> {
    fn walk(p: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
        if p.is_dir() {
            for e in std::fs::read_dir(p)? {
                walk(&e?.path(), out)?;
            }
        } else if p
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| e == "json" || e == "ndjson")
        {
            out.push(p.to_path_buf());
        }
        Ok(())
    }
    let mut out = Vec::new();
    for p in paths {
        if !p.exists() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::NotFound,
                format!("{} does not exist", p.display()),
            ));
        }
        walk(p, &mut out)?;
    }
    let rank = |p: &PathBuf| {
        let n = p
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("")
            .to_ascii_lowercase();
        let shared = n.starts_with("hospital") || n.starts_with("practitioner");
        (!shared, n)
    };
    out.sort_by_key(rank);
    Ok(out)
}

/// A stable id for a resource without one: its urn:uuid, else a hash of its content.
fn derive_id(resource: &Value, full_url: Option<&str>) -> String {
    if let Some(id) = resource
        .get("id")
        .and_then(Value::as_str)
        .filter(|i| is_valid_id(i))
    {
        return id.to_string();
    }
    if let Some(u) = full_url
        .and_then(|u| u.strip_prefix("urn:uuid:"))
        .filter(|u| is_valid_id(u))
    {
        return u.to_string();
    }
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    resource.to_string().hash(&mut h);
    format!("imp-{:016x}", h.finish())
}

/// Parse one file into items (resources with ids fixed and bundle references resolved).
pub fn parse_file(path: &Path, registry: &Registry) -> Result<Vec<Item>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read: {e}"))?;
    let name = path.display().to_string();
    let mut raw: Vec<(Value, Option<String>, String)> = Vec::new();
    let is_ndjson = path.extension().and_then(|e| e.to_str()) == Some("ndjson");
    if is_ndjson {
        for (i, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let v: Value =
                serde_json::from_str(line).map_err(|e| format!("line {}: {e}", i + 1))?;
            raw.push((v, None, format!("{name}:{}", i + 1)));
        }
    } else {
        let v: Value = serde_json::from_str(&text).map_err(|e| format!("not JSON: {e}"))?;
        if v.get("resourceType").and_then(Value::as_str) == Some("Bundle")
            && v.get("type").and_then(Value::as_str) != Some("document")
        {
            if let Some(entries) = v.get("entry").and_then(Value::as_array) {
                for (i, e) in entries.iter().enumerate() {
                    if let Some(r) = e.get("resource") {
                        let full = e.get("fullUrl").and_then(Value::as_str).map(str::to_string);
                        raw.push((r.clone(), full, format!("{name}#entry[{i}]")));
                    }
                }
            }
        } else {
            raw.push((v, None, name.clone()));
        }
    }
    let mut map = HashMap::new();
    let mut items = Vec::with_capacity(raw.len());
    for (r, full, origin) in raw {
        let ty = r
            .get("resourceType")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        let id = derive_id(&r, full.as_deref());
        if let Some(f) = full {
            map.insert(f, format!("{ty}/{id}"));
        }
        items.push(Item {
            ty,
            id,
            body: r,
            origin,
        });
    }
    for it in items.iter_mut() {
        // Every value naming a bundle entry's fullUrl (references, uri/canonical) points at it.
        crate::fhir::transaction::rewrite_references(&mut it.body, &map);
        if let Value::Object(m) = &mut it.body {
            m.insert("id".into(), Value::String(it.id.clone()));
        }
        if !registry.is_supported(&it.ty) {
            it.ty = format!("!{}", it.ty);
        }
    }
    Ok(items)
}

enum Outcome {
    Created,
    Skipped,
}

fn write_one(u: &mut UnitOfWork, it: &Item) -> Result<Outcome, ApiError> {
    let present = crate::store::write::current(u.conn(), &it.ty, &it.id)?;
    if present.is_some_and(|c| !c.deleted) {
        return Ok(Outcome::Skipped);
    }
    u.apply(
        &it.ty,
        Change::Update {
            id: it.id.clone(),
            body: it.body.clone(),
            if_match: None,
        },
    )?;
    Ok(Outcome::Created)
}

/// Write a batch in one transaction; if it fails, write its items one by one to isolate rejects.
fn write_batch(store: &Store, ctx: &RequestContext, batch: &[Item], summary: &Mutex<Summary>) {
    let items: Vec<(&str, &str, &Value)> = batch
        .iter()
        .map(|it| (it.ty.as_str(), it.id.as_str(), &it.body))
        .collect();
    let ok = write::run(store, ctx, |u| {
        Ok(u.create_many(&items)?
            .into_iter()
            .map(|new| {
                if new {
                    Outcome::Created
                } else {
                    Outcome::Skipped
                }
            })
            .collect::<Vec<_>>())
    });
    let mut s = summary.lock().unwrap_or_else(|p| p.into_inner());
    match ok {
        Ok(outcomes) => {
            for (it, o) in batch.iter().zip(outcomes) {
                let e = s.per_type.entry(it.ty.clone()).or_default();
                match o {
                    Outcome::Created => e.0 += 1,
                    Outcome::Skipped => e.1 += 1,
                }
            }
        }
        Err(_) => {
            drop(s);
            for it in batch {
                let r = write::run(store, ctx, |u| write_one(u, it));
                let mut s = summary.lock().unwrap_or_else(|p| p.into_inner());
                match r {
                    Ok(Outcome::Created) => s.per_type.entry(it.ty.clone()).or_default().0 += 1,
                    Ok(Outcome::Skipped) => s.per_type.entry(it.ty.clone()).or_default().1 += 1,
                    Err(e) => {
                        let reason = match &e {
                            ApiError::Unprocessable(issues) => issues
                                .iter()
                                .map(|i| match i.expression.first() {
                                    Some(x) => format!("{x}: {}", i.diagnostics),
                                    None => i.diagnostics.clone(),
                                })
                                .collect::<Vec<_>>()
                                .join("; "),
                            other => other.to_string(),
                        };
                        s.rejected
                            .push((format!("{} {}/{}", it.origin, it.ty, it.id), reason));
                    }
                }
            }
        }
    }
}

/// Import files with `jobs` parallel writers and `batch` resources per transaction.
pub fn run(
    store: Arc<Store>,
    policy: WritePolicy,
    files: Vec<PathBuf>,
    jobs: usize,
    batch: usize,
    show_progress: bool,
    defer_indexes: bool,
) -> Summary {
    let registry = Registry::get();
    // Into an empty PostgreSQL database, build the search-side indexes once after the load
    // (store::deferred) instead of row by row.
    let deferred = if defer_indexes {
        match store.defer_indexes() {
            Ok(n) => n,
            Err(e) => {
                log::warn!("keeping every index during the load (deferring them failed: {e})");
                0
            }
        }
    } else {
        0
    };
    if deferred > 0 {
        log::info!("empty database: {deferred} secondary indexes are built after the load");
    }
    let ctx = RequestContext::internal(policy, "");
    let total_bytes: u64 = files
        .iter()
        .map(|f| std::fs::metadata(f).map(|m| m.len()).unwrap_or(0))
        .sum();
    let pb = if show_progress {
        ProgressBar::new(total_bytes)
    } else {
        ProgressBar::hidden()
    };
    pb.set_style(
        ProgressStyle::with_template("{bar:40} {bytes}/{total_bytes} ({eta} left) {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let summary = Mutex::new(Summary {
        files: files.len(),
        ..Default::default()
    });
    let started = Instant::now();
    let queue = Mutex::new(files.into_iter());
    let done = std::sync::atomic::AtomicU64::new(0);
    std::thread::scope(|scope| {
        for _ in 0..jobs.max(1) {
            scope.spawn(|| loop {
                let Some(file) = queue.lock().unwrap_or_else(|p| p.into_inner()).next() else {
                    break;
                };
                let size = std::fs::metadata(&file).map(|m| m.len()).unwrap_or(0);
                match parse_file(&file, registry) {
                    Err(e) => summary
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .rejected
                        .push((file.display().to_string(), e)),
                    Ok(items) => {
                        let (unknown, items): (Vec<Item>, Vec<Item>) =
                            items.into_iter().partition(|i| i.ty.starts_with('!'));
                        if !unknown.is_empty() {
                            let mut s = summary.lock().unwrap_or_else(|p| p.into_inner());
                            for it in unknown {
                                s.rejected.push((
                                    it.origin,
                                    format!("unsupported resource type '{}'", &it.ty[1..]),
                                ));
                            }
                        }
                        for chunk in items.chunks(batch.max(1)) {
                            write_batch(&store, &ctx, chunk, &summary);
                            let n = done.fetch_add(
                                chunk.len() as u64,
                                std::sync::atomic::Ordering::Relaxed,
                            ) + chunk.len() as u64;
                            let rate = n as f64 / started.elapsed().as_secs_f64().max(0.001);
                            pb.set_message(format!("{n} resources, {rate:.0}/s"));
                        }
                    }
                }
                pb.inc(size);
            });
        }
    });
    pb.finish_and_clear();
    if deferred > 0 {
        let building = Instant::now();
        match store.build_deferred_indexes(jobs.clamp(1, 2)) {
            Ok(n) => log::info!(
                "{n} deferred indexes built in {:.1} s",
                building.elapsed().as_secs_f64()
            ),
            Err(e) => log::warn!(
                "building the deferred indexes failed ({e}); the next start of the server \
                 or `icm-fhir migrate` builds them"
            ),
        }
    }
    // Leave the database ready to search: without statistics on what was just loaded the
    // PostgreSQL planner picks plans for empty tables (seconds instead of milliseconds).
    let analyzed = Instant::now();
    match store.analyze() {
        Ok(()) => log::info!(
            "planner statistics refreshed (and, on PostgreSQL, the tables vacuumed) in {:.1} s",
            analyzed.elapsed().as_secs_f64()
        ),
        Err(e) => log::warn!("refreshing planner statistics after the import failed: {e}"),
    }
    summary.into_inner().unwrap_or_else(|p| p.into_inner())
}

/// Human-readable summary printed at the end of an import.
pub fn report(s: &Summary, seconds: f64) -> String {
    let mut out = String::new();
    let created = s.created();
    out.push_str(&format!(
        "imported {} file(s) in {:.1}s: {} created, {} already present, {} rejected ({:.0} resources/s)\n",
        s.files,
        seconds,
        created,
        s.skipped(),
        s.rejected.len(),
        (created + s.skipped()) as f64 / seconds.max(0.001)
    ));
    out.push_str(&format!(
        "{:<28} {:>10} {:>10}\n",
        "type", "created", "present"
    ));
    for (t, (c, k)) in &s.per_type {
        out.push_str(&format!("{t:<28} {c:>10} {k:>10}\n"));
    }
    for (origin, reason) in &s.rejected {
        out.push_str(&format!("REJECTED {origin}: {reason}\n"));
    }
    out
}
