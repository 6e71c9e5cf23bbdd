//! JSON representations of the resources (what clients read) and the documented shapes of
//! request bodies (what clients send). Request bodies are validated by [`crate::validation`];
//! the input types here exist for the OpenAPI document.

use bigdecimal::{BigDecimal, ToPrimitive};
use chrono::{NaiveDate, NaiveDateTime, SecondsFormat};
use serde::{Deserialize, Serialize, Serializer};
use utoipa::ToSchema;

/// Serialises a UTC timestamp stored without zone as RFC 3339 with `Z`.
fn rfc3339<S: Serializer>(value: &NaiveDateTime, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(&value.and_utc().to_rfc3339_opts(SecondsFormat::AutoSi, true))
}

/// [`rfc3339`] for a nullable column.
fn rfc3339_opt<S: Serializer>(
    value: &Option<NaiveDateTime>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    match value {
        Some(value) => rfc3339(value, serializer),
        None => serializer.serialize_none(),
    }
}

/// A decimal column as a JSON number.
pub fn decimal_to_f64(value: &BigDecimal) -> f64 {
    value.to_f64().unwrap_or(0.0)
}

/// An ingredient.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Ingredient {
    pub id: i64,
    pub name: String,
    #[serde(serialize_with = "rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: NaiveDateTime,
    #[serde(serialize_with = "rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub updated_at: NaiveDateTime,
    /// Synced from the warehouse (`ingredient_nutrition`); null when it has no row for this
    /// ingredient (or nothing has been synced yet). Read-only.
    pub nutrition: Option<Nutrition>,
}

/// Nutrition facts per 100 g, from the warehouse's `ingredient_nutrition` (kept in sync by
/// stream-sync). A field the warehouse leaves empty is null.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct Nutrition {
    /// Energy, kcal per 100 g.
    pub calories: Option<f64>,
    /// Protein, grams per 100 g.
    pub protein_g: Option<f64>,
    /// Fat, grams per 100 g.
    pub fat_g: Option<f64>,
    /// Carbohydrates, grams per 100 g.
    pub carbs_g: Option<f64>,
}

/// One day of a recipe's statistics, from the warehouse's `recipe_daily_stats` (kept in sync
/// by partition-sync, one partition per day).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct DailyStats {
    #[schema(value_type = String, format = Date)]
    pub day: NaiveDate,
    /// Page views that day.
    pub views: Option<i64>,
    /// Times the recipe was cooked that day.
    pub cooks: Option<i64>,
    /// Average rating (1 to 5) of that day's ratings; null without any.
    pub avg_rating: Option<f64>,
    /// When the warehouse last computed the row.
    #[serde(serialize_with = "rfc3339_opt")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub updated_at: Option<NaiveDateTime>,
}

/// A recipe's daily statistics within `from..=to`, by day. Days without a row are absent.
#[derive(Debug, Serialize, ToSchema)]
pub struct RecipeStats {
    pub recipe_id: i64,
    /// The requested first day (null: unbounded).
    #[schema(value_type = Option<String>, format = Date)]
    pub from: Option<NaiveDate>,
    /// The requested last day (null: unbounded).
    #[schema(value_type = Option<String>, format = Date)]
    pub to: Option<NaiveDate>,
    pub items: Vec<DailyStats>,
}

/// One ingredient of a recipe.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct RecipeIngredient {
    pub ingredient_id: i64,
    pub name: String,
    pub quantity: Option<f64>,
    pub unit: Option<String>,
}

/// A recipe with its ingredients in order.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Recipe {
    pub id: i64,
    pub title: String,
    pub description: Option<String>,
    pub instructions: Option<String>,
    pub servings: Option<i32>,
    pub prep_minutes: Option<i32>,
    /// Increases by one on every write; the `ETag` is this number in quotes.
    pub version: i64,
    pub ingredients: Vec<RecipeIngredient>,
    #[serde(serialize_with = "rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: NaiveDateTime,
    #[serde(serialize_with = "rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub updated_at: NaiveDateTime,
}

/// A page of recipes; pass `next_cursor` as `cursor` to get the next one (null: last page).
#[derive(Debug, Serialize, ToSchema)]
pub struct RecipePage {
    pub items: Vec<Recipe>,
    pub next_cursor: Option<String>,
}

/// A page of ingredients; pass `next_cursor` as `cursor` to get the next one (null: last page).
#[derive(Debug, Serialize, ToSchema)]
pub struct IngredientPage {
    pub items: Vec<Ingredient>,
    pub next_cursor: Option<String>,
}

/// Body of `POST /v1/ingredients` and `PUT /v1/ingredients/{id}`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct IngredientBody {
    /// Trimmed, 1 to 100 characters, unique ignoring case.
    #[schema(min_length = 1, max_length = 100)]
    pub name: String,
}

/// One entry of a recipe body's ingredient list.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RecipeIngredientBody {
    /// An existing ingredient, at most once per recipe.
    #[schema(minimum = 1)]
    pub ingredient_id: i64,
    #[schema(minimum = 0, maximum = 1000000)]
    pub quantity: Option<f64>,
    #[schema(max_length = 32)]
    pub unit: Option<String>,
}

/// Body of `POST /v1/recipes` and `PUT /v1/recipes/{id}` (a full replacement).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RecipeBody {
    /// Trimmed, 1 to 200 characters.
    #[schema(min_length = 1, max_length = 200)]
    pub title: String,
    #[schema(max_length = 2000)]
    pub description: Option<String>,
    #[schema(max_length = 20000)]
    pub instructions: Option<String>,
    #[schema(minimum = 1, maximum = 100)]
    pub servings: Option<i32>,
    #[schema(minimum = 0, maximum = 10080)]
    pub prep_minutes: Option<i32>,
    /// At most 100 entries; replaces the recipe's list.
    #[serde(default)]
    #[schema(max_items = 100)]
    pub ingredients: Vec<RecipeIngredientBody>,
}

/// Body of `PATCH /v1/recipes/{id}`: a JSON merge patch (RFC 7396) of a [`RecipeBody`].
/// Absent fields are kept, `null` clears a field, `ingredients` replaces the whole list.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RecipePatchBody {
    #[schema(min_length = 1, max_length = 200)]
    pub title: Option<String>,
    #[schema(max_length = 2000)]
    pub description: Option<String>,
    #[schema(max_length = 20000)]
    pub instructions: Option<String>,
    #[schema(minimum = 1, maximum = 100)]
    pub servings: Option<i32>,
    #[schema(minimum = 0, maximum = 10080)]
    pub prep_minutes: Option<i32>,
    #[schema(max_items = 100)]
    pub ingredients: Option<Vec<RecipeIngredientBody>>,
}
