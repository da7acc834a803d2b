//! icm-fhir: a FHIR R4 server for Integrated Care Management.
pub mod care;
pub mod config;
pub mod error;
pub mod fhir;
pub mod http;
pub mod import;
pub mod service;
pub mod store;

use std::net::TcpListener;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use actix_web::{web, App, HttpServer};

use crate::config::Config;
use crate::fhir::registry::Registry;
use crate::http::AppState;
use crate::store::Store;

/// Build the shared state (no database connection is made yet).
pub fn build_state(config: Config) -> Result<Arc<AppState>, String> {
    service::measures::install_fact_kinds();
    let store = Arc::new(
        Store::with_options(
            &config.database_url,
            config.pool_size,
            Duration::from_secs(config.db_timeout.max(1)),
            config.pg_statement_cache_enabled(),
        )?
        .with_replicas(
            &config.read_database_urls(),
            config.pool_size,
            Duration::from_millis(config.read_max_lag_ms),
        )?,
    );
    let auth = http::auth::AuthState::from_config(&config)?;
    let state = Arc::new(AppState {
        store,
        config,
        registry: Registry::get(),
        ready: AtomicBool::new(false),
        metrics: Default::default(),
        auth,
        subscription_bindings: Default::default(),
    });
    http::auth::start_audit(&state);
    Ok(state)
}

/// Store the shipped conformance resources (service::definitions) on a migrated database. A
/// failure is logged, not fatal: the server serves without them until the next start.
pub fn install_definitions(state: &AppState) {
    match service::definitions::install(&state.store, state.config.write_policy()) {
        Ok(d) if d.created + d.updated > 0 => log::info!(
            "shipped conformance resources: {} created, {} updated, {} unchanged",
            d.created,
            d.updated,
            d.unchanged
        ),
        Ok(_) => {}
        Err(e) => log::error!("could not store the shipped conformance resources: {e}"),
    }
}

/// Apply migrations and store the shipped conformance resources now; on failure keep retrying
/// in the background (requests answer 503 meanwhile).
pub fn migrate_or_retry(state: &Arc<AppState>) {
    match state.store.migrate() {
        Ok(n) => {
            if n > 0 {
                log::info!("applied {n} migration(s)");
            }
            install_definitions(state);
            state.ready.store(true, Ordering::Release);
        }
        Err(e) => {
            log::error!("database not ready ({e}); retrying every 2 s, answering 503 meanwhile");
            let st = state.clone();
            std::thread::spawn(move || loop {
                std::thread::sleep(Duration::from_secs(2));
                match st.store.migrate() {
                    Ok(_) => {
                        install_definitions(&st);
                        log::info!("database ready");
                        st.ready.store(true, Ordering::Release);
                        break;
                    }
                    Err(e) => log::warn!("database still not ready: {e}"),
                }
            });
        }
    }
}

/// The actix application for a state: used by `serve` and by every test.
pub fn build_app(
    state: Arc<AppState>,
) -> App<
    impl actix_web::dev::ServiceFactory<
        actix_web::dev::ServiceRequest,
        Config = (),
        Response = actix_web::dev::ServiceResponse<impl actix_web::body::MessageBody>,
        Error = actix_web::Error,
        InitError = (),
    >,
> {
    let cors = http::auth::cors(&state.config);
    App::new()
        .app_data(web::Data::new(state))
        .wrap_fn(http::metrics::observe)
        .wrap_fn(http::auth::docs_csp)
        .wrap(http::auth::security_headers())
        .wrap(access_log())
        .wrap(actix_web::middleware::Condition::new(
            cors.is_some(),
            cors.unwrap_or_default(),
        ))
        .configure(http::routes::configure)
}

/// The access log line: client, method and path, status, size, time, request id. The path
/// only: query strings can carry identifiers, and the Authorization header is never logged.
/// (actix's Logger has no method token: `%{method}xi` is filled in here.)
pub fn access_log() -> actix_web::middleware::Logger {
    actix_web::middleware::Logger::new(ACCESS_LOG_FORMAT)
        .custom_request_replace("method", |req| req.method().to_string())
}

/// The access log format (see [`access_log`]).
pub const ACCESS_LOG_FORMAT: &str = "%a \"%{method}xi %U\" %s %b %Dms req=%{x-request-id}o";

/// The HTTP server on an already-bound listener (must be polled inside an actix System).
pub fn server(
    state: Arc<AppState>,
    listener: TcpListener,
) -> std::io::Result<actix_web::dev::Server> {
    let workers = state.config.workers.unwrap_or_else(|| {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(2)
    });
    if state.config.subscription_delivery_enabled() {
        // Subscription notifications, delivered in the background of this server's System
        // (the loop ends when the server's System stops).
        let delivery = Arc::new(service::subscriptions::Delivery::new(
            state.store.clone(),
            &state.config,
            state.subscription_bindings.clone(),
        ));
        actix_web::rt::spawn(delivery.run());
    }
    let st = state.clone();
    Ok(HttpServer::new(move || build_app(st.clone()))
        .workers(workers)
        .shutdown_timeout(30)
        .client_request_timeout(Duration::from_millis(state.config.header_timeout_ms.max(1)))
        .listen(listener)?
        .run())
}

/// A listening socket on `addr` (`host:port`) with a queue of `backlog` connections not yet
/// accepted. `std::net::TcpListener::bind` fixes that queue at 128: a burst of a few hundred
/// connections (a pool of clients starting together, thousands of idle keep-alive connections)
/// then overflows it, the kernel drops their SYNs and each client waits a second to retry.
pub fn listen(addr: &str, backlog: i32) -> std::io::Result<TcpListener> {
    use std::net::ToSocketAddrs;
    let mut last = None;
    for a in addr.to_socket_addrs()? {
        let socket = socket2::Socket::new(
            socket2::Domain::for_address(a),
            socket2::Type::STREAM,
            Some(socket2::Protocol::TCP),
        )?;
        socket.set_reuse_address(true)?;
        match socket
            .bind(&a.into())
            .and_then(|_| socket.listen(backlog.max(1)))
        {
            Ok(()) => return Ok(socket.into()),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| {
        std::io::Error::new(std::io::ErrorKind::InvalidInput, "no address to listen on")
    }))
}

/// Serve on an already-bound listener until the server stops.
pub async fn serve(state: Arc<AppState>, listener: TcpListener) -> std::io::Result<()> {
    server(state, listener)?.await
}
