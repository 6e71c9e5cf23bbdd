//! `/v1/ingredients`: CRUD, case-insensitive uniqueness and prefix search, deletion rules.

use std::collections::HashSet;

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::helpers::{assert_problem, error_fields, spawn_app};

#[tokio::test]
async fn ingredient_crud_creates_reads_renames_and_deletes() {
    let app = spawn_app().await;
    let response = app
        .send_json(
            Method::POST,
            "/v1/ingredients",
            &json!({"name": "  Flour "}),
        )
        .await;
    assert_eq!(response.status(), StatusCode::CREATED);
    let location = response.headers()["location"].to_str().unwrap().to_string();
    let created: Value = response.json().await.unwrap();
    assert_eq!(created["name"], "Flour");
    assert_eq!(location, format!("/v1/ingredients/{}", created["id"]));
    assert!(created["created_at"].as_str().unwrap().ends_with('Z'));
    assert_eq!(app.get_json(&location).await, created);

    let renamed = app
        .send_json(Method::PUT, &location, &json!({"name": "Wheat flour"}))
        .await;
    assert_eq!(renamed.status(), StatusCode::OK);
    let renamed: Value = renamed.json().await.unwrap();
    assert_eq!(renamed["name"], "Wheat flour");
    assert_eq!(renamed["created_at"], created["created_at"]);
    assert_eq!(app.get_json(&location).await["name"], "Wheat flour");

    let same_name_other_case = app
        .send_json(Method::PUT, &location, &json!({"name": "WHEAT FLOUR"}))
        .await;
    assert_eq!(
        same_name_other_case.status(),
        StatusCode::OK,
        "renaming to itself in another case is fine"
    );

    let deleted = app.authed(Method::DELETE, &location).send().await.unwrap();
    assert_eq!(deleted.status(), StatusCode::NO_CONTENT);
    assert_problem(app.get(&location).await, StatusCode::NOT_FOUND).await;
    let again = app.authed(Method::DELETE, &location).send().await.unwrap();
    assert_problem(again, StatusCode::NOT_FOUND).await;
    let put_missing = app
        .send_json(Method::PUT, &location, &json!({"name": "x"}))
        .await;
    assert_problem(put_missing, StatusCode::NOT_FOUND).await;
}

#[tokio::test]
async fn duplicate_ingredient_names_ignoring_case_return_409() {
    let app = spawn_app().await;
    app.create_ingredient("Sugar").await;
    for name in ["Sugar", "sugar", "SUGAR", " sugar "] {
        let response = app
            .send_json(Method::POST, "/v1/ingredients", &json!({ "name": name }))
            .await;
        assert_problem(response, StatusCode::CONFLICT).await;
    }
    let salt = app.create_ingredient("salt").await;
    let rename = app
        .send_json(
            Method::PUT,
            &format!("/v1/ingredients/{salt}"),
            &json!({"name": "sUgAr"}),
        )
        .await;
    assert_problem(rename, StatusCode::CONFLICT).await;
    assert_eq!(app.count("ingredients"), 2);
}

#[tokio::test]
async fn deleting_an_ingredient_used_by_a_recipe_returns_409() {
    let app = spawn_app().await;
    let flour = app.create_ingredient("flour").await;
    let recipe = app
        .create_recipe(&json!({"title": "Bread", "ingredients": [{"ingredient_id": flour}]}))
        .await;
    let response = app
        .authed(Method::DELETE, &format!("/v1/ingredients/{flour}"))
        .send()
        .await
        .unwrap();
    assert_problem(response, StatusCode::CONFLICT).await;
    assert_eq!(
        app.get(&format!("/v1/ingredients/{flour}")).await.status(),
        StatusCode::OK
    );

    let deleted = app
        .authed(Method::DELETE, &format!("/v1/recipes/{}", recipe["id"]))
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), StatusCode::NO_CONTENT);
    let now_free = app
        .authed(Method::DELETE, &format!("/v1/ingredients/{flour}"))
        .send()
        .await
        .unwrap();
    assert_eq!(now_free.status(), StatusCode::NO_CONTENT);
}

#[tokio::test]
async fn q_searches_names_by_case_insensitive_prefix_with_wildcards_taken_literally() {
    let app = spawn_app().await;
    for name in [
        "Flour",
        "flaxseed",
        "Fleur de sel",
        "rye flour",
        "100% cocoa",
        "1000 island",
        "a_b",
        "axb",
        "Éclair",
    ] {
        app.create_ingredient(name).await;
    }
    let names = |page: Value| -> Vec<String> {
        page["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["name"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(
        names(app.get_json("/v1/ingredients?q=FL").await),
        vec!["Flour", "flaxseed", "Fleur de sel"]
    );
    assert_eq!(
        names(app.get_json("/v1/ingredients?q=FLO").await),
        vec!["Flour"]
    );
    assert_eq!(
        names(app.get_json("/v1/ingredients?q=fl").await),
        vec!["Flour", "flaxseed", "Fleur de sel"]
    );
    assert_eq!(
        names(app.get_json("/v1/ingredients?q=100%25").await),
        vec!["100% cocoa"]
    );
    assert_eq!(
        names(app.get_json("/v1/ingredients?q=a_").await),
        vec!["a_b"]
    );
    assert_eq!(
        names(app.get_json("/v1/ingredients?q=%C3%A9").await),
        vec!["Éclair"]
    );
    assert!(names(app.get_json("/v1/ingredients?q=zzz").await).is_empty());
    assert_eq!(
        names(app.get_json("/v1/ingredients?q=%20flo%20").await),
        vec!["Flour"],
        "q is trimmed like names"
    );
    assert_eq!(names(app.get_json("/v1/ingredients?q=").await).len(), 9);
}

#[tokio::test]
async fn a_pagination_walk_over_ingredients_sees_every_row_exactly_once() {
    let app = spawn_app().await;
    let mut created = HashSet::new();
    for i in 0..12 {
        created.insert(app.create_ingredient(&format!("item {i:02}")).await);
    }
    let mut seen = Vec::new();
    let mut path = "/v1/ingredients?limit=4".to_string();
    loop {
        let page = app.get_json(&path).await;
        seen.extend(
            page["items"]
                .as_array()
                .unwrap()
                .iter()
                .map(|i| i["id"].as_i64().unwrap()),
        );
        match page["next_cursor"].as_str() {
            Some(cursor) => path = format!("/v1/ingredients?limit=4&cursor={cursor}"),
            None => break,
        }
    }
    assert_eq!(seen.len(), 12);
    assert_eq!(seen.into_iter().collect::<HashSet<_>>(), created);
}

#[tokio::test]
async fn ingredient_validation_errors_return_422_naming_the_field() {
    let app = spawn_app().await;
    let cases: Vec<(Value, &str)> = vec![
        (json!({}), "name"),
        (json!({"name": ""}), "name"),
        (json!({"name": "  "}), "name"),
        (json!({"name": "n".repeat(101)}), "name"),
        (json!({"name": ["flour"]}), "name"),
        (json!({"name": "ok", "calories": 3}), "calories"),
    ];
    for (body, field) in cases {
        let response = app.send_json(Method::POST, "/v1/ingredients", &body).await;
        let problem = assert_problem(response, StatusCode::UNPROCESSABLE_ENTITY).await;
        assert_eq!(error_fields(&problem), vec![field.to_string()], "{body}");
    }
    let ok = app
        .send_json(
            Method::POST,
            "/v1/ingredients",
            &json!({"name": "n".repeat(100)}),
        )
        .await;
    assert_eq!(ok.status(), StatusCode::CREATED);
}
