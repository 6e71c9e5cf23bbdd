//! `/v1/recipes`: every operation, ETags, pagination, rollback, data round-trips.

use std::collections::HashSet;

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::helpers::{assert_problem, error_fields, spawn_app, TestApp};

async fn pancakes(app: &TestApp) -> (Value, i64, i64) {
    let flour = app.create_ingredient("flour").await;
    let milk = app.create_ingredient("milk").await;
    let recipe = app
        .create_recipe(&json!({
            "title": "Pancakes", "description": "Fluffy", "instructions": "Mix, fry.",
            "servings": 4, "prep_minutes": 15,
            "ingredients": [
                {"ingredient_id": flour, "quantity": 200.0, "unit": "g"},
                {"ingredient_id": milk, "quantity": 0.3, "unit": "l"}
            ]
        }))
        .await;
    (recipe, flour, milk)
}

fn is_rfc3339_utc(value: &Value) -> bool {
    value
        .as_str()
        .is_some_and(|s| s.ends_with('Z') && chrono::DateTime::parse_from_rfc3339(s).is_ok())
}

#[tokio::test]
async fn create_recipe_returns_201_with_location_etag_and_the_full_representation() {
    let app = spawn_app().await;
    let flour = app.create_ingredient("flour").await;
    let response = app
        .send_json(
            Method::POST,
            "/v1/recipes",
            &json!({"title": "  Pancakes  ", "servings": 4,
                    "ingredients": [{"ingredient_id": flour, "quantity": 200.5, "unit": "g"}]}),
        )
        .await;
    assert_eq!(response.status(), StatusCode::CREATED);
    let location = response.headers()["location"].to_str().unwrap().to_string();
    let etag = response.headers()["etag"].to_str().unwrap().to_string();
    let body: Value = response.json().await.unwrap();
    let id = body["id"].as_i64().unwrap();
    assert_eq!(location, format!("/v1/recipes/{id}"));
    assert_eq!(etag, "\"1\"");
    assert_eq!(body["title"], "Pancakes");
    assert_eq!(body["version"], 1);
    assert_eq!(body["description"], Value::Null);
    assert_eq!(body["prep_minutes"], Value::Null);
    assert_eq!(
        body["ingredients"],
        json!([{"ingredient_id": flour, "name": "flour", "quantity": 200.5, "unit": "g"}])
    );
    assert!(
        is_rfc3339_utc(&body["created_at"]) && is_rfc3339_utc(&body["updated_at"]),
        "{body}"
    );
    assert_eq!(app.get_json(&location).await, body);
}

#[tokio::test]
async fn get_recipe_returns_the_etag_and_304_when_if_none_match_matches() {
    let app = spawn_app().await;
    let (recipe, _, _) = pancakes(&app).await;
    let path = format!("/v1/recipes/{}", recipe["id"]);
    let response = app.get(&path).await;
    assert_eq!(response.status(), StatusCode::OK);
    let etag = response.headers()["etag"].to_str().unwrap().to_string();
    assert_eq!(etag, "\"1\"");

    let not_modified = app
        .client
        .get(app.url(&path))
        .header("if-none-match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(not_modified.status(), StatusCode::NOT_MODIFIED);
    assert_eq!(not_modified.headers()["etag"], etag.as_str());
    assert!(not_modified.bytes().await.unwrap().is_empty());

    let modified = app
        .client
        .get(app.url(&path))
        .header("if-none-match", "\"7\"")
        .send()
        .await
        .unwrap();
    assert_eq!(modified.status(), StatusCode::OK);
}

#[tokio::test]
async fn get_recipe_returns_404_problem_for_an_unknown_id() {
    let app = spawn_app().await;
    assert_problem(app.get("/v1/recipes/987654").await, StatusCode::NOT_FOUND).await;
}

#[tokio::test]
async fn put_recipe_replaces_every_field_and_the_ingredient_list_and_bumps_the_version() {
    let app = spawn_app().await;
    let (recipe, flour, milk) = pancakes(&app).await;
    let eggs = app.create_ingredient("eggs").await;
    let path = format!("/v1/recipes/{}", recipe["id"]);
    let response = app
        .authed(Method::PUT, &path)
        .header("if-match", "\"1\"")
        .json(&json!({"title": "Crêpes", "servings": 2,
                      "ingredients": [{"ingredient_id": eggs, "quantity": 3, "unit": null},
                                      {"ingredient_id": flour}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["etag"], "\"2\"");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["title"], "Crêpes");
    assert_eq!(body["version"], 2);
    assert_eq!(
        body["description"],
        Value::Null,
        "PUT is a full replacement"
    );
    assert_eq!(body["instructions"], Value::Null);
    assert_eq!(body["prep_minutes"], Value::Null);
    assert_eq!(
        body["ingredients"],
        json!([{"ingredient_id": eggs, "name": "eggs", "quantity": 3.0, "unit": null},
               {"ingredient_id": flour, "name": "flour", "quantity": null, "unit": null}])
    );
    assert_eq!(body["created_at"], recipe["created_at"]);
    assert_eq!(app.get_json(&path).await, body);
    let _ = milk;
}

#[tokio::test]
async fn a_representation_read_with_get_can_be_modified_and_put_back() {
    let app = spawn_app().await;
    let (recipe, _, _) = pancakes(&app).await;
    let path = format!("/v1/recipes/{}", recipe["id"]);
    let mut body = app.get_json(&path).await;
    body["title"] = json!("Round trip");
    // Read-only fields with other values than the server's are ignored, not applied.
    body["id"] = json!(999_999);
    body["version"] = json!(99);
    body["created_at"] = json!("2000-01-01T00:00:00Z");
    body["ingredients"][0]["name"] = json!("renamed through a recipe");
    let response = app
        .authed(Method::PUT, &path)
        .header("if-match", "\"1\"")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let updated: Value = response.json().await.unwrap();
    assert_eq!(updated["title"], "Round trip");
    assert_eq!(
        updated["ingredients"], recipe["ingredients"],
        "the link's name is not applied"
    );
    assert_eq!(updated["id"], recipe["id"]);
    assert_eq!(updated["version"], 2, "the version comes from the server");
    assert_eq!(updated["created_at"], recipe["created_at"]);
}

#[tokio::test]
async fn put_recipe_without_if_match_is_unconditional() {
    let app = spawn_app().await;
    let (recipe, _, _) = pancakes(&app).await;
    let path = format!("/v1/recipes/{}", recipe["id"]);
    let response = app
        .send_json(Method::PUT, &path, &json!({"title": "Plain"}))
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["ingredients"], json!([]));
    assert_eq!(body["version"], 2);
}

#[tokio::test]
async fn put_recipe_with_a_stale_if_match_returns_412_and_changes_nothing() {
    let app = spawn_app().await;
    let (recipe, _, _) = pancakes(&app).await;
    let path = format!("/v1/recipes/{}", recipe["id"]);
    assert_eq!(
        app.send_json(Method::PUT, &path, &json!({"title": "v2"}))
            .await
            .status(),
        StatusCode::OK
    );
    for stale in ["\"1\"", "W/\"2\"", "\"nonsense\""] {
        let response = app
            .authed(Method::PUT, &path)
            .header("if-match", stale)
            .json(&json!({"title": "lost update"}))
            .send()
            .await
            .unwrap();
        assert_problem(response, StatusCode::PRECONDITION_FAILED).await;
    }
    let current = app.get_json(&path).await;
    assert_eq!(current["title"], "v2");
    assert_eq!(current["version"], 2);
    let star = app
        .authed(Method::PUT, &path)
        .header("if-match", "*")
        .json(&json!({"title": "v3"}))
        .send()
        .await
        .unwrap();
    assert_eq!(star.status(), StatusCode::OK);
}

#[tokio::test]
async fn put_and_patch_and_delete_return_404_for_an_unknown_recipe() {
    let app = spawn_app().await;
    let put = app
        .send_json(Method::PUT, "/v1/recipes/4242", &json!({"title": "x"}))
        .await;
    assert_problem(put, StatusCode::NOT_FOUND).await;
    let patch = app
        .send_json(Method::PATCH, "/v1/recipes/4242", &json!({"title": "x"}))
        .await;
    assert_problem(patch, StatusCode::NOT_FOUND).await;
    let delete = app
        .authed(Method::DELETE, "/v1/recipes/4242")
        .send()
        .await
        .unwrap();
    assert_problem(delete, StatusCode::NOT_FOUND).await;
}

#[tokio::test]
async fn patch_recipe_merges_fields_keeps_the_rest_and_null_clears_a_field() {
    let app = spawn_app().await;
    let (recipe, _, _) = pancakes(&app).await;
    let path = format!("/v1/recipes/{}", recipe["id"]);
    let response = app
        .authed(Method::PATCH, &path)
        .header("content-type", "application/merge-patch+json")
        .header("if-match", "\"1\"")
        .body(r#"{"title": "Better pancakes", "description": null}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["etag"], "\"2\"");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["title"], "Better pancakes");
    assert_eq!(body["description"], Value::Null);
    assert_eq!(body["instructions"], "Mix, fry.");
    assert_eq!(body["servings"], 4);
    assert_eq!(
        body["ingredients"], recipe["ingredients"],
        "absent ingredients are kept"
    );
}

#[tokio::test]
async fn patch_recipe_with_ingredients_replaces_the_whole_list_and_accepts_application_json() {
    let app = spawn_app().await;
    let (recipe, _, milk) = pancakes(&app).await;
    let path = format!("/v1/recipes/{}", recipe["id"]);
    let response = app
        .send_json(
            Method::PATCH,
            &path,
            &json!({"ingredients": [{"ingredient_id": milk, "quantity": 1}]}),
        )
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.unwrap();
    assert_eq!(
        body["ingredients"],
        json!([{"ingredient_id": milk, "name": "milk", "quantity": 1.0, "unit": null}])
    );
    assert_eq!(body["title"], "Pancakes");
}

#[tokio::test]
async fn patch_recipe_rejects_invalid_results_unknown_fields_and_stale_etags() {
    let app = spawn_app().await;
    let (recipe, _, _) = pancakes(&app).await;
    let path = format!("/v1/recipes/{}", recipe["id"]);
    let cases: Vec<(Value, &str)> = vec![
        (json!({"title": null}), "title"),
        (json!({"title": ""}), "title"),
        (json!({"servings": 0}), "servings"),
        (json!({"rating": 9}), "rating"),
        (
            json!({"ingredients": [{"ingredient_id": 999999}]}),
            "ingredients[0].ingredient_id",
        ),
    ];
    for (patch, field) in cases {
        let problem = assert_problem(
            app.send_json(Method::PATCH, &path, &patch).await,
            StatusCode::UNPROCESSABLE_ENTITY,
        )
        .await;
        assert_eq!(error_fields(&problem), vec![field.to_string()], "{patch}");
    }
    let stale = app
        .authed(Method::PATCH, &path)
        .header("if-match", "\"5\"")
        .json(&json!({"title": "x"}))
        .send()
        .await
        .unwrap();
    assert_problem(stale, StatusCode::PRECONDITION_FAILED).await;
    assert_eq!(app.get_json(&path).await, recipe, "nothing changed");
}

#[tokio::test]
async fn delete_recipe_returns_204_honours_if_match_and_removes_its_links() {
    let app = spawn_app().await;
    let (recipe, _, _) = pancakes(&app).await;
    let path = format!("/v1/recipes/{}", recipe["id"]);
    let stale = app
        .authed(Method::DELETE, &path)
        .header("if-match", "\"2\"")
        .send()
        .await
        .unwrap();
    assert_problem(stale, StatusCode::PRECONDITION_FAILED).await;
    assert_eq!(app.get(&path).await.status(), StatusCode::OK);

    let deleted = app
        .authed(Method::DELETE, &path)
        .header("if-match", "\"1\"")
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), StatusCode::NO_CONTENT);
    assert_problem(app.get(&path).await, StatusCode::NOT_FOUND).await;
    assert_eq!(app.count("recipe_ingredients"), 0);
    assert_eq!(app.count("ingredients"), 2, "ingredients stay");
}

#[tokio::test]
async fn a_pagination_walk_sees_every_recipe_exactly_once() {
    let app = spawn_app().await;
    let salt = app.create_ingredient("salt").await;
    let mut created = HashSet::new();
    for i in 0..23 {
        let recipe = app
            .create_recipe(&json!({"title": format!("Recipe {i}"), "ingredients": [{"ingredient_id": salt, "quantity": i}]}))
            .await;
        created.insert(recipe["id"].as_i64().unwrap());
    }
    let mut seen = Vec::new();
    let mut path = "/v1/recipes?limit=5".to_string();
    let mut pages = 0;
    loop {
        let page = app.get_json(&path).await;
        pages += 1;
        let items = page["items"].as_array().unwrap();
        assert!(items.len() <= 5);
        for item in items {
            assert_eq!(
                item["ingredients"][0]["name"], "salt",
                "ingredients are loaded for every item"
            );
            seen.push(item["id"].as_i64().unwrap());
        }
        match page["next_cursor"].as_str() {
            Some(cursor) => path = format!("/v1/recipes?limit=5&cursor={cursor}"),
            None => break,
        }
    }
    assert_eq!(pages, 5);
    assert_eq!(seen.len(), 23);
    assert_eq!(seen.iter().copied().collect::<HashSet<_>>(), created);
    assert!(seen.windows(2).all(|w| w[0] < w[1]), "ordered by id");

    let default_page = app.get_json("/v1/recipes").await;
    assert_eq!(default_page["items"].as_array().unwrap().len(), 20);
}

#[tokio::test]
async fn the_ingredient_id_filter_returns_only_recipes_that_use_it_and_an_empty_page_for_unknown_ids(
) {
    let app = spawn_app().await;
    let (pancakes, flour, milk) = pancakes(&app).await;
    let bread = app
        .create_recipe(&json!({"title": "Bread", "ingredients": [{"ingredient_id": flour}]}))
        .await;
    app.create_recipe(&json!({"title": "Water"})).await;

    let with_flour = app
        .get_json(&format!("/v1/recipes?ingredient_id={flour}"))
        .await;
    let ids: Vec<&Value> = with_flour["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| &r["id"])
        .collect();
    assert_eq!(ids, vec![&pancakes["id"], &bread["id"]]);
    assert_eq!(
        with_flour["items"][0]["ingredients"]
            .as_array()
            .unwrap()
            .len(),
        2,
        "all of a recipe's ingredients"
    );

    let with_milk = app
        .get_json(&format!("/v1/recipes?ingredient_id={milk}&limit=1"))
        .await;
    assert_eq!(with_milk["items"].as_array().unwrap().len(), 1);
    assert_eq!(with_milk["next_cursor"], Value::Null);

    let unknown = app.get_json("/v1/recipes?ingredient_id=99999999").await;
    assert_eq!(unknown, json!({"items": [], "next_cursor": null}));
}

#[tokio::test]
async fn ingredient_recipes_pages_through_the_recipes_of_an_ingredient_and_404s_for_unknown_ones() {
    let app = spawn_app().await;
    let flour = app.create_ingredient("flour").await;
    let other = app.create_ingredient("other").await;
    let mut ids = Vec::new();
    for i in 0..5 {
        let recipe = app
            .create_recipe(
                &json!({"title": format!("R{i}"), "ingredients": [{"ingredient_id": flour}]}),
            )
            .await;
        ids.push(recipe["id"].clone());
    }
    app.create_recipe(&json!({"title": "unrelated", "ingredients": [{"ingredient_id": other}]}))
        .await;
    let first = app
        .get_json(&format!("/v1/ingredients/{flour}/recipes?limit=3"))
        .await;
    let cursor = first["next_cursor"].as_str().unwrap();
    let second = app
        .get_json(&format!(
            "/v1/ingredients/{flour}/recipes?limit=3&cursor={cursor}"
        ))
        .await;
    let seen: Vec<Value> = first["items"]
        .as_array()
        .unwrap()
        .iter()
        .chain(second["items"].as_array().unwrap())
        .map(|r| r["id"].clone())
        .collect();
    assert_eq!(seen, ids);
    assert_eq!(second["next_cursor"], Value::Null);

    assert_problem(
        app.get("/v1/ingredients/777777/recipes").await,
        StatusCode::NOT_FOUND,
    )
    .await;
    let unused = app.create_ingredient("unused").await;
    assert_eq!(
        app.get_json(&format!("/v1/ingredients/{unused}/recipes"))
            .await["items"],
        json!([])
    );
}

#[tokio::test]
async fn a_recipe_with_a_nonexistent_ingredient_is_rejected_and_nothing_is_written() {
    let app = spawn_app().await;
    let flour = app.create_ingredient("flour").await;
    let response = app
        .send_json(
            Method::POST,
            "/v1/recipes",
            &json!({"title": "Ghost", "ingredients": [{"ingredient_id": flour}, {"ingredient_id": 424242}]}),
        )
        .await;
    let problem = assert_problem(response, StatusCode::UNPROCESSABLE_ENTITY).await;
    assert_eq!(error_fields(&problem), vec!["ingredients[1].ingredient_id"]);
    assert_eq!(app.count("recipes"), 0);
    assert_eq!(app.count("recipe_ingredients"), 0);
}

#[tokio::test]
async fn a_failed_replacement_rolls_back_and_leaves_the_recipe_as_it_was() {
    let app = spawn_app().await;
    let (recipe, flour, _) = pancakes(&app).await;
    let path = format!("/v1/recipes/{}", recipe["id"]);
    let response = app
        .send_json(
            Method::PUT,
            &path,
            &json!({"title": "Changed", "ingredients": [{"ingredient_id": flour}, {"ingredient_id": 31337}]}),
        )
        .await;
    assert_problem(response, StatusCode::UNPROCESSABLE_ENTITY).await;
    assert_eq!(app.get_json(&path).await, recipe);
    assert_eq!(app.count("recipe_ingredients"), 2);
}

/// Makes every insert of an ingredient link whose unit is `explode` fail inside the database,
/// after the recipe row of the same write has been written.
fn fail_links_with_unit_explode(app: &TestApp) {
    use diesel::RunQueryDsl;
    let mut conn = app.db.as_ref().expect("a test database").connect();
    diesel::sql_query(
        "CREATE TRIGGER fail_links BEFORE INSERT ON recipe_ingredients FOR EACH ROW \
         IF NEW.unit = 'explode' THEN \
         SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = 'injected failure'; END IF",
    )
    .execute(&mut conn)
    .unwrap();
}

#[tokio::test]
async fn a_write_failing_after_the_recipe_row_was_written_changes_nothing() {
    let app = spawn_app().await;
    let (recipe, flour, milk) = pancakes(&app).await;
    fail_links_with_unit_explode(&app);
    let path = format!("/v1/recipes/{}", recipe["id"]);
    let explode = json!([
        {"ingredient_id": flour, "unit": "g"},
        {"ingredient_id": milk, "unit": "explode"}
    ]);

    // Replace: the recipe row is updated and its links deleted before the insert fails.
    let response = app
        .send_json(
            Method::PUT,
            &path,
            &json!({"title": "Changed", "ingredients": explode}),
        )
        .await;
    let problem = assert_problem(response, StatusCode::INTERNAL_SERVER_ERROR).await;
    assert!(!problem.to_string().contains("injected"), "{problem}");
    assert_eq!(
        app.get_json(&path).await,
        recipe,
        "title, version and links unchanged"
    );
    assert_eq!(app.count("recipe_ingredients"), 2);

    // Patch and create fail the same way and leave nothing behind.
    let response = app
        .send_json(
            Method::PATCH,
            &path,
            &json!({"servings": 9, "ingredients": explode}),
        )
        .await;
    assert_problem(response, StatusCode::INTERNAL_SERVER_ERROR).await;
    assert_eq!(app.get_json(&path).await, recipe);
    let response = app
        .send_json(
            Method::POST,
            "/v1/recipes",
            &json!({"title": "New", "ingredients": explode}),
        )
        .await;
    assert_problem(response, StatusCode::INTERNAL_SERVER_ERROR).await;
    assert_eq!(app.count("recipes"), 1);
    assert_eq!(app.count("recipe_ingredients"), 2);
}

#[tokio::test]
async fn unicode_and_sql_looking_strings_are_stored_and_returned_as_data() {
    let app = spawn_app().await;
    let names = [
        "Crème fraîche",
        "辣椒",
        "🌶️ chili",
        "'; DROP TABLE ingredients; --",
        "100% \"pure\" \\ back_slash",
    ];
    let mut ids = Vec::new();
    for name in names {
        ids.push(app.create_ingredient(name).await);
    }
    let title = "Robert'); DROP TABLE recipes;-- 👩‍🍳";
    let instructions = "Ünïcödé\n\tline two\u{0}nul and 'quotes' and `backticks`";
    let ingredients: Vec<Value> = ids
        .iter()
        .map(|id| json!({"ingredient_id": id, "unit": "½ cup"}))
        .collect();
    let recipe = app
        .create_recipe(
            &json!({"title": title, "instructions": instructions, "ingredients": ingredients}),
        )
        .await;
    let fetched = app.get_json(&format!("/v1/recipes/{}", recipe["id"])).await;
    assert_eq!(fetched["title"], title);
    assert_eq!(fetched["instructions"], instructions);
    let fetched_names: Vec<&str> = fetched["ingredients"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["name"].as_str().unwrap())
        .collect();
    assert_eq!(fetched_names, names);
    assert_eq!(app.count("recipes"), 1);
    assert_eq!(app.count("ingredients"), 5);
}

#[tokio::test]
async fn quantities_are_json_numbers_rounded_to_six_decimals() {
    let app = spawn_app().await;
    let flour = app.create_ingredient("flour").await;
    let recipe = app
        .create_recipe(&json!({"title": "Q", "ingredients": [{"ingredient_id": flour, "quantity": 0.1234567}]}))
        .await;
    assert_eq!(recipe["ingredients"][0]["quantity"], json!(0.123457));
    let max = app
        .create_recipe(&json!({"title": "Max", "ingredients": [{"ingredient_id": flour, "quantity": 1000000}]}))
        .await;
    assert_eq!(max["ingredients"][0]["quantity"], json!(1000000.0));
}

#[tokio::test]
async fn recipe_validation_errors_return_422_naming_each_field() {
    let app = spawn_app().await;
    let flour = app.create_ingredient("flour").await;
    let cases: Vec<(Value, Vec<&str>)> = vec![
        (json!({}), vec!["title"]),
        (json!({"title": "   "}), vec!["title"]),
        (json!({"title": "x".repeat(201)}), vec!["title"]),
        (json!({"title": 12}), vec!["title"]),
        (
            json!({"title": "a", "description": "d".repeat(2001)}),
            vec!["description"],
        ),
        (
            json!({"title": "a", "instructions": "i".repeat(20_001)}),
            vec!["instructions"],
        ),
        (json!({"title": "a", "servings": 101}), vec!["servings"]),
        (json!({"title": "a", "servings": "four"}), vec!["servings"]),
        (
            json!({"title": "a", "prep_minutes": 10_081}),
            vec!["prep_minutes"],
        ),
        (
            json!({"title": "a", "prep_minutes": -1}),
            vec!["prep_minutes"],
        ),
        (json!({"title": "a", "rating": 5}), vec!["rating"]),
        (
            json!({"title": "a", "ingredients": "flour"}),
            vec!["ingredients"],
        ),
        (
            json!({"title": "a", "ingredients": [{"ingredient_id": flour, "quantity": -1}]}),
            vec!["ingredients[0].quantity"],
        ),
        (
            json!({"title": "a", "ingredients": [{"ingredient_id": flour, "quantity": 1_000_001}]}),
            vec!["ingredients[0].quantity"],
        ),
        (
            json!({"title": "a", "ingredients": [{"ingredient_id": flour, "unit": "u".repeat(33)}]}),
            vec!["ingredients[0].unit"],
        ),
        (
            json!({"title": "a", "ingredients": [{"ingredient_id": flour}, {"ingredient_id": flour}]}),
            vec!["ingredients[1].ingredient_id"],
        ),
        (
            json!({"title": "a", "ingredients": [{"ingredient_id": "1"}]}),
            vec!["ingredients[0].ingredient_id"],
        ),
        (
            json!({"title": "a", "ingredients": [{"ingredient_id": flour, "colour": "white"}]}),
            vec!["ingredients[0].colour"],
        ),
        (json!(["not", "an", "object"]), vec!["$"]),
    ];
    for (body, fields) in cases {
        let response = app.send_json(Method::POST, "/v1/recipes", &body).await;
        let problem = assert_problem(response, StatusCode::UNPROCESSABLE_ENTITY).await;
        assert_eq!(error_fields(&problem), fields, "body {body}");
        assert!(problem["errors"][0]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()));
    }
    let too_many: Vec<Value> = (0..101).map(|i| json!({"ingredient_id": i + 1})).collect();
    let response = app
        .send_json(
            Method::POST,
            "/v1/recipes",
            &json!({"title": "a", "ingredients": too_many}),
        )
        .await;
    assert_eq!(
        error_fields(&assert_problem(response, StatusCode::UNPROCESSABLE_ENTITY).await),
        vec!["ingredients"]
    );
    assert_eq!(app.count("recipes"), 0);
}

#[tokio::test]
async fn boundary_values_of_the_contract_are_accepted() {
    let app = spawn_app().await;
    let ingredients: Vec<Value> = {
        let mut list = Vec::new();
        for i in 0..100 {
            list.push(json!({"ingredient_id": app.create_ingredient(&format!("ing {i}")).await, "quantity": 0, "unit": "u".repeat(32)}));
        }
        list
    };
    let recipe = app
        .create_recipe(&json!({
            "title": "é".repeat(200), "description": "d".repeat(2000), "instructions": "i".repeat(20_000),
            "servings": 100, "prep_minutes": 10_080, "ingredients": ingredients
        }))
        .await;
    assert_eq!(recipe["ingredients"].as_array().unwrap().len(), 100);
    assert_eq!(recipe["title"].as_str().unwrap().chars().count(), 200);
    let minimal = app
        .create_recipe(&json!({"title": "m", "servings": 1, "prep_minutes": 0}))
        .await;
    assert_eq!(minimal["servings"], 1);
}
