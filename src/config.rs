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
        }
    }

    pub fn auth_enabled(&self) -> bool {
        !matches!(
            self.auth.to_ascii_lowercase().as_str(),
            "off" | "false" | "0" | "no"
        )
    }
}
