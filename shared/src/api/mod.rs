//! The HTTP API: one axum router, served by the enqueue Lambda and by `tasker serve`.

pub mod auth;
pub mod error;
pub mod hosts;
pub mod requests;
pub mod schedules;
pub mod strict_json;
pub mod types;

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::{DefaultBodyLimit, Path, RawQuery, State};
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE, REFERRER_POLICY, X_CONTENT_TYPE_OPTIONS};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Json, Response};
use axum::routing::{delete, get, post, put};
use futures::StreamExt;
use serde_json::json;

use self::auth::AuthMode;
use self::error::ApiError;
use crate::engine::Tasker;
use crate::store::{Created, Store};
use crate::task::{MAX_PAYLOAD_BYTES, Task, TaskId};

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

type AppState<S> = Arc<Tasker<S>>;

/// The router with every route, authentication and JSON errors for unknown routes and methods.
pub fn router<S: Store>(tasker: Arc<Tasker<S>>, auth: AuthMode) -> Router {
    Router::new()
        .route(
            "/tasks",
            post(create::<S>)
                .merge(get(list::<S>))
                .fallback(method_not_allowed),
        )
        .route("/stats", get(stats::<S>).fallback(method_not_allowed))
        .route(
            "/tasks/cancel",
            post(cancel_by_reference::<S>).fallback(method_not_allowed),
        )
        .route(
            "/tasks/{id}",
            get(get_task::<S>)
                .merge(delete(cancel::<S>))
                .fallback(method_not_allowed),
        )
        .route(
            "/tasks/{id}/retry",
            post(retry::<S>).fallback(method_not_allowed),
        )
        .route(
            "/tasks/batch",
            post(batch::<S>)
                .fallback(method_not_allowed)
                .layer(DefaultBodyLimit::max(MAX_BATCH_BODY_BYTES)),
        )
        .route(
            "/schedules",
            post(schedules::create::<S>)
                .merge(get(schedules::list::<S>))
                .fallback(method_not_allowed),
        )
        .route(
            "/schedules/{name}",
            get(schedules::get::<S>)
                .merge(put(schedules::put::<S>))
                .merge(delete(schedules::delete::<S>))
                .fallback(method_not_allowed),
        )
        .route(
            "/schedules/{name}/pause",
            post(schedules::pause::<S>).fallback(method_not_allowed),
        )
        .route(
            "/schedules/{name}/resume",
            post(schedules::resume::<S>).fallback(method_not_allowed),
        )
        .route(
            "/schedules/{name}/trigger",
            post(schedules::trigger::<S>).fallback(method_not_allowed),
        )
        .route("/types", get(types::list::<S>).fallback(method_not_allowed))
        .route(
            "/types/{type}/pause",
            post(types::pause::<S>).fallback(method_not_allowed),
        )
        .route(
            "/types/{type}/resume",
            post(types::resume::<S>).fallback(method_not_allowed),
        )
        .route(HEALTH_PATH, get(health).fallback(method_not_allowed))
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

/// The task id in the path; anything that cannot be one (even undecodable bytes) is a 404.
fn task_id(path: Result<Path<String>, PathRejection>) -> Result<TaskId, ApiError> {
    let Ok(Path(raw)) = path else {
        return Err(ApiError::not_found("(undecodable id)"));
    };
    raw.parse()
        .map_err(|_| ApiError::not_found(&raw.chars().take(64).collect::<String>()))
}

async fn create<S: Store>(
    State(tasker): State<AppState<S>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let body = json_body(&headers, body)?;
    let new = requests::parse_create(&body, tasker.now())?;
    // A create runs to completion even if the client disconnects, so its store writes
    // (reference guard, then task) are never cut in half.
    let created = tokio::spawn(async move { tasker.create(new).await })
        .await
        .map_err(|err| {
            tracing::error!(error = %err, "create task failed to complete");
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "the create did not complete",
            )
        })??;
    match created {
        Created::New(task) => {
            tracing::info!(task_id = %task.id, task_type = %task.task_type, scheduled_at = %task.scheduled_at, "task created");
            Ok((StatusCode::CREATED, Json(task)).into_response())
        }
        Created::Existing(task) => {
            tracing::info!(task_id = %task.id, task_type = %task.task_type, "idempotent create returned the existing task");
            Ok((StatusCode::OK, Json(task)).into_response())
        }
    }
}

async fn list<S: Store>(
    State(tasker): State<AppState<S>>,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let query = requests::parse_list_query(query.as_deref())?;
    let page = tasker
        .list(&query.filter, query.cursor, query.limit)
        .await?;
    let next = page.next.map(|key| key.to_string());
    Ok(Json(json!({ "tasks": page.tasks, "nextCursor": next })).into_response())
}

async fn stats<S: Store>(State(tasker): State<AppState<S>>) -> Result<Response, ApiError> {
    Ok(Json(tasker.stats().await?).into_response())
}

async fn get_task<S: Store>(
    State(tasker): State<AppState<S>>,
    id: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let task = tasker.get(task_id(id)?).await?;
    Ok(Json(task).into_response())
}

async fn cancel<S: Store>(
    State(tasker): State<AppState<S>>,
    id: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let task = tasker.cancel(task_id(id)?).await?;
    tracing::info!(task_id = %task.id, "task cancelled");
    Ok(Json(task).into_response())
}

async fn cancel_by_reference<S: Store>(
    State(tasker): State<AppState<S>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let body = json_body(&headers, body)?;
    let request = requests::parse_cancel_by_reference(&body)?;
    let ids = tasker
        .cancel_by_reference(&request.reference_uid, request.task_type.as_deref())
        .await?;
    tracing::info!(reference_uid = %request.reference_uid, cancelled = ids.len(), "tasks cancelled by reference");
    let ids: Vec<String> = ids.iter().map(ToString::to_string).collect();
    Ok(Json(json!({ "cancelled": ids.len(), "ids": ids })).into_response())
}

async fn retry<S: Store>(
    State(tasker): State<AppState<S>>,
    id: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let task = tasker.retry(task_id(id)?).await?;
    tracing::info!(task_id = %task.id, "task retried");
    Ok(Json(task).into_response())
}

async fn batch<S: Store>(
    State(tasker): State<AppState<S>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let body = json_body(&headers, body)?;
    let items = requests::parse_batch(&body, tasker.now())?;
    // Runs to completion even if the client disconnects, like a single create.
    let results = tokio::spawn(async move {
        let outcomes: Vec<(serde_json::Value, Option<Task>)> = futures::stream::iter(items)
            .map(|item| {
                let tasker = Arc::clone(&tasker);
                async move {
                    let new = match item {
                        Ok(new) => new,
                        Err(err) => return (json!({"status": "error", "error": err.body()}), None),
                    };
                    // Ids only, not whole tasks: echoing 100 payloads could exceed Lambda's
                    // 6 MB response limit after the items were already stored.
                    match tasker.create_held(new).await {
                        Ok(Created::New(task)) => {
                            (json!({"status": "created", "id": task.id}), Some(task))
                        }
                        Ok(Created::Existing(task)) => {
                            (json!({"status": "existing", "id": task.id}), None)
                        }
                        Err(err) => {
                            let err = ApiError::from(err);
                            let status = if err.code == "duplicate" {
                                "duplicate"
                            } else {
                                "error"
                            };
                            (json!({"status": status, "error": err.body()}), None)
                        }
                    }
                }
            })
            .buffered(BATCH_CONCURRENCY)
            .collect()
            .await;
        let (results, created): (Vec<_>, Vec<_>) = outcomes.into_iter().unzip();
        // SQS mode: the batch's messages, ten per call.
        let created: Vec<Task> = created.into_iter().flatten().collect();
        tasker.deliver(&created).await;
        results
    })
    .await
    .map_err(|err| {
        tracing::error!(error = %err, "batch create failed to complete");
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "the batch did not complete",
        )
    })?;
    let created = results.iter().filter(|r| r["status"] == "created").count();
    tracing::info!(items = results.len(), created, "batch create");
    Ok(Json(json!({ "results": results })).into_response())
}

/// Creates of one batch written at once.
const BATCH_CONCURRENCY: usize = 8;

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
