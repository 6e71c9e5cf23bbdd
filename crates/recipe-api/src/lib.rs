//! recipe-api: a REST service for recipes and ingredients over MySQL (contract: docs/api.md).
//! [`Application::build`] is used by `main` and by the integration tests alike.

pub mod auth;
pub mod commit_gate;
pub mod config;
pub mod error;
pub mod executor;
pub mod models;
pub mod resources;
pub mod routes;
pub mod schema;
pub mod telemetry;
pub mod validation;

use std::net::TcpListener;

use actix_web::dev::Server;
use actix_web::middleware::{from_fn, Compress};
use actix_web::{web, App, HttpServer};
use anyhow::Context;

use crate::auth::Tokens;
use crate::config::Config;
use crate::routes::metrics::Metrics;
use crate::routes::state::AppState;

/// A bound, not yet running server.
pub struct Application {
    port: u16,
    server: Server,
}

impl Application {
    /// Binds the listener and builds the server. The database is not contacted: the service
    /// starts while it is down and answers 503 until it is back.
    pub fn build(config: Config) -> anyhow::Result<Application> {
        if config.tokens.is_empty() {
            tracing::warn!("no write tokens configured: every write will be answered 401");
        }
        let listener = TcpListener::bind(&config.bind)
            .with_context(|| format!("Failed to bind {}", config.bind))?;
        let port = listener
            .local_addr()
            .context("Failed to read the bound address")?
            .port();
        let state = web::Data::new(
            AppState::new(
                &config.database_url,
                models::pool(
                    &config.database_url,
                    config.pool_size,
                    config.db_timeout,
                    config.query_timeout,
                ),
                config.db_timeout,
                config.query_timeout,
                config.body_limit,
                config.idempotency_ttl,
            )
            .context("Failed to start the database threads")?,
        );
        let tokens = web::Data::new(Tokens::new(&config.tokens));
        let metrics = web::Data::new(Metrics::new().context("Failed to register metrics")?);
        let mut server = HttpServer::new(move || {
            App::new()
                .app_data(state.clone())
                .app_data(tokens.clone())
                .app_data(metrics.clone())
                .wrap(Compress::default())
                .wrap(from_fn(routes::metrics::observe))
                .configure(routes::config)
                .service(routes::openapi::swagger_ui())
                .default_service(web::to(routes::not_found))
        })
        .shutdown_timeout(config.shutdown_timeout_secs)
        .listen(listener)
        .context("Failed to listen")?;
        if let Some(workers) = config.workers {
            server = server.workers(workers);
        }
        Ok(Application {
            port,
            server: server.run(),
        })
    }

    /// The port the server listens on (useful when bound to port 0).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// A handle to stop the server (`stop(true)` is what SIGTERM does: graceful).
    pub fn handle(&self) -> actix_web::dev::ServerHandle {
        self.server.handle()
    }

    /// Serves until SIGTERM/SIGINT; in-flight requests get the shutdown timeout to finish.
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        self.server.await
    }
}
