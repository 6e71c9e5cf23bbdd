//! `/metrics` (Prometheus text format) and `/healthz` (per-table state as JSON) on the
//! configured listen address.

use std::net::SocketAddr;

use actix_web::{web, App, HttpResponse, HttpServer};

use crate::metrics::Metrics;
use crate::runner::Health;

async fn metrics(m: web::Data<Metrics>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(m.render())
}

/// Always 200 while the process runs (a table stopped by a permanent error must not make
/// Kubernetes restart the pod in a loop); the body says how each table is doing.
async fn healthz(h: web::Data<Health>) -> HttpResponse {
    let tables = h.lock().map(|t| t.clone()).unwrap_or_default();
    HttpResponse::Ok().json(serde_json::json!({"status": "ok", "tables": tables}))
}

/// Binds `addr` (port 0 picks one) and returns the server to spawn and the bound address.
pub fn serve(
    addr: &str,
    m: Metrics,
    health: Health,
) -> std::io::Result<(actix_web::dev::Server, SocketAddr)> {
    let m = web::Data::new(m);
    let health = web::Data::new(health);
    let server = HttpServer::new(move || {
        App::new()
            .app_data(m.clone())
            .app_data(health.clone())
            .route("/metrics", web::get().to(metrics))
            .route("/healthz", web::get().to(healthz))
    })
    .workers(1)
    .disable_signals()
    .bind(addr)?;
    let bound = server
        .addrs()
        .first()
        .copied()
        .ok_or_else(|| std::io::Error::other("no address bound"))?;
    Ok((server.run(), bound))
}
