//! Data the warehouse sync owns, served read-only: `GET /v1/recipes/{id}/stats` from
//! `recipe_daily_stats` and the `nutrition` of ingredients from `ingredient_nutrition`. The
//! tests create those tables themselves, as the sync would (recipe-api never migrates them).

use diesel::connection::SimpleConnection;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::helpers::{assert_problem, spawn_app, TestApp};

/// The tables as partition-sync and stream-sync create them from the demo warehouse schema.
fn create_synced_tables(app: &TestApp) {
    let mut conn = app.db.as_ref().unwrap().connect();
    conn.batch_execute(
        "CREATE TABLE recipe_daily_stats (recipe_id BIGINT NOT NULL, day DATE NOT NULL, \
           views BIGINT NULL, cooks BIGINT NULL, avg_rating DOUBLE NULL, \
           updated_at DATETIME(6) NULL, PRIMARY KEY (recipe_id, day), KEY day_idx (day)); \
         CREATE TABLE ingredient_nutrition (ingredient_id BIGINT NOT NULL, calories DOUBLE NULL, \
           protein_g DOUBLE NULL, fat_g DOUBLE NULL, carbs_g DOUBLE NULL, \
           _sync_hash BIGINT NOT NULL DEFAULT 0, _sync_bucket SMALLINT UNSIGNED NOT NULL DEFAULT 0, \
           PRIMARY KEY (ingredient_id))",
    )
    .unwrap();
}

fn sql(app: &TestApp, statements: &str) {
    let mut conn = app.db.as_ref().unwrap().connect();
    conn.batch_execute(statements).unwrap();
}

async fn recipe(app: &TestApp, title: &str) -> i64 {
    app.create_recipe(&json!({ "title": title })).await["id"]
        .as_i64()
        .unwrap()
}

#[tokio::test]
async fn recipe_stats_returns_the_synced_daily_rows_within_the_range_by_day() {
    let app = spawn_app().await;
    create_synced_tables(&app);
    let id = recipe(&app, "Pancakes").await;
    let other = recipe(&app, "Soup").await;
    sql(
        &app,
        &format!(
            "INSERT INTO recipe_daily_stats VALUES \
             ({id}, '2026-01-03', 30, 3, NULL, '2026-01-04 03:00:00.250000'), \
             ({id}, '2026-01-01', 10, 1, 4.25, '2026-01-02 03:00:00'), \
             ({id}, '2026-01-02', 20, 2, 3.5, NULL), \
             ({other}, '2026-01-02', 99, 9, 5, NULL)"
        ),
    );

    let all = app.get_json(&format!("/v1/recipes/{id}/stats")).await;
    assert_eq!(all["recipe_id"], id);
    assert_eq!(all["from"], Value::Null);
    assert_eq!(all["to"], Value::Null);
    let days: Vec<&str> = all["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["day"].as_str().unwrap())
        .collect();
    assert_eq!(days, ["2026-01-01", "2026-01-02", "2026-01-03"]);
    assert_eq!(
        all["items"][0],
        json!({"day": "2026-01-01", "views": 10, "cooks": 1, "avg_rating": 4.25,
               "updated_at": "2026-01-02T03:00:00Z"})
    );
    assert_eq!(all["items"][2]["avg_rating"], Value::Null);
    assert_eq!(all["items"][2]["updated_at"], "2026-01-04T03:00:00.250Z");

    let range = app
        .get_json(&format!(
            "/v1/recipes/{id}/stats?from=2026-01-02&to=2026-01-02"
        ))
        .await;
    assert_eq!(range["from"], "2026-01-02");
    assert_eq!(range["to"], "2026-01-02");
    assert_eq!(range["items"].as_array().unwrap().len(), 1);
    assert_eq!(range["items"][0]["views"], 20);
    let open_end = app
        .get_json(&format!("/v1/recipes/{id}/stats?from=2026-01-02"))
        .await;
    assert_eq!(open_end["items"].as_array().unwrap().len(), 2);
    let before = app
        .get_json(&format!("/v1/recipes/{id}/stats?to=2025-12-31"))
        .await;
    assert_eq!(before["items"], json!([]));
}

#[tokio::test]
async fn recipe_stats_returns_404_for_an_unknown_recipe_and_400_for_a_bad_range() {
    let app = spawn_app().await;
    create_synced_tables(&app);
    let id = recipe(&app, "Pancakes").await;
    assert_problem(
        app.get("/v1/recipes/999999/stats").await,
        StatusCode::NOT_FOUND,
    )
    .await;
    let cases = [
        "from=2026-02-30",
        "from=2026-1-1",
        "to=yesterday",
        "from=",
        "from=2026-01-01T00:00:00Z",
        "from=2026-03-02&to=2026-03-01",
    ];
    for query in cases {
        let problem = assert_problem(
            app.get(&format!("/v1/recipes/{id}/stats?{query}")).await,
            StatusCode::BAD_REQUEST,
        )
        .await;
        let detail = problem["detail"].as_str().unwrap();
        assert!(
            detail.contains("from") || detail.contains("to"),
            "{query}: {detail}"
        );
    }
    assert_problem(
        app.get("/v1/recipes/0/stats").await,
        StatusCode::BAD_REQUEST,
    )
    .await;
    let post = app
        .authed(Method::POST, &format!("/v1/recipes/{id}/stats"))
        .send()
        .await
        .unwrap();
    assert_eq!(post.headers()["allow"], "GET");
    assert_problem(post, StatusCode::METHOD_NOT_ALLOWED).await;
}

#[tokio::test]
async fn before_the_first_sync_stats_are_empty_and_nutrition_is_null() {
    let app = spawn_app().await;
    let id = recipe(&app, "Pancakes").await;
    let stats = app.get_json(&format!("/v1/recipes/{id}/stats")).await;
    assert_eq!(stats["items"], json!([]));
    assert_problem(
        app.get("/v1/recipes/999999/stats").await,
        StatusCode::NOT_FOUND,
    )
    .await;
    let flour = app.create_ingredient("Flour").await;
    let one = app.get_json(&format!("/v1/ingredients/{flour}")).await;
    assert_eq!(one["nutrition"], Value::Null);
    let page = app.get_json("/v1/ingredients").await;
    assert_eq!(page["items"][0]["nutrition"], Value::Null);
}

#[tokio::test]
async fn ingredients_carry_their_synced_nutrition_or_null() {
    let app = spawn_app().await;
    create_synced_tables(&app);
    let flour = app.create_ingredient("Flour").await;
    let salt = app.create_ingredient("Salt").await;
    sql(
        &app,
        &format!(
            "INSERT INTO ingredient_nutrition (ingredient_id, calories, protein_g, fat_g, carbs_g) \
             VALUES ({flour}, 364, 10.3, 1.0, 76.3)"
        ),
    );
    let expected = json!({"calories": 364.0, "protein_g": 10.3, "fat_g": 1.0, "carbs_g": 76.3});

    let one = app.get_json(&format!("/v1/ingredients/{flour}")).await;
    assert_eq!(one["nutrition"], expected);
    assert_eq!(
        app.get_json(&format!("/v1/ingredients/{salt}")).await["nutrition"],
        Value::Null
    );
    let page = app.get_json("/v1/ingredients").await;
    let items = page["items"].as_array().unwrap();
    assert_eq!(items[0]["nutrition"], expected);
    assert_eq!(items[1]["nutrition"], Value::Null);
    let search = app.get_json("/v1/ingredients?q=fl").await;
    assert_eq!(search["items"][0]["nutrition"], expected);

    // What a client read can be sent back: nutrition is read-only and ignored.
    let mut body = one.clone();
    body["name"] = json!("Wheat flour");
    body["nutrition"] = json!({"calories": 1});
    let renamed = app
        .send_json(Method::PUT, &format!("/v1/ingredients/{flour}"), &body)
        .await;
    assert_eq!(renamed.status(), StatusCode::OK);
    let renamed: Value = renamed.json().await.unwrap();
    assert_eq!(renamed["name"], "Wheat flour");
    assert_eq!(renamed["nutrition"], expected);

    sql(
        &app,
        &format!("DELETE FROM ingredient_nutrition WHERE ingredient_id = {flour}"),
    );
    assert_eq!(
        app.get_json(&format!("/v1/ingredients/{flour}")).await["nutrition"],
        Value::Null
    );
}

#[tokio::test]
async fn the_openapi_document_describes_stats_and_nutrition() {
    let app = spawn_app().await;
    let doc = app.get_json("/openapi.json").await;
    let stats = &doc["paths"]["/v1/recipes/{id}/stats"]["get"];
    for status in ["200", "400", "404", "503"] {
        assert!(stats["responses"][status].is_object(), "{status}");
    }
    let params: Vec<&str> = stats["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(params, ["id", "from", "to"]);
    let schemas = &doc["components"]["schemas"];
    assert!(schemas["Ingredient"]["properties"]["nutrition"].is_object());
    assert!(schemas["Nutrition"]["properties"]["calories"].is_object());
    assert!(schemas["DailyStats"]["properties"]["avg_rating"].is_object());
}
