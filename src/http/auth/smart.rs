//! GET /fhir/.well-known/smart-configuration (SMART App Launch 2.0 discovery document).
use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse};
use serde_json::json;

use crate::http::response::fhir_json;
use crate::http::State;

pub async fn smart_configuration(req: HttpRequest, state: State) -> HttpResponse {
    let mut doc = json!({
        "capabilities": [
            "permission-v1",
            "permission-v2",
            "permission-patient",
            "permission-user",
            "context-ehr-patient",
            "client-confidential-symmetric"
        ],
        "scopes_supported": [
            "patient/*.read", "patient/*.rs", "patient/*.cruds",
            "user/*.read", "user/*.write", "user/*.cruds",
            "system/*.*", "system/*.cruds",
            "openid", "fhirUser"
        ],
        "grant_types_supported": [],
        "code_challenge_methods_supported": ["S256"],
        "token_endpoint_auth_methods_supported": [],
        "response_types_supported": [],
        "token_endpoint_auth_signing_alg_values_supported": ["HS256", "RS256", "ES256"],
        "authentication": {
            "bearer_token": "JWT (HS256 with the server secret, or RS256/ES256 with a key of the configured JWKS, selected by kid)",
            "claims": ["sub", "exp", "nbf", "iss", "aud", "scope", "fhirUser", "patient", "role", "client_id"],
            "auth_required": state.config.auth_enabled(),
            "care_team_access": state.config.care_team_enabled()
        }
    });
    if let Some(i) = &state.config.jwt_issuer {
        doc["issuer"] = json!(i);
    }
    let mut r = fhir_json(&req, StatusCode::OK, &doc);
    r.headers_mut().insert(
        actix_web::http::header::CONTENT_TYPE,
        actix_web::http::header::HeaderValue::from_static("application/json"),
    );
    r
}

/// `CapabilityStatement.rest.security`: SMART-on-FHIR bearer tokens.
pub fn capability_security() -> serde_json::Value {
    json!({
        "cors": true,
        "service": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/restful-security-service", "code": "SMART-on-FHIR"}]}],
        "description": "Bearer JWT with SMART App Launch v1/v2 scopes; patient/ scopes are limited to the patient's compartment, user/ scopes of practitioners to the patients of their active care teams. See /fhir/.well-known/smart-configuration."
    })
}
