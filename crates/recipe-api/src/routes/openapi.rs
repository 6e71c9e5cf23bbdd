//! The OpenAPI 3 document, generated from the handlers' annotations (`/openapi.json`), and
//! Swagger UI from assets compiled into the binary (`/docs`): no CDN.

use std::sync::{Arc, OnceLock};

use actix_web::HttpResponse;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};
use utoipa_swagger_ui::{Config, SwaggerUi};

use super::{health, ingredients, metrics, recipes};
use crate::error::Problem;
use crate::resources::{
    DailyStats, Ingredient, IngredientBody, IngredientPage, Nutrition, Recipe, RecipeBody,
    RecipeIngredient, RecipeIngredientBody, RecipePage, RecipePatchBody, RecipeStats,
};
use crate::validation::FieldError;

/// Where the document is served.
pub const OPENAPI_PATH: &str = "/openapi.json";

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// The API's OpenAPI document.
#[derive(OpenApi)]
#[openapi(
    info(title = "recipe-api", description = "Recipes and ingredients over MySQL. Errors are RFC 9457 problem documents."),
    paths(
        recipes::list_recipes, recipes::create_recipe, recipes::get_recipe, recipes::replace_recipe,
        recipes::patch_recipe, recipes::delete_recipe, recipes::recipe_stats,
        ingredients::list_ingredients, ingredients::create_ingredient, ingredients::get_ingredient,
        ingredients::replace_ingredient, ingredients::delete_ingredient, ingredients::ingredient_recipes,
        health::healthz, health::readyz, metrics::metrics, openapi_json, docs_index,
    ),
    components(schemas(
        Recipe, RecipeIngredient, RecipePage, RecipeBody, RecipeIngredientBody, RecipePatchBody,
        RecipeStats, DailyStats, Ingredient, Nutrition, IngredientPage, IngredientBody, Problem, FieldError, health::Health,
    )),
    modifiers(&BearerAuth),
)]
pub struct ApiDoc;

fn document() -> &'static [u8] {
    static DOC: OnceLock<Vec<u8>> = OnceLock::new();
    DOC.get_or_init(|| {
        ApiDoc::openapi()
            .to_json()
            .map(String::into_bytes)
            .unwrap_or_default()
    })
}

/// The OpenAPI document.
#[utoipa::path(get, path = "/openapi.json", tag = "operations",
    responses((status = 200, description = "OpenAPI 3 document", content_type = "application/json")))]
pub async fn openapi_json() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/json")
        .body(document())
}

/// Swagger UI's assets under `/docs/`.
pub fn swagger_ui() -> SwaggerUi {
    SwaggerUi::new("/docs/{_:.*}").config(Config::from(OPENAPI_PATH))
}

/// Swagger UI's page at `/docs` itself (its assets are relative, hence the `<base>`).
#[utoipa::path(get, path = "/docs", tag = "operations",
    responses((status = 200, description = "Swagger UI", content_type = "text/html")))]
pub async fn docs_index() -> HttpResponse {
    let page = utoipa_swagger_ui::serve("index.html", Arc::new(Config::from(OPENAPI_PATH)))
        .ok()
        .flatten()
        .map(|file| {
            String::from_utf8_lossy(&file.bytes).replacen(
                "<head>",
                "<head>\n    <base href=\"/docs/\">",
                1,
            )
        });
    match page {
        Some(html) => HttpResponse::Ok()
            .content_type("text/html; charset=utf-8")
            .body(html),
        None => HttpResponse::NotFound().finish(),
    }
}
