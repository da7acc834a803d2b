//! The HTTP ceiling of `bench/run`: the least an actix-web server can do per request. Every GET
//! answers `200` with the same bytes (a Patient as the server stored it, read from a file once)
//! from memory: no authentication, no database, no auditing. Whatever the FHIR server does on top
//! costs throughput relative to this, on the same machine and with the same wrk settings.
//!
//! Usage: `http_ceiling BODY_FILE [BIND]` (BIND defaults to 127.0.0.1:18500).
use actix_web::{web, App, HttpResponse, HttpServer};

fn main() -> std::io::Result<()> {
    let mut args = std::env::args().skip(1);
    let Some(path) = args.next() else {
        eprintln!("usage: http_ceiling BODY_FILE [BIND]");
        std::process::exit(2);
    };
    let bind = args.next().unwrap_or_else(|| "127.0.0.1:18500".into());
    let body = web::Bytes::from(std::fs::read(&path)?);
    // As many workers as the FHIR server starts by default (ICM_WORKERS: the CPU count).
    let workers = std::thread::available_parallelism().map_or(1, |n| n.get());
    actix_web::rt::System::new().block_on(async move {
        HttpServer::new(move || {
            let body = body.clone();
            App::new().default_service(web::to(move || {
                let body = body.clone();
                async move {
                    HttpResponse::Ok()
                        .content_type("application/fhir+json")
                        .body(body)
                }
            }))
        })
        .workers(workers)
        .bind(&bind)?
        .run()
        .await
    })
}
