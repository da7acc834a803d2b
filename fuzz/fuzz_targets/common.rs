//! Shared by the fuzz targets: the oracles a server-side error must satisfy.
#![allow(dead_code)]
use icm_fhir::error::ApiError;

/// Untrusted input may be refused, but only with a client error (4xx): never an internal
/// error (500) or "database unavailable" (503) from code that has no database.
pub fn client_error(e: &ApiError) {
    assert!(
        !matches!(e, ApiError::Internal(_) | ApiError::Unavailable(_)),
        "bad input gave a server error: {e:?}"
    );
    // The error renders as an OperationOutcome.
    let _ = e.outcome().to_json_string();
}

/// A server-assigned base URL for absolute references.
pub const BASE: &str = "http://fuzz.example/fhir";
