//! Typed configuration: every setting is an environment variable and a `serve` flag.
use clap::Args;

#[derive(Debug, Clone, Args)]
pub struct Config {
    /// Database: postgres://… or postgresql://… for PostgreSQL, sqlite://PATH for embedded SQLite.
    #[arg(long, env = "DATABASE_URL", default_value = "sqlite://data/icm.db")]
    pub database_url: String,

    /// Address to listen on.
    #[arg(long, env = "ICM_BIND", default_value = "127.0.0.1:8080")]
    pub bind: String,

    /// Public base URL of the FHIR endpoint used in Location headers and Bundle links
    /// (e.g. https://fhir.example.org/fhir). Default: derived from each request's Host.
    #[arg(long, env = "ICM_BASE_URL")]
    pub base_url: Option<String>,

    /// Largest accepted request body in bytes.
    #[arg(long, env = "ICM_MAX_BODY", default_value_t = 16 * 1024 * 1024)]
    pub max_body: usize,

    /// Database connection pool size.
    #[arg(long, env = "ICM_POOL_SIZE", default_value_t = 10)]
    pub pool_size: u32,

    /// Seconds to wait for a database connection before answering 503.
    #[arg(long, env = "ICM_DB_TIMEOUT", default_value_t = 5)]
    pub db_timeout: u64,

    /// Milliseconds a client has to send the request line and headers (slow clients, e.g.
    /// slowloris, are answered 408 and disconnected).
    #[arg(long, env = "ICM_HEADER_TIMEOUT_MS", default_value_t = 5000)]
    pub header_timeout_ms: u64,

    /// Seconds a client has to send the whole request body once the headers are in (408
    /// OperationOutcome after that).
    #[arg(long, env = "ICM_BODY_TIMEOUT", default_value_t = 60)]
    pub body_timeout: u64,

    /// Length of the listening socket's queue of connections not yet accepted (the kernel caps
    /// it at net.core.somaxconn). A burst of new connections larger than this queue has SYNs
    /// dropped, and each such client waits a second to retry.
    #[arg(long, env = "ICM_BACKLOG", default_value_t = 4096)]
    pub backlog: i32,

    /// HTTP worker threads (default: one per CPU core).
    #[arg(long, env = "ICM_WORKERS")]
    pub workers: Option<usize>,

    /// Default page size for history and search.
    #[arg(long, env = "ICM_DEFAULT_COUNT", default_value_t = 20)]
    pub default_count: i64,

    /// Largest `_count` honoured (larger values are reduced to this).
    #[arg(long, env = "ICM_MAX_COUNT", default_value_t = 1000)]
    pub max_count: i64,

    /// Largest number of entries accepted in one transaction or batch Bundle (413 beyond).
    /// The default admits any Synthea patient history; ICM_MAX_BUNDLE_BODY bounds the size.
    #[arg(long, env = "ICM_MAX_BUNDLE_ENTRIES", default_value_t = DEFAULT_MAX_BUNDLE_ENTRIES)]
    pub max_bundle_entries: usize,

    /// Largest accepted body of a transaction or batch Bundle (POST to the base URL), in bytes
    /// (413 beyond); other requests keep ICM_MAX_BODY.
    #[arg(long, env = "ICM_MAX_BUNDLE_BODY", default_value_t = DEFAULT_MAX_BUNDLE_BODY)]
    pub max_bundle_body: usize,

    /// Authentication: `on` (default) or `off` (explicitly disables it; loopback only).
    #[arg(long, env = "ICM_AUTH", default_value = "on")]
    pub auth: String,

    /// Referential integrity of local references on create/update and delete: `on` (default) or `off`
    /// (bulk loads in any order).
    #[arg(long, env = "ICM_REFERENTIAL_INTEGRITY", default_value = "on")]
    pub referential_integrity: String,

    /// ICM profiles enforced on every write of these types even without meta.profile:
    /// `off` (default), `on` (Patient, CareTeam, CarePlan, Task) or a list like `Patient,CarePlan`.
    #[arg(long, env = "ICM_ENFORCE_PROFILES", default_value = "off")]
    pub enforce_profiles: String,

    /// Whether `DELETE ...?_cascade=delete` may delete the resources that still refer to the target.
    #[arg(long, env = "ICM_ALLOW_CASCADE_DELETE", default_value = "off")]
    pub allow_cascade_delete: String,

    /// With ICM_AUTH=off the server still refuses a non-loopback ICM_BIND unless this is `yes`.
    #[arg(long, env = "ICM_AUTH_OFF_ANY_INTERFACE", default_value = "no")]
    pub auth_off_any_interface: String,

    /// HS256 secret for bearer tokens (at least 32 bytes). Default: a secret generated into the
    /// data folder on first start.
    #[arg(long, env = "ICM_JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<Secret>,

    /// JWKS file with the public keys (RS256/ES256, selected by kid); re-read on SIGHUP.
    #[arg(long, env = "ICM_JWKS_FILE")]
    pub jwks_file: Option<String>,

    /// Required `iss` claim.
    #[arg(long, env = "ICM_JWT_ISSUER")]
    pub jwt_issuer: Option<String>,

    /// Required `aud` claim.
    #[arg(long, env = "ICM_JWT_AUDIENCE")]
    pub jwt_audience: Option<String>,

    /// Clock leeway in seconds for exp/nbf.
    #[arg(long, env = "ICM_JWT_LEEWAY", default_value_t = 30)]
    pub jwt_leeway: u64,

    /// Care-team boundary for practitioners with user/ scopes: `on` (default) or `off`.
    #[arg(long, env = "ICM_CARE_TEAM_ACCESS", default_value = "on")]
    pub care_team_access: String,

    /// Browser origins allowed by CORS, comma-separated (none by default; `*` for any).
    #[arg(long, env = "ICM_CORS_ORIGINS", default_value = "")]
    pub cors_origins: String,

    /// Write an AuditEvent for every /fhir request: `on` (default) or `off`.
    #[arg(long, env = "ICM_AUDIT", default_value = "on")]
    pub audit: String,

    /// PostgreSQL prepared-statement cache per connection: `on` (default), or `off` behind
    /// PgBouncer (or another pooler) in transaction mode.
    #[arg(long, env = "ICM_PG_STATEMENT_CACHE", default_value = "on")]
    pub pg_statement_cache: String,

    /// PostgreSQL hot standbys for reads and searches, comma-separated (none by default).
    /// Reads that must see the caller's own recent writes stay on the primary.
    #[arg(long, env = "ICM_READ_DATABASE_URL", default_value = "")]
    pub read_database_url: String,

    /// Milliseconds a standby may lag behind the primary and still serve reads.
    #[arg(long, env = "ICM_READ_MAX_LAG_MS", default_value_t = 2000)]
    pub read_max_lag_ms: u64,

    /// File where AuditEvents wait while the database is unavailable (written to the database
    /// when it is back, also after a restart). Default: next to the SQLite database file, or
    /// `icm-audit-spool.jsonl` in the working directory on PostgreSQL.
    #[arg(long, env = "ICM_AUDIT_SPOOL", default_value = "")]
    pub audit_spool: String,

    /// Days until the intake-assessment Tasks of an enrollment are due.
    #[arg(long, env = "ICM_INTAKE_DAYS", default_value_t = 7)]
    pub intake_days: i64,

    /// Days a community organization has to answer a referral before it shows on the care
    /// manager's $worklist.
    #[arg(long, env = "ICM_REFERRAL_RESPONSE_DAYS", default_value_t = 3)]
    pub referral_response_days: i64,

    /// Directory of the Bulk Data export files ($export), one folder per job. Default: `exports`
    /// next to the SQLite database file, or `icm-fhir-exports` in the system's temporary
    /// directory on PostgreSQL.
    #[arg(long, env = "ICM_EXPORT_DIR", default_value = "")]
    pub export_dir: String,
    /// Development sign-in for the console (/console): `off` (default) or `on`. When on, and only
    /// when ICM_BIND is a loopback address, POST /auth/dev-token mints a short-lived token for a
    /// chosen Practitioner (with the HS256 secret). Never for production.
    #[arg(long = "dev-console", env = "ICM_DEV_CONSOLE", default_value = "off", num_args = 0..=1, default_missing_value = "on")]
    pub dev_console: String,
    /// Deliver Subscription notifications from this process: `on` (default) or `off` (a
    /// process that only serves the API; another one delivers).
    #[arg(long, env = "ICM_SUBSCRIPTION_DELIVERY", default_value = "on")]
    pub subscription_delivery: String,

    /// Milliseconds between two looks at the notification outbox when it was empty.
    #[arg(long, env = "ICM_SUBSCRIPTION_POLL_MS", default_value_t = 1000)]
    pub subscription_poll_ms: u64,

    /// Delivery attempts of one notification before it fails and its Subscription's status
    /// becomes `error`.
    #[arg(long, env = "ICM_SUBSCRIPTION_MAX_ATTEMPTS", default_value_t = 5)]
    pub subscription_max_attempts: u32,

    /// Milliseconds before the first retry of a failed delivery; each further retry waits
    /// twice as long (at most one hour).
    #[arg(long, env = "ICM_SUBSCRIPTION_BACKOFF_MS", default_value_t = 2000)]
    pub subscription_backoff_ms: u64,

    /// Seconds a rest-hook endpoint has to answer (connect and response).
    #[arg(long, env = "ICM_SUBSCRIPTION_TIMEOUT", default_value_t = 10)]
    pub subscription_timeout: u64,
}

/// A secret value whose Debug output is redacted (so configuration dumps never leak it).
#[derive(Clone)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

impl std::str::FromStr for Secret {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Secret(s.to_string()))
    }
}

/// Entries of one Bundle: real Synthea histories reach 27,000 and more.
pub const DEFAULT_MAX_BUNDLE_ENTRIES: usize = 100_000;
/// Bytes of one Bundle: Synthea histories reach about 70 MB.
pub const DEFAULT_MAX_BUNDLE_BODY: usize = 128 * 1024 * 1024;

impl Config {
    /// A configuration with every default, for a given database (tests, tools).
    pub fn for_database(url: &str) -> Config {
        Config {
            database_url: url.to_string(),
            bind: "127.0.0.1:0".into(),
            base_url: None,
            max_body: 16 * 1024 * 1024,
            pool_size: 10,
            db_timeout: 5,
            header_timeout_ms: 5000,
            body_timeout: 60,
            backlog: 4096,
            workers: Some(2),
            default_count: 20,
            max_count: 1000,
            max_bundle_entries: DEFAULT_MAX_BUNDLE_ENTRIES,
            max_bundle_body: DEFAULT_MAX_BUNDLE_BODY,
            auth: "off".into(),
            referential_integrity: "on".into(),
            enforce_profiles: "off".into(),
            allow_cascade_delete: "off".into(),
            auth_off_any_interface: "no".into(),
            jwt_secret: None,
            jwks_file: None,
            jwt_issuer: None,
            jwt_audience: None,
            jwt_leeway: 30,
            care_team_access: "on".into(),
            cors_origins: String::new(),
            audit: "off".into(),
            audit_spool: String::new(),
            pg_statement_cache: "on".into(),
            read_database_url: String::new(),
            read_max_lag_ms: 2000,
            intake_days: 7,
            referral_response_days: 3,
            export_dir: String::new(),
            dev_console: "off".into(),
            subscription_delivery: "on".into(),
            subscription_poll_ms: 1000,
            subscription_max_attempts: 5,
            subscription_backoff_ms: 2000,
            subscription_timeout: 10,
        }
    }

    /// The validation and integrity rules of the write path, from this configuration.
    pub fn write_policy(&self) -> WritePolicy {
        let enforce = match self.enforce_profiles.trim().to_ascii_lowercase().as_str() {
            "" | "off" | "false" | "0" | "no" => Vec::new(),
            "on" | "true" | "1" | "yes" | "all" => crate::fhir::validate::profiles::ICM_TYPES
                .iter()
                .map(|t| t.to_string())
                .collect(),
            _ => self
                .enforce_profiles
                .split(',')
                .map(|t| t.trim().to_string())
                .filter(|t| !t.is_empty())
                .collect(),
        };
        WritePolicy {
            referential_integrity: is_on(&self.referential_integrity),
            enforce_profiles: enforce,
            allow_cascade_delete: is_on(&self.allow_cascade_delete),
            care_team_access: self.care_team_enabled(),
        }
    }

    pub fn auth_enabled(&self) -> bool {
        is_on(&self.auth)
    }

    pub fn care_team_enabled(&self) -> bool {
        is_on(&self.care_team_access)
    }

    pub fn pg_statement_cache_enabled(&self) -> bool {
        is_on(&self.pg_statement_cache)
    }

    pub fn subscription_delivery_enabled(&self) -> bool {
        is_on(&self.subscription_delivery)
    }

    pub fn audit_enabled(&self) -> bool {
        is_on(&self.audit)
    }

    /// The read replicas' URLs.
    pub fn read_database_urls(&self) -> Vec<String> {
        self.read_database_url
            .split(',')
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect()
    }

    /// Where the audit writer spools events while the database is away (`audit_spool`).
    pub fn audit_spool_path(&self) -> std::path::PathBuf {
        if !self.audit_spool.trim().is_empty() {
            return self.audit_spool.trim().into();
        }
        let db = &self.database_url;
        match db
            .strip_prefix("sqlite://")
            .or_else(|| db.strip_prefix("sqlite:"))
        {
            Some(path) if !path.is_empty() && !path.starts_with(':') => format!(
                "{}.audit-spool.jsonl",
                path.split('?').next().unwrap_or(path)
            )
            .into(),
            _ => "icm-audit-spool.jsonl".into(),
        }
    }

    /// Where the export files go (`export_dir`).
    pub fn export_dir_path(&self) -> std::path::PathBuf {
        if !self.export_dir.trim().is_empty() {
            return self.export_dir.trim().into();
        }
        let db = &self.database_url;
        match db
            .strip_prefix("sqlite://")
            .or_else(|| db.strip_prefix("sqlite:"))
        {
            Some(path) if !path.is_empty() && !path.starts_with(':') => {
                let file = std::path::Path::new(path.split('?').next().unwrap_or(path));
                file.parent()
                    .unwrap_or(std::path::Path::new("."))
                    .join("exports")
            }
            _ => std::env::temp_dir().join("icm-fhir-exports"),
        }
    }

    /// The CORS origins configured (empty: CORS off).
    pub fn cors_origin_list(&self) -> Vec<String> {
        self.cors_origins
            .split(',')
            .map(|s| s.trim().trim_end_matches('/').to_string())
            .filter(|s| !s.is_empty())
            .collect()
    }

    /// Whether ICM_BIND is a loopback address (127.0.0.0/8, ::1, localhost).
    pub fn bind_is_loopback(&self) -> bool {
        let host = self
            .bind
            .rsplit_once(':')
            .map_or(self.bind.as_str(), |(h, _)| h);
        let host = host.trim_start_matches('[').trim_end_matches(']');
        host == "localhost"
            || host
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback())
    }

    /// The console's development sign-in is served: ICM_DEV_CONSOLE on, a loopback bind and
    /// authentication on (with ICM_AUTH=off there is nothing to sign in to).
    pub fn dev_console_enabled(&self) -> bool {
        is_on(&self.dev_console) && self.bind_is_loopback() && self.auth_enabled()
    }

    /// Refuse to start without authentication on a non-loopback address.
    pub fn check_bind_safety(&self) -> Result<(), String> {
        if self.auth_enabled() || self.auth_off_any_interface.eq_ignore_ascii_case("yes") {
            return Ok(());
        }
        if self.bind_is_loopback() {
            Ok(())
        } else {
            Err(format!(
                "ICM_AUTH=off on non-loopback address {}: refusing to start \
                 (set ICM_AUTH_OFF_ANY_INTERFACE=yes to override)",
                self.bind
            ))
        }
    }
}

fn is_on(v: &str) -> bool {
    !matches!(
        v.trim().to_ascii_lowercase().as_str(),
        "off" | "false" | "0" | "no" | ""
    )
}

/// Validation and integrity rules of the write path (service::write), from the configuration.
#[derive(Debug, Clone)]
pub struct WritePolicy {
    /// Local references must resolve (create/update) and stay resolvable (delete).
    pub referential_integrity: bool,
    /// Types whose ICM profile is enforced on every write.
    pub enforce_profiles: Vec<String>,
    /// `DELETE ?_cascade=delete` may delete the referrers too.
    pub allow_cascade_delete: bool,
    /// The care-team boundary rule (ICM_CARE_TEAM_ACCESS): the unit of work resolves a
    /// subscriber's boundaries with it when it matches a write against Subscriptions.
    pub care_team_access: bool,
}

impl Default for WritePolicy {
    fn default() -> Self {
        WritePolicy {
            referential_integrity: true,
            enforce_profiles: Vec::new(),
            allow_cascade_delete: false,
            care_team_access: true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auth_off_binds_loopback_only() {
        let mut c = Config::for_database("sqlite://x.db");
        for (bind, ok) in [
            ("127.0.0.1:8080", true),
            ("[::1]:80", true),
            ("localhost:1", true),
            ("0.0.0.0:8080", false),
            ("10.0.0.5:80", false),
        ] {
            c.bind = bind.into();
            assert_eq!(c.check_bind_safety().is_ok(), ok, "{bind}");
        }
        c.bind = "0.0.0.0:8080".into();
        c.auth_off_any_interface = "yes".into();
        assert!(c.check_bind_safety().is_ok());
        c.auth_off_any_interface = "no".into();
        c.auth = "on".into();
        assert!(c.check_bind_safety().is_ok());
    }

    #[test]
    fn dev_console_only_on_loopback() {
        let mut c = Config::for_database("sqlite://x.db");
        c.auth = "on".into();
        assert!(!c.dev_console_enabled(), "off by default");
        c.dev_console = "on".into();
        c.bind = "127.0.0.1:8080".into();
        assert!(c.dev_console_enabled());
        c.bind = "[::1]:8080".into();
        assert!(c.dev_console_enabled());
        for bind in ["0.0.0.0:8080", "192.0.2.7:80", "[::]:80"] {
            c.bind = bind.into();
            assert!(!c.dev_console_enabled(), "{bind}");
        }
        c.bind = "127.0.0.1:8080".into();
        c.auth = "off".into();
        assert!(!c.dev_console_enabled());
    }

    #[test]
    fn secret_is_redacted() {
        let mut c = Config::for_database("sqlite://x.db");
        c.jwt_secret = Some(Secret("super-secret-value".into()));
        assert!(!format!("{c:?}").contains("super-secret-value"));
    }

    #[test]
    fn write_policy_from_settings() {
        let mut c = Config::for_database("sqlite://x");
        let p = c.write_policy();
        assert!(
            p.referential_integrity && !p.allow_cascade_delete && p.enforce_profiles.is_empty()
        );
        c.enforce_profiles = "on".into();
        assert_eq!(
            c.write_policy().enforce_profiles,
            ["Patient", "CareTeam", "CarePlan", "Task"]
        );
        c.enforce_profiles = " Patient, CarePlan ".into();
        assert_eq!(c.write_policy().enforce_profiles, ["Patient", "CarePlan"]);
        c.referential_integrity = "OFF".into();
        c.allow_cascade_delete = "on".into();
        let p = c.write_policy();
        assert!(!p.referential_integrity && p.allow_cascade_delete);
    }
}
