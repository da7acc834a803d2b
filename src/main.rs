//! icm-fhir command line: serve (default) | migrate.
use std::net::TcpListener;

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
    Serve(Config),
    /// Apply database migrations and exit.
    Migrate(DbArgs),
    /// Load FHIR Bundles and NDJSON files (e.g. a Synthea output folder) through the write path.
    Import(ImportArgs),
    /// Rebuild every search index row from the stored resources (after search-parameter
    /// definitions change), then exit.
    Reindex(ReindexArgs),
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
}

/// `icm-fhir` alone: the serve configuration from environment variables and defaults.
#[derive(Parser)]
struct ServeDefaults {
    #[command(flatten)]
    config: Config,
}

fn main() {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let cli = Cli::parse();
    let code = match cli.cmd {
        None => serve(ServeDefaults::parse_from(["icm-fhir"]).config),
        Some(Cmd::Serve(c)) => serve(c),
        Some(Cmd::Migrate(a)) => migrate(&a.database_url),
        Some(Cmd::Import(a)) => import(a),
        Some(Cmd::Reindex(a)) => reindex(&a),
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
        Ok(mut s) => {
            s.policy.referential_integrity = a.referential_integrity;
            s
        }
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
    let summary =
        icm_fhir::import::run(std::sync::Arc::new(store), files, a.jobs, a.batch, !a.quiet);
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

fn serve(config: Config) -> i32 {
    let state = match icm_fhir::build_state(config) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return 2;
        }
    };
    if !state.config.auth_enabled() {
        log::warn!("ICM_AUTH=off: authentication is disabled");
    }
    let listener = match TcpListener::bind(&state.config.bind) {
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
