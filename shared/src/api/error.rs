//! The API's error body, `{"error":{"code":"...","message":"..."}}`, and the mapping from domain errors.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::engine::TaskerError;
use crate::report::Report;
use crate::store::StoreError;
use crate::task::{TaskId, ValidationError};

/// An error answer: a status, a machine-readable code and a message for people.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// Stable machine-readable code.
    pub code: &'static str,
    /// Human message; names the field at fault where there is one.
    pub message: String,
    /// For `duplicate`: the task that is still pending or running.
    pub existing_id: Option<TaskId>,
    /// For 401: the `WWW-Authenticate` challenge (RFC 6750).
    pub challenge: Option<&'static str>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Body<'a> {
    error: Detail<'a>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Detail<'a> {
    code: &'a str,
    message: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    existing_id: Option<String>,
}

impl ApiError {
    /// An error with `status`, `code` and `message`.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            existing_id: None,
            challenge: None,
        }
    }

    /// 400 with `code`.
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    /// 404 for a task id.
    pub fn not_found(id: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("task {id} not found"),
        )
    }

    /// 401 with the bearer challenge; `invalid_token` when a token was given but is wrong.
    pub fn unauthorized(message: impl Into<String>, invalid_token: bool) -> Self {
        Self {
            challenge: Some(if invalid_token {
                r#"Bearer realm="tasker", error="invalid_token""#
            } else {
                r#"Bearer realm="tasker""#
            }),
            ..Self::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
        }
    }
}

impl ApiError {
    /// The JSON body `{"error": {...}}`.
    pub fn body(&self) -> serde_json::Value {
        let body = Body {
            error: Detail {
                code: self.code,
                message: &self.message,
                existing_id: self.existing_id.map(|id| id.to_string()),
            },
        };
        serde_json::to_value(body).unwrap_or_default()
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status, Json(self.body())).into_response();
        if let Some(challenge) = self.challenge {
            response.headers_mut().insert(
                axum::http::header::WWW_AUTHENTICATE,
                axum::http::HeaderValue::from_static(challenge),
            );
        }
        response
    }
}

impl From<ValidationError> for ApiError {
    fn from(err: ValidationError) -> Self {
        match err {
            ValidationError::PayloadTooLarge(_) => Self::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                err.to_string(),
            ),
            ValidationError::Missing(_) => Self::bad_request("missing_field", err.to_string()),
            ValidationError::Invalid { .. } => Self::bad_request("invalid_field", err.to_string()),
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(err: StoreError) -> Self {
        match &err {
            StoreError::NotFound(id) => Self::not_found(&id.to_string()),
            StoreError::Conflict { .. } => {
                Self::new(StatusCode::CONFLICT, "conflict", err.to_string())
            }
            StoreError::Duplicate { existing } => Self {
                existing_id: Some(*existing),
                ..Self::new(StatusCode::CONFLICT, "duplicate", err.to_string())
            },
            StoreError::LeaseLost(_) => {
                Self::new(StatusCode::CONFLICT, "conflict", err.to_string())
            }
            StoreError::Unavailable { .. } => {
                tracing::warn!(error = %Report(&err), "store unavailable");
                Self::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "store_unavailable",
                    "the task store is busy or unreachable; try again",
                )
            }
            StoreError::Backend { .. } => {
                tracing::error!(error = %Report(&err), "store failure");
                Self::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal",
                    "the task store failed; see the service logs",
                )
            }
        }
    }
}

impl From<TaskerError> for ApiError {
    fn from(err: TaskerError) -> Self {
        match err {
            TaskerError::Invalid(invalid) => invalid.into(),
            TaskerError::UnknownType(_) => Self::bad_request("unknown_type", err.to_string()),
            TaskerError::Store(store) => store.into(),
            TaskerError::ScheduleNotFound(_) => {
                Self::new(StatusCode::NOT_FOUND, "not_found", err.to_string())
            }
            TaskerError::ScheduleExists(_) => {
                Self::new(StatusCode::CONFLICT, "schedule_exists", err.to_string())
            }
            // Only the mover asks for the queue, and only a run checks the leases; no route
            // does either.
            TaskerError::NoQueue | TaskerError::LeaseTooLong(_) => Self::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "the service is misconfigured; see the service logs",
            ),
        }
    }
}
