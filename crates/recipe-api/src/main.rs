//! recipe-api binary: `serve` (default) runs the HTTP service, `migrate` applies the embedded
//! migrations (safe to re-run).

use anyhow::Context;
use clap::{Parser, Subcommand};
use recipe_api::config::Config;
use recipe_api::{telemetry, Application};

/// mimalloc: glibc malloc was a tenth of the service's CPU under load (`make bench-api`).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "recipe-api",
    version,
    about = "Recipes REST service over MySQL"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the REST API (the default).
    Serve,
    /// Apply pending database migrations, then exit.
    Migrate,
}

fn migrate() -> anyhow::Result<()> {
    let url = std::env::var("DATABASE_URL").context("DATABASE_URL is not set")?;
    let mut conn = migrations::connect(&url).context("Failed to connect to the database")?;
    let applied = migrations::run_migrations(&mut conn).context("Failed to run migrations")?;
    tracing::info!(migrations.applied = applied.len(), versions = ?applied, "migrations done");
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    telemetry::init();
    match cli.command.unwrap_or(Command::Serve) {
        Command::Migrate => migrate(),
        Command::Serve => {
            let config = Config::from_env()?;
            actix_web::rt::System::new().block_on(async move {
                let app = Application::build(config.clone())?;
                tracing::info!(bind = %config.bind, port = app.port(), "recipe-api listening");
                app.run_until_stopped().await.context("Server failed")
            })
        }
    }
}
