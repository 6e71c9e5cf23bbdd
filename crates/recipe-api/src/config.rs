//! Configuration from the environment (docs/api.md#configuration): database URL, bind address,
//! tokens, pool size, body limit. The database URL and the tokens are secrets: `Debug` redacts
//! them.

use std::fmt;
use std::time::Duration;

use anyhow::Context;

/// Everything `Application::build` needs.
#[derive(Clone)]
pub struct Config {
    /// Diesel MySQL URL (`DATABASE_URL`).
    pub database_url: String,
    /// Address to listen on (`RECIPE_API_BIND`, default `127.0.0.1:8080`); port 0 picks one.
    pub bind: String,
    /// Bearer tokens allowed to write (`RECIPE_API_TOKENS` or `RECIPE_API_TOKENS_FILE`).
    pub tokens: Vec<String>,
    /// Maximum connections in the pool (`RECIPE_API_POOL_SIZE`, default twice the CPUs, 4..=32).
    pub pool_size: u32,
    /// How long a request waits for a database connection before answering 503
    /// (`RECIPE_API_DB_TIMEOUT_MS`, default 2000).
    pub db_timeout: Duration,
    /// How long a request waits for its database work before answering 503
    /// (`RECIPE_API_QUERY_TIMEOUT_MS`, default 10000). The MySQL client has no read timeout
    /// that diesel exposes, so a database that stops answering mid-query is bounded here.
    pub query_timeout: Duration,
    /// Largest accepted request body in bytes (`RECIPE_API_BODY_LIMIT`, default 256 KiB).
    pub body_limit: usize,
    /// HTTP worker threads (`RECIPE_API_WORKERS`, default: one per core).
    pub workers: Option<usize>,
    /// Seconds in-flight requests get to finish after SIGTERM.
    pub shutdown_timeout_secs: u64,
    /// How long an `Idempotency-Key` is remembered (`RECIPE_API_IDEMPOTENCY_TTL_SECS`,
    /// default 86400).
    pub idempotency_ttl: Duration,
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("database_url", &"<redacted>")
            .field("bind", &self.bind)
            .field("tokens", &format_args!("<{} redacted>", self.tokens.len()))
            .field("pool_size", &self.pool_size)
            .field("db_timeout", &self.db_timeout)
            .field("query_timeout", &self.query_timeout)
            .field("body_limit", &self.body_limit)
            .field("workers", &self.workers)
            .field("idempotency_ttl", &self.idempotency_ttl)
            .finish()
    }
}

/// The longest `Idempotency-Key` lifetime accepted: 10 years (expiry times stay far inside
/// MySQL's DATETIME range).
pub const MAX_IDEMPOTENCY_TTL_SECS: u64 = 10 * 365 * 86_400;

/// Default body limit: 256 KiB.
pub const DEFAULT_BODY_LIMIT: usize = 256 * 1024;

impl Config {
    /// A configuration with defaults for everything but the database URL and tokens.
    pub fn new(database_url: impl Into<String>, tokens: Vec<String>) -> Config {
        Config {
            database_url: database_url.into(),
            bind: "127.0.0.1:8080".to_string(),
            tokens,
            pool_size: default_pool_size(),
            db_timeout: Duration::from_millis(2000),
            query_timeout: Duration::from_millis(10_000),
            body_limit: DEFAULT_BODY_LIMIT,
            workers: None,
            shutdown_timeout_secs: 30,
            idempotency_ttl: crate::routes::idempotency::TTL,
        }
    }

    /// Reads the configuration from the environment.
    pub fn from_env() -> anyhow::Result<Config> {
        Config::from_lookup(|key| std::env::var(key).ok())
    }

    /// Reads the configuration from `get` (the environment, or a map in tests).
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> anyhow::Result<Config> {
        let number = |key: &str| -> anyhow::Result<Option<u64>> {
            get(key)
                .map(|v| {
                    v.trim()
                        .parse::<u64>()
                        .map_err(|_| anyhow::anyhow!("{key} must be a non-negative integer"))
                })
                .transpose()
        };
        let database_url = get("DATABASE_URL").context("DATABASE_URL is not set")?;
        let mut tokens = get("RECIPE_API_TOKENS")
            .map(|list| parse_tokens(&list))
            .unwrap_or_default();
        if let Some(path) = get("RECIPE_API_TOKENS_FILE") {
            let text = std::fs::read_to_string(&path)
                .with_context(|| format!("Failed to read RECIPE_API_TOKENS_FILE {path}"))?;
            tokens.extend(parse_tokens(&text));
        }
        let mut config = Config::new(database_url, tokens);
        if let Some(bind) = get("RECIPE_API_BIND") {
            config.bind = bind;
        }
        if let Some(n) = number("RECIPE_API_POOL_SIZE")? {
            anyhow::ensure!(
                (1..=1024).contains(&n),
                "RECIPE_API_POOL_SIZE must be between 1 and 1024"
            );
            config.pool_size = n as u32;
        }
        if let Some(ms) = number("RECIPE_API_DB_TIMEOUT_MS")? {
            config.db_timeout = Duration::from_millis(ms.max(1));
        }
        if let Some(ms) = number("RECIPE_API_QUERY_TIMEOUT_MS")? {
            config.query_timeout = Duration::from_millis(ms.max(1));
        }
        if let Some(n) = number("RECIPE_API_BODY_LIMIT")? {
            config.body_limit = usize::try_from(n).unwrap_or(usize::MAX);
        }
        if let Some(secs) = number("RECIPE_API_IDEMPOTENCY_TTL_SECS")? {
            anyhow::ensure!(
                (1..=MAX_IDEMPOTENCY_TTL_SECS).contains(&secs),
                "RECIPE_API_IDEMPOTENCY_TTL_SECS must be from 1 to {MAX_IDEMPOTENCY_TTL_SECS} (10 years)"
            );
            config.idempotency_ttl = Duration::from_secs(secs);
        }
        config.workers = number("RECIPE_API_WORKERS")?
            .filter(|n| *n > 0)
            .map(|n| usize::try_from(n).unwrap_or(usize::MAX));
        Ok(config)
    }
}

/// Twice the CPUs this process may use, within 4..=32. Measured with `make bench-api` on two
/// cores: 4 connections serve as many requests as 16 with half the p99 latency, since more
/// blocking threads only add context switches.
fn default_pool_size() -> u32 {
    let cpus = std::thread::available_parallelism().map_or(2, |n| n.get());
    u32::try_from(cpus * 2).unwrap_or(32).clamp(4, 32)
}

/// Splits a token list on commas and newlines, dropping blanks.
pub fn parse_tokens(text: &str) -> Vec<String> {
    text.split([',', '\n'])
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(str::to_string)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_split_on_commas_and_lines_and_blanks_dropped() {
        assert_eq!(parse_tokens("a, b,,\nc\n\n"), vec!["a", "b", "c"]);
        assert!(parse_tokens(" ").is_empty());
    }

    fn lookup(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: std::collections::HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |key| map.get(key).cloned()
    }

    #[test]
    fn only_the_database_url_is_required_and_the_rest_has_defaults() {
        let config = Config::from_lookup(lookup(&[("DATABASE_URL", "mysql://h/db")])).unwrap();
        assert_eq!(config.database_url, "mysql://h/db");
        assert_eq!(config.bind, "127.0.0.1:8080");
        assert!(config.tokens.is_empty());
        assert_eq!(config.body_limit, 256 * 1024);
        assert_eq!(config.workers, None);
        assert!((4..=32).contains(&config.pool_size));
        let missing = Config::from_lookup(lookup(&[])).unwrap_err();
        assert!(missing.to_string().contains("DATABASE_URL"), "{missing}");
    }

    #[test]
    fn every_variable_is_read() {
        let dir = std::env::temp_dir().join(format!("recipe-api-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("tokens");
        std::fs::write(&file, "from-file-1\nfrom-file-2\n").unwrap();
        let config = Config::from_lookup(lookup(&[
            ("DATABASE_URL", "mysql://h/db"),
            ("RECIPE_API_BIND", "0.0.0.0:9000"),
            ("RECIPE_API_TOKENS", "a,b"),
            ("RECIPE_API_TOKENS_FILE", file.to_str().unwrap()),
            ("RECIPE_API_POOL_SIZE", "7"),
            ("RECIPE_API_DB_TIMEOUT_MS", "1500"),
            ("RECIPE_API_QUERY_TIMEOUT_MS", " 2500 "),
            ("RECIPE_API_BODY_LIMIT", "1024"),
            ("RECIPE_API_WORKERS", "3"),
            ("RECIPE_API_IDEMPOTENCY_TTL_SECS", "600"),
        ]))
        .unwrap();
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!(config.bind, "0.0.0.0:9000");
        assert_eq!(config.tokens, vec!["a", "b", "from-file-1", "from-file-2"]);
        assert_eq!(config.pool_size, 7);
        assert_eq!(config.db_timeout, Duration::from_millis(1500));
        assert_eq!(config.query_timeout, Duration::from_millis(2500));
        assert_eq!(config.body_limit, 1024);
        assert_eq!(config.workers, Some(3));
        assert_eq!(config.idempotency_ttl, Duration::from_secs(600));
    }

    #[test]
    fn bad_values_are_errors_that_name_the_variable() {
        for (key, value) in [
            ("RECIPE_API_POOL_SIZE", "0"),
            ("RECIPE_API_POOL_SIZE", "many"),
            ("RECIPE_API_DB_TIMEOUT_MS", "-5"),
            ("RECIPE_API_BODY_LIMIT", "1.5"),
            ("RECIPE_API_TOKENS_FILE", "/nonexistent/tokens"),
            ("RECIPE_API_IDEMPOTENCY_TTL_SECS", "0"),
            ("RECIPE_API_IDEMPOTENCY_TTL_SECS", "999999999999"),
        ] {
            let e = Config::from_lookup(lookup(&[("DATABASE_URL", "mysql://h/db"), (key, value)]))
                .unwrap_err();
            assert!(format!("{e:#}").contains(key), "{key}={value}: {e:#}");
        }
    }

    #[test]
    fn debug_output_redacts_secrets() {
        let config = Config::new("mysql://u:pw@h/db", vec!["tok".into()]);
        let text = format!("{config:?}");
        assert!(!text.contains("pw") && !text.contains("tok\""));
    }
}
