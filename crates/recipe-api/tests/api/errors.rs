//! Every error status of the contract: 400, 401, 404, 405, 413, 415, 503.

use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::helpers::{
    assert_problem, assert_unavailable_promptly, behind_freezable_proxy, spawn_app, spawn_app_with,
    start, test_config, TOKEN,
};

/// Every write route with a valid body.
fn write_routes(recipe: i64, ingredient: i64) -> Vec<(Method, String, Option<serde_json::Value>)> {
    vec![
        (
            Method::POST,
            "/v1/recipes".into(),
            Some(json!({"title": "x"})),
        ),
        (
            Method::PUT,
            format!("/v1/recipes/{recipe}"),
            Some(json!({"title": "x"})),
        ),
        (
            Method::PATCH,
            format!("/v1/recipes/{recipe}"),
            Some(json!({"title": "x"})),
        ),
        (Method::DELETE, format!("/v1/recipes/{recipe}"), None),
        (
            Method::POST,
            "/v1/ingredients".into(),
            Some(json!({"name": "new"})),
        ),
        (
            Method::PUT,
            format!("/v1/ingredients/{ingredient}"),
            Some(json!({"name": "renamed"})),
        ),
        (
            Method::DELETE,
            format!("/v1/ingredients/{ingredient}"),
            None,
        ),
    ]
}

#[tokio::test]
async fn every_write_route_returns_401_with_www_authenticate_without_a_valid_token() {
    let app = spawn_app().await;
    let ingredient = app.create_ingredient("flour").await;
    let recipe = app.create_recipe(&json!({"title": "Kept"})).await["id"]
        .as_i64()
        .unwrap();
    let no_token = |m: Method, p: &str| app.client.request(m, app.url(p));
    for (method, path, body) in write_routes(recipe, ingredient) {
        let attempts = [
            no_token(method.clone(), &path),
            no_token(method.clone(), &path).bearer_auth("wrong-token"),
            no_token(method.clone(), &path).bearer_auth(format!("{TOKEN}x")),
            no_token(method.clone(), &path).basic_auth("user", Some(TOKEN)),
            no_token(method.clone(), &path).header("authorization", TOKEN),
        ];
        for request in attempts {
            let request = match &body {
                Some(body) => request.json(body),
                None => request,
            };
            let response = request.send().await.unwrap();
            assert_eq!(
                response
                    .headers()
                    .get("www-authenticate")
                    .map(|v| v.to_str().unwrap()),
                Some("Bearer"),
                "{method} {path}"
            );
            assert_problem(response, StatusCode::UNAUTHORIZED).await;
        }
    }
    assert_eq!(
        app.get_json(&format!("/v1/recipes/{recipe}")).await["title"],
        "Kept"
    );
    assert_eq!(app.count("ingredients"), 1);
    // The second configured token works too.
    let ok = app
        .client
        .post(app.url("/v1/ingredients"))
        .bearer_auth("second-token")
        .json(&json!({"name": "salt"}))
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), StatusCode::CREATED);
}

#[tokio::test]
async fn reads_need_no_token() {
    let app = spawn_app().await;
    for path in ["/v1/recipes", "/v1/ingredients", "/healthz"] {
        assert_eq!(app.get(path).await.status(), StatusCode::OK, "{path}");
    }
}

#[tokio::test]
async fn malformed_json_returns_400() {
    let app = spawn_app().await;
    let ingredient = app.create_ingredient("flour").await;
    let recipe = app.create_recipe(&json!({"title": "x"})).await["id"]
        .as_i64()
        .unwrap();
    for (method, path, body) in write_routes(recipe, ingredient) {
        if body.is_none() {
            continue;
        }
        for bad in [
            "{\"title\": ",
            "not json",
            "",
            "{\"title\": \"x\",}",
            "\u{FEFF}{}",
        ] {
            let response = app
                .authed(method.clone(), &path)
                .header("content-type", "application/json")
                .body(bad)
                .send()
                .await
                .unwrap();
            assert_problem(response, StatusCode::BAD_REQUEST).await;
        }
    }
}

#[tokio::test]
async fn a_wrong_content_type_returns_415_and_patch_accepts_merge_patch() {
    let app = spawn_app().await;
    let ingredient = app.create_ingredient("flour").await;
    let recipe = app.create_recipe(&json!({"title": "x"})).await["id"]
        .as_i64()
        .unwrap();
    for (method, path, body) in write_routes(recipe, ingredient) {
        let Some(body) = body else { continue };
        let mut types = vec![
            "text/plain",
            "application/xml",
            "application/x-www-form-urlencoded",
            "application/json; charset=latin1",
        ];
        if method != Method::PATCH {
            types.push("application/merge-patch+json");
        }
        for content_type in types {
            let response = app
                .authed(method.clone(), &path)
                .header("content-type", content_type)
                .body(body.to_string())
                .send()
                .await
                .unwrap();
            assert_problem(response, StatusCode::UNSUPPORTED_MEDIA_TYPE).await;
        }
        let missing = app
            .authed(method.clone(), &path)
            .body(body.to_string())
            .send()
            .await
            .unwrap();
        assert_problem(missing, StatusCode::UNSUPPORTED_MEDIA_TYPE).await;
    }
    let patch = app
        .authed(Method::PATCH, &format!("/v1/recipes/{recipe}"))
        .header("content-type", "application/merge-patch+json")
        .body(r#"{"servings": 3}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(patch.status(), StatusCode::OK);
    let charset = app
        .authed(Method::POST, "/v1/ingredients")
        .header("content-type", "application/json; charset=utf-8")
        .body(r#"{"name": "salt"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(charset.status(), StatusCode::CREATED);
    let utf8 = app
        .authed(Method::POST, "/v1/ingredients")
        .header("content-type", "application/json; charset=UTF8")
        .body(r#"{"name": "pepper"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(utf8.status(), StatusCode::CREATED);
}

#[tokio::test]
async fn a_body_over_the_limit_returns_413() {
    let app = spawn_app().await;
    let big = json!({"title": "x", "description": "d".repeat(300 * 1024)});
    let response = app.send_json(Method::POST, "/v1/recipes", &big).await;
    assert_problem(response, StatusCode::PAYLOAD_TOO_LARGE).await;

    // Without a Content-Length (chunked), the limit holds while reading.
    let chunks: Vec<Result<String, std::io::Error>> = (0..40)
        .map(|_| Ok(format!("\"{}\",", "x".repeat(8 * 1024))))
        .collect();
    let stream = futures::stream::iter(std::iter::once(Ok("[".to_string())).chain(chunks));
    let response = app
        .authed(Method::POST, "/v1/ingredients")
        .header("content-type", "application/json")
        .body(reqwest::Body::wrap_stream(stream))
        .send()
        .await
        .unwrap();
    assert_problem(response, StatusCode::PAYLOAD_TOO_LARGE).await;
    assert_eq!(app.count("recipes") + app.count("ingredients"), 0);
}

#[tokio::test]
async fn the_body_limit_is_configurable() {
    let app = spawn_app_with(|c| c.body_limit = 64).await;
    let response = app
        .send_json(
            Method::POST,
            "/v1/ingredients",
            &json!({"name": "n".repeat(80)}),
        )
        .await;
    assert_problem(response, StatusCode::PAYLOAD_TOO_LARGE).await;
    assert_eq!(
        app.send_json(Method::POST, "/v1/ingredients", &json!({"name": "salt"}))
            .await
            .status(),
        StatusCode::CREATED
    );
}

#[tokio::test]
async fn a_path_id_that_is_not_a_positive_64_bit_integer_returns_400() {
    let app = spawn_app().await;
    let bad_ids = [
        "0",
        "-1",
        "abc",
        "1.5",
        "1e3",
        "99999999999999999999",
        "%20",
    ];
    for id in bad_ids {
        for path in [
            format!("/v1/recipes/{id}"),
            format!("/v1/ingredients/{id}"),
            format!("/v1/ingredients/{id}/recipes"),
        ] {
            assert_problem(app.get(&path).await, StatusCode::BAD_REQUEST).await;
        }
        let put = app
            .send_json(
                Method::PUT,
                &format!("/v1/recipes/{id}"),
                &json!({"title": "x"}),
            )
            .await;
        assert_problem(put, StatusCode::BAD_REQUEST).await;
        let delete = app
            .authed(Method::DELETE, &format!("/v1/ingredients/{id}"))
            .send()
            .await
            .unwrap();
        assert_problem(delete, StatusCode::BAD_REQUEST).await;
    }
}

#[tokio::test]
async fn a_limit_out_of_range_or_a_malformed_cursor_returns_400() {
    let app = spawn_app().await;
    let flour = app.create_ingredient("flour").await;
    let queries = [
        "limit=0",
        "limit=101",
        "limit=-5",
        "limit=ten",
        "limit=",
        "cursor=***",
        "cursor=MTIz",
        "cursor=",
        "ingredient_id=abc",
        "ingredient_id=0",
    ];
    for query in queries {
        for base in [
            "/v1/recipes".to_string(),
            "/v1/ingredients".to_string(),
            format!("/v1/ingredients/{flour}/recipes"),
        ] {
            if query.starts_with("ingredient_id") && base != "/v1/recipes" {
                continue;
            }
            assert_problem(
                app.get(&format!("{base}?{query}")).await,
                StatusCode::BAD_REQUEST,
            )
            .await;
        }
    }
    assert_eq!(
        app.get("/v1/recipes?limit=100").await.status(),
        StatusCode::OK
    );
    assert_eq!(
        app.get("/v1/recipes?limit=1").await.status(),
        StatusCode::OK
    );
}

#[tokio::test]
async fn an_unknown_route_returns_404_problem() {
    let app = spawn_app().await;
    for path in [
        "/",
        "/v1",
        "/v2/recipes",
        "/v1/recipe",
        "/v1/recipes/1/steps",
        "/v1/recipes/",
    ] {
        assert_problem(app.get(path).await, StatusCode::NOT_FOUND).await;
    }
    let post = app
        .authed(Method::POST, "/nope")
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_problem(post, StatusCode::NOT_FOUND).await;
}

#[tokio::test]
async fn a_wrong_method_returns_405_with_allow() {
    let app = spawn_app().await;
    let cases = [
        (Method::DELETE, "/v1/recipes", "GET, POST"),
        (Method::PUT, "/v1/recipes", "GET, POST"),
        (Method::POST, "/v1/recipes/1", "GET, PUT, PATCH, DELETE"),
        (Method::PATCH, "/v1/ingredients", "GET, POST"),
        (Method::PATCH, "/v1/ingredients/1", "GET, PUT, DELETE"),
        (Method::POST, "/v1/ingredients/1/recipes", "GET"),
        (Method::POST, "/healthz", "GET"),
        (Method::DELETE, "/readyz", "GET"),
        (Method::POST, "/metrics", "GET"),
        (Method::PUT, "/openapi.json", "GET"),
        (Method::POST, "/docs", "GET"),
    ];
    for (method, path, allow) in cases {
        let response = app.authed(method.clone(), path).send().await.unwrap();
        assert_eq!(
            response.headers().get("allow").map(|v| v.to_str().unwrap()),
            Some(allow),
            "{method} {path}"
        );
        assert_problem(response, StatusCode::METHOD_NOT_ALLOWED).await;
    }
}

#[tokio::test]
async fn an_unreachable_database_returns_503_with_retry_after_within_seconds() {
    // A closed port on loopback: nothing listens there.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let mut config = test_config(&format!("mysql://dev:dev@127.0.0.1:{port}/recipes"));
    config.db_timeout = Duration::from_millis(1500);
    let app = start(config).await;
    let requests = vec![
        app.client.get(app.url("/v1/recipes")),
        app.client.get(app.url("/v1/recipes/1")),
        app.client.get(app.url("/v1/ingredients?q=a")),
        app.client.get(app.url("/readyz")),
        app.authed(Method::POST, "/v1/recipes")
            .json(&json!({"title": "x"})),
        app.authed(Method::POST, "/v1/ingredients")
            .json(&json!({"name": "x"})),
        app.authed(Method::DELETE, "/v1/recipes/1"),
    ];
    for request in requests {
        let started = Instant::now();
        let response = request.send().await.unwrap();
        let problem = assert_unavailable_promptly(started, response).await;
        assert!(
            !problem.to_string().contains(&port.to_string()),
            "no connection details leak"
        );
    }
    assert_eq!(
        app.get("/healthz").await.status(),
        StatusCode::OK,
        "liveness does not need the database"
    );
}

#[tokio::test]
async fn a_database_that_accepts_connections_but_never_answers_yields_503_within_seconds() {
    // Accepts TCP connections on loopback and holds them without sending MySQL's greeting.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let held = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let holder = held.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming().take(64).flatten() {
            holder.lock().unwrap().push(stream);
        }
    });
    let mut config = test_config(&format!("mysql://dev:dev@127.0.0.1:{port}/recipes"));
    config.db_timeout = Duration::from_millis(1500);
    let app = start(config).await;
    for path in ["/v1/recipes/1", "/readyz"] {
        let started = Instant::now();
        let response = app.get(path).await;
        assert_unavailable_promptly(started, response).await;
    }
}

#[tokio::test]
async fn the_service_recovers_when_the_database_drops_its_connections() {
    let app = spawn_app_with(|c| c.pool_size = 2).await;
    let id = app.create_ingredient("flour").await;
    let path = format!("/v1/ingredients/{id}");
    assert_eq!(app.get(&path).await.status(), StatusCode::OK);

    // The server kills every connection of the service, as a restart or failover would.
    let ids = app.session_ids("TRUE");
    assert!(!ids.is_empty());
    for id in ids {
        app.kill_session(id);
    }

    // At most a request per pooled connection may see 503; then it serves again.
    let mut statuses = Vec::new();
    for _ in 0..5 {
        let response = app.get(&path).await;
        statuses.push(response.status());
        if response.status() == StatusCode::SERVICE_UNAVAILABLE {
            assert_problem(response, StatusCode::SERVICE_UNAVAILABLE).await;
        }
    }
    assert!(
        statuses
            .iter()
            .all(|s| *s == StatusCode::OK || *s == StatusCode::SERVICE_UNAVAILABLE),
        "{statuses:?}"
    );
    assert_eq!(statuses[2..], [StatusCode::OK; 3], "{statuses:?}");
}

#[tokio::test]
async fn a_database_that_hangs_mid_query_yields_503_within_the_query_timeout() {
    let db = test_support::TestDb::new();
    let (url, frozen) = behind_freezable_proxy(&db.url).await;
    let mut config = test_config(&url);
    config.query_timeout = Duration::from_millis(1500);
    let mut app = start(config).await;
    app.db = Some(db);
    let id = app.create_ingredient("flour").await;
    assert_eq!(
        app.get(&format!("/v1/ingredients/{id}")).await.status(),
        StatusCode::OK
    );

    frozen.store(true, std::sync::atomic::Ordering::SeqCst);
    let started = Instant::now();
    let response = app.get(&format!("/v1/ingredients/{id}")).await;
    assert_unavailable_promptly(started, response).await;
    frozen.store(false, std::sync::atomic::Ordering::SeqCst);
}

#[tokio::test]
async fn a_graceful_shutdown_lets_in_flight_requests_finish() {
    let db = test_support::TestDb::new();
    let (url, frozen) = behind_freezable_proxy(&db.url).await;
    let mut app = start(test_config(&url)).await;
    app.db = Some(db);
    let id = app.create_ingredient("flour").await;

    // A request held up in the database while the server is told to stop (as on SIGTERM).
    frozen.store(true, std::sync::atomic::Ordering::SeqCst);
    let in_flight = tokio::spawn(
        app.client
            .get(app.url(&format!("/v1/ingredients/{id}")))
            .send(),
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    let stopping = tokio::spawn(app.handle.clone().stop(true));
    tokio::time::sleep(Duration::from_millis(300)).await;
    frozen.store(false, std::sync::atomic::Ordering::SeqCst);

    let response = in_flight.await.unwrap().unwrap();
    assert_eq!(
        response.status(),
        StatusCode::OK,
        "the in-flight request completed"
    );
    stopping.await.unwrap();
    assert!(
        app.client.get(app.url("/healthz")).send().await.is_err(),
        "no new connections after shutdown"
    );
}

#[tokio::test]
async fn head_answers_wherever_get_does_with_headers_and_no_body() {
    let app = spawn_app().await;
    let flour = app.create_ingredient("flour").await;
    let recipe = app
        .create_recipe(&json!({"title": "Bread", "ingredients": [{"ingredient_id": flour}]}))
        .await;
    let id = recipe["id"].as_i64().unwrap();
    let get = app.get(&format!("/v1/recipes/{id}")).await;
    let etag = get.headers()["etag"].clone();
    for path in [
        format!("/v1/recipes/{id}"),
        "/v1/recipes".to_string(),
        format!("/v1/ingredients/{flour}"),
        format!("/v1/ingredients/{flour}/recipes"),
        "/healthz".to_string(),
        "/metrics".to_string(),
    ] {
        let head = app.authed(Method::HEAD, &path).send().await.unwrap();
        assert_eq!(head.status(), StatusCode::OK, "HEAD {path}");
        assert!(head.headers().contains_key("content-type"), "HEAD {path}");
        assert!(
            head.bytes().await.unwrap().is_empty(),
            "HEAD {path}: a body"
        );
    }
    let head = app
        .authed(Method::HEAD, &format!("/v1/recipes/{id}"))
        .send()
        .await
        .unwrap();
    assert_eq!(head.headers()["etag"], etag);
    let missing = app
        .authed(Method::HEAD, "/v1/recipes/999999")
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);
    assert!(missing.bytes().await.unwrap().is_empty());
}
