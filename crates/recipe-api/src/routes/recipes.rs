//! `/v1/recipes`: list, create, read, replace (PUT), merge-patch (PATCH), delete.
//! Writes lock the recipe row (`SELECT … FOR UPDATE`) inside one transaction, check
//! `If-Match` against the locked version, then write the row and its links: of concurrent
//! writers holding the same ETag exactly one wins, and a failed write changes nothing.

use actix_web::http::{header, StatusCode};
use actix_web::{web, HttpRequest, HttpResponse};
use chrono::NaiveDate;
use diesel::mysql::MysqlConnection;
use diesel::QueryResult;
use serde_json::{json, Value};

use super::body::read_json;
use super::db::db;
use super::etag::{etag, EntityTags};
use super::idempotency::{self, empty_response, json_response, IdempotencyKey};
use super::ids::path_id;
use super::paging::{page_params, paginate};
use super::state::AppState;
use crate::auth::Authenticated;
use crate::error::{ApiError, Problem};
use crate::models::idempotency::StoredResponse;
use crate::models::recipes::{self as model, NewRecipe, NewRecipeIngredient, RecipeChangeset};
use crate::models::{self, ingredients as ingredient_model, synced};
use crate::resources::{DailyStats, Recipe, RecipeBody, RecipePage, RecipePatchBody, RecipeStats};
use crate::validation::{self, FieldError, RecipeInput};

const JSON: &[&str] = &["application/json"];
const MERGE_PATCH: &[&str] = &["application/merge-patch+json", "application/json"];

fn with_etag(mut response: actix_web::HttpResponseBuilder, recipe: &Recipe) -> HttpResponse {
    response
        .insert_header((header::ETAG, etag(recipe.version)))
        .json(recipe)
}

/// A write's response: the recipe with its ETag.
fn stored(status: StatusCode, location: Option<String>, recipe: &Recipe) -> StoredResponse {
    json_response(status, location, Some(etag(recipe.version)), recipe)
}

/// List recipes, by id, a page at a time.
#[utoipa::path(
    get, path = "/v1/recipes", tag = "recipes",
    params(
        ("limit" = Option<i64>, Query, description = "Items per page, 1 to 100 (default 20)", minimum = 1, maximum = 100),
        ("cursor" = Option<String>, Query, description = "`next_cursor` of the previous page", min_length = 1, pattern = "^[A-Za-z0-9_-]+$"),
        ("ingredient_id" = Option<i64>, Query, description = "Only recipes that use this ingredient", minimum = 1),
    ),
    responses(
        (status = 200, description = "A page of recipes", body = RecipePage),
        (status = 400, description = "Malformed limit, cursor or ingredient_id", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Database unavailable", body = Problem, content_type = "application/problem+json",
            headers(("Retry-After" = String, description = "Seconds to wait before retrying"))),
    )
)]
pub async fn list_recipes(
    state: web::Data<AppState>,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let params = page_params(req.query_string())?;
    let page = db(&state, move |conn| {
        Ok(recipe_page(
            conn,
            params.after,
            params.limit,
            params.ingredient_id,
        )?)
    })
    .await?;
    Ok(HttpResponse::Ok().json(page))
}

/// Create a recipe.
#[utoipa::path(
    post, path = "/v1/recipes", tag = "recipes",
    params(("Idempotency-Key" = Option<String>, Header, description = "Makes retrying safe: a retry with the same key and request gets the first response again instead of writing twice (docs/api.md#idempotency)", min_length = 1, max_length = 255, pattern = "^[!-~]+$")),
    request_body = RecipeBody,
    security(("bearer" = [])),
    responses(
        (status = 201, description = "Created", body = Recipe,
            headers(("Location" = String, description = "URL of the recipe"), ("ETag" = String, description = "Version of the recipe"))),
        (status = 400, description = "Malformed JSON", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Missing or invalid token", body = Problem, content_type = "application/problem+json",
            headers(("WWW-Authenticate" = String, description = "`Bearer`"))),
        (status = 413, description = "Body too large", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Not application/json", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid fields", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "A request with the same Idempotency-Key is still in progress", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Database unavailable", body = Problem, content_type = "application/problem+json",
            headers(("Retry-After" = String, description = "Seconds to wait before retrying"))),
    )
)]
pub async fn create_recipe(
    _auth: Authenticated,
    state: web::Data<AppState>,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let body = read_json(&req, payload, state.body_limit, JSON).await?;
    let key = IdempotencyKey::from_request(&req, Some(&body))?;
    let input = validation::recipe_input(&body).map_err(ApiError::Validation)?;
    let (response, recipe) = idempotency::write(
        &state,
        key,
        move |conn| create(conn, &input),
        |recipe: &Recipe| {
            let location = format!("/v1/recipes/{}", recipe.id);
            stored(StatusCode::CREATED, Some(location), recipe)
        },
    )
    .await?;
    if let Some(recipe) = recipe {
        tracing::info!(recipe.id = recipe.id, "recipe created");
    }
    Ok(response)
}

/// Read a recipe.
#[utoipa::path(
    get, path = "/v1/recipes/{id}", tag = "recipes",
    params(("id" = i64, Path, description = "Recipe id", minimum = 1)),
    responses(
        (status = 200, description = "The recipe", body = Recipe,
            headers(("ETag" = String, description = "Version of the recipe"))),
        (status = 304, description = "Unchanged since the `If-None-Match` ETag",
            headers(("ETag" = String, description = "Version of the recipe"))),
        (status = 400, description = "Malformed id", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such recipe", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Database unavailable", body = Problem, content_type = "application/problem+json",
            headers(("Retry-After" = String, description = "Seconds to wait before retrying"))),
    )
)]
pub async fn get_recipe(
    state: web::Data<AppState>,
    req: HttpRequest,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = path_id(&path)?;
    let if_none_match = EntityTags::from_header(req.headers(), header::IF_NONE_MATCH);
    let recipe = db(&state, move |conn| Ok(model::load(conn, id)?))
        .await?
        .ok_or_else(|| recipe_not_found(id))?;
    let tag = etag(recipe.version);
    if if_none_match.is_some_and(|tags| tags.matches_weak(&tag)) {
        return Ok(HttpResponse::NotModified()
            .insert_header((header::ETAG, tag))
            .finish());
    }
    Ok(with_etag(HttpResponse::Ok(), &recipe))
}

/// Replace a recipe (all fields and the ingredient list).
#[utoipa::path(
    put, path = "/v1/recipes/{id}", tag = "recipes",
    params(
        ("id" = i64, Path, description = "Recipe id", minimum = 1),
        ("If-Match" = Option<String>, Header, description = "Write only if the recipe still has this ETag"),
        ("Idempotency-Key" = Option<String>, Header, description = "Makes retrying safe: a retry with the same key and request gets the first response again instead of writing twice (docs/api.md#idempotency)", min_length = 1, max_length = 255, pattern = "^[!-~]+$"),
    ),
    request_body = RecipeBody,
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The replaced recipe; new `ETag`", body = Recipe,
            headers(("ETag" = String, description = "New version of the recipe"))),
        (status = 400, description = "Malformed id or JSON", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Missing or invalid token", body = Problem, content_type = "application/problem+json",
            headers(("WWW-Authenticate" = String, description = "`Bearer`"))),
        (status = 404, description = "No such recipe", body = Problem, content_type = "application/problem+json"),
        (status = 412, description = "`If-Match` is stale", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "Body too large", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Not application/json", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid fields", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "A request with the same Idempotency-Key is still in progress", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Database unavailable", body = Problem, content_type = "application/problem+json",
            headers(("Retry-After" = String, description = "Seconds to wait before retrying"))),
    )
)]
pub async fn replace_recipe(
    _auth: Authenticated,
    state: web::Data<AppState>,
    req: HttpRequest,
    path: web::Path<String>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let id = path_id(&path)?;
    let if_match = EntityTags::from_header(req.headers(), header::IF_MATCH);
    let body = read_json(&req, payload, state.body_limit, JSON).await?;
    let key = IdempotencyKey::from_request(&req, Some(&body))?;
    let input = validation::recipe_input(&body).map_err(ApiError::Validation)?;
    let (response, recipe) = idempotency::write(
        &state,
        key,
        move |conn| replace(conn, id, if_match.as_ref(), &input),
        |recipe: &Recipe| stored(StatusCode::OK, None, recipe),
    )
    .await?;
    if let Some(recipe) = recipe {
        tracing::info!(
            recipe.id = id,
            recipe.version = recipe.version,
            "recipe replaced"
        );
    }
    Ok(response)
}

/// Change some fields of a recipe with a JSON merge patch (RFC 7396).
#[utoipa::path(
    patch, path = "/v1/recipes/{id}", tag = "recipes",
    params(
        ("id" = i64, Path, description = "Recipe id", minimum = 1),
        ("If-Match" = Option<String>, Header, description = "Write only if the recipe still has this ETag"),
        ("Idempotency-Key" = Option<String>, Header, description = "Makes retrying safe: a retry with the same key and request gets the first response again instead of writing twice (docs/api.md#idempotency)", min_length = 1, max_length = 255, pattern = "^[!-~]+$"),
    ),
    request_body(content = RecipePatchBody, content_type = "application/merge-patch+json"),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The patched recipe; new `ETag`", body = Recipe,
            headers(("ETag" = String, description = "New version of the recipe"))),
        (status = 400, description = "Malformed id or JSON", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Missing or invalid token", body = Problem, content_type = "application/problem+json",
            headers(("WWW-Authenticate" = String, description = "`Bearer`"))),
        (status = 404, description = "No such recipe", body = Problem, content_type = "application/problem+json"),
        (status = 412, description = "`If-Match` is stale", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "Body too large", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Not a merge patch or JSON", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid fields", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "A request with the same Idempotency-Key is still in progress", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Database unavailable", body = Problem, content_type = "application/problem+json",
            headers(("Retry-After" = String, description = "Seconds to wait before retrying"))),
    )
)]
pub async fn patch_recipe(
    _auth: Authenticated,
    state: web::Data<AppState>,
    req: HttpRequest,
    path: web::Path<String>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let id = path_id(&path)?;
    let if_match = EntityTags::from_header(req.headers(), header::IF_MATCH);
    let patch = read_json(&req, payload, state.body_limit, MERGE_PATCH).await?;
    let key = IdempotencyKey::from_request(&req, Some(&patch))?;
    validation::recipe_patch(&patch).map_err(ApiError::Validation)?;
    let (response, recipe) = idempotency::write(
        &state,
        key,
        move |conn| merge_patch(conn, id, if_match.as_ref(), &patch),
        |recipe: &Recipe| stored(StatusCode::OK, None, recipe),
    )
    .await?;
    if let Some(recipe) = recipe {
        tracing::info!(
            recipe.id = id,
            recipe.version = recipe.version,
            "recipe patched"
        );
    }
    Ok(response)
}

/// Delete a recipe.
#[utoipa::path(
    delete, path = "/v1/recipes/{id}", tag = "recipes",
    params(
        ("id" = i64, Path, description = "Recipe id", minimum = 1),
        ("If-Match" = Option<String>, Header, description = "Delete only if the recipe still has this ETag"),
        ("Idempotency-Key" = Option<String>, Header, description = "Makes retrying safe: a retry with the same key and request gets the first response again instead of writing twice (docs/api.md#idempotency)", min_length = 1, max_length = 255, pattern = "^[!-~]+$"),
    ),
    security(("bearer" = [])),
    responses(
        (status = 204, description = "Deleted"),
        (status = 400, description = "Malformed id", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Missing or invalid token", body = Problem, content_type = "application/problem+json",
            headers(("WWW-Authenticate" = String, description = "`Bearer`"))),
        (status = 404, description = "No such recipe", body = Problem, content_type = "application/problem+json"),
        (status = 412, description = "`If-Match` is stale", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "A request with the same Idempotency-Key is still in progress", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "The Idempotency-Key was used with a different request", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Database unavailable", body = Problem, content_type = "application/problem+json",
            headers(("Retry-After" = String, description = "Seconds to wait before retrying"))),
    )
)]
pub async fn delete_recipe(
    _auth: Authenticated,
    state: web::Data<AppState>,
    req: HttpRequest,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = path_id(&path)?;
    let if_match = EntityTags::from_header(req.headers(), header::IF_MATCH);
    let key = IdempotencyKey::from_request(&req, None)?;
    let (response, deleted) = idempotency::write(
        &state,
        key,
        move |conn| remove(conn, id, if_match.as_ref()),
        |()| empty_response(StatusCode::NO_CONTENT),
    )
    .await?;
    if deleted.is_some() {
        tracing::info!(recipe.id = id, "recipe deleted");
    }
    Ok(response)
}

/// A page of recipes above `after` (optionally those using `ingredient`), with their
/// ingredients loaded in one query.
pub fn recipe_page(
    conn: &mut MysqlConnection,
    after: i64,
    limit: i64,
    ingredient: Option<i64>,
) -> QueryResult<RecipePage> {
    let rows = model::list(conn, after, limit + 1, ingredient)?;
    let (rows, next_cursor) = paginate(rows, limit, |r| r.id);
    let items = model::with_ingredients(conn, rows)?;
    Ok(RecipePage { items, next_cursor })
}

/// Creates a recipe and its links in one transaction.
pub fn create(conn: &mut MysqlConnection, input: &RecipeInput) -> Result<Recipe, ApiError> {
    models::transaction(conn, |conn| {
        check_ingredients_exist(conn, input)?;
        let now = models::now();
        let id = model::insert(
            conn,
            &NewRecipe {
                title: &input.title,
                description: input.description.as_deref(),
                instructions: input.instructions.as_deref(),
                servings: input.servings,
                prep_minutes: input.prep_minutes,
                version: 1,
                created_at: now,
                updated_at: now,
            },
        )?;
        model::insert_links(conn, &links(id, input))?;
        model::load(conn, id)?
            .ok_or_else(|| ApiError::Internal(anyhow::anyhow!("created recipe {id} vanished")))
    })
}

/// Replaces a recipe (PUT) in one transaction, if `If-Match` allows.
pub fn replace(
    conn: &mut MysqlConnection,
    id: i64,
    if_match: Option<&EntityTags>,
    input: &RecipeInput,
) -> Result<Recipe, ApiError> {
    models::transaction(conn, |conn| {
        let current = lock(conn, id, if_match)?;
        write(conn, id, current.version, input)
    })
}

/// Applies a JSON merge patch (PATCH) in one transaction, if `If-Match` allows: the patch is
/// merged into the locked recipe's writable fields and the result validated as a whole.
pub fn merge_patch(
    conn: &mut MysqlConnection,
    id: i64,
    if_match: Option<&EntityTags>,
    patch: &Value,
) -> Result<Recipe, ApiError> {
    models::transaction(conn, |conn| {
        let current = lock(conn, id, if_match)?;
        let version = current.version;
        let existing = model::with_ingredients(conn, vec![current])?
            .pop()
            .ok_or_else(|| recipe_not_found(id))?;
        let mut document = writable_document(&existing);
        json_patch::merge(&mut document, patch);
        let input = validation::recipe_input(&document).map_err(ApiError::Validation)?;
        write(conn, id, version, &input)
    })
}

/// Deletes a recipe in one transaction, if `If-Match` allows.
pub fn remove(
    conn: &mut MysqlConnection,
    id: i64,
    if_match: Option<&EntityTags>,
) -> Result<(), ApiError> {
    models::transaction(conn, |conn| {
        lock(conn, id, if_match)?;
        model::delete(conn, id)?;
        Ok(())
    })
}

/// A recipe's daily statistics, synced from the warehouse.
#[utoipa::path(
    get, path = "/v1/recipes/{id}/stats", tag = "recipes",
    params(
        ("id" = i64, Path, description = "Recipe id", minimum = 1),
        ("from" = Option<String>, Query, description = "First day, `YYYY-MM-DD` (default: unbounded)", format = Date),
        ("to" = Option<String>, Query, description = "Last day, `YYYY-MM-DD`, not before `from` (default: unbounded)", format = Date),
    ),
    responses(
        (status = 200, description = "The recipe's daily rows within the range, by day; empty before the first sync", body = RecipeStats),
        (status = 400, description = "Malformed id, malformed `from`/`to`, or `from` after `to`", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such recipe", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Database unavailable", body = Problem, content_type = "application/problem+json",
            headers(("Retry-After" = String, description = "Seconds to wait before retrying"))),
    )
)]
pub async fn recipe_stats(
    state: web::Data<AppState>,
    req: HttpRequest,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = path_id(&path)?;
    let (from, to) = stats_range(req.query_string())?;
    let stats = db(&state, move |conn| {
        if !model::exists(conn, id)? {
            return Err(recipe_not_found(id));
        }
        let rows = synced::daily_stats(conn, id, from, to)?;
        Ok(RecipeStats {
            recipe_id: id,
            from,
            to,
            items: rows.into_iter().map(DailyStats::from).collect(),
        })
    })
    .await?;
    Ok(HttpResponse::Ok().json(stats))
}

/// The `from` and `to` days of the stats query (`YYYY-MM-DD`, optional); a malformed day or
/// `from` after `to` is a 400.
pub fn stats_range(query_string: &str) -> Result<(Option<NaiveDate>, Option<NaiveDate>), ApiError> {
    let pairs = web::Query::<Vec<(String, String)>>::from_query(query_string)
        .map_err(|_| ApiError::BadRequest("the query string is malformed".to_string()))?
        .into_inner();
    let day = |key: &str| -> Result<Option<NaiveDate>, ApiError> {
        match pairs.iter().find(|(k, _)| k == key) {
            None => Ok(None),
            Some((_, raw)) => validation::iso_date(raw).map(Some).ok_or_else(|| {
                ApiError::BadRequest(format!("{key} must be a date written YYYY-MM-DD"))
            }),
        }
    };
    let (from, to) = (day("from")?, day("to")?);
    if let (Some(from), Some(to)) = (from, to) {
        if from > to {
            return Err(ApiError::BadRequest(format!(
                "from ({from}) is after to ({to})"
            )));
        }
    }
    Ok((from, to))
}

fn recipe_not_found(id: i64) -> ApiError {
    ApiError::NotFound(format!("recipe {id} does not exist"))
}

/// Locks the recipe row for this transaction and checks `If-Match` against it.
fn lock(
    conn: &mut MysqlConnection,
    id: i64,
    if_match: Option<&EntityTags>,
) -> Result<model::RecipeRow, ApiError> {
    let current = model::find_for_update(conn, id)?.ok_or_else(|| recipe_not_found(id))?;
    if let Some(tags) = if_match {
        if !tags.matches_strong(&etag(current.version)) {
            return Err(ApiError::PreconditionFailed);
        }
    }
    Ok(current)
}

/// Writes a validated recipe over the locked row and returns the new representation.
fn write(
    conn: &mut MysqlConnection,
    id: i64,
    version: i64,
    input: &RecipeInput,
) -> Result<Recipe, ApiError> {
    check_ingredients_exist(conn, input)?;
    let changes = RecipeChangeset {
        title: &input.title,
        description: input.description.as_deref(),
        instructions: input.instructions.as_deref(),
        servings: input.servings,
        prep_minutes: input.prep_minutes,
        updated_at: models::now(),
    };
    if model::update(conn, id, version, &changes)? == 0 {
        // Unreachable while the row is locked; kept so a lost race can never write twice.
        return Err(ApiError::PreconditionFailed);
    }
    model::replace_links(conn, id, &links(id, input))?;
    model::load(conn, id)?.ok_or_else(|| recipe_not_found(id))
}

fn links(recipe_id: i64, input: &RecipeInput) -> Vec<NewRecipeIngredient<'_>> {
    input
        .ingredients
        .iter()
        .enumerate()
        .map(|(position, item)| NewRecipeIngredient {
            recipe_id,
            ingredient_id: item.ingredient_id,
            quantity: item.quantity.as_ref(),
            unit: item.unit.as_deref(),
            position: i32::try_from(position).unwrap_or(i32::MAX),
        })
        .collect()
}

/// A 422 naming each `ingredients[i].ingredient_id` that does not exist.
fn check_ingredients_exist(
    conn: &mut MysqlConnection,
    input: &RecipeInput,
) -> Result<(), ApiError> {
    let ids: Vec<i64> = input.ingredients.iter().map(|i| i.ingredient_id).collect();
    let existing = ingredient_model::existing_ids(conn, &ids)?;
    let missing: Vec<FieldError> = ids
        .iter()
        .enumerate()
        .filter(|(_, id)| !existing.contains(id))
        .map(|(i, id)| {
            FieldError::new(
                format!("ingredients[{i}].ingredient_id"),
                format!("ingredient {id} does not exist"),
            )
        })
        .collect();
    if missing.is_empty() {
        Ok(())
    } else {
        Err(ApiError::Validation(missing))
    }
}

/// The writable fields of a recipe as a JSON document, the target of a merge patch.
fn writable_document(recipe: &Recipe) -> Value {
    json!({
        "title": recipe.title,
        "description": recipe.description,
        "instructions": recipe.instructions,
        "servings": recipe.servings,
        "prep_minutes": recipe.prep_minutes,
        "ingredients": recipe.ingredients.iter().map(|i| json!({
            "ingredient_id": i.ingredient_id,
            "quantity": i.quantity,
            "unit": i.unit,
        })).collect::<Vec<_>>(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stats_range_accepts_open_and_closed_ranges_and_rejects_malformed_or_reversed_ones() {
        let day = |s: &str| NaiveDate::parse_from_str(s, "%Y-%m-%d").ok();
        assert_eq!(stats_range("").unwrap(), (None, None));
        assert_eq!(
            stats_range("from=2026-01-01&to=2026-01-01").unwrap(),
            (day("2026-01-01"), day("2026-01-01"))
        );
        assert_eq!(
            stats_range("to=2026-03-31").unwrap(),
            (None, day("2026-03-31"))
        );
        for bad in [
            "from=2026-02-30",
            "from=2026-1-1",
            "to=tomorrow",
            "from=",
            "from=2026-03-02&to=2026-03-01",
        ] {
            assert!(
                matches!(stats_range(bad), Err(ApiError::BadRequest(_))),
                "{bad}"
            );
        }
    }
}
