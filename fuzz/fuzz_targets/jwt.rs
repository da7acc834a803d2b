//! JWT parsing and verification (http::auth::jwt::Verifier, configured with an HS256 secret
//! and the test JWKS of tests/data/keys). Two kinds of input, by the first byte:
//! - even: the rest is a compact token, verified as a bearer token is;
//! - odd: the rest is a claims document, signed with the secret (so the signature holds and
//!   the claims checks and the claims → principal mapping, scopes included, are what runs).
//!
//! Oracles: no panic; an accepted token's principal answers scope questions.
#![no_main]
use std::sync::OnceLock;

use icm_fhir::config::{Config, Secret};
use icm_fhir::http::auth::jwt::Verifier;
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

fn verifier() -> &'static Verifier {
    static V: OnceLock<Verifier> = OnceLock::new();
    V.get_or_init(|| {
        let mut cfg = Config::for_database("sqlite://unused.db");
        cfg.jwt_secret = Some(Secret("fuzz-secret-0123456789abcdef-0123456789".into()));
        cfg.jwks_file = Some(format!(
            "{}/../tests/data/keys/jwks.json",
            env!("CARGO_MANIFEST_DIR")
        ));
        Verifier::from_config(&cfg).expect("verifier")
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let v = verifier();
    let token = if mode % 2 == 0 {
        String::from_utf8_lossy(rest).into_owned()
    } else {
        let Ok(claims) = serde_json::from_slice::<Value>(rest) else {
            return;
        };
        match v.mint(&claims) {
            Ok(t) => t,
            Err(_) => return,
        }
    };
    if let Ok(p) = v.verify(&token) {
        let _ = p.practitioner_id();
        for s in &p.scopes {
            for ty in ["Patient", "Observation", "AuditEvent", "*"] {
                let _ = s.grants(ty, 1);
            }
        }
    }
});
