//! JSON body → validated resource: what a create or update does with a request body before it
//! reaches the database (parse, resourceType and id checks, R4 definitions and every ICM profile,
//! the care rules as a create and as an update, stamping id/meta, the index rows and full-text
//! of the stored text). Oracles: no panic; a stored resource is re-read identically and is
//! still valid.
#![no_main]
use std::sync::OnceLock;

use icm_fhir::config::WritePolicy;
use icm_fhir::fhir::registry::Registry;
use icm_fhir::fhir::resource::{body_id, check_resource_type, parse_body, stamp};
use icm_fhir::fhir::search::{extract::extract, fulltext::narrative_text};
use icm_fhir::service::write::integrity::validate_for_write;
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

#[path = "common.rs"]
mod common;

/// Every ICM profile enforced, so the profile rules run on every type that has one.
fn policy() -> &'static WritePolicy {
    static P: OnceLock<WritePolicy> = OnceLock::new();
    P.get_or_init(|| WritePolicy {
        enforce_profiles: icm_fhir::fhir::validate::profiles::all()
            .map(|p| p.ty.clone())
            .collect(),
        ..WritePolicy::default()
    })
}

fuzz_target!(|data: &[u8]| {
    let mut body = match parse_body(data) {
        Ok(b) => b,
        Err(e) => return common::client_error(&e),
    };
    let ty = match check_resource_type(&body, None) {
        Ok(t) => t.to_string(),
        Err(e) => return common::client_error(&e),
    };
    if !Registry::get().is_supported(&ty) {
        return;
    }
    if let Err(e) = body_id(&body) {
        return common::client_error(&e);
    }
    if let Err(e) = validate_for_write(&body, policy()) {
        return common::client_error(&e);
    }
    let now = "2026-11-30T12:00:00.000Z";
    let prev = body.clone();
    if let Err(e) = icm_fhir::care::before_write(&ty, None, &mut body, now) {
        return common::client_error(&e);
    }
    // The same body again as an update of what it was.
    let mut again = body.clone();
    if let Err(e) = icm_fhir::care::before_write(&ty, Some(&prev), &mut again, now) {
        common::client_error(&e);
    }
    let stored = stamp(body, "fuzz-1", 1, 1_764_504_000_000_000);
    let text = serde_json::to_string(&stored).expect("a stored resource serializes");
    let back: Value = serde_json::from_str(&text).expect("the stored text parses");
    assert_eq!(back, stored, "the stored text reads back as written");
    let _ = extract(&ty, &back);
    let _ = narrative_text(&back);
});
