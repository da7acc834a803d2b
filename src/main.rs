//! icm-fhir command line: serve (default) | migrate | import | reindex | token | openapi.

use clap::{Args, Parser, Subcommand};
use icm_fhir::config::Config;

#[derive(Parser)]
#[command(
    name = "icm-fhir",
    version,
    about = "FHIR R4 server for Integrated Care Management"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Option<Cmd>,
}

#[derive(Subcommand)]
enum Cmd {
    /// Serve the FHIR API (the default when no command is given).
    Serve(Box<Config>),
    /// Apply database migrations and exit.
    Migrate(DbArgs),
    /// Load FHIR Bundles and NDJSON files (e.g. a Synthea output folder) through the write path.
    Import(ImportArgs),
    /// Rebuild every search index row from the stored resources (after search-parameter
    /// definitions change), then exit.
    Reindex(ReindexArgs),
    /// Print a signed bearer token (HS256 with ICM_JWT_SECRET or the generated secret; RS256/ES256
    /// with --key).
    Token(Box<TokenArgs>),
    /// Copy the database to PATH while it may be serving: SQLite with `VACUUM INTO` (one
    /// consistent snapshot), PostgreSQL with `pg_dump --format=custom` (restore with pg_restore).
    Backup(BackupArgs),
    /// Check a database without changing it: resources parse, index rows equal a re-index,
    /// history is gap-free. Exit 0 when consistent, 1 with a report of every problem.
    Verify(DbArgs),
    /// Print the OpenAPI document (the committed openapi/openapi.json is this output).
    Openapi,
}

#[derive(Args)]
struct DbArgs {
    /// Database: postgres://… or sqlite://PATH.
    #[arg(long, env = "DATABASE_URL", default_value = "sqlite://data/icm.db")]
    database_url: String,
}

#[derive(Args)]
struct BackupArgs {
    /// The new backup file (must not exist).
    path: std::path::PathBuf,
    #[command(flatten)]
    db: DbArgs,
}

#[derive(Args)]
struct ReindexArgs {
    #[command(flatten)]
    db: DbArgs,
    /// Only this resource type.
    #[arg(long = "type")]
    ty: Option<String>,
    /// Resources per transaction.
    #[arg(long, default_value_t = 500)]
    batch: i64,
}

#[derive(Args)]
struct TokenArgs {
    /// Subject (user name or client id).
    #[arg(long)]
    sub: String,
    /// fhirUser claim, e.g. Practitioner/123.
    #[arg(long)]
    fhir_user: Option<String>,
    /// Space-separated SMART scopes, e.g. 'user/*.cruds' or 'patient/*.rs'.
    #[arg(long, default_value = "user/*.cruds")]
    scope: String,
    /// Lifetime: seconds, or 15m, 1h, 7d.
    #[arg(long, default_value = "1h")]
    ttl: String,
    /// patient claim (the patient a patient/ scope is about).
    #[arg(long)]
    patient: Option<String>,
    /// role claim, e.g. admin.
    #[arg(long)]
    role: Option<String>,
    /// client_id claim.
    #[arg(long)]
    client_id: Option<String>,
    /// Sign with this PEM private key (RS256 for RSA, ES256 for P-256) instead of the HS256
    /// secret: for servers that verify with a JWKS file (ICM_JWKS_FILE).
    #[arg(long)]
    key: Option<std::path::PathBuf>,
    /// `kid` header naming the matching public key in the server's JWKS (with --key).
    #[arg(long, requires = "key")]
    kid: Option<String>,
    #[command(flatten)]
    config: Config,
}

#[derive(Args)]
struct ImportArgs {
    /// Files or folders (searched recursively for .json and .ndjson).
    #[arg(required = true)]
    paths: Vec<std::path::PathBuf>,
    /// Database: postgres://… or sqlite://PATH.
    #[arg(long, env = "DATABASE_URL", default_value = "sqlite://data/icm.db")]
    database_url: String,
    /// Parallel writers.
    #[arg(long, default_value_t = 4)]
    jobs: usize,
    /// Resources per database transaction.
    #[arg(long, default_value_t = 250)]
    batch: usize,
    /// No progress bar (e.g. in scripts).
    #[arg(long)]
    quiet: bool,
    /// Check that every local reference resolves (off by default for bulk loads: files load in
    /// parallel and bundle entries reference each other in any order).
    #[arg(long)]
    referential_integrity: bool,
    /// Maintain every index during the load. By default an import into an empty PostgreSQL
    /// database drops the search-side indexes the write path does not read and builds them
    /// once after the load (faster; searches are slow until then).
    #[arg(long)]
    keep_indexes: bool,
}

/// `icm-fhir` alone: the serve configuration from environment variables and defaults.
#[derive(Parser)]
struct ServeDefaults {
    #[command(flatten)]
    config: Config,
}

/// glibc gives each thread that allocates concurrently an arena of its own (up to 8 per core)
/// and does not hand their free memory back, so the resident size of a server with an actix
/// worker per core and a blocking pool of database threads only ever grows with the busiest
/// moment. Two arenas: the 10,000-patient benchmark's peak RSS 499 → 301 MiB at the same
/// throughput (README, Benchmark suite). `MALLOC_ARENA_MAX` in the environment still wins.
fn limit_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        // SAFETY: mallopt only sets an allocator parameter; called before any thread starts.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, 2);
        }
    }
}

fn main() {
    limit_malloc_arenas();
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let cli = Cli::parse();
    icm_fhir::service::measures::install_fact_kinds();
    let code = match cli.cmd {
        None => serve(ServeDefaults::parse_from(["icm-fhir"]).config),
        Some(Cmd::Serve(c)) => serve(*c),
        Some(Cmd::Migrate(a)) => migrate(&a.database_url),
        Some(Cmd::Import(a)) => import(a),
        Some(Cmd::Token(t)) => token(*t),
        Some(Cmd::Reindex(a)) => reindex(&a),
        Some(Cmd::Backup(a)) => backup(&a),
        Some(Cmd::Verify(a)) => verify(&a.database_url),
        Some(Cmd::Openapi) => {
            print!(
                "{}",
                icm_fhir::http::openapi::committed_text(icm_fhir::fhir::registry::Registry::get())
            );
            0
        }
    };
    std::process::exit(code);
}

fn migrate(url: &str) -> i32 {
    let store = match icm_fhir::store::Store::new(url, 1, std::time::Duration::from_secs(10)) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return 2;
        }
    };
    match store.migrate() {
        Ok(n) => {
            println!("{n} migration(s) applied");
            0
        }
        Err(e) => {
            eprintln!("error: {e}");
            1
        }
    }
}

/// The PostgreSQL backup and restore recipe (printed when pg_dump cannot be run).
const PG_RECIPE: &str = "PostgreSQL backup:  pg_dump --format=custom --file=icm.dump \"$DATABASE_URL\"\n\
restore (into an empty database):  createdb icm_restored && \\\n  pg_restore --no-owner --dbname=postgres://…/icm_restored icm.dump\n\
then: DATABASE_URL=postgres://…/icm_restored icm-fhir verify\n";

fn backup(a: &BackupArgs) -> i32 {
    let started = std::time::Instant::now();
    let url = &a.db.database_url;
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        if a.path.exists() {
            eprintln!("error: {} exists; give a new file name", a.path.display());
            return 2;
        }
        let status = std::process::Command::new("pg_dump")
            .arg("--format=custom")
            .arg("--file")
            .arg(&a.path)
            .arg(url)
            .status();
        return match status {
            Ok(s) if s.success() => {
                println!(
                    "backup written to {} in {:.1} s (pg_dump custom format; restore with pg_restore)",
                    a.path.display(),
                    started.elapsed().as_secs_f64()
                );
                0
            }
            Ok(s) => {
                eprintln!("error: pg_dump failed ({s})\n{PG_RECIPE}");
                1
            }
            Err(e) => {
                eprintln!("error: cannot run pg_dump ({e}); install the PostgreSQL client tools or run it yourself:\n{PG_RECIPE}");
                2
            }
        };
    }
    match icm_fhir::store::backup::sqlite_backup(url, &a.path) {
        Ok(()) => {
            println!(
                "backup written to {} in {:.1} s",
                a.path.display(),
                started.elapsed().as_secs_f64()
            );
            0
        }
        Err(e) => {
            eprintln!("error: {e}");
            1
        }
    }
}

fn verify(url: &str) -> i32 {
    let store = match icm_fhir::store::Store::new(url, 1, std::time::Duration::from_secs(10)) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return 2;
        }
    };
    if let icm_fhir::store::backend::DbTarget::Sqlite(p) =
        icm_fhir::store::backend::DbTarget::parse(url)
            .unwrap_or(icm_fhir::store::backend::DbTarget::Postgres(String::new()))
    {
        if !std::path::Path::new(&p).exists() {
            eprintln!("error: no database at {p}");
            return 2;
        }
    }
    match icm_fhir::store::verify::verify(&store) {
        Ok(r) => {
            print!("{}", icm_fhir::store::verify::render(&r));
            if r.ok() {
                0
            } else {
                1
            }
        }
        Err(e) => {
            eprintln!("error: {e}");
            2
        }
    }
}

fn reindex(a: &ReindexArgs) -> i32 {
    let store = match icm_fhir::store::Store::new(
        &a.db.database_url,
        1,
        std::time::Duration::from_secs(10),
    ) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return 2;
        }
    };
    if let Err(e) = store.migrate() {
        eprintln!("error: {e}");
        return 1;
    }
    if let Some(t) = &a.ty {
        if !icm_fhir::fhir::registry::Registry::get().is_supported(t) {
            eprintln!("error: '{t}' is not a supported resource type");
            return 2;
        }
    }
    let started = std::time::Instant::now();
    match icm_fhir::store::index::reindex(&store, a.ty.as_deref(), a.batch.max(1)) {
        Ok(n) => {
            println!(
                "reindexed {n} resource(s) in {:.1} s",
                started.elapsed().as_secs_f64()
            );
            0
        }
        Err(e) => {
            eprintln!("error: {e}");
            1
        }
    }
}

fn import(a: ImportArgs) -> i32 {
    let files = match icm_fhir::import::collect_files(&a.paths) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("error: {e}");
            return 2;
        }
    };
    let store = match icm_fhir::store::Store::new(
        &a.database_url,
        a.jobs as u32 + 1,
        std::time::Duration::from_secs(30),
    ) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return 2;
        }
    };
    if let Err(e) = store.migrate() {
        eprintln!("error: {e}");
        return 1;
    }
    let started = std::time::Instant::now();
    let policy = icm_fhir::config::WritePolicy {
        referential_integrity: a.referential_integrity,
        ..Default::default()
    };
    let summary = icm_fhir::import::run(
        std::sync::Arc::new(store),
        policy,
        files,
        a.jobs,
        a.batch,
        !a.quiet,
        !a.keep_indexes,
    );
    print!(
        "{}",
        icm_fhir::import::report(&summary, started.elapsed().as_secs_f64())
    );
    if summary.rejected.is_empty() {
        0
    } else {
        3
    }
}

fn token(t: TokenArgs) -> i32 {
    use icm_fhir::http::auth::jwt::{parse_ttl, TokenSpec, Verifier};
    let ttl_secs = match parse_ttl(&t.ttl) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: --ttl {e}");
            return 2;
        }
    };
    let verifier = match Verifier::from_config(&t.config) {
        Ok(v) => v,
        Err(e) => {
            eprintln!("error: {e}");
            return 2;
        }
    };
    let spec = TokenSpec {
        sub: t.sub,
        fhir_user: t.fhir_user,
        scope: t.scope,
        ttl_secs,
        patient: t.patient,
        role: t.role,
        client_id: t.client_id,
    };
    let claims = verifier.claims(&spec);
    let signed = match &t.key {
        Some(path) => match std::fs::read(path) {
            Ok(pem) => verifier.mint_with_key(&claims, &pem, t.kid.clone()),
            Err(e) => Err(format!("cannot read --key {}: {e}", path.display())),
        },
        None => verifier.mint(&claims),
    };
    match signed {
        Ok(tok) => {
            println!("{tok}");
            0
        }
        Err(e) => {
            eprintln!("error: {e}");
            2
        }
    }
}

fn serve(config: Config) -> i32 {
    if let Err(e) = config.check_bind_safety() {
        eprintln!("error: {e}");
        return 2;
    }
    let state = match icm_fhir::build_state(config) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return 2;
        }
    };
    if !state.config.auth_enabled() {
        log::warn!("ICM_AUTH=off: authentication is disabled; every request has full access");
    }
    if state.config.dev_console_enabled() {
        log::warn!(
            "ICM_DEV_CONSOLE=on: /auth/dev/token mints tokens for any Practitioner to loopback clients (development only)"
        );
    } else if !matches!(
        state
            .config
            .dev_console
            .trim()
            .to_ascii_lowercase()
            .as_str(),
        "off" | "false" | "0" | "no" | ""
    ) {
        log::warn!(
            "ICM_DEV_CONSOLE is on but ignored: the development sign-in needs a loopback ICM_BIND and ICM_AUTH on"
        );
    }
    reload_keys_on_sighup(&state);
    let listener = match icm_fhir::listen(&state.config.bind, state.config.backlog) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("error: cannot listen on {}: {e}", state.config.bind);
            return 2;
        }
    };
    icm_fhir::migrate_or_retry(&state);
    log::info!(
        "icm-fhir serving FHIR R4 at http://{}/fhir ({:?})",
        listener
            .local_addr()
            .map(|a| a.to_string())
            .unwrap_or_default(),
        state.store.backend()
    );
    match actix_web::rt::System::new().block_on(icm_fhir::serve(state, listener)) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("error: {e}");
            1
        }
    }
}

/// Re-read the JWKS file whenever the process receives SIGHUP.
fn reload_keys_on_sighup(state: &std::sync::Arc<icm_fhir::http::AppState>) {
    #[cfg(unix)]
    {
        let mut signals = match signal_hook::iterator::Signals::new([signal_hook::consts::SIGHUP]) {
            Ok(s) => s,
            Err(e) => {
                log::warn!("cannot listen for SIGHUP: {e}");
                return;
            }
        };
        let st = state.clone();
        std::thread::spawn(move || {
            for _ in signals.forever() {
                if let Some(v) = &st.auth.verifier {
                    match v.reload() {
                        Ok(n) => log::info!("SIGHUP: reloaded {n} key(s) from the JWKS file"),
                        Err(e) => log::error!("SIGHUP: keeping the old keys: {e}"),
                    }
                }
            }
        });
    }
}
