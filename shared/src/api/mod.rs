//! The HTTP API: one axum router, served by the enqueue Lambda and by `tasker serve`.

pub mod auth;
pub mod error;
pub mod hosts;
pub mod payload_text;
pub mod requests;
pub mod schedules;
pub mod strict_json;
mod tasks;
pub mod types;

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::DefaultBodyLimit;
use axum::extract::rejection::BytesRejection;
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE, REFERRER_POLICY, X_CONTENT_TYPE_OPTIONS};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Json, Response};
use axum::routing::{delete, get, post, put};
use serde_json::json;

use self::auth::AuthMode;
use self::error::ApiError;
use crate::engine::Tasker;
use crate::store::Store;
use crate::task::MAX_PAYLOAD_BYTES;

/// The unauthenticated liveness route.
pub const HEALTH_PATH: &str = "/healthz";
/// Largest request body read; a JSON payload may need escaping room beyond its own limit.
pub const MAX_BODY_BYTES: usize = 4 * MAX_PAYLOAD_BYTES;
/// Largest `POST /tasks/batch` body: below API Gateway's and Lambda's 6 MB request limit.
pub const MAX_BATCH_BODY_BYTES: usize = 5 * 1024 * 1024;

/// Every route `router` serves, as `(method, path)`; `openapi.yaml` documents exactly these.
pub const ROUTES: &[(&str, &str)] = &[
    ("POST", "/tasks"),
    ("GET", "/tasks"),
    ("GET", "/tasks/{id}"),
    ("DELETE", "/tasks/{id}"),
    ("POST", "/tasks/cancel"),
    ("POST", "/tasks/{id}/retry"),
    ("POST", "/tasks/batch"),
    ("GET", "/stats"),
    ("POST", "/schedules"),
    ("GET", "/schedules"),
    ("GET", "/schedules/{name}"),
    ("PUT", "/schedules/{name}"),
    ("DELETE", "/schedules/{name}"),
    ("POST", "/schedules/{name}/pause"),
    ("POST", "/schedules/{name}/resume"),
    ("POST", "/schedules/{name}/trigger"),
    ("GET", "/types"),
    ("POST", "/types/{type}/pause"),
    ("POST", "/types/{type}/resume"),
    ("GET", HEALTH_PATH),
];

/// What every handler is given: the Tasker the router serves.
type AppState<S> = Arc<Tasker<S>>;

/// The router with every route, authentication and JSON errors for unknown routes and methods.
pub fn router<S: Store>(tasker: Arc<Tasker<S>>, auth: AuthMode) -> Router {
    Router::new()
        .route(
            "/tasks",
            post(tasks::create::<S>).merge(get(tasks::list::<S>)),
        )
        .route("/stats", get(tasks::stats::<S>))
        .route("/tasks/cancel", post(tasks::cancel_by_reference::<S>))
        .route(
            "/tasks/{id}",
            get(tasks::get_task::<S>).merge(delete(tasks::cancel::<S>)),
        )
        .route("/tasks/{id}/retry", post(tasks::retry::<S>))
        .route(
            "/tasks/batch",
            post(tasks::batch::<S>).layer(DefaultBodyLimit::max(MAX_BATCH_BODY_BYTES)),
        )
        .route(
            "/schedules",
            post(schedules::create::<S>).merge(get(schedules::list::<S>)),
        )
        .route(
            "/schedules/{name}",
            get(schedules::get::<S>)
                .merge(put(schedules::put::<S>))
                .merge(delete(schedules::delete::<S>)),
        )
        .route("/schedules/{name}/pause", post(schedules::pause::<S>))
        .route("/schedules/{name}/resume", post(schedules::resume::<S>))
        .route("/schedules/{name}/trigger", post(schedules::trigger::<S>))
        .route("/types", get(types::list::<S>))
        .route("/types/{type}/pause", post(types::pause::<S>))
        .route("/types/{type}/resume", post(types::resume::<S>))
        .route(HEALTH_PATH, get(health))
        .method_not_allowed_fallback(method_not_allowed)
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(tasker)
        .layer(axum::middleware::from_fn_with_state(
            Arc::new(auth),
            auth::require_auth,
        ))
        .layer(axum::middleware::map_response(harden))
}

/// Headers every answer carries: no content sniffing, no referrer, and no caching of task
/// data by browsers or proxies.
pub async fn harden(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    // The dashboard's pages keep their own (`same-origin`): its forms must carry their
    // `Origin`, which `no-referrer` would blank.
    headers
        .entry(REFERRER_POLICY)
        .or_insert(HeaderValue::from_static("no-referrer"));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// Reads a JSON body: the request must say `Content-Type: application/json` (parameters such
/// as `charset` allowed), and a too-large or unreadable body is a JSON error.
///
/// The type check keeps browsers out: a cross-site page can POST `text/plain` without asking
/// first (a CORS "simple request"), but never `application/json`.
pub(crate) fn json_body(
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Bytes, ApiError> {
    let given = headers
        .get(CONTENT_TYPE)
        .map(|value| String::from_utf8_lossy(value.as_bytes()).into_owned());
    let is_json = given.as_deref().is_some_and(|value| {
        let essence = value.split(';').next().unwrap_or_default().trim();
        essence.eq_ignore_ascii_case("application/json")
    });
    if !is_json {
        let given = given.map_or_else(
            || "none was given".to_owned(),
            |value| format!("got `{}`", value.chars().take(64).collect::<String>()),
        );
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            format!("the `Content-Type` header must be application/json; {given}"),
        ));
    }
    body.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                "the request body is larger than this route accepts",
            )
        } else {
            ApiError::bad_request("invalid_body", rejection.body_text())
        }
    })
}

async fn health() -> Response {
    Json(json!({ "status": "ok" })).into_response()
}

async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "route_not_found", "no such route")
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "this route does not accept that method",
    )
}
