//! A retry is always safe: a write answered 5xx is never committed (docs/api.md#database-failures),
//! ETags follow every change of a representation (docs/api.md#etags), and readiness does not
//! wait behind busy request threads.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use diesel::connection::SimpleConnection;
use diesel::mysql::MysqlConnection;
use diesel::RunQueryDsl;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::helpers::{
    assert_problem, assert_unavailable_promptly, behind_freezable_proxy, spawn_app_with, start,
    test_config, TestApp,
};

/// Another session holding ingredient `id`'s row lock (as a long transaction would) until
/// `release`.
fn hold_ingredient_lock(app: &TestApp, id: i64) -> MysqlConnection {
    let mut conn = app.db.as_ref().unwrap().connect();
    conn.batch_execute("BEGIN").unwrap();
    diesel::sql_query(format!(
        "SELECT id FROM ingredients WHERE id = {id} FOR UPDATE"
    ))
    .execute(&mut conn)
    .unwrap();
    conn
}

fn release(mut conn: MysqlConnection) {
    conn.batch_execute("COMMIT").unwrap();
}

fn recipe_body(title: &str, ingredient: i64) -> Value {
    json!({ "title": title, "ingredients": [{ "ingredient_id": ingredient, "quantity": 1, "unit": "g" }] })
}

async fn etag_of(app: &TestApp, id: &Value) -> String {
    let response = app.get(&format!("/v1/recipes/{id}")).await;
    assert_eq!(response.status(), StatusCode::OK);
    response.headers()["etag"].to_str().unwrap().to_string()
}

fn short_timeouts(app: &mut recipe_api::config::Config) {
    app.db_timeout = Duration::from_millis(500);
    app.query_timeout = Duration::from_millis(1500);
}

#[tokio::test]
async fn a_write_answered_503_behind_a_row_lock_is_never_committed() {
    let app = spawn_app_with(short_timeouts).await;
    let flour = app.create_ingredient("flour").await;
    let lock = hold_ingredient_lock(&app, flour);

    let started = Instant::now();
    let response = app
        .send_json(Method::POST, "/v1/recipes", &recipe_body("bread", flour))
        .await;
    assert_unavailable_promptly(started, response).await;

    // The lock goes away while the abandoned work may still be retrying: it must roll back.
    release(lock);
    tokio::time::sleep(Duration::from_millis(3000)).await;
    assert_eq!(app.count("recipes"), 0, "a 503 was committed later");
    assert_eq!(app.count("recipe_ingredients"), 0);

    // The client's retry creates exactly one.
    app.create_recipe(&recipe_body("bread", flour)).await;
    assert_eq!(app.count("recipes"), 1);
}

#[tokio::test]
async fn a_write_whose_connection_is_killed_mid_way_commits_nothing() {
    let app = spawn_app_with(|c| c.query_timeout = Duration::from_secs(20)).await;
    let flour = app.create_ingredient("flour").await;
    let lock = hold_ingredient_lock(&app, flour);
    let request = tokio::spawn(
        app.authed(Method::POST, "/v1/recipes")
            .json(&recipe_body("bread", flour))
            .send(),
    );

    // The server kills the connection of the waiting write (a failover, an operator's KILL).
    let deadline = Instant::now() + Duration::from_secs(10);
    let victim = loop {
        if let Some(id) = app
            .session_ids("INFO LIKE 'INSERT INTO `recipe_ingredients`%'")
            .first()
        {
            break *id;
        }
        assert!(
            Instant::now() < deadline,
            "the write never waited on the lock"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    app.kill_session(victim);

    let response = request.await.unwrap().unwrap();
    assert_problem(response, StatusCode::SERVICE_UNAVAILABLE).await;
    release(lock);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(app.count("recipes"), 0);
    app.create_recipe(&recipe_body("bread", flour)).await;
    assert_eq!(app.count("recipes"), 1, "the service recovered");
}

#[tokio::test]
async fn a_write_to_a_hung_database_answered_503_is_rolled_back_when_it_wakes() {
    let db = test_support::TestDb::new();
    let (url, frozen) = behind_freezable_proxy(&db.url).await;
    let mut config = test_config(&url);
    short_timeouts(&mut config);
    let mut app = start(config).await;
    app.db = Some(db);
    app.create_ingredient("salt").await;

    frozen.store(true, Ordering::SeqCst);
    let response = app
        .send_json(
            Method::POST,
            "/v1/ingredients",
            &json!({ "name": "pepper" }),
        )
        .await;
    assert_problem(response, StatusCode::SERVICE_UNAVAILABLE).await;
    // The database wakes up and runs what was sent meanwhile: the insert must not commit.
    frozen.store(false, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        app.count("ingredients"),
        1,
        "the 503'd insert was committed"
    );
    app.create_ingredient("pepper").await;
}

#[tokio::test]
async fn renaming_an_ingredient_changes_the_etag_of_the_recipes_that_show_it() {
    let app = spawn_app_with(|_| {}).await;
    let flour = app.create_ingredient("flour").await;
    let salt = app.create_ingredient("salt").await;
    let bread = app.create_recipe(&recipe_body("bread", flour)).await;
    let brine = app.create_recipe(&recipe_body("brine", salt)).await;
    let bread_tag = etag_of(&app, &bread["id"]).await;
    let brine_tag = etag_of(&app, &brine["id"]).await;

    let renamed = app
        .send_json(
            Method::PUT,
            &format!("/v1/ingredients/{flour}"),
            &json!({ "name": "wheat flour" }),
        )
        .await;
    assert_eq!(renamed.status(), StatusCode::OK);

    let path = format!("/v1/recipes/{}", bread["id"]);
    let response = app
        .client
        .get(app.url(&path))
        .header("if-none-match", &bread_tag)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK, "a stale 304");
    assert_ne!(response.headers()["etag"].to_str().unwrap(), bread_tag);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["ingredients"][0]["name"], "wheat flour");
    let stale_put = app
        .authed(Method::PUT, &path)
        .header("if-match", &bread_tag)
        .json(&recipe_body("bread", flour))
        .send()
        .await
        .unwrap();
    assert_problem(stale_put, StatusCode::PRECONDITION_FAILED).await;
    assert_eq!(
        etag_of(&app, &brine["id"]).await,
        brine_tag,
        "other recipes keep theirs"
    );

    // Renaming to the same name changes no representation.
    let current = etag_of(&app, &bread["id"]).await;
    app.send_json(
        Method::PUT,
        &format!("/v1/ingredients/{flour}"),
        &json!({ "name": "wheat flour" }),
    )
    .await;
    assert_eq!(etag_of(&app, &bread["id"]).await, current);
}

#[tokio::test]
async fn readiness_answers_while_every_database_thread_is_busy() {
    let app = spawn_app_with(|c| {
        c.pool_size = 2;
        c.query_timeout = Duration::from_secs(20);
        c.db_timeout = Duration::from_secs(20);
    })
    .await;
    let flour = app.create_ingredient("flour").await;
    let lock = hold_ingredient_lock(&app, flour);
    let writes: Vec<_> = (0..4)
        .map(|i| {
            tokio::spawn(
                app.authed(Method::POST, "/v1/recipes")
                    .json(&recipe_body(&format!("r{i}"), flour))
                    .send(),
            )
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(500)).await;

    let started = Instant::now();
    let response = app.get("/readyz").await;
    assert_eq!(response.status(), StatusCode::OK);
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "readiness waited {:?} behind the busy threads",
        started.elapsed()
    );
    release(lock);
    for write in writes {
        assert_eq!(write.await.unwrap().unwrap().status(), StatusCode::CREATED);
    }
}

/// A POST of `body` to `path` with an `Idempotency-Key`.
async fn post_with_key(app: &TestApp, path: &str, key: &str, body: &Value) -> reqwest::Response {
    app.authed(Method::POST, path)
        .header("idempotency-key", key)
        .json(body)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn a_retry_with_the_same_idempotency_key_replays_the_first_response() {
    let app = spawn_app_with(|_| {}).await;
    let flour = app.create_ingredient("flour").await;
    let body = recipe_body("bread", flour);
    let first = post_with_key(&app, "/v1/recipes", "k-1", &body).await;
    assert_eq!(first.status(), StatusCode::CREATED);
    assert!(first.headers().get("idempotent-replayed").is_none());
    let (location, etag) = (
        first.headers()["location"].clone(),
        first.headers()["etag"].clone(),
    );
    let first_body: Value = first.json().await.unwrap();

    let retry = post_with_key(&app, "/v1/recipes", "k-1", &body).await;
    assert_eq!(retry.status(), StatusCode::CREATED);
    assert_eq!(retry.headers()["location"], location);
    assert_eq!(retry.headers()["etag"], etag);
    assert_eq!(retry.headers()["idempotent-replayed"], "true");
    assert_eq!(retry.json::<Value>().await.unwrap(), first_body);
    assert_eq!(app.count("recipes"), 1);

    // The same key with another body is refused; another key, or another token, writes.
    let other = post_with_key(&app, "/v1/recipes", "k-1", &recipe_body("rolls", flour)).await;
    let problem = assert_problem(other, StatusCode::UNPROCESSABLE_ENTITY).await;
    assert!(problem.to_string().contains("Idempotency-Key"), "{problem}");
    assert_eq!(
        post_with_key(&app, "/v1/recipes", "k-2", &body)
            .await
            .status(),
        StatusCode::CREATED
    );
    let other_token = app
        .client
        .post(app.url("/v1/recipes"))
        .bearer_auth("second-token")
        .header("idempotency-key", "k-1")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(
        other_token.status(),
        StatusCode::CREATED,
        "keys are per token"
    );
    assert_eq!(app.count("recipes"), 3);

    let malformed = post_with_key(&app, "/v1/recipes", "has space", &body).await;
    assert_problem(malformed, StatusCode::BAD_REQUEST).await;
}

#[tokio::test]
async fn concurrent_retries_with_one_key_create_exactly_one_recipe() {
    let app = spawn_app_with(|_| {}).await;
    let flour = app.create_ingredient("flour").await;
    let body = recipe_body("bread", flour);
    let sends: Vec<_> = (0..6)
        .map(|_| {
            tokio::spawn(
                app.authed(Method::POST, "/v1/recipes")
                    .header("idempotency-key", "same")
                    .json(&body)
                    .send(),
            )
        })
        .collect();
    let mut statuses = Vec::new();
    for send in sends {
        statuses.push(send.await.unwrap().unwrap().status());
    }
    assert!(
        statuses
            .iter()
            .all(|s| *s == StatusCode::CREATED || *s == StatusCode::CONFLICT),
        "{statuses:?}"
    );
    assert!(statuses.contains(&StatusCode::CREATED), "{statuses:?}");
    assert_eq!(app.count("recipes"), 1, "{statuses:?}");
}

#[tokio::test]
async fn a_key_in_flight_is_409_and_a_failed_write_releases_its_key() {
    let app = spawn_app_with(|c| c.query_timeout = Duration::from_secs(20)).await;
    let flour = app.create_ingredient("flour").await;
    let body = recipe_body("bread", flour);
    let lock = hold_ingredient_lock(&app, flour);
    let first = tokio::spawn(
        app.authed(Method::POST, "/v1/recipes")
            .header("idempotency-key", "slow")
            .json(&body)
            .send(),
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    let meanwhile = post_with_key(&app, "/v1/recipes", "slow", &body).await;
    assert_problem(meanwhile, StatusCode::CONFLICT).await;
    release(lock);
    assert_eq!(first.await.unwrap().unwrap().status(), StatusCode::CREATED);
    let retry = post_with_key(&app, "/v1/recipes", "slow", &body).await;
    assert_eq!(retry.headers()["idempotent-replayed"], "true");

    // A write that fails (an unknown ingredient) commits nothing and keeps no key: once the
    // cause is fixed, the same request with the same key runs.
    let missing = recipe_body("soup", flour + 1000);
    let failed = post_with_key(&app, "/v1/recipes", "fails-first", &missing).await;
    assert_problem(failed, StatusCode::UNPROCESSABLE_ENTITY).await;
    assert_eq!(app.count("idempotency_keys"), 1);
    let deleted = app
        .authed(Method::DELETE, &format!("/v1/ingredients/{flour}"))
        .header("idempotency-key", "del")
        .send()
        .await
        .unwrap();
    assert_problem(deleted, StatusCode::CONFLICT).await; // used by bread
    assert_eq!(app.count("idempotency_keys"), 1);
}

#[tokio::test]
async fn a_repeated_delete_with_its_key_answers_204_again_and_expired_keys_are_forgotten() {
    let app = spawn_app_with(|_| {}).await;
    let salt = app.create_ingredient("salt").await;
    let delete = || {
        app.authed(Method::DELETE, &format!("/v1/ingredients/{salt}"))
            .header("idempotency-key", "d-1")
            .send()
    };
    assert_eq!(delete().await.unwrap().status(), StatusCode::NO_CONTENT);
    let again = delete().await.unwrap();
    assert_eq!(again.status(), StatusCode::NO_CONTENT, "not 404");
    assert_eq!(again.headers()["idempotent-replayed"], "true");

    // Expired: the key is free again, even for another request.
    let mut conn = app.db.as_ref().unwrap().connect();
    diesel::sql_query("UPDATE idempotency_keys SET expires_at = '2000-01-01'")
        .execute(&mut conn)
        .unwrap();
    let reused = post_with_key(&app, "/v1/ingredients", "d-1", &json!({ "name": "pepper" })).await;
    assert_eq!(reused.status(), StatusCode::CREATED);
}

#[tokio::test]
async fn an_idempotency_key_is_forgotten_after_its_configured_lifetime() {
    let app = spawn_app_with(|c| c.idempotency_ttl = Duration::from_secs(1)).await;
    let flour = app.create_ingredient("flour").await;
    let first = post_with_key(&app, "/v1/recipes", "k-ttl", &recipe_body("bread", flour)).await;
    assert_eq!(first.status(), StatusCode::CREATED);
    // Within its lifetime another body with the key is refused...
    let early = post_with_key(&app, "/v1/recipes", "k-ttl", &recipe_body("rolls", flour)).await;
    assert_problem(early, StatusCode::UNPROCESSABLE_ENTITY).await;
    // ...after it, the key is free: a new request that writes.
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let late = post_with_key(&app, "/v1/recipes", "k-ttl", &recipe_body("rolls", flour)).await;
    assert_eq!(late.status(), StatusCode::CREATED);
    assert!(late.headers().get("idempotent-replayed").is_none());
    assert_eq!(app.count("recipes"), 2);
}
