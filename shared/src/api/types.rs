//! The `/types` routes: every registered task type with its settings, paused flag and counts;
//! pause and resume.

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Json, Response};
use serde_json::json;

use super::error::ApiError;
use super::{AppState, Store};

pub async fn list<S: Store>(State(tasker): State<AppState<S>>) -> Result<Response, ApiError> {
    Ok(Json(tasker.types().await?).into_response())
}

/// The registered type in the path; any other is a 404.
fn type_in<S: Store>(
    tasker: &AppState<S>,
    path: Result<Path<String>, PathRejection>,
) -> Result<String, ApiError> {
    match path {
        Ok(Path(name)) if tasker.registry().contains(&name) => Ok(name),
        Ok(Path(name)) => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!(
                "task type {:?} is not registered",
                name.chars().take(64).collect::<String>()
            ),
        )),
        Err(_) => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            "task type (undecodable name) is not registered",
        )),
    }
}

async fn set<S: Store>(
    tasker: AppState<S>,
    path: Result<Path<String>, PathRejection>,
    paused: bool,
) -> Result<Response, ApiError> {
    let name = type_in(&tasker, path)?;
    let after = tasker.pause_type(&name, paused).await?;
    let body = match after.get(&name) {
        Some(at) => json!({ "name": name, "paused": true, "pausedAt": at }),
        None => json!({ "name": name, "paused": false }),
    };
    Ok(Json(body).into_response())
}

pub async fn pause<S: Store>(
    State(tasker): State<AppState<S>>,
    path: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    set(tasker, path, true).await
}

pub async fn resume<S: Store>(
    State(tasker): State<AppState<S>>,
    path: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    set(tasker, path, false).await
}
