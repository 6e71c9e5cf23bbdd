//! `/healthz`, `/readyz`, `/metrics`, `/openapi.json`, `/docs`.

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::spawn_app;

#[tokio::test]
async fn healthz_and_readyz_return_200_when_the_database_is_up() {
    let app = spawn_app().await;
    assert_eq!(app.get_json("/healthz").await, json!({"status": "ok"}));
    assert_eq!(app.get_json("/readyz").await, json!({"status": "ready"}));
}

#[tokio::test]
async fn metrics_count_requests_by_route_template_and_status_and_expose_pool_gauges() {
    let app = spawn_app().await;
    app.get("/v1/recipes/12345").await;
    app.get("/v1/recipes/67890").await;
    app.get("/no/such/route").await;
    let response = app.get("/metrics").await;
    assert_eq!(response.status(), StatusCode::OK);
    assert!(response.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/plain"));
    let text = response.text().await.unwrap();
    assert!(
        text.contains(r#"recipe_api_http_requests_total{method="GET",route="/v1/recipes/{id}",status="404"} 2"#),
        "{text}"
    );
    assert!(text.contains(r#"route="unmatched",status="404""#));
    assert!(
        text.contains(r#"recipe_api_http_request_duration_seconds_count{method="GET",route="/v1/recipes/{id}",status="404"} 2"#),
        "latency by route template and status: {text}"
    );
    assert!(text.contains(r#"recipe_api_db_pool_connections{state="idle"}"#));
    assert!(text.contains("recipe_api_db_pool_max_connections 8"));
    assert!(text.contains("recipe_api_db_queue_waiting 0"), "{text}");
    assert!(!text.contains("12345"), "ids never become label values");
}

#[tokio::test]
async fn the_openapi_document_describes_every_route() {
    let app = spawn_app().await;
    let doc: Value = app.get_json("/openapi.json").await;
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    let expected = [
        ("/v1/recipes", vec!["get", "post"]),
        ("/v1/recipes/{id}", vec!["get", "put", "patch", "delete"]),
        ("/v1/ingredients", vec!["get", "post"]),
        ("/v1/ingredients/{id}", vec!["get", "put", "delete"]),
        ("/v1/ingredients/{id}/recipes", vec!["get"]),
        ("/healthz", vec!["get"]),
        ("/readyz", vec!["get"]),
        ("/metrics", vec!["get"]),
        ("/openapi.json", vec!["get"]),
        ("/docs", vec!["get"]),
    ];
    for (path, methods) in expected {
        for method in methods {
            assert!(
                doc["paths"][path][method].is_object(),
                "{method} {path} missing"
            );
        }
    }
    assert_eq!(
        doc["components"]["securitySchemes"]["bearer"]["scheme"],
        "bearer"
    );
    assert!(doc["components"]["schemas"]["Problem"].is_object());
}

#[tokio::test]
async fn swagger_ui_is_served_from_the_binary_without_a_cdn() {
    let app = spawn_app().await;
    let page = app.get("/docs").await;
    assert_eq!(page.status(), StatusCode::OK);
    let html = page.text().await.unwrap();
    assert!(html.contains("swagger-ui-bundle.js"));
    assert!(
        !html.contains("http://") && !html.contains("https://"),
        "no external assets: {html}"
    );
    for asset in [
        "/docs/swagger-ui-bundle.js",
        "/docs/swagger-ui.css",
        "/docs/swagger-initializer.js",
    ] {
        let response = app.get(asset).await;
        assert_eq!(response.status(), StatusCode::OK, "{asset}");
        if asset.ends_with("initializer.js") {
            assert!(response.text().await.unwrap().contains("/openapi.json"));
        }
    }
}
