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
    #[arg(long, env = "ICM_MAX_BUNDLE_ENTRIES", default_value_t = 1000)]
    pub max_bundle_entries: usize,

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
}

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
            workers: Some(2),
            default_count: 20,
            max_count: 1000,
            max_bundle_entries: 1000,
            auth: "off".into(),
            referential_integrity: "on".into(),
            enforce_profiles: "off".into(),
            allow_cascade_delete: "off".into(),
        }
    }

    /// The validation and integrity rules of the write path, from this configuration.
    pub fn write_policy(&self) -> crate::store::integrity::WritePolicy {
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
        crate::store::integrity::WritePolicy {
            referential_integrity: is_on(&self.referential_integrity),
            enforce_profiles: enforce,
            allow_cascade_delete: is_on(&self.allow_cascade_delete),
        }
    }

    pub fn auth_enabled(&self) -> bool {
        !matches!(
            self.auth.to_ascii_lowercase().as_str(),
            "off" | "false" | "0" | "no"
        )
    }
}

fn is_on(v: &str) -> bool {
    !matches!(
        v.trim().to_ascii_lowercase().as_str(),
        "off" | "false" | "0" | "no" | ""
    )
}

#[cfg(test)]
mod tests {
    use super::*;

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
