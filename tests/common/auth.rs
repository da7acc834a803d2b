//! Harness for security tests: a server with authentication and audit on, and token minting.
#![allow(dead_code)]

use super::{Backend, Resp, TestServer};
use icm_fhir::config::{Config, Secret};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Value};

/// The HS256 secret of secure test servers.
pub const TEST_SECRET: &str = "test-only-secret-0123456789abcdef0123456789";
pub const TEST_AUDIENCE: &str = "icm-test";

/// Start a server with ICM_AUTH=on (HS256 TEST_SECRET, audience TEST_AUDIENCE) and auditing on.
pub fn start_secure(backend: Backend) -> Option<TestServer> {
    start_secure_with(backend, |_| {})
}

pub fn start_secure_with(backend: Backend, tweak: impl FnOnce(&mut Config)) -> Option<TestServer> {
    super::start_with(backend, |c| {
        c.auth = "on".into();
        c.jwt_secret = Some(Secret(TEST_SECRET.into()));
        c.jwt_audience = Some(TEST_AUDIENCE.into());
        c.audit = "on".into();
        tweak(c);
    })
}

pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Claims valid for one hour with the test audience; `extra` is merged in.
pub fn claims(sub: &str, scope: &str, extra: Value) -> Value {
    let mut c = json!({"sub": sub, "scope": scope, "aud": TEST_AUDIENCE, "iat": now(), "exp": now() + 3600});
    if let Value::Object(m) = extra {
        for (k, v) in m {
            c[k] = v;
        }
    }
    c
}

/// HS256 with the test secret.
pub fn mint(claims: &Value) -> String {
    mint_hs(claims, TEST_SECRET.as_bytes())
}

pub fn mint_hs(claims: &Value, secret: &[u8]) -> String {
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        claims,
        &EncodingKey::from_secret(secret),
    )
    .unwrap()
}

/// Sign with a PEM private key from tests/data/keys.
pub fn mint_pem(claims: &Value, alg: Algorithm, kid: Option<&str>, pem_file: &str) -> String {
    let pem = std::fs::read(format!(
        "{}/tests/data/keys/{pem_file}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap();
    let key = match alg {
        Algorithm::ES256 => EncodingKey::from_ec_pem(&pem).unwrap(),
        _ => EncodingKey::from_rsa_pem(&pem).unwrap(),
    };
    let mut h = Header::new(alg);
    h.kid = kid.map(str::to_string);
    jsonwebtoken::encode(&h, claims, &key).unwrap()
}

/// An unsigned token with `alg: none`.
pub fn alg_none(claims: &Value) -> String {
    use base64::Engine;
    let e = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    format!(
        "{}.{}.",
        e.encode(br#"{"alg":"none","typ":"JWT"}"#),
        e.encode(claims.to_string())
    )
}

impl TestServer {
    /// A request with an optional bearer token and JSON body.
    pub fn as_token(
        &self,
        token: Option<&str>,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> Resp {
        let auth = token.map(|t| format!("Bearer {t}"));
        let mut h: Vec<(&str, &str)> = vec![("Content-Type", "application/fhir+json")];
        if let Some(a) = &auth {
            h.push(("Authorization", a));
        }
        let text = body.map(|b| b.to_string());
        self.request(method, path, &h, text.as_deref())
    }
}

/// Run a test body against SQLite and PostgreSQL with authentication on:
/// `secure_tests!(name, |s| { ... });` makes `name::sqlite` and `name::postgres`.
#[macro_export]
macro_rules! secure_tests {
    ($name:ident, $body:expr) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;
            #[test]
            fn sqlite() {
                let s =
                    $crate::common::auth::start_secure($crate::common::Backend::Sqlite).unwrap();
                let f: &dyn Fn(&$crate::common::TestServer) = &$body;
                f(&s);
            }
            #[test]
            fn postgres() {
                if let Some(s) =
                    $crate::common::auth::start_secure($crate::common::Backend::Postgres)
                {
                    let f: &dyn Fn(&$crate::common::TestServer) = &$body;
                    f(&s);
                }
            }
        }
    };
}
