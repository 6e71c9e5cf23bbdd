//! The SQL the endpoints issue, counted on the connection (`Com_stmt_execute` is per session):
//! a page of recipes loads its ingredients in one query, whatever the page size.

use diesel::mysql::MysqlConnection;
use diesel::prelude::*;
use diesel::sql_types::Text;
use recipe_api::models::ingredients::{self, NewIngredient};
use recipe_api::models::{self, recipes};
use recipe_api::routes::recipes::{create, recipe_page};
use recipe_api::validation::recipe_input;
use serde_json::json;
use test_support::TestDb;

#[derive(QueryableByName)]
struct Status {
    #[diesel(sql_type = Text, column_name = "Value")]
    value: String,
}

fn statements_executed(conn: &mut MysqlConnection) -> i64 {
    let rows: Vec<Status> = diesel::sql_query("SHOW SESSION STATUS LIKE 'Com_stmt_execute'")
        .load(conn)
        .unwrap();
    rows[0].value.parse().unwrap()
}

/// Statements `f` executes, not counting the measurement's own.
fn count_statements(conn: &mut MysqlConnection, f: impl FnOnce(&mut MysqlConnection)) -> i64 {
    let a = statements_executed(conn);
    let b = statements_executed(conn);
    let overhead = b - a;
    f(conn);
    let c = statements_executed(conn);
    c - b - overhead
}

fn seed(conn: &mut MysqlConnection, recipes: usize) {
    let now = models::now();
    let ids: Vec<i64> = (0..8)
        .map(|i| {
            ingredients::insert(
                conn,
                &NewIngredient {
                    name: &format!("ing {i}"),
                    created_at: now,
                    updated_at: now,
                },
            )
            .unwrap()
        })
        .collect();
    for r in 0..recipes {
        let items: Vec<_> = ids
            .iter()
            .map(|id| json!({"ingredient_id": id, "quantity": 1}))
            .collect();
        create(
            conn,
            &recipe_input(&json!({"title": format!("r{r}"), "ingredients": items})).unwrap(),
        )
        .unwrap();
    }
}

#[test]
fn a_page_of_recipes_loads_its_ingredients_in_one_query_whatever_its_size() {
    let db = TestDb::new();
    let mut conn = db.connect();
    seed(&mut conn, 30);
    for limit in [1, 5, 20] {
        let mut page = None;
        let n = count_statements(&mut conn, |c| {
            page = Some(recipe_page(c, 0, limit, None).unwrap())
        });
        let page = page.unwrap();
        assert_eq!(page.items.len() as i64, limit);
        assert!(page.items.iter().all(|r| r.ingredients.len() == 8));
        assert_eq!(
            n, 2,
            "one query for the recipes, one for all their ingredients (limit {limit})"
        );
    }
    let filtered = count_statements(&mut conn, |c| {
        recipe_page(c, 0, 20, Some(1)).unwrap();
    });
    assert_eq!(filtered, 2);
}

#[test]
fn reading_one_recipe_is_a_single_query() {
    let db = TestDb::new();
    let mut conn = db.connect();
    seed(&mut conn, 1);
    let n = count_statements(&mut conn, |c| {
        let recipe = recipes::load(c, 1).unwrap().unwrap();
        assert_eq!(recipe.ingredients.len(), 8);
    });
    assert_eq!(n, 1);
}
