//! The `/tasks` routes and `/stats`: each handler parses its request, makes one call of the
//! engine and shapes its answer.

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Json, Response};
use serde_json::json;

use super::error::ApiError;
use super::{AppState, json_body, requests};
use crate::engine::{PageWithWaiting, TaskerError, Waiting};
use crate::store::{Created, Store, StoreError};
use crate::task::{NewTask, TaskId};

/// The task id in the path; anything that cannot be one (even undecodable bytes) is a 404.
fn task_id(path: Result<Path<String>, PathRejection>) -> Result<TaskId, ApiError> {
    let Ok(Path(raw)) = path else {
        return Err(ApiError::not_found("(undecodable id)"));
    };
    raw.parse()
        .map_err(|_| ApiError::not_found(&raw.chars().take(64).collect::<String>()))
}

pub(super) async fn create<S: Store>(
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

pub(super) async fn list<S: Store>(
    State(tasker): State<AppState<S>>,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let query = requests::parse_list_query(query.as_deref())?;
    let page = tasker
        .list(&query.filter, query.cursor, query.limit)
        .await?;
    let next = page.next.map(|key| key.to_string());
    let waiting = tasker.waiting_of(&page.tasks).await;
    Ok(Json(PageWithWaiting::new(&page.tasks, &waiting, next)).into_response())
}

pub(super) async fn stats<S: Store>(
    State(tasker): State<AppState<S>>,
) -> Result<Response, ApiError> {
    Ok(Json(tasker.stats().await?).into_response())
}

pub(super) async fn get_task<S: Store>(
    State(tasker): State<AppState<S>>,
    id: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let (task, waiting) = tasker.get_waiting(task_id(id)?).await?;
    Ok(Json(Waiting::view(&task, waiting.as_ref())).into_response())
}

pub(super) async fn cancel<S: Store>(
    State(tasker): State<AppState<S>>,
    id: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let task = tasker.cancel(task_id(id)?).await?;
    tracing::info!(task_id = %task.id, "task cancelled");
    Ok(Json(task).into_response())
}

pub(super) async fn cancel_by_reference<S: Store>(
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

pub(super) async fn retry<S: Store>(
    State(tasker): State<AppState<S>>,
    id: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let task = tasker.retry(task_id(id)?).await?;
    tracing::info!(task_id = %task.id, "task retried");
    Ok(Json(task).into_response())
}

pub(super) async fn batch<S: Store>(
    State(tasker): State<AppState<S>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let body = json_body(&headers, body)?;
    let items = requests::parse_batch(&body, tasker.now())?;
    let (valid, refused): (Vec<_>, Vec<_>) = items
        .into_iter()
        .enumerate()
        .partition(|(_, item)| item.is_ok());
    let (positions, news): (Vec<usize>, Vec<NewTask>) = valid
        .into_iter()
        .filter_map(|(at, item)| Some((at, item.ok()?)))
        .unzip();
    // Runs to completion even if the client disconnects, like a single create.
    let created = tokio::spawn(async move { tasker.create_many(news).await })
        .await
        .map_err(|err| {
            tracing::error!(error = %err, "batch create failed to complete");
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "the batch did not complete",
            )
        })?;
    let mut results = vec![serde_json::Value::Null; positions.len() + refused.len()];
    for (at, item) in refused {
        if let Err(err) = item {
            results[at] = json!({"status": "error", "error": err.body()});
        }
    }
    for (at, outcome) in positions.into_iter().zip(created) {
        results[at] = batch_result(outcome);
    }
    let created = results.iter().filter(|r| r["status"] == "created").count();
    tracing::info!(items = results.len(), created, "batch create");
    Ok(Json(json!({ "results": results })).into_response())
}

/// One item's result: ids only, not whole tasks (echoing 100 payloads could exceed Lambda's
/// 6 MB response limit after the items were already stored).
fn batch_result(outcome: Result<Created, TaskerError>) -> serde_json::Value {
    match outcome {
        Ok(Created::New(task)) => json!({"status": "created", "id": task.id}),
        Ok(Created::Existing(task)) => json!({"status": "existing", "id": task.id}),
        Err(err) => {
            let status = match &err {
                TaskerError::Store(StoreError::Duplicate { .. }) => "duplicate",
                _ => "error",
            };
            json!({"status": status, "error": ApiError::from(err).body()})
        }
    }
}
