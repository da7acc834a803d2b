//! R4 Subscriptions: which Subscriptions a write matches, and delivering their notifications.
//!
//! Matching runs inside the write's unit of work ([`on_write`], called by
//! `UnitOfWork::after_write`): for every active Subscription whose criteria are on the written
//! type, the criteria plus `_id=<the written id>` go through the one search engine with the
//! subscriber's own access (the principal that wrote the Subscription, its boundaries resolved
//! on the transaction's connection), so a subscriber is never told of a resource it could not
//! find by searching. A match is an outbox row in the same transaction: a write that rolls back
//! notifies nobody.
//!
//! Delivery ([`Delivery`]) runs in the background of each serving process: it leases due outbox
//! rows, sends them (rest-hook: an HTTP request to the endpoint; websocket: `ping <id>` to the
//! clients bound in this process), and marks them delivered; failures are retried with
//! exponential backoff, and after the last attempt the Subscription's status becomes `error`.
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};

use super::access::policy::Principal;
use super::access::scope::parse_scopes;
use super::context::{resolve_boundaries_on, Limits, RequestContext};
use super::write::{self, Change};
use crate::config::{Config, WritePolicy};
use crate::error::{ApiError, ApiResult};
use crate::fhir::datetime::now_micros;
use crate::fhir::subscription::{self as spec, Channel};
use crate::store::subscriptions as outbox;
use crate::store::visibility::Everything;
use crate::store::write::WriteResult;
use crate::store::{DbConn, Store};

/// A principal as stored with its Subscriptions (the claims it was built from).
pub fn principal_record(p: &Principal) -> String {
    let scopes: Vec<String> = p.scopes.iter().map(|s| s.to_string()).collect();
    json!({
        "sub": p.sub,
        "fhirUser": p.fhir_user,
        "client_id": p.client_id,
        "scope": scopes.join(" "),
        "patient": p.patient,
        "admin": p.admin,
    })
    .to_string()
}

/// The principal of a stored record (no scopes — nothing visible — when unreadable).
pub fn principal_of_record(text: &str) -> Principal {
    let v: Value = serde_json::from_str(text).unwrap_or(Value::Null);
    let s = |k: &str| v[k].as_str().map(str::to_string);
    Principal {
        sub: s("sub").unwrap_or_default(),
        fhir_user: s("fhirUser"),
        client_id: s("client_id"),
        scopes: parse_scopes(v["scope"].as_str().unwrap_or_default()).0,
        patient: s("patient"),
        admin: v["admin"].as_bool().unwrap_or(false),
    }
}

fn channel_name(c: &Channel) -> &'static str {
    match c {
        Channel::RestHook { .. } => "rest-hook",
        Channel::Websocket => "websocket",
    }
}

/// After a write in a unit of work, first: keep the Subscription registry current (a
/// Subscription's criteria type and subscriber: the caller that wrote it, kept when the server
/// itself writes it).
pub(crate) fn register_written(
    conn: &mut DbConn,
    ctx: &RequestContext,
    r: &WriteResult,
) -> ApiResult<()> {
    let Some(res) = &r.resource else {
        return Ok(());
    };
    if r.ty == "Subscription" {
        let s = spec::spec(res)?;
        // A Subscription the server writes itself (status error; import) keeps its subscriber;
        // a new one written by the server (import) gets the server's access.
        let record = principal_record(&ctx.principal);
        outbox::register(conn, &r.id, &s.criteria_type, &record, !ctx.is_internal())?;
    }
    Ok(())
}

/// Then: queue a notification for every active Subscription among `registered` (those on the
/// written type) that the written version matches.
pub(crate) fn on_write(
    conn: &mut DbConn,
    policy: &WritePolicy,
    r: &WriteResult,
    registered: &[outbox::Registered],
) -> ApiResult<()> {
    if r.resource.is_none() {
        return Ok(());
    }
    let now = now_micros();
    for sub in registered {
        let Some(content) = sub
            .content
            .as_deref()
            .and_then(|t| serde_json::from_str::<Value>(t).ok())
        else {
            continue;
        };
        let Ok(s) = spec::spec(&content) else {
            continue;
        };
        if s.status != "active" || s.criteria_type != r.ty {
            continue;
        }
        if matches(conn, policy, &sub.principal, &s, &r.id)? {
            outbox::enqueue(
                conn,
                &sub.subscription_id,
                channel_name(&s.channel),
                &r.ty,
                &r.id,
                r.version,
                now,
            )?;
        }
    }
    Ok(())
}

/// Whether the current `s.criteria_type`/`id` matches the criteria as the subscriber sees it.
fn matches(
    conn: &mut DbConn,
    policy: &WritePolicy,
    principal: &str,
    s: &spec::Spec,
    id: &str,
) -> ApiResult<bool> {
    let principal = principal_of_record(principal);
    let boundaries = resolve_boundaries_on(Some(conn), &principal, policy.care_team_access)?;
    let ctx = RequestContext::new(
        principal,
        boundaries,
        policy,
        Limits::from_config(&Config::for_database("")),
        String::new(),
        String::new(),
        None,
    );
    let id_param: String = url::form_urlencoded::Serializer::new(String::new())
        .append_pair("_id", id)
        .finish();
    let query = if s.criteria_query.is_empty() {
        id_param
    } else {
        format!("{}&{id_param}", s.criteria_query)
    };
    match crate::store::search::find_ids(conn, &s.criteria_type, &query, &ctx) {
        Ok(ids) => Ok(ids.iter().any(|i| i == id)),
        // A database failure fails the write (and so is retried or reported); criteria this
        // server no longer understands notify nobody rather than refuse every write.
        Err(e @ (ApiError::Internal(_) | ApiError::Unavailable(_) | ApiError::ConcurrentWrite)) => {
            Err(e)
        }
        Err(e) => {
            log::warn!(
                "subscription criteria on {} not evaluated: {e}",
                s.criteria_type
            );
            Ok(false)
        }
    }
}

/// Delivery settings (ICM_SUBSCRIPTION_*).
#[derive(Debug, Clone)]
pub struct Settings {
    pub poll: Duration,
    pub max_attempts: u32,
    pub backoff: Duration,
    pub timeout: Duration,
}

impl Settings {
    pub fn from_config(c: &Config) -> Settings {
        Settings {
            poll: Duration::from_millis(c.subscription_poll_ms.max(10)),
            max_attempts: c.subscription_max_attempts.max(1),
            backoff: Duration::from_millis(c.subscription_backoff_ms),
            timeout: Duration::from_secs(c.subscription_timeout.max(1)),
        }
    }
}

/// Rows leased per round.
const BATCH: i64 = 10;

/// Where a bound websocket client's text frames go.
type Sender = tokio::sync::mpsc::UnboundedSender<String>;

/// The websocket clients bound in this process: subscription id → (binding key, sender).
#[derive(Default)]
pub struct Bindings {
    bound: Mutex<HashMap<String, Vec<(u64, Sender)>>>,
    next: std::sync::atomic::AtomicU64,
}

impl Bindings {
    /// Bind a client to a subscription; returns the binding's key (for [`Bindings::unbind`]).
    pub fn bind(&self, subscription: &str, tx: Sender) -> u64 {
        let key = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if let Ok(mut b) = self.bound.lock() {
            b.entry(subscription.to_string())
                .or_default()
                .push((key, tx));
        }
        key
    }

    pub fn unbind(&self, key: u64) {
        if let Ok(mut b) = self.bound.lock() {
            for list in b.values_mut() {
                list.retain(|(k, _)| *k != key);
            }
            b.retain(|_, l| !l.is_empty());
        }
    }

    fn ids(&self) -> Vec<String> {
        self.bound
            .lock()
            .map(|b| b.keys().cloned().collect())
            .unwrap_or_default()
    }

    /// Send a text frame to every client bound to `subscription`; how many got it.
    fn send(&self, subscription: &str, text: &str) -> usize {
        let Ok(mut b) = self.bound.lock() else {
            return 0;
        };
        let Some(list) = b.get_mut(subscription) else {
            return 0;
        };
        list.retain(|(_, tx)| tx.send(text.to_string()).is_ok());
        list.len()
    }
}

/// The delivery worker of one process.
pub struct Delivery {
    store: Arc<Store>,
    policy: WritePolicy,
    settings: Settings,
    /// This worker's lease owner id.
    owner: String,
    agent: ureq::Agent,
    pub bindings: Arc<Bindings>,
}

/// What one attempt came to.
enum Outcome {
    Delivered,
    /// The subscription is gone, off or in error: the notification is not sent.
    Dropped(String),
    Failed(String),
    /// No websocket client is bound here any more: released for the next one to bind.
    Unbound,
}

impl Delivery {
    pub fn new(store: Arc<Store>, config: &Config, bindings: Arc<Bindings>) -> Delivery {
        let settings = Settings::from_config(config);
        let agent = ureq::AgentBuilder::new()
            .timeout_connect(settings.timeout)
            .timeout(settings.timeout)
            .redirects(0)
            .build();
        Delivery {
            store,
            policy: config.write_policy(),
            settings,
            owner: format!("icm-{}", uuid::Uuid::new_v4().simple()),
            agent,
            bindings,
        }
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// The lease on claimed rows: long enough to try every row of a batch.
    fn lease_micros(&self) -> i64 {
        let per = self.settings.timeout.as_micros() as i64 * 2 + 5_000_000;
        per * BATCH
    }

    /// One round: lease due rows, deliver them, record the outcome. How many rows it handled.
    pub fn round(&self) -> ApiResult<usize> {
        let now = now_micros();
        let mut rows = {
            let _g = self.store.writer_guard();
            let mut c = self.store.conn()?;
            outbox::claim(
                &mut c,
                &self.owner,
                "rest-hook",
                None,
                now,
                self.lease_micros(),
                BATCH,
            )?
        };
        let bound = self.bindings.ids();
        if !bound.is_empty() {
            let _g = self.store.writer_guard();
            let mut c = self.store.conn()?;
            rows.extend(outbox::claim(
                &mut c,
                &self.owner,
                "websocket",
                Some(&bound),
                now,
                self.lease_micros(),
                BATCH,
            )?);
        }
        let n = rows.len();
        for row in rows {
            let outcome = self.attempt(&row);
            self.record(&row, outcome)?;
        }
        Ok(n)
    }

    fn attempt(&self, row: &outbox::Claimed) -> Outcome {
        match self.prepare(row) {
            Ok(Ok(req)) => self.send(row, req),
            Ok(Err(why)) => Outcome::Dropped(why),
            Err(e) => Outcome::Failed(e.to_string()),
        }
    }

    /// What to send for a row (Err inside: why it is dropped).
    fn prepare(
        &self,
        row: &outbox::Claimed,
    ) -> ApiResult<Result<(Channel, Option<String>), String>> {
        let mut c = self.store.conn()?;
        let cur = crate::store::lookup::read_current(
            &mut c,
            &Everything,
            "Subscription",
            &row.subscription_id,
        )?;
        let Some(sub) = cur
            .filter(|v| !v.deleted)
            .and_then(|v| v.content)
            .and_then(|t| serde_json::from_str::<Value>(&t).ok())
        else {
            return Ok(Err("the subscription was deleted".into()));
        };
        let s = match spec::spec(&sub) {
            Ok(s) => s,
            Err(e) => return Ok(Err(format!("the subscription is not deliverable: {e}"))),
        };
        if s.status != "active" {
            return Ok(Err(format!("the subscription is {}", s.status)));
        }
        let body = match &s.channel {
            Channel::RestHook {
                payload: Some(_), ..
            } => {
                let v = crate::store::lookup::read_version(
                    &mut c,
                    &Everything,
                    &row.res_type,
                    &row.res_id,
                    row.version_id,
                )?;
                match v.and_then(|v| v.content) {
                    Some(t) => Some(t),
                    None => return Ok(Err("the notified version no longer exists".into())),
                }
            }
            _ => None,
        };
        Ok(Ok((s.channel, body)))
    }

    fn send(&self, row: &outbox::Claimed, (channel, body): (Channel, Option<String>)) -> Outcome {
        match channel {
            Channel::Websocket => {
                if self.bindings.send(
                    &row.subscription_id,
                    &format!("ping {}", row.subscription_id),
                ) > 0
                {
                    Outcome::Delivered
                } else {
                    Outcome::Unbound
                }
            }
            Channel::RestHook {
                endpoint, headers, ..
            } => {
                // R4: no payload — a POST with no body to the endpoint; with a payload — the
                // resource as an update, PUT [endpoint]/[type]/[id].
                let req = match &body {
                    None => self.agent.post(&endpoint),
                    Some(_) => self.agent.put(&format!(
                        "{}/{}/{}",
                        endpoint.trim_end_matches('/'),
                        row.res_type,
                        row.res_id
                    )),
                };
                let mut req = req;
                for (k, v) in &headers {
                    req = req.set(k, v);
                }
                let r = match &body {
                    None => req.call(),
                    Some(b) => req
                        .set("Content-Type", "application/fhir+json")
                        .send_string(b),
                };
                match r {
                    Ok(resp) if (200..300).contains(&resp.status()) => Outcome::Delivered,
                    Ok(resp) => Outcome::Failed(format!("the endpoint answered {}", resp.status())),
                    Err(ureq::Error::Status(code, _)) => {
                        Outcome::Failed(format!("the endpoint answered {code}"))
                    }
                    Err(e) => {
                        Outcome::Failed(format!("the endpoint could not be reached: {}", e.kind()))
                    }
                }
            }
        }
    }

    fn record(&self, row: &outbox::Claimed, outcome: Outcome) -> ApiResult<()> {
        let now = now_micros();
        let _g = self.store.writer_guard();
        let mut c = self.store.conn()?;
        match outcome {
            Outcome::Delivered => {
                outbox::finish(&mut c, row.pk, &self.owner, "delivered", now, None)?;
            }
            Outcome::Dropped(why) => {
                outbox::finish(&mut c, row.pk, &self.owner, "dropped", now, Some(&why))?;
            }
            Outcome::Unbound => {
                outbox::release(&mut c, row.pk, &self.owner)?;
            }
            Outcome::Failed(why) => {
                let attempts = row.attempts + 1;
                if attempts >= i64::from(self.settings.max_attempts) {
                    let mine =
                        outbox::finish(&mut c, row.pk, &self.owner, "failed", now, Some(&why))?;
                    drop(c);
                    drop(_g);
                    if mine {
                        log::warn!(
                            "Subscription/{}: delivery failed {attempts} times ({why}); status error",
                            row.subscription_id
                        );
                        self.set_error(
                            &row.subscription_id,
                            &format!("delivery failed after {attempts} attempts: {why}"),
                        )?;
                    }
                } else {
                    let wait = self
                        .settings
                        .backoff
                        .saturating_mul(1u32 << (attempts - 1).clamp(0, 20) as u32)
                        .min(Duration::from_secs(3600));
                    outbox::retry_later(
                        &mut c,
                        row.pk,
                        &self.owner,
                        now + wait.as_micros() as i64,
                        &why,
                    )?;
                }
            }
        }
        Ok(())
    }

    /// Set an active Subscription's status to `error`, through the one write unit of work (the
    /// server's own write: the subscriber recorded with it stays).
    fn set_error(&self, id: &str, text: &str) -> ApiResult<()> {
        let ctx = RequestContext::internal(self.policy.clone(), "");
        write::run(&self.store, &ctx, |u| {
            let cur = crate::store::write::current(u.conn(), "Subscription", id)?;
            let Some(mut sub) = cur.as_ref().and_then(|c| c.resource()) else {
                return Ok(());
            };
            if sub["status"] != "active" {
                return Ok(());
            }
            sub["status"] = json!("error");
            sub["error"] = json!(text);
            u.apply(
                "Subscription",
                Change::Update {
                    id: id.to_string(),
                    body: sub,
                    if_match: None,
                },
            )?;
            Ok(())
        })
    }

    /// Deliver until the process stops: a round now, and after each round that found nothing,
    /// wait the poll interval. Runs on a blocking thread per round (HTTP is blocking).
    pub async fn run(self: Arc<Self>) {
        let mut failures = 0u32;
        loop {
            let d = self.clone();
            let r = actix_web::rt::task::spawn_blocking(move || d.round()).await;
            let wait = match r {
                Ok(Ok(n)) if n > 0 => {
                    failures = 0;
                    continue;
                }
                Ok(Ok(_)) => {
                    failures = 0;
                    self.settings.poll
                }
                Ok(Err(e)) => {
                    failures += 1;
                    if failures == 1 {
                        log::warn!("subscription delivery paused: {e}");
                    }
                    self.settings.poll * failures.min(10)
                }
                Err(e) => {
                    log::error!("subscription delivery round failed: {e}");
                    self.settings.poll
                }
            };
            actix_web::rt::time::sleep(wait).await;
        }
    }
}

/// Whether the caller may bind a websocket to Subscription `id`: it must be able to read it,
/// and it must be an active websocket Subscription.
pub fn check_bind(store: &Store, ctx: &RequestContext, id: &str) -> ApiResult<()> {
    let mut c = store.conn()?;
    let v = super::read::read(&mut c, ctx, "Subscription", id)?;
    let sub: Value = v
        .content
        .as_deref()
        .and_then(|t| serde_json::from_str(t).ok())
        .ok_or_else(|| ApiError::NotFound(format!("Subscription/{id} is not known")))?;
    let s = spec::spec(&sub)?;
    if s.channel != Channel::Websocket {
        return Err(ApiError::bad_request(format!(
            "Subscription/{id} does not use the websocket channel"
        )));
    }
    if s.status != "active" {
        return Err(ApiError::bad_request(format!(
            "Subscription/{id} is {}",
            s.status
        )));
    }
    Ok(())
}
