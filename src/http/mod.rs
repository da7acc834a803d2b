//! HTTP edge: content negotiation, routing and one handler module per FHIR interaction.
pub mod auth;
pub mod bundle;
pub mod capabilities;
pub mod console;
pub mod export;
pub mod health;
pub mod history;
pub mod interactions;
pub mod metrics;
pub mod negotiate;
pub mod openapi;
pub mod operations;
pub mod patch;
pub mod response;
pub mod routes;
pub mod search;
pub mod terminology;
pub mod validate;
pub mod websocket;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crate::config::Config;
use crate::error::ApiError;
use crate::fhir::registry::Registry;
use crate::store::Store;

/// Shared, read-mostly state of one server process.
pub struct AppState {
    pub store: Arc<Store>,
    pub config: Config,
    pub registry: &'static Registry,
    /// Set once the migrations have been applied; until then requests answer 503.
    pub ready: AtomicBool,
    /// Process-local request metrics served at /metrics.
    pub metrics: metrics::Metrics,
    /// Keys, audit writer: the security layer's process state.
    pub auth: auth::AuthState,
    /// The websocket clients bound to Subscriptions in this process.
    pub subscription_bindings: Arc<crate::service::subscriptions::Bindings>,
}

pub type State = actix_web::web::Data<Arc<AppState>>;

impl AppState {
    /// The checked resource type named in a URL (404 for an unknown one).
    pub fn resource_type<'a>(&self, ty: &'a str) -> Result<&'a str, ApiError> {
        if self.registry.is_supported(ty) {
            Ok(ty)
        } else {
            Err(ApiError::NotFound(format!(
                "'{ty}' is not a resource type this server supports"
            )))
        }
    }

    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }
}

/// Run blocking database work off the async executor.
pub async fn blocking<T, F>(f: F) -> Result<T, ApiError>
where
    F: FnOnce() -> Result<T, ApiError> + Send + 'static,
    T: Send + 'static,
{
    actix_web::web::block(f)
        .await
        .map_err(|e| ApiError::internal(format!("blocking task failed: {e}")))?
}
