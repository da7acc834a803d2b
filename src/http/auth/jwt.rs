//! JWT bearer tokens: key material (HS256 secret, JWKS file reloaded on SIGHUP, or a generated
//! secret in the data folder), verification into a `Principal`, and minting for `icm-fhir token`.
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, RwLock};

use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde_json::{json, Value};

use super::policy::Principal;
use super::scope::parse_scopes;
use crate::config::Config;

/// Name of the generated secret file in the data folder.
pub const SECRET_FILE: &str = "jwt-secret";

/// Public keys from a JWKS file, by `kid`.
struct JwksKeys {
    path: PathBuf,
    keys: HashMap<String, (DecodingKey, Option<Algorithm>)>,
}

/// Verifies bearer tokens against the configured keys and claims.
pub struct Verifier {
    secret: Option<Vec<u8>>,
    jwks: Option<RwLock<JwksKeys>>,
    issuer: Option<String>,
    audience: Option<String>,
    leeway: u64,
    /// Tokens verified before: the token text → its principal and `exp`. A client sends the
    /// same token with every request until it expires; checking the signature and decoding the
    /// claims again took a third of a read by id (bench/cost_profile.sh). An entry answers only
    /// while the token has not expired (with the same leeway); the cache is emptied when the
    /// keys are reloaded and when it is full.
    verified: Mutex<HashMap<String, (Principal, u64)>>,
}

/// Most tokens remembered by [`Verifier::verify`] (a few MB at most).
const VERIFIED_MAX: usize = 4096;

/// Where the generated secret lives: next to the SQLite file, or ./data.
pub fn data_dir(config: &Config) -> PathBuf {
    if let Some(path) = config
        .database_url
        .strip_prefix("sqlite://")
        .or_else(|| config.database_url.strip_prefix("sqlite:"))
    {
        if let Some(dir) = Path::new(path).parent() {
            if !dir.as_os_str().is_empty() {
                return dir.to_path_buf();
            }
        }
        return PathBuf::from(".");
    }
    PathBuf::from("data")
}

/// Read the generated secret, creating it (32 random bytes, hex, mode 0600) when absent.
/// Returns the secret and whether it was created now.
pub fn load_or_create_secret(dir: &Path) -> Result<(Vec<u8>, bool), String> {
    let path = dir.join(SECRET_FILE);
    if let Ok(s) = std::fs::read_to_string(&path) {
        let s = s.trim();
        if s.len() >= 32 {
            return Ok((s.as_bytes().to_vec(), false));
        }
        return Err(format!("{} is too short to be a secret", path.display()));
    }
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let mut raw = [0u8; 32];
    getrandom::fill(&mut raw).map_err(|e| format!("no randomness available: {e}"))?;
    let hex: String = raw.iter().map(|b| format!("{b:02x}")).collect();
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    use std::io::Write;
    let mut f = opts
        .open(&path)
        .map_err(|e| format!("cannot create {}: {e}", path.display()))?;
    f.write_all(hex.as_bytes())
        .and_then(|_| f.write_all(b"\n"))
        .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    Ok((hex.into_bytes(), true))
}

fn load_jwks(path: &Path) -> Result<HashMap<String, (DecodingKey, Option<Algorithm>)>, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read JWKS file {}: {e}", path.display()))?;
    let set: JwkSet = serde_json::from_str(&text)
        .map_err(|e| format!("JWKS file {} is not a JWK Set: {e}", path.display()))?;
    let mut out = HashMap::new();
    for (n, jwk) in set.keys.iter().enumerate() {
        let kid = jwk
            .common
            .key_id
            .clone()
            .ok_or_else(|| format!("JWKS key {n} has no kid"))?;
        let key = DecodingKey::from_jwk(jwk).map_err(|e| format!("JWKS key '{kid}': {e}"))?;
        if key.family() == jsonwebtoken::AlgorithmFamily::Hmac {
            return Err(format!(
                "JWKS key '{kid}' is symmetric; use ICM_JWT_SECRET for HS256"
            ));
        }
        let alg = jwk
            .common
            .key_algorithm
            .and_then(|a| a.to_string().parse::<Algorithm>().ok());
        out.insert(kid, (key, alg));
    }
    Ok(out)
}

impl Verifier {
    /// Build from configuration. With neither ICM_JWT_SECRET nor ICM_JWKS_FILE, a secret is
    /// generated into (or read from) the data folder.
    pub fn from_config(config: &Config) -> Result<Verifier, String> {
        let mut secret = config.jwt_secret.as_ref().map(|s| s.0.as_bytes().to_vec());
        if let Some(s) = &secret {
            if s.len() < 32 {
                return Err("ICM_JWT_SECRET must be at least 32 bytes long".into());
            }
        }
        let jwks = match &config.jwks_file {
            Some(p) => Some(RwLock::new(JwksKeys {
                path: PathBuf::from(p),
                keys: load_jwks(Path::new(p))?,
            })),
            None => None,
        };
        if secret.is_none() && jwks.is_none() {
            let dir = data_dir(config);
            let (s, created) = load_or_create_secret(&dir)?;
            if created {
                log::warn!(
                    "no ICM_JWT_SECRET or ICM_JWKS_FILE: generated a signing secret in {} (mode 0600). \
                     Mint a token with: icm-fhir token --sub alice --scope 'user/*.cruds' --ttl 1h",
                    dir.join(SECRET_FILE).display()
                );
            } else {
                log::info!(
                    "using the signing secret in {}; mint a token with `icm-fhir token --sub NAME --scope 'user/*.cruds'`",
                    dir.join(SECRET_FILE).display()
                );
            }
            secret = Some(s);
        }
        Ok(Verifier {
            secret,
            jwks,
            issuer: config.jwt_issuer.clone(),
            audience: config.jwt_audience.clone(),
            leeway: config.jwt_leeway,
            verified: Mutex::new(HashMap::new()),
        })
    }

    /// Re-read the JWKS file (on SIGHUP). Keeps the old keys when the file is broken.
    pub fn reload(&self) -> Result<usize, String> {
        let Some(lock) = &self.jwks else {
            return Ok(0);
        };
        let path = lock.read().map(|k| k.path.clone()).unwrap_or_default();
        let keys = load_jwks(&path)?;
        let n = keys.len();
        if let Ok(mut w) = lock.write() {
            w.keys = keys;
        }
        // A removed key must stop verifying the tokens it signed.
        self.verified
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
        Ok(n)
    }

    /// Verify a compact JWS and turn its claims into a Principal. The error text is safe to
    /// show to the client (it never contains the token).
    pub fn verify(&self, token: &str) -> Result<Principal, String> {
        let now = jsonwebtoken::get_current_timestamp();
        if let Some((p, exp)) = self
            .verified
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(token)
        {
            // The check jsonwebtoken makes (`exp < now - leeway` is expired).
            if exp.saturating_add(self.leeway) >= now {
                return Ok(p.clone());
            }
        }
        let (principal, exp) = self.verify_uncached(token)?;
        let mut cache = self.verified.lock().unwrap_or_else(|p| p.into_inner());
        if cache.len() >= VERIFIED_MAX {
            cache.clear();
        }
        cache.insert(token.to_string(), (principal.clone(), exp));
        Ok(principal)
    }

    /// [`Verifier::verify`] without the cache: the principal and the token's `exp`.
    fn verify_uncached(&self, token: &str) -> Result<(Principal, u64), String> {
        // decode_header refuses `alg: none` and unknown algorithms.
        let header =
            jsonwebtoken::decode_header(token).map_err(|e| format!("malformed token: {e}"))?;
        let alg = header.alg;
        let mut validation = Validation::new(alg);
        validation.leeway = self.leeway;
        validation.validate_nbf = true;
        validation.set_required_spec_claims(&["exp", "sub"]);
        match &self.issuer {
            Some(i) => validation.set_issuer(&[i]),
            None => validation.iss = None,
        }
        match &self.audience {
            Some(a) => validation.set_audience(&[a]),
            None => validation.validate_aud = false,
        }
        let data = match alg {
            Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512 => {
                // Only the configured secret verifies HMAC tokens, never a public key
                // (no algorithm confusion).
                let secret = self
                    .secret
                    .as_ref()
                    .ok_or("HMAC-signed tokens are not accepted by this server")?;
                jsonwebtoken::decode::<Value>(token, &DecodingKey::from_secret(secret), &validation)
            }
            Algorithm::RS256
            | Algorithm::RS384
            | Algorithm::RS512
            | Algorithm::ES256
            | Algorithm::ES384
            | Algorithm::PS256
            | Algorithm::PS384
            | Algorithm::PS512 => {
                let lock = self
                    .jwks
                    .as_ref()
                    .ok_or("public-key tokens are not accepted: no ICM_JWKS_FILE is configured")?;
                let keys = lock.read().map_err(|_| "key set unavailable")?;
                let kid = header.kid.as_deref().ok_or("the token header has no kid")?;
                let (key, key_alg) = keys
                    .keys
                    .get(kid)
                    .ok_or_else(|| format!("no key with kid '{kid}'"))?;
                if key_alg.is_some_and(|a| a != alg) {
                    return Err(format!("key '{kid}' is not for {alg:?}"));
                }
                if !key.family().algorithms().contains(&alg) {
                    return Err(format!("key '{kid}' cannot verify {alg:?}"));
                }
                jsonwebtoken::decode::<Value>(token, key, &validation)
            }
            other => return Err(format!("algorithm {other:?} is not accepted")),
        }
        .map_err(|e| format!("invalid token: {e}"))?;
        // `exp` is required and was checked above (a number of seconds).
        let exp = data.claims["exp"]
            .as_u64()
            .or_else(|| data.claims["exp"].as_f64().map(|f| f as u64))
            .unwrap_or(0);
        Ok((principal_from_claims(&data.claims), exp))
    }

    /// Sign a token with the HMAC secret (for `icm-fhir token`).
    pub fn mint(&self, claims: &Value) -> Result<String, String> {
        let secret = self.secret.as_ref().ok_or(
            "no signing secret: `icm-fhir token` signs with ICM_JWT_SECRET or the generated secret (a JWKS file holds public keys only)",
        )?;
        jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            claims,
            &EncodingKey::from_secret(secret),
        )
        .map_err(|e| e.to_string())
    }

    /// Sign a token with a PEM private key (for `icm-fhir token --key` when the server verifies
    /// with a JWKS file): ES256 for a P-256 EC key, RS256 for an RSA key; `kid` selects the
    /// server's public key.
    pub fn mint_with_key(
        &self,
        claims: &Value,
        pem: &[u8],
        kid: Option<String>,
    ) -> Result<String, String> {
        let (alg, key) = if let Ok(k) = EncodingKey::from_ec_pem(pem) {
            (Algorithm::ES256, k)
        } else if let Ok(k) = EncodingKey::from_rsa_pem(pem) {
            (Algorithm::RS256, k)
        } else {
            return Err("--key is neither an EC (P-256) nor an RSA private key in PEM".into());
        };
        let mut h = Header::new(alg);
        h.kid = kid;
        jsonwebtoken::encode(&h, claims, &key).map_err(|e| e.to_string())
    }

    /// Claims for a new token with this server's issuer and audience.
    pub fn claims(&self, spec: &TokenSpec) -> Value {
        let now = jsonwebtoken::get_current_timestamp();
        let mut c = json!({
            "sub": spec.sub,
            "iat": now,
            "nbf": now,
            "exp": now + spec.ttl_secs,
            "scope": spec.scope,
        });
        if let Some(i) = &self.issuer {
            c["iss"] = json!(i);
        }
        if let Some(a) = &self.audience {
            c["aud"] = json!(a);
        }
        if let Some(u) = &spec.fhir_user {
            c["fhirUser"] = json!(u);
        }
        if let Some(p) = &spec.patient {
            c["patient"] = json!(p);
        }
        if let Some(r) = &spec.role {
            c["role"] = json!(r);
        }
        if let Some(cl) = &spec.client_id {
            c["client_id"] = json!(cl);
        }
        c
    }
}

/// What `icm-fhir token` is asked to mint.
#[derive(Debug, Clone, Default)]
pub struct TokenSpec {
    pub sub: String,
    pub fhir_user: Option<String>,
    pub scope: String,
    pub ttl_secs: u64,
    pub patient: Option<String>,
    pub role: Option<String>,
    pub client_id: Option<String>,
}

/// Parse a TTL such as `3600`, `90s`, `15m`, `1h`, `7d`.
pub fn parse_ttl(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let (num, mult) = match s.chars().last() {
        Some('s') => (&s[..s.len() - 1], 1),
        Some('m') => (&s[..s.len() - 1], 60),
        Some('h') => (&s[..s.len() - 1], 3600),
        Some('d') => (&s[..s.len() - 1], 86400),
        _ => (s, 1),
    };
    num.parse::<u64>()
        .ok()
        .filter(|n| *n > 0)
        .map(|n| n * mult)
        .ok_or_else(|| format!("'{s}' is not a duration like 3600, 15m, 1h or 7d"))
}

fn string_list(v: &Value) -> Vec<String> {
    match v {
        Value::String(s) => s.split_ascii_whitespace().map(str::to_string).collect(),
        Value::Array(a) => a
            .iter()
            .filter_map(|x| x.as_str().map(str::to_string))
            .collect(),
        _ => Vec::new(),
    }
}

/// Map verified claims to the caller: `scope` (string) or `scp` (array), `fhirUser`,
/// `patient`, `role`/`roles` containing `admin`, `client_id`/`azp`.
pub fn principal_from_claims(c: &Value) -> Principal {
    let mut scope_text = string_list(&c["scope"]).join(" ");
    if scope_text.is_empty() {
        scope_text = string_list(&c["scp"]).join(" ");
    }
    let (scopes, bad) = parse_scopes(&scope_text);
    if !bad.is_empty() {
        log::debug!("ignored scopes: {}", bad.join("; "));
    }
    let mut roles = string_list(&c["role"]);
    roles.extend(string_list(&c["roles"]));
    Principal {
        sub: c["sub"].as_str().unwrap_or("").to_string(),
        fhir_user: c["fhirUser"].as_str().map(str::to_string),
        client_id: c["client_id"]
            .as_str()
            .or_else(|| c["azp"].as_str())
            .map(str::to_string),
        scopes,
        patient: c["patient"].as_str().map(str::to_string),
        admin: roles.iter().any(|r| r == "admin"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn verifier() -> Verifier {
        Verifier {
            secret: Some(b"0123456789abcdef0123456789abcdef".to_vec()),
            jwks: None,
            issuer: Some("https://issuer".into()),
            audience: Some("icm".into()),
            leeway: 0,
            verified: Mutex::new(HashMap::new()),
        }
    }

    /// A token verified once (and so remembered) is refused once it has expired, and a token
    /// whose signature is wrong is never answered from the cache.
    #[test]
    fn remembered_tokens_still_expire() {
        let v = verifier();
        let mut c = v.claims(&spec());
        c["exp"] = json!(jsonwebtoken::get_current_timestamp() + 1);
        let t = v.mint(&c).unwrap();
        assert_eq!(v.verify(&t).unwrap().sub, "alice");
        assert_eq!(v.verify(&t).unwrap().sub, "alice", "from the cache");
        std::thread::sleep(std::time::Duration::from_millis(2100));
        let e = v.verify(&t).unwrap_err();
        assert!(e.contains("Expired"), "{e}");
        let mut forged = t.clone();
        forged.pop();
        assert!(v.verify(&forged).is_err());
        assert!(v.verify(&forged).is_err());
    }

    fn spec() -> TokenSpec {
        TokenSpec {
            sub: "alice".into(),
            scope: "user/*.cruds".into(),
            ttl_secs: 60,
            fhir_user: Some("Practitioner/1".into()),
            role: Some("admin".into()),
            ..TokenSpec::default()
        }
    }

    #[test]
    fn mint_then_verify() {
        let v = verifier();
        let t = v.mint(&v.claims(&spec())).unwrap();
        let p = v.verify(&t).unwrap();
        assert_eq!(p.sub, "alice");
        assert!(p.admin);
        assert_eq!(p.practitioner_id().as_deref(), Some("1"));
        assert_eq!(p.scopes.len(), 1);
    }

    #[test]
    fn refuses_bad_tokens() {
        let v = verifier();
        let mut c = v.claims(&spec());
        c["exp"] = json!(jsonwebtoken::get_current_timestamp() - 10);
        assert!(v
            .verify(&v.mint(&c).unwrap())
            .unwrap_err()
            .contains("Expired"));
        let mut c = v.claims(&spec());
        c["nbf"] = json!(jsonwebtoken::get_current_timestamp() + 100);
        assert!(v.verify(&v.mint(&c).unwrap()).is_err());
        let mut c = v.claims(&spec());
        c["aud"] = json!("other");
        assert!(v.verify(&v.mint(&c).unwrap()).is_err());
        let mut c = v.claims(&spec());
        c["iss"] = json!("https://evil");
        assert!(v.verify(&v.mint(&c).unwrap()).is_err());
        // alg none: header {"alg":"none"}, no signature.
        let none = "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.eyJzdWIiOiJ4IiwiZXhwIjo5OTk5OTk5OTk5fQ.";
        assert!(v.verify(none).is_err());
        // Signed with another secret.
        let other = Verifier {
            secret: Some(b"ffffffffffffffffffffffffffffffff".to_vec()),
            ..verifier()
        };
        assert!(v.verify(&other.mint(&v.claims(&spec())).unwrap()).is_err());
        // A public-key algorithm without a JWKS.
        assert!(v
            .verify("eyJhbGciOiJSUzI1NiIsImtpZCI6ImsxIn0.e30.AAAA")
            .is_err());
        assert!(v.verify("not a token").is_err());
    }

    #[test]
    fn leeway_applies() {
        let mut v = verifier();
        v.leeway = 120;
        let mut c = v.claims(&spec());
        c["exp"] = json!(jsonwebtoken::get_current_timestamp() - 10);
        assert!(v.verify(&v.mint(&c).unwrap()).is_ok());
    }

    #[test]
    fn ttl_parsing() {
        assert_eq!(parse_ttl("1h"), Ok(3600));
        assert_eq!(parse_ttl("15m"), Ok(900));
        assert_eq!(parse_ttl("30"), Ok(30));
        assert_eq!(parse_ttl("2d"), Ok(172800));
        assert!(parse_ttl("0").is_err());
        assert!(parse_ttl("soon").is_err());
    }

    #[test]
    fn generated_secret_file() {
        let dir = std::env::temp_dir().join(format!("icm-secret-{}", uuid::Uuid::new_v4()));
        let (a, created) = load_or_create_secret(&dir).unwrap();
        assert!(created);
        let (b, created2) = load_or_create_secret(&dir).unwrap();
        assert!(!created2);
        assert_eq!(a, b);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.join(SECRET_FILE))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let _ = std::fs::remove_dir_all(dir);
    }
}
