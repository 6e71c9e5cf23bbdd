//! The route table (docs/api.md#routes): every resource, the methods it answers (any other
//! method gets 405 with `Allow`) and the handler behind each. What the handlers share has a
//! module of its own: [`state`] (what every handler can read), [`db`] (running diesel off the
//! async executor), [`body`] (reading JSON bodies), [`ids`] (path ids), [`paging`] (limit and
//! opaque cursors) and [`etag`] (ETags and conditional requests). HEAD is answered wherever
//! GET is, by the GET handler (actix sends the headers, not the body; RFC 9110 §9.3.2).

pub mod body;
pub mod db;
pub mod etag;
pub mod health;
pub mod idempotency;
pub mod ids;
pub mod ingredients;
pub mod metrics;
pub mod openapi;
pub mod paging;
pub mod readiness;
pub mod recipes;
pub mod state;

use actix_web::{guard, web, HttpResponse};

use crate::error::ApiError;

/// Registers every route. Each resource answers other methods with 405 and `Allow` (which
/// lists the contract's methods; HEAD goes with GET).
pub fn config(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::scope("/v1")
            .service(
                web::resource("/recipes")
                    .route(get_or_head().to(recipes::list_recipes))
                    .route(web::post().to(recipes::create_recipe))
                    .default_service(web::to(|| not_allowed("GET, POST"))),
            )
            .service(
                web::resource("/recipes/{id}")
                    .route(get_or_head().to(recipes::get_recipe))
                    .route(web::put().to(recipes::replace_recipe))
                    .route(web::patch().to(recipes::patch_recipe))
                    .route(web::delete().to(recipes::delete_recipe))
                    .default_service(web::to(|| not_allowed("GET, PUT, PATCH, DELETE"))),
            )
            .service(
                web::resource("/recipes/{id}/stats")
                    .route(get_or_head().to(recipes::recipe_stats))
                    .default_service(web::to(|| not_allowed("GET"))),
            )
            .service(
                web::resource("/ingredients")
                    .route(get_or_head().to(ingredients::list_ingredients))
                    .route(web::post().to(ingredients::create_ingredient))
                    .default_service(web::to(|| not_allowed("GET, POST"))),
            )
            .service(
                web::resource("/ingredients/{id}")
                    .route(get_or_head().to(ingredients::get_ingredient))
                    .route(web::put().to(ingredients::replace_ingredient))
                    .route(web::delete().to(ingredients::delete_ingredient))
                    .default_service(web::to(|| not_allowed("GET, PUT, DELETE"))),
            )
            .service(
                web::resource("/ingredients/{id}/recipes")
                    .route(get_or_head().to(ingredients::ingredient_recipes))
                    .default_service(web::to(|| not_allowed("GET"))),
            ),
    )
    .service(get_only("/healthz", health::healthz))
    .service(get_only("/readyz", health::readyz))
    .service(get_only("/metrics", metrics::metrics))
    .service(get_only("/openapi.json", openapi::openapi_json))
    .service(get_only("/docs", openapi::docs_index));
}

fn get_only<F, Args>(path: &str, handler: F) -> actix_web::Resource
where
    F: actix_web::Handler<Args>,
    Args: actix_web::FromRequest + 'static,
    F::Output: actix_web::Responder + 'static,
{
    web::resource(path)
        .route(get_or_head().to(handler))
        .default_service(web::to(|| not_allowed("GET")))
}

/// A route for GET and HEAD.
fn get_or_head() -> actix_web::Route {
    web::route().guard(guard::Any(guard::Get()).or(guard::Head()))
}

async fn not_allowed(allow: &'static str) -> Result<HttpResponse, ApiError> {
    Err(ApiError::MethodNotAllowed(allow))
}

/// The answer to every unknown route.
pub async fn not_found() -> Result<HttpResponse, ApiError> {
    Err(ApiError::NotFound("no such route".to_string()))
}
