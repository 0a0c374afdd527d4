//! The `/schedules` routes: create, list, read, replace, delete, pause, resume and trigger.

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Json, Response};
use serde_json::{Value, json};

use super::error::ApiError;
use super::payload_text::raw_members;
use super::requests::{
    invalid, object, optional_integer, optional_string, required_string, stored_payload,
};
use super::{AppState, Store, json_body};
use crate::engine::ScheduleView;
use crate::schedule::{Missed, ScheduleSpec, validate_name};
use crate::task::MAX_ATTEMPTS_LIMIT;

const FIELDS: &[&str] = &[
    "name",
    "cron",
    "timezone",
    "type",
    "payload",
    "maxAttempts",
    "missed",
    "paused",
];

/// Parses a schedule body. `name` comes from the path when `path_name` is given (the body may
/// repeat it); `timezone` defaults to UTC, `payload` to `{}`, `missed` to `latest`.
pub fn parse_schedule(body: &[u8], path_name: Option<&str>) -> Result<ScheduleSpec, ApiError> {
    let map = object(body, FIELDS)?;
    let name = match (path_name, optional_string(&map, "name")?) {
        (None, None) => return Err(crate::task::ValidationError::Missing("name").into()),
        (None, Some(name)) => name,
        (Some(path), Some(body)) if body != path => {
            return Err(invalid(
                "name",
                format!(
                    "is {body:?} in the body but {path:?} in the path; leave it out or make them agree"
                ),
            ));
        }
        (Some(path), _) => path.to_owned(),
    };
    let raw = raw_members(body);
    let payload = stored_payload(&map, raw.get("payload").map(|raw| raw.get()))?
        .unwrap_or_else(|| "{}".to_owned());
    let missed = match optional_string(&map, "missed")? {
        None => Missed::default(),
        Some(text) => text.parse::<Missed>()?,
    };
    let paused = match map.get("paused") {
        None => false,
        Some(Value::Bool(paused)) => *paused,
        Some(_) => return Err(invalid("paused", "must be true or false")),
    };
    let max_attempts = optional_integer(&map, "maxAttempts", (1, u64::from(MAX_ATTEMPTS_LIMIT)))?
        .map(|n| u32::try_from(n).map_err(|_| invalid("maxAttempts", "is too large")))
        .transpose()?;
    Ok(ScheduleSpec {
        name,
        cron: required_string(&map, "cron")?,
        timezone: optional_string(&map, "timezone")?.unwrap_or_else(|| "UTC".to_owned()),
        task_type: required_string(&map, "type")?,
        payload,
        max_attempts,
        missed,
        paused,
    })
}

/// The schedule name in the path; one that cannot be a name is a 404 (none has it).
fn name_in(path: Result<Path<String>, PathRejection>) -> Result<String, ApiError> {
    let not_found = |name: &str| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!(
                "schedule {:?} not found",
                name.chars().take(64).collect::<String>()
            ),
        )
    };
    let Ok(Path(name)) = path else {
        return Err(not_found("(undecodable name)"));
    };
    validate_name(&name).map_err(|_| not_found(&name))?;
    Ok(name)
}

fn view(status: StatusCode, schedule: crate::schedule::Schedule) -> Response {
    (status, Json(ScheduleView::of(schedule))).into_response()
}

pub async fn create<S: Store>(
    State(tasker): State<AppState<S>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let spec = parse_schedule(&json_body(&headers, body)?, None)?;
    let schedule = tasker.create_schedule(spec).await?;
    tracing::info!(schedule = %schedule.name, cron = %schedule.cron, timezone = %schedule.timezone, "schedule created");
    Ok(view(StatusCode::CREATED, schedule))
}

pub async fn list<S: Store>(State(tasker): State<AppState<S>>) -> Result<Response, ApiError> {
    let schedules: Vec<ScheduleView> = tasker
        .schedules()
        .await?
        .into_iter()
        .map(ScheduleView::of)
        .collect();
    Ok(Json(json!({ "schedules": schedules })).into_response())
}

pub async fn get<S: Store>(
    State(tasker): State<AppState<S>>,
    name: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    Ok(view(
        StatusCode::OK,
        tasker.schedule(&name_in(name)?).await?,
    ))
}

pub async fn put<S: Store>(
    State(tasker): State<AppState<S>>,
    name: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let Ok(Path(name)) = name else {
        return Err(invalid("name", "is not valid UTF-8"));
    };
    let spec = parse_schedule(&json_body(&headers, body)?, Some(&name))?;
    let (schedule, created) = tasker.put_schedule(spec).await?;
    tracing::info!(schedule = %schedule.name, created, "schedule written");
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok(view(status, schedule))
}

pub async fn delete<S: Store>(
    State(tasker): State<AppState<S>>,
    name: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let name = name_in(name)?;
    tasker.delete_schedule(&name).await?;
    tracing::info!(schedule = %name, "schedule deleted");
    Ok(StatusCode::NO_CONTENT.into_response())
}

pub async fn pause<S: Store>(
    State(tasker): State<AppState<S>>,
    name: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let schedule = tasker.pause_schedule(&name_in(name)?).await?;
    tracing::info!(schedule = %schedule.name, "schedule paused");
    Ok(view(StatusCode::OK, schedule))
}

pub async fn resume<S: Store>(
    State(tasker): State<AppState<S>>,
    name: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let schedule = tasker.resume_schedule(&name_in(name)?).await?;
    tracing::info!(schedule = %schedule.name, "schedule resumed");
    Ok(view(StatusCode::OK, schedule))
}

pub async fn trigger<S: Store>(
    State(tasker): State<AppState<S>>,
    name: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let name = name_in(name)?;
    let task = tasker.trigger_schedule(&name).await?;
    tracing::info!(schedule = %name, task_id = %task.id, "schedule triggered");
    Ok((StatusCode::CREATED, Json(task)).into_response())
}
