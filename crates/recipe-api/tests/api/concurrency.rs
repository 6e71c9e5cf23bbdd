//! Optimistic concurrency: of writers holding the same ETag, exactly one wins.

use futures::future::join_all;
use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::helpers::spawn_app;

const WRITERS: usize = 8;

#[tokio::test]
async fn concurrent_puts_with_the_same_if_match_let_exactly_one_win() {
    let app = spawn_app().await;
    let flour = app.create_ingredient("flour").await;
    let recipe = app
        .create_recipe(&json!({"title": "Start", "ingredients": [{"ingredient_id": flour}]}))
        .await;
    let path = format!("/v1/recipes/{}", recipe["id"]);
    let requests = (0..WRITERS).map(|i| {
        app.authed(Method::PUT, &path)
            .header("if-match", "\"1\"")
            .json(&json!({"title": format!("writer {i}"), "ingredients": [{"ingredient_id": flour, "quantity": i}]}))
            .send()
    });
    let statuses: Vec<StatusCode> = join_all(requests)
        .await
        .into_iter()
        .map(|r| r.unwrap().status())
        .collect();
    assert_eq!(
        statuses.iter().filter(|s| **s == StatusCode::OK).count(),
        1,
        "{statuses:?}"
    );
    assert_eq!(
        statuses
            .iter()
            .filter(|s| **s == StatusCode::PRECONDITION_FAILED)
            .count(),
        WRITERS - 1,
        "{statuses:?}"
    );
    let current = app.get_json(&path).await;
    assert_eq!(current["version"], 2);
    let winner: usize = current["title"]
        .as_str()
        .unwrap()
        .trim_start_matches("writer ")
        .parse()
        .unwrap();
    assert_eq!(
        current["ingredients"][0]["quantity"],
        json!(winner as f64),
        "row and links come from the same writer"
    );
}

#[tokio::test]
async fn concurrent_patches_and_deletes_with_the_same_if_match_let_exactly_one_win() {
    let app = spawn_app().await;
    let recipe = app.create_recipe(&json!({"title": "Start"})).await;
    let path = format!("/v1/recipes/{}", recipe["id"]);
    let mut requests = Vec::new();
    for i in 0..WRITERS {
        let request = if i == 0 {
            app.authed(Method::DELETE, &path)
                .header("if-match", "\"1\"")
        } else {
            app.authed(Method::PATCH, &path)
                .header("if-match", "\"1\"")
                .json(&json!({"servings": i}))
        };
        requests.push(request.send());
    }
    let statuses: Vec<StatusCode> = join_all(requests)
        .await
        .into_iter()
        .map(|r| r.unwrap().status())
        .collect();
    let winners = statuses.iter().filter(|s| s.is_success()).count();
    assert_eq!(winners, 1, "{statuses:?}");
    assert!(
        statuses.iter().all(|s| s.is_success()
            || *s == StatusCode::PRECONDITION_FAILED
            || *s == StatusCode::NOT_FOUND),
        "{statuses:?}"
    );
}

#[tokio::test]
async fn concurrent_writers_sharing_ingredients_all_succeed_without_a_server_error() {
    let app = spawn_app().await;
    let mut ingredients = Vec::new();
    for i in 0..10 {
        ingredients.push(app.create_ingredient(&format!("shared {i}")).await);
    }
    let mut recipes = Vec::new();
    for i in 0..4 {
        recipes.push(
            app.create_recipe(&json!({"title": format!("base {i}")}))
                .await["id"]
                .as_i64()
                .unwrap(),
        );
    }
    let body = |i: usize| {
        let items: Vec<_> = (0..8)
            .map(|k| json!({"ingredient_id": ingredients[(i + k) % 10], "quantity": k}))
            .collect();
        json!({"title": format!("writer {i}"), "ingredients": items})
    };
    let requests = (0..24).map(|i| match i % 3 {
        0 => app
            .authed(Method::POST, "/v1/recipes")
            .json(&body(i))
            .send(),
        1 => app
            .authed(Method::PUT, &format!("/v1/recipes/{}", recipes[i % 4]))
            .json(&body(i))
            .send(),
        _ => app
            .authed(Method::PATCH, &format!("/v1/recipes/{}", recipes[i % 4]))
            .json(&json!({"ingredients": body(i)["ingredients"]}))
            .send(),
    });
    let statuses: Vec<StatusCode> = join_all(requests)
        .await
        .into_iter()
        .map(|r| r.unwrap().status())
        .collect();
    assert!(statuses.iter().all(|s| s.is_success()), "{statuses:?}");
    assert_eq!(app.count("recipes"), 4 + 8);
}
