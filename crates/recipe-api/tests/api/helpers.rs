//! Spawning the application per test and small request helpers.

use std::time::{Duration, Instant};

use diesel::prelude::*;
use diesel::sql_types::BigInt;
use recipe_api::config::Config;
use recipe_api::Application;
use reqwest::{Method, Response, StatusCode};
use serde_json::{json, Value};
use test_support::TestDb;

pub const TOKEN: &str = "test-token-1";

pub struct TestApp {
    pub address: String,
    pub client: reqwest::Client,
    pub db: Option<TestDb>,
    pub handle: actix_web::dev::ServerHandle,
}

#[derive(QueryableByName)]
struct Count {
    #[diesel(sql_type = BigInt)]
    n: i64,
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

/// Starts the application against a fresh database, after `tweak` adjusted its config.
pub async fn spawn_app_with(tweak: impl FnOnce(&mut Config)) -> TestApp {
    let db = TestDb::new();
    let mut config = test_config(&db.url);
    tweak(&mut config);
    let mut app = start(config).await;
    app.db = Some(db);
    app
}

pub fn test_config(database_url: &str) -> Config {
    let mut config = Config::new(
        database_url,
        vec![TOKEN.to_string(), "second-token".to_string()],
    );
    config.bind = "127.0.0.1:0".to_string();
    config.pool_size = 8;
    config.workers = Some(2);
    config.shutdown_timeout_secs = 1;
    config
}

/// Starts the application with this config (no test database of its own).
pub async fn start(config: Config) -> TestApp {
    let app = Application::build(config).expect("application builds");
    let address = format!("http://127.0.0.1:{}", app.port());
    let handle = app.handle();
    tokio::spawn(app.run_until_stopped());
    let client = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    TestApp {
        address,
        client,
        db: None,
        handle,
    }
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.address, path)
    }

    /// A request with the write token.
    pub fn authed(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        self.client
            .request(method, self.url(path))
            .bearer_auth(TOKEN)
    }

    pub async fn get(&self, path: &str) -> Response {
        self.client.get(self.url(path)).send().await.unwrap()
    }

    pub async fn get_json(&self, path: &str) -> Value {
        let response = self.get(path).await;
        assert_eq!(response.status(), StatusCode::OK, "GET {path}");
        response.json().await.unwrap()
    }

    pub async fn send_json(&self, method: Method, path: &str, body: &Value) -> Response {
        self.authed(method, path).json(body).send().await.unwrap()
    }

    pub async fn create_ingredient(&self, name: &str) -> i64 {
        let response = self
            .send_json(Method::POST, "/v1/ingredients", &json!({ "name": name }))
            .await;
        assert_eq!(
            response.status(),
            StatusCode::CREATED,
            "create ingredient {name}"
        );
        response.json::<Value>().await.unwrap()["id"]
            .as_i64()
            .unwrap()
    }

    pub async fn create_recipe(&self, body: &Value) -> Value {
        let response = self.send_json(Method::POST, "/v1/recipes", body).await;
        assert_eq!(
            response.status(),
            StatusCode::CREATED,
            "create recipe {body}"
        );
        response.json().await.unwrap()
    }

    /// Ids of the test database's MySQL sessions (the service's) matching `condition` on
    /// `information_schema.PROCESSLIST` (e.g. `INFO LIKE 'INSERT%'`; `TRUE` for all).
    pub fn session_ids(&self, condition: &str) -> Vec<i64> {
        #[derive(QueryableByName)]
        struct Id {
            #[diesel(sql_type = BigInt)]
            id: i64,
        }
        let db = self.db.as_ref().expect("a test database");
        let mut conn = db.connect();
        diesel::sql_query(format!(
            "SELECT CAST(ID AS SIGNED) AS id FROM information_schema.PROCESSLIST \
             WHERE DB = '{}' AND ID <> CONNECTION_ID() AND ({condition})",
            db.name
        ))
        .load::<Id>(&mut conn)
        .unwrap()
        .into_iter()
        .map(|i| i.id)
        .collect()
    }

    /// Kills a MySQL session, as a failover or an operator would.
    pub fn kill_session(&self, id: i64) {
        let mut conn = self.db.as_ref().expect("a test database").connect();
        let _ = diesel::sql_query(format!("KILL {id}")).execute(&mut conn);
    }

    /// Rows in a table, read directly from the database.
    pub fn count(&self, table: &str) -> i64 {
        let mut conn = self.db.as_ref().expect("a test database").connect();
        diesel::sql_query(format!("SELECT COUNT(*) AS n FROM {table}"))
            .get_result::<Count>(&mut conn)
            .unwrap()
            .n
    }
}

/// Asserts a problem+json error with this status and returns its body.
pub async fn assert_problem(response: Response, status: StatusCode) -> Value {
    assert_eq!(response.status(), status, "url {}", response.url());
    let content_type = response
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    assert_eq!(content_type, "application/problem+json");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["status"], status.as_u16());
    assert!(
        body["type"].is_string() && body["title"].is_string() && body["detail"].is_string(),
        "{body}"
    );
    let text = body.to_string().to_lowercase();
    for leak in [
        "select ", "insert ", "update `", "mysql", "diesel", "panicked", TOKEN,
    ] {
        assert!(!text.contains(leak), "problem leaks {leak}: {body}");
    }
    body
}

/// Asserts a request started at `started` was answered 503 with `Retry-After` well before
/// it could have hung (5 s, beyond the test's short timeouts); returns the problem body.
pub async fn assert_unavailable_promptly(started: Instant, response: Response) -> Value {
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "answered in {:?}: {}",
        started.elapsed(),
        response.url()
    );
    assert!(
        response.headers().get("retry-after").is_some(),
        "no Retry-After: {}",
        response.url()
    );
    assert_problem(response, StatusCode::SERVICE_UNAVAILABLE).await
}

/// The fields named by a 422.
pub fn error_fields(problem: &Value) -> Vec<String> {
    problem["errors"]
        .as_array()
        .map(|errors| {
            errors
                .iter()
                .map(|e| e["field"].as_str().unwrap().to_string())
                .collect()
        })
        .unwrap_or_default()
}

/// A loopback TCP proxy to MySQL that can be frozen: it then stops forwarding bytes, as a
/// database host that hangs would.
pub async fn freezable_proxy(
    upstream: String,
) -> (u16, std::sync::Arc<std::sync::atomic::AtomicBool>) {
    use std::sync::atomic::{AtomicBool, Ordering};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let frozen = std::sync::Arc::new(AtomicBool::new(false));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let flag = frozen.clone();
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let Ok(server) = tokio::net::TcpStream::connect(&upstream).await else {
                continue;
            };
            let (cr, cw) = client.into_split();
            let (sr, sw) = server.into_split();
            for (mut from, mut to, flag) in [
                (
                    Box::new(cr) as Box<dyn tokio::io::AsyncRead + Unpin + Send>,
                    Box::new(sw) as Box<dyn tokio::io::AsyncWrite + Unpin + Send>,
                    flag.clone(),
                ),
                (Box::new(sr), Box::new(cw), flag.clone()),
            ] {
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 16 * 1024];
                    loop {
                        let n = match from.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => n,
                        };
                        while flag.load(Ordering::SeqCst) {
                            tokio::time::sleep(Duration::from_millis(20)).await;
                        }
                        if to.write_all(&buf[..n]).await.is_err() {
                            return;
                        }
                    }
                });
            }
        }
    });
    (port, frozen)
}

/// `database_url` rewritten to go through a [`freezable_proxy`], and the proxy's switch.
pub async fn behind_freezable_proxy(
    database_url: &str,
) -> (String, std::sync::Arc<std::sync::atomic::AtomicBool>) {
    // mysql://user:pass@host:port/name -> host:port
    let host_port = database_url
        .split('@')
        .nth(1)
        .unwrap()
        .split('/')
        .next()
        .unwrap()
        .to_string();
    let (proxy_port, frozen) = freezable_proxy(host_port.clone()).await;
    let url = database_url.replace(&host_port, &format!("127.0.0.1:{proxy_port}"));
    (url, frozen)
}
