//! A linked group (recipes, ingredients, their links) lands in one transaction, in
//! foreign-key-safe order, into MySQL tables that have real foreign keys.

use gcp_bigquery_client::model::table_field_schema::TableFieldSchema;
use mysql::prelude::Queryable;
use partition_sync::runner::Options;

use crate::helpers::*;

const CATALOG: &str = r#"
[[tables]]
source = "cat_links"
target = "cat_links"
mode = "partition"
partition_column = "day"
primary_key = ["recipe_id", "ingredient_id"]
group = "catalog"
depends_on = ["cat_recipes", "cat_ingredients"]
[[tables]]
source = "cat_recipes"
target = "cat_recipes"
mode = "partition"
partition_column = "day"
primary_key = ["id"]
group = "catalog"
[[tables]]
source = "cat_ingredients"
target = "cat_ingredients"
mode = "partition"
partition_column = "day"
primary_key = ["id"]
group = "catalog"
"#;

fn fields(names: &[&str]) -> Vec<TableFieldSchema> {
    let mut v: Vec<TableFieldSchema> = names
        .iter()
        .map(|n| {
            if *n == "name" {
                TableFieldSchema::string(n)
            } else {
                TableFieldSchema::integer(n)
            }
        })
        .collect();
    v.push(TableFieldSchema::date("day"));
    v
}

async fn catalog() -> Fixture {
    let f = Fixture::new().await;
    f.create_table("cat_recipes", fields(&["id", "name"]), Some("day"))
        .await;
    f.create_table("cat_ingredients", fields(&["id", "name"]), Some("day"))
        .await;
    f.create_table(
        "cat_links",
        fields(&["recipe_id", "ingredient_id"]),
        Some("day"),
    )
    .await;
    // MySQL tables with real foreign keys: a wrong load order would fail.
    let mut c = f.mysql();
    c.query_drop("CREATE TABLE cat_recipes (id BIGINT PRIMARY KEY, name LONGTEXT, day DATE, KEY (day)) ENGINE=InnoDB").unwrap();
    c.query_drop("CREATE TABLE cat_ingredients (id BIGINT PRIMARY KEY, name LONGTEXT, day DATE, KEY (day)) ENGINE=InnoDB").unwrap();
    c.query_drop(
        "CREATE TABLE cat_links (recipe_id BIGINT, ingredient_id BIGINT, day DATE, PRIMARY KEY (recipe_id, ingredient_id), KEY (day), \
         FOREIGN KEY (recipe_id) REFERENCES cat_recipes (id), FOREIGN KEY (ingredient_id) REFERENCES cat_ingredients (id)) ENGINE=InnoDB",
    )
    .unwrap();
    let d = "2026-03-01";
    f.insert(
        "cat_recipes",
        (1..=3)
            .map(|i| serde_json::json!({"id": i, "name": format!("recipe {i}"), "day": d}))
            .collect(),
    )
    .await;
    f.insert(
        "cat_ingredients",
        (1..=4)
            .map(|i| serde_json::json!({"id": i, "name": format!("ingredient {i}"), "day": d}))
            .collect(),
    )
    .await;
    f.insert(
        "cat_links",
        vec![
            serde_json::json!({"recipe_id": 1, "ingredient_id": 1, "day": d}),
            serde_json::json!({"recipe_id": 1, "ingredient_id": 2, "day": d}),
            serde_json::json!({"recipe_id": 3, "ingredient_id": 4, "day": d}),
        ],
    )
    .await;
    f
}

#[tokio::test]
async fn a_linked_group_loads_parents_first_and_deletes_children_first() {
    let f = catalog().await;
    let s = f.run(CATALOG, Options::default()).await;
    assert!(s.ok, "{s:?}");
    let order: Vec<_> = s.groups[0]
        .tables
        .iter()
        .map(|t| t.table.as_str())
        .collect();
    assert_eq!(order, vec!["cat_recipes", "cat_ingredients", "cat_links"]);
    assert_eq!(
        (
            count(&f, "cat_recipes"),
            count(&f, "cat_ingredients"),
            count(&f, "cat_links")
        ),
        (3, 4, 3)
    );

    // Reloading a parent partition deletes and reinserts rows that children reference: the
    // children's partition is reloaded in the same transaction, so the keys stay valid.
    f.sql("UPDATE `{ds}.cat_recipes` SET name = 'renamed' WHERE id = 1")
        .await;
    f.sql("DELETE FROM `{ds}.cat_links` WHERE recipe_id = 3")
        .await;
    f.sql("DELETE FROM `{ds}.cat_ingredients` WHERE id = 4")
        .await;
    let s = f.run(CATALOG, Options::default()).await;
    assert!(s.ok, "{s:?}");
    assert_eq!(
        f.rows::<String>("SELECT name FROM cat_recipes WHERE id = 1"),
        vec!["renamed"]
    );
    assert_eq!(
        (count(&f, "cat_ingredients"), count(&f, "cat_links")),
        (3, 2)
    );
}

#[tokio::test]
async fn a_group_that_fails_half_way_leaves_every_table_as_it_was() {
    let f = catalog().await;
    assert!(f.run(CATALOG, Options::default()).await.ok);
    // A link to an ingredient that does not exist: the last table of the group fails on its
    // foreign key after the parents were already reloaded inside the transaction.
    f.sql("UPDATE `{ds}.cat_recipes` SET name = 'should not land' WHERE id = 2")
        .await;
    f.insert(
        "cat_links",
        vec![serde_json::json!({"recipe_id": 2, "ingredient_id": 99, "day": "2026-03-01"})],
    )
    .await;
    let s = f.run(CATALOG, Options::default()).await;
    assert!(!s.ok);
    let err = s.groups[0].error.clone().unwrap();
    assert!(
        err.contains("cat_links") && err.contains("20260301"),
        "{err}"
    );
    assert_eq!(
        f.rows::<String>("SELECT name FROM cat_recipes WHERE id = 2"),
        vec!["recipe 2"]
    );
    assert_eq!(count(&f, "cat_links"), 3);
}
