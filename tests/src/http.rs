//! The API router in process, with a `sendWebhook` that does nothing, and one call helper.

use std::sync::Arc;

use axum::body::Body;
use http::{Method, Request, StatusCode};
use serde_json::Value;
use tasker::Store;
use tasker::api;
use tasker::{AuthMode, ProcessorSettings, Registry, Tasker};

/// The router over `store`, where `sendWebhook` is registered with its payload rules and
/// always succeeds (it sends nothing).
pub fn router<S: Store>(store: S, auth: AuthMode) -> axum::Router {
    let mut registry = Registry::new();
    registry
        .register("sendWebhook", |_| async { Ok(()) })
        .expect("register");
    // The real type's payload rules, with a handler that sends nothing.
    registry.set_payload_check("sendWebhook", tasker::handlers::webhook::check_payload);
    let tasker = Tasker::new(store, registry, ProcessorSettings::default());
    api::router(Arc::new(tasker), auth)
}

/// Sends one request (JSON content type, bearer `token` if given); the status and the JSON body
/// (`null` when the body is not JSON).
pub async fn call(
    app: &axum::Router,
    method: Method,
    path: &str,
    body: impl Into<Body>,
    token: Option<&str>,
) -> (StatusCode, Value) {
    let mut request = Request::builder()
        .method(method)
        .uri(path)
        .header("content-type", "application/json");
    if let Some(token) = token {
        if let Ok(value) = http::HeaderValue::try_from(format!("Bearer {token}")) {
            request = request.header("authorization", value);
        }
    }
    crate::fixtures::answer(app, request.body(body.into()).expect("request")).await
}
