//! /healthz (process up) and /readyz (database reachable and migrated).
use actix_web::{HttpResponse, Responder};
use serde_json::json;

use super::{blocking, State};

pub async fn healthz() -> impl Responder {
    HttpResponse::Ok().json(json!({"status": "up"}))
}

pub async fn readyz(state: State) -> HttpResponse {
    let st = state.clone();
    let ping = blocking(move || st.store.ping()).await;
    match (ping, state.is_ready()) {
        (Ok(()), true) => HttpResponse::Ok().json(json!({"status": "ready"})),
        (Ok(()), false) => HttpResponse::ServiceUnavailable()
            .insert_header(("Retry-After", "5"))
            .json(json!({"status": "migrating"})),
        (Err(e), _) => HttpResponse::ServiceUnavailable()
            .insert_header(("Retry-After", "5"))
            .json(json!({"status": "database unavailable", "detail": e.to_string()})),
    }
}
