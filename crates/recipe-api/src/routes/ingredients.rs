//! `/v1/ingredients`: list (with a case-insensitive name-prefix search), create, read, rename,
//! delete, and the recipes that use an ingredient.

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use diesel::mysql::MysqlConnection;

use super::body::read_json;
use super::db::db;
use super::idempotency::{self, empty_response, json_response, IdempotencyKey};
use super::ids::path_id;
use super::paging::{page_params, paginate};
use super::state::AppState;
use crate::auth::Authenticated;
use crate::error::{classify, ApiError, DbErrorClass, Problem};
use crate::models;
use crate::models::ingredients::{self as model, NewIngredient};
use crate::models::recipes as recipe_model;
use crate::models::synced;
use crate::resources::{Ingredient, IngredientBody, IngredientPage, RecipePage};
use crate::validation;

const JSON: &[&str] = &["application/json"];

fn not_found(id: i64) -> ApiError {
    ApiError::NotFound(format!("ingredient {id} does not exist"))
}

fn duplicate(name: &str) -> ApiError {
    ApiError::Conflict(format!(
        "an ingredient named '{name}' already exists (names ignore case)"
    ))
}

/// Maps a unique violation to a 409 naming the duplicate.
fn unique_name(error: diesel::result::Error, name: &str) -> ApiError {
    match classify(&error) {
        DbErrorClass::UniqueViolation => duplicate(name),
        _ => error.into(),
    }
}

/// Attaches the synced nutrition facts to `items`, in one query.
fn with_nutrition(
    conn: &mut MysqlConnection,
    mut items: Vec<Ingredient>,
) -> Result<Vec<Ingredient>, ApiError> {
    let ids: Vec<i64> = items.iter().map(|i| i.id).collect();
    let mut facts = synced::nutrition(conn, &ids)?;
    for item in &mut items {
        item.nutrition = facts.remove(&item.id);
    }
    Ok(items)
}

/// [`with_nutrition`] of one ingredient.
fn one_with_nutrition(
    conn: &mut MysqlConnection,
    item: Ingredient,
) -> Result<Ingredient, ApiError> {
    with_nutrition(conn, vec![item])?
        .pop()
        .ok_or_else(|| ApiError::Internal(anyhow::anyhow!("ingredient lost its nutrition")))
}

/// List ingredients, by id, a page at a time.
#[utoipa::path(
    get, path = "/v1/ingredients", tag = "ingredients",
    params(
        ("limit" = Option<i64>, Query, description = "Items per page, 1 to 100 (default 20)", minimum = 1, maximum = 100),
        ("cursor" = Option<String>, Query, description = "`next_cursor` of the previous page", min_length = 1, pattern = "^[A-Za-z0-9_-]+$"),
        ("q" = Option<String>, Query, description = "Case-insensitive name prefix"),
    ),
    responses(
        (status = 200, description = "A page of ingredients", body = IngredientPage),
        (status = 400, description = "Malformed limit or cursor", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Database unavailable", body = Problem, content_type = "application/problem+json",
            headers(("Retry-After" = String, description = "Seconds to wait before retrying"))),
    )
)]
pub async fn list_ingredients(
    state: web::Data<AppState>,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let params = page_params(req.query_string())?;
    let page = db(&state, move |conn| {
        let rows = model::list(conn, params.after, params.limit + 1, params.q.as_deref())?;
        let (rows, next_cursor) = paginate(rows, params.limit, |r| r.id);
        let items = rows.into_iter().map(Ingredient::from).collect();
        Ok(IngredientPage {
            items: with_nutrition(conn, items)?,
            next_cursor,
        })
    })
    .await?;
    Ok(HttpResponse::Ok().json(page))
}

/// Create an ingredient.
#[utoipa::path(
    post, path = "/v1/ingredients", tag = "ingredients",
    params(("Idempotency-Key" = Option<String>, Header, description = "Makes retrying safe: a retry with the same key and request gets the first response again instead of writing twice (docs/api.md#idempotency)", min_length = 1, max_length = 255, pattern = "^[!-~]+$")),
    request_body = IngredientBody,
    security(("bearer" = [])),
    responses(
        (status = 201, description = "Created", body = Ingredient,
            headers(("Location" = String, description = "URL of the ingredient"))),
        (status = 400, description = "Malformed JSON", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Missing or invalid token", body = Problem, content_type = "application/problem+json",
            headers(("WWW-Authenticate" = String, description = "`Bearer`"))),
        (status = 409, description = "The name exists (ignoring case)", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "Body too large", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Not application/json", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid fields", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Database unavailable", body = Problem, content_type = "application/problem+json",
            headers(("Retry-After" = String, description = "Seconds to wait before retrying"))),
    )
)]
pub async fn create_ingredient(
    _auth: Authenticated,
    state: web::Data<AppState>,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let body = read_json(&req, payload, state.body_limit, JSON).await?;
    let key = IdempotencyKey::from_request(&req, Some(&body))?;
    let input = validation::ingredient_input(&body).map_err(ApiError::Validation)?;
    let work = move |conn: &mut MysqlConnection| {
        models::transaction(conn, |conn| {
            let now = models::now();
            let new = NewIngredient {
                name: &input.name,
                created_at: now,
                updated_at: now,
            };
            let id = model::insert(conn, &new).map_err(|e| unique_name(e, &input.name))?;
            let created = model::find(conn, id)?
                .map(Ingredient::from)
                .ok_or_else(|| {
                    ApiError::Internal(anyhow::anyhow!("created ingredient {id} vanished"))
                })?;
            one_with_nutrition(conn, created)
        })
    };
    let (response, ingredient) = idempotency::write(&state, key, work, |i: &Ingredient| {
        let location = format!("/v1/ingredients/{}", i.id);
        json_response(StatusCode::CREATED, Some(location), None, i)
    })
    .await?;
    if let Some(ingredient) = ingredient {
        tracing::info!(ingredient.id = ingredient.id, "ingredient created");
    }
    Ok(response)
}

/// Read an ingredient.
#[utoipa::path(
    get, path = "/v1/ingredients/{id}", tag = "ingredients",
    params(("id" = i64, Path, description = "Ingredient id", minimum = 1)),
    responses(
        (status = 200, description = "The ingredient", body = Ingredient),
        (status = 400, description = "Malformed id", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such ingredient", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Database unavailable", body = Problem, content_type = "application/problem+json",
            headers(("Retry-After" = String, description = "Seconds to wait before retrying"))),
    )
)]
pub async fn get_ingredient(
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = path_id(&path)?;
    let ingredient = db(&state, move |conn| match model::find(conn, id)? {
        Some(row) => one_with_nutrition(conn, Ingredient::from(row)),
        None => Err(not_found(id)),
    })
    .await?;
    Ok(HttpResponse::Ok().json(ingredient))
}

/// Rename an ingredient.
#[utoipa::path(
    put, path = "/v1/ingredients/{id}", tag = "ingredients",
    params(
        ("id" = i64, Path, description = "Ingredient id", minimum = 1),
        ("Idempotency-Key" = Option<String>, Header, description = "Makes retrying safe: a retry with the same key and request gets the first response again instead of writing twice (docs/api.md#idempotency)", min_length = 1, max_length = 255, pattern = "^[!-~]+$"),
    ),
    request_body = IngredientBody,
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The renamed ingredient", body = Ingredient),
        (status = 400, description = "Malformed id or JSON", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Missing or invalid token", body = Problem, content_type = "application/problem+json",
            headers(("WWW-Authenticate" = String, description = "`Bearer`"))),
        (status = 404, description = "No such ingredient", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Another ingredient has the name (ignoring case)", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "Body too large", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Not application/json", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid fields", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Database unavailable", body = Problem, content_type = "application/problem+json",
            headers(("Retry-After" = String, description = "Seconds to wait before retrying"))),
    )
)]
pub async fn replace_ingredient(
    _auth: Authenticated,
    state: web::Data<AppState>,
    req: HttpRequest,
    path: web::Path<String>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let id = path_id(&path)?;
    let body = read_json(&req, payload, state.body_limit, JSON).await?;
    let key = IdempotencyKey::from_request(&req, Some(&body))?;
    let input = validation::ingredient_input(&body).map_err(ApiError::Validation)?;
    let work = move |conn: &mut MysqlConnection| {
        models::transaction(conn, |conn| {
            let before = model::find(conn, id)?.ok_or_else(|| not_found(id))?;
            model::rename(conn, id, &input.name, models::now())
                .map_err(|e| unique_name(e, &input.name))?;
            if before.name != input.name {
                // The recipes that show this name have a new representation: new ETags.
                recipe_model::bump_versions_using(conn, id)?;
            }
            let renamed = model::find(conn, id)?
                .map(Ingredient::from)
                .ok_or_else(|| not_found(id))?;
            one_with_nutrition(conn, renamed)
        })
    };
    let (response, renamed) = idempotency::write(&state, key, work, |i: &Ingredient| {
        json_response(StatusCode::OK, None, None, i)
    })
    .await?;
    if renamed.is_some() {
        tracing::info!(ingredient.id = id, "ingredient renamed");
    }
    Ok(response)
}

/// Delete an ingredient that no recipe uses.
#[utoipa::path(
    delete, path = "/v1/ingredients/{id}", tag = "ingredients",
    params(
        ("id" = i64, Path, description = "Ingredient id", minimum = 1),
        ("Idempotency-Key" = Option<String>, Header, description = "Makes retrying safe: a retry with the same key and request gets the first response again instead of writing twice (docs/api.md#idempotency)", min_length = 1, max_length = 255, pattern = "^[!-~]+$"),
    ),
    security(("bearer" = [])),
    responses(
        (status = 204, description = "Deleted"),
        (status = 400, description = "Malformed id", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Missing or invalid token", body = Problem, content_type = "application/problem+json",
            headers(("WWW-Authenticate" = String, description = "`Bearer`"))),
        (status = 404, description = "No such ingredient", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "A recipe uses it", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "The Idempotency-Key was used with a different request", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Database unavailable", body = Problem, content_type = "application/problem+json",
            headers(("Retry-After" = String, description = "Seconds to wait before retrying"))),
    )
)]
pub async fn delete_ingredient(
    _auth: Authenticated,
    state: web::Data<AppState>,
    req: HttpRequest,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = path_id(&path)?;
    let key = IdempotencyKey::from_request(&req, None)?;
    let in_use =
        move || ApiError::Conflict(format!("ingredient {id} is used by at least one recipe"));
    // One statement: the foreign key (ON DELETE RESTRICT) says "in use", zero rows "absent".
    let work = move |conn: &mut MysqlConnection| match model::delete(conn, id) {
        Ok(0) => Err(not_found(id)),
        Ok(_) => Ok(()),
        Err(e) if classify(&e) == DbErrorClass::ForeignKeyViolation => Err(in_use()),
        Err(e) => Err(e.into()),
    };
    let (response, deleted) = idempotency::write(&state, key, work, |()| {
        empty_response(StatusCode::NO_CONTENT)
    })
    .await?;
    if deleted.is_some() {
        tracing::info!(ingredient.id = id, "ingredient deleted");
    }
    Ok(response)
}

/// List the recipes that use an ingredient, a page at a time.
#[utoipa::path(
    get, path = "/v1/ingredients/{id}/recipes", tag = "ingredients",
    params(
        ("id" = i64, Path, description = "Ingredient id", minimum = 1),
        ("limit" = Option<i64>, Query, description = "Items per page, 1 to 100 (default 20)", minimum = 1, maximum = 100),
        ("cursor" = Option<String>, Query, description = "`next_cursor` of the previous page", min_length = 1, pattern = "^[A-Za-z0-9_-]+$"),
    ),
    responses(
        (status = 200, description = "A page of recipes", body = RecipePage),
        (status = 400, description = "Malformed id, limit or cursor", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such ingredient", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Database unavailable", body = Problem, content_type = "application/problem+json",
            headers(("Retry-After" = String, description = "Seconds to wait before retrying"))),
    )
)]
pub async fn ingredient_recipes(
    state: web::Data<AppState>,
    req: HttpRequest,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = path_id(&path)?;
    let params = page_params(req.query_string())?;
    let page = db(&state, move |conn| {
        if !model::exists(conn, id)? {
            return Err(not_found(id));
        }
        Ok(super::recipes::recipe_page(
            conn,
            params.after,
            params.limit,
            Some(id),
        )?)
    })
    .await?;
    Ok(HttpResponse::Ok().json(page))
}
