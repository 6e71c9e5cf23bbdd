//! Queries on `recipes` and `recipe_ingredients`. A recipe is read as its row plus its links;
//! a page of recipes loads the links of the whole page in one query (no N+1).

use std::collections::HashMap;

use bigdecimal::BigDecimal;
use chrono::NaiveDateTime;
use diesel::mysql::MysqlConnection;
use diesel::prelude::*;

use crate::resources::{decimal_to_f64, Recipe, RecipeIngredient};
use crate::schema::{ingredients, recipe_ingredients, recipes};

/// A row of `recipes`.
#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = recipes, check_for_backend(diesel::mysql::Mysql))]
pub struct RecipeRow {
    pub id: i64,
    pub title: String,
    pub description: Option<String>,
    pub instructions: Option<String>,
    pub servings: Option<i32>,
    pub prep_minutes: Option<i32>,
    pub version: i64,
    pub created_at: NaiveDateTime,
    pub updated_at: NaiveDateTime,
}

/// Insert form of a recipe (version starts at 1).
#[derive(Debug, Insertable)]
#[diesel(table_name = recipes)]
pub struct NewRecipe<'a> {
    pub title: &'a str,
    pub description: Option<&'a str>,
    pub instructions: Option<&'a str>,
    pub servings: Option<i32>,
    pub prep_minutes: Option<i32>,
    pub version: i64,
    pub created_at: NaiveDateTime,
    pub updated_at: NaiveDateTime,
}

/// Full replacement of a recipe's columns; `None` writes NULL.
#[derive(Debug, AsChangeset)]
#[diesel(table_name = recipes, treat_none_as_null = true)]
pub struct RecipeChangeset<'a> {
    pub title: &'a str,
    pub description: Option<&'a str>,
    pub instructions: Option<&'a str>,
    pub servings: Option<i32>,
    pub prep_minutes: Option<i32>,
    pub updated_at: NaiveDateTime,
}

/// Insert form of one ingredient link.
#[derive(Debug, Insertable)]
#[diesel(table_name = recipe_ingredients)]
pub struct NewRecipeIngredient<'a> {
    pub recipe_id: i64,
    pub ingredient_id: i64,
    pub quantity: Option<&'a BigDecimal>,
    pub unit: Option<&'a str>,
    pub position: i32,
}

/// One link with the ingredient's name.
type LinkRow = (i64, i64, String, Option<BigDecimal>, Option<String>);

/// Whether a recipe with this id exists (without reading its text columns).
pub fn exists(conn: &mut MysqlConnection, id: i64) -> QueryResult<bool> {
    diesel::select(diesel::dsl::exists(recipes::table.find(id))).get_result(conn)
}

/// The recipe row with this id, locked until the transaction ends (`SELECT … FOR UPDATE`), so
/// concurrent writers of one recipe run one after the other and each sees the last version.
pub fn find_for_update(conn: &mut MysqlConnection, id: i64) -> QueryResult<Option<RecipeRow>> {
    recipes::table
        .find(id)
        .select(RecipeRow::as_select())
        .for_update()
        .first(conn)
        .optional()
}

/// Up to `limit` recipes with an id above `after`, by id; with `ingredient`, only those that
/// use it (read through the `(ingredient_id, recipe_id)` index).
pub fn list(
    conn: &mut MysqlConnection,
    after: i64,
    limit: i64,
    ingredient: Option<i64>,
) -> QueryResult<Vec<RecipeRow>> {
    match ingredient {
        None => recipes::table
            .filter(recipes::id.gt(after))
            .order(recipes::id.asc())
            .limit(limit)
            .select(RecipeRow::as_select())
            .load(conn),
        Some(ingredient) => recipe_ingredients::table
            .inner_join(recipes::table)
            .filter(recipe_ingredients::ingredient_id.eq(ingredient))
            .filter(recipe_ingredients::recipe_id.gt(after))
            .order(recipe_ingredients::recipe_id.asc())
            .limit(limit)
            .select(RecipeRow::as_select())
            .load(conn),
    }
}

/// The links of all these recipes with ingredient names, in one query.
fn links(conn: &mut MysqlConnection, recipe_ids: &[i64]) -> QueryResult<Vec<LinkRow>> {
    if recipe_ids.is_empty() {
        return Ok(Vec::new());
    }
    recipe_ingredients::table
        .inner_join(ingredients::table)
        .filter(recipe_ingredients::recipe_id.eq_any(recipe_ids))
        .order((
            recipe_ingredients::recipe_id.asc(),
            recipe_ingredients::position.asc(),
        ))
        .select((
            recipe_ingredients::recipe_id,
            recipe_ingredients::ingredient_id,
            ingredients::name,
            recipe_ingredients::quantity,
            recipe_ingredients::unit,
        ))
        .load(conn)
}

/// Builds representations of these rows, loading their ingredients in one query.
pub fn with_ingredients(
    conn: &mut MysqlConnection,
    rows: Vec<RecipeRow>,
) -> QueryResult<Vec<Recipe>> {
    let ids: Vec<i64> = rows.iter().map(|r| r.id).collect();
    let mut by_recipe: HashMap<i64, Vec<RecipeIngredient>> = HashMap::new();
    for (recipe_id, ingredient_id, name, quantity, unit) in links(conn, &ids)? {
        by_recipe
            .entry(recipe_id)
            .or_default()
            .push(RecipeIngredient {
                ingredient_id,
                name,
                quantity: quantity.as_ref().map(decimal_to_f64),
                unit,
            });
    }
    Ok(rows
        .into_iter()
        .map(|row| {
            let ingredients = by_recipe.remove(&row.id).unwrap_or_default();
            representation(row, ingredients)
        })
        .collect())
}

/// The full representation of one recipe, in one query (the hot path of `GET /v1/recipes/{id}`):
/// the recipe row left-joined to its links and their ingredients.
pub fn load(conn: &mut MysqlConnection, id: i64) -> QueryResult<Option<Recipe>> {
    type Link = (i64, String, Option<BigDecimal>, Option<String>);
    let rows: Vec<(RecipeRow, Option<Link>)> = recipes::table
        .left_join(recipe_ingredients::table.inner_join(ingredients::table))
        .filter(recipes::id.eq(id))
        .order(recipe_ingredients::position.nullable().asc())
        .select((
            RecipeRow::as_select(),
            (
                recipe_ingredients::ingredient_id,
                ingredients::name,
                recipe_ingredients::quantity,
                recipe_ingredients::unit,
            )
                .nullable(),
        ))
        .load(conn)?;
    let mut rows = rows.into_iter();
    let Some((row, first)) = rows.next() else {
        return Ok(None);
    };
    let ingredients = first
        .into_iter()
        .chain(rows.filter_map(|(_, link)| link))
        .map(|(ingredient_id, name, quantity, unit)| RecipeIngredient {
            ingredient_id,
            name,
            quantity: quantity.as_ref().map(decimal_to_f64),
            unit,
        })
        .collect();
    Ok(Some(representation(row, ingredients)))
}

fn representation(row: RecipeRow, ingredients: Vec<RecipeIngredient>) -> Recipe {
    Recipe {
        ingredients,
        id: row.id,
        title: row.title,
        description: row.description,
        instructions: row.instructions,
        servings: row.servings,
        prep_minutes: row.prep_minutes,
        version: row.version,
        created_at: row.created_at,
        updated_at: row.updated_at,
    }
}

/// Bumps the version (and so the ETag) of every recipe that uses the ingredient, whose
/// representation shows the ingredient's name (docs/api.md#etags). Returns the recipes bumped.
pub fn bump_versions_using(conn: &mut MysqlConnection, ingredient_id: i64) -> QueryResult<usize> {
    let using = recipe_ingredients::table
        .filter(recipe_ingredients::ingredient_id.eq(ingredient_id))
        .select(recipe_ingredients::recipe_id);
    diesel::update(recipes::table.filter(recipes::id.eq_any(using)))
        .set(recipes::version.eq(recipes::version + 1))
        .execute(conn)
}

/// Inserts a recipe row and returns its id.
pub fn insert(conn: &mut MysqlConnection, new: &NewRecipe<'_>) -> QueryResult<i64> {
    diesel::insert_into(recipes::table)
        .values(new)
        .execute(conn)?;
    super::ingredients::last_insert_id(conn)
}

/// Replaces the columns of a recipe and bumps its version, only if it still has
/// `expected_version`; returns the rows matched (0 means another writer got there first).
pub fn update(
    conn: &mut MysqlConnection,
    id: i64,
    expected_version: i64,
    changes: &RecipeChangeset<'_>,
) -> QueryResult<usize> {
    diesel::update(
        recipes::table
            .filter(recipes::id.eq(id))
            .filter(recipes::version.eq(expected_version)),
    )
    .set((changes, recipes::version.eq(recipes::version + 1)))
    .execute(conn)
}

/// Replaces the ingredient links of a recipe.
pub fn replace_links(
    conn: &mut MysqlConnection,
    recipe_id: i64,
    links: &[NewRecipeIngredient<'_>],
) -> QueryResult<()> {
    diesel::delete(recipe_ingredients::table.filter(recipe_ingredients::recipe_id.eq(recipe_id)))
        .execute(conn)?;
    insert_links(conn, links)
}

/// Inserts ingredient links in one statement.
pub fn insert_links(
    conn: &mut MysqlConnection,
    links: &[NewRecipeIngredient<'_>],
) -> QueryResult<()> {
    if !links.is_empty() {
        diesel::insert_into(recipe_ingredients::table)
            .values(links)
            .execute(conn)?;
    }
    Ok(())
}

/// Deletes a recipe (its links go with it, `ON DELETE CASCADE`); returns the rows deleted.
pub fn delete(conn: &mut MysqlConnection, id: i64) -> QueryResult<usize> {
    diesel::delete(recipes::table.find(id)).execute(conn)
}
