//! Prometheus metrics (GET /metrics) and the request-id middleware that feeds them.
use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::time::Instant;

use actix_web::dev::{Service, ServiceRequest, ServiceResponse};
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::{HttpResponse, Responder};
use futures_util::future::LocalBoxFuture;
use futures_util::FutureExt;

use super::State;

/// Upper bounds (seconds) of the latency histogram buckets.
const BUCKETS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
];

#[derive(Default)]
struct Histogram {
    counts: [u64; BUCKETS.len()],
    sum: f64,
    count: u64,
}

#[derive(Default)]
struct Inner {
    /// (interaction, type, status) → count
    requests: BTreeMap<(String, String, u16), u64>,
    /// interaction → latency histogram
    latency: BTreeMap<String, Histogram>,
    validation_failures: u64,
}

/// Process-local counters (each process behind a load balancer is scraped separately).
#[derive(Default)]
pub struct Metrics {
    inner: Mutex<Inner>,
}

impl Metrics {
    pub fn record(&self, interaction: &str, ty: &str, status: u16, seconds: f64) {
        let mut m = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        *m.requests
            .entry((interaction.to_string(), ty.to_string(), status))
            .or_default() += 1;
        if status == 422 {
            m.validation_failures += 1;
        }
        let h = m.latency.entry(interaction.to_string()).or_default();
        for (i, b) in BUCKETS.iter().enumerate() {
            if seconds <= *b {
                h.counts[i] += 1;
            }
        }
        h.sum += seconds;
        h.count += 1;
    }

    pub fn render(&self, pool_in_use: u32, pool_idle: u32) -> String {
        let m = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let mut out = String::new();
        out.push_str("# HELP icm_http_requests_total HTTP requests by FHIR interaction, resource type and status.\n");
        out.push_str("# TYPE icm_http_requests_total counter\n");
        for ((i, t, s), n) in &m.requests {
            let _ = writeln!(
                out,
                "icm_http_requests_total{{interaction=\"{i}\",type=\"{t}\",status=\"{s}\"}} {n}"
            );
        }
        out.push_str(
            "# HELP icm_http_request_duration_seconds Request latency by FHIR interaction.\n",
        );
        out.push_str("# TYPE icm_http_request_duration_seconds histogram\n");
        for (i, h) in &m.latency {
            for (b, c) in BUCKETS.iter().zip(h.counts.iter()) {
                let _ = writeln!(out, "icm_http_request_duration_seconds_bucket{{interaction=\"{i}\",le=\"{b}\"}} {c}");
            }
            let _ = writeln!(
                out,
                "icm_http_request_duration_seconds_bucket{{interaction=\"{i}\",le=\"+Inf\"}} {}",
                h.count
            );
            let _ = writeln!(
                out,
                "icm_http_request_duration_seconds_sum{{interaction=\"{i}\"}} {}",
                h.sum
            );
            let _ = writeln!(
                out,
                "icm_http_request_duration_seconds_count{{interaction=\"{i}\"}} {}",
                h.count
            );
        }
        out.push_str(
            "# HELP icm_validation_failures_total Requests refused with 422 (invalid resources).\n",
        );
        out.push_str("# TYPE icm_validation_failures_total counter\n");
        let _ = writeln!(
            out,
            "icm_validation_failures_total {}",
            m.validation_failures
        );
        out.push_str("# HELP icm_db_pool_connections Database pool connections by state.\n");
        out.push_str("# TYPE icm_db_pool_connections gauge\n");
        let _ = writeln!(
            out,
            "icm_db_pool_connections{{state=\"in_use\"}} {pool_in_use}"
        );
        let _ = writeln!(out, "icm_db_pool_connections{{state=\"idle\"}} {pool_idle}");
        out
    }
}

/// The FHIR interaction and resource type a request addresses, from its method and path.
pub fn classify(method: &str, path: &str) -> (&'static str, String) {
    let Some(rest) = path.strip_prefix("/fhir") else {
        return ("other", String::new());
    };
    let segs: Vec<&str> = rest.split('/').filter(|s| !s.is_empty()).collect();
    let is_type = |s: &str| s.chars().next().is_some_and(|c| c.is_ascii_uppercase());
    let ty = segs
        .first()
        .filter(|s| is_type(s))
        .map(|s| s.to_string())
        .unwrap_or_default();
    let op = segs.iter().any(|s| s.starts_with('$'));
    let interaction = match (method, segs.as_slice()) {
        _ if op => "operation",
        ("GET", ["metadata"]) => "capabilities",
        ("GET", ["_history"]) => "history-system",
        ("POST", []) => "transaction",
        ("GET", [] | ["_search"]) => "search-system",
        ("GET", [_, "_history"]) => "history-type",
        ("GET", [_, _, "_history"]) => "history-instance",
        ("GET", [_, _, "_history", _]) => "vread",
        ("GET", [_]) | ("POST", [_, "_search"]) => "search-type",
        ("POST", [_]) => "create",
        ("GET", [_, _]) => "read",
        ("PUT", [_, _]) => "update",
        ("PUT", [_]) => "conditional-update",
        ("PATCH", _) => "patch",
        ("DELETE", [_, _]) => "delete",
        ("DELETE", [_]) => "conditional-delete",
        _ => "other",
    };
    (interaction, ty)
}

/// Middleware: request id (echo the client's `X-Request-Id` or make one), metrics.
pub fn observe<S, B>(
    req: ServiceRequest,
    srv: &S,
) -> LocalBoxFuture<'static, Result<ServiceResponse<B>, actix_web::Error>>
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = actix_web::Error>,
    S::Future: 'static,
    B: 'static,
{
    let started = Instant::now();
    let request_id = req
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 200)
        .map(str::to_string)
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    let (interaction, ty) = classify(req.method().as_str(), req.path());
    let state = req.app_data::<State>().cloned();
    srv.call(req)
        .map(move |res| {
            res.map(|mut r| {
                if let Ok(v) = HeaderValue::from_str(&request_id) {
                    r.headers_mut()
                        .insert(HeaderName::from_static("x-request-id"), v);
                }
                if let Some(st) = state {
                    st.metrics.record(
                        interaction,
                        &ty,
                        r.status().as_u16(),
                        started.elapsed().as_secs_f64(),
                    );
                }
                r
            })
        })
        .boxed_local()
}

/// GET /metrics
pub async fn metrics(state: State) -> impl Responder {
    let (in_use, idle) = state.store.pool_state();
    let mut body = state.metrics.render(in_use, idle);
    if let Some((replica, primary)) = state.store.read_counts() {
        body.push_str(
            "# HELP icm_reads_total Reads and searches by the database that served them (read replicas on).\n",
        );
        body.push_str("# TYPE icm_reads_total counter\n");
        let _ = writeln!(body, "icm_reads_total{{source=\"replica\"}} {replica}");
        let _ = writeln!(body, "icm_reads_total{{source=\"primary\"}} {primary}");
    }
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_interactions() {
        assert_eq!(
            classify("GET", "/fhir/Patient/1"),
            ("read", "Patient".into())
        );
        assert_eq!(
            classify("GET", "/fhir/Patient"),
            ("search-type", "Patient".into())
        );
        assert_eq!(classify("POST", "/fhir/Patient/_search").0, "search-type");
        assert_eq!(classify("GET", "/fhir/Patient/1/_history/2").0, "vread");
        assert_eq!(
            classify("GET", "/fhir/Patient/1/$everything").0,
            "operation"
        );
        assert_eq!(classify("POST", "/fhir").0, "transaction");
        assert_eq!(classify("GET", "/fhir/metadata").0, "capabilities");
        assert_eq!(classify("GET", "/healthz").0, "other");
    }

    #[test]
    fn renders_prometheus_text() {
        let m = Metrics::default();
        m.record("read", "Patient", 200, 0.003);
        m.record("create", "Patient", 422, 0.02);
        let t = m.render(1, 2);
        assert!(t.contains(
            "icm_http_requests_total{interaction=\"read\",type=\"Patient\",status=\"200\"} 1"
        ));
        assert!(t.contains(
            "icm_http_request_duration_seconds_bucket{interaction=\"read\",le=\"0.005\"} 1"
        ));
        assert!(t.contains(
            "icm_http_request_duration_seconds_bucket{interaction=\"read\",le=\"0.0025\"} 0"
        ));
        assert!(t.contains("icm_validation_failures_total 1"));
        assert!(t.contains("icm_db_pool_connections{state=\"idle\"} 2"));
    }
}
