//! Bearer-token authentication for every route but `/healthz`.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::header::AUTHORIZATION;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::error::ApiError;
use crate::config::AuthMode;

/// Lets a request through only if `mode` allows it.
pub async fn require_auth(
    State(mode): State<Arc<AuthMode>>,
    request: Request,
    next: Next,
) -> Response {
    if request.uri().path() == super::HEALTH_PATH {
        return next.run(request).await;
    }
    match mode.as_ref() {
        AuthMode::Open | AuthMode::Iam => next.run(request).await,
        AuthMode::Deny(reason) => {
            tracing::error!(reason = %reason, "request refused: authentication is not configured");
            ApiError::unauthorized("authentication is not configured on this service")
                .into_response()
        }
        AuthMode::Token(expected) => {
            let presented = request
                .headers()
                .get(AUTHORIZATION)
                .and_then(|value| value.to_str().ok())
                .and_then(|value| value.strip_prefix("Bearer "));
            match presented {
                Some(token) if token_matches(token, expected) => next.run(request).await,
                Some(_) => ApiError::unauthorized("the bearer token is not valid").into_response(),
                None => ApiError::unauthorized("missing `Authorization: Bearer <token>` header")
                    .into_response(),
            }
        }
    }
}

/// Compares digests in constant time, so neither the content nor the length of the expected
/// token leaks through timing.
fn token_matches(presented: &str, expected: &str) -> bool {
    let presented = Sha256::digest(presented.as_bytes());
    let expected = Sha256::digest(expected.as_bytes());
    presented.as_slice().ct_eq(expected.as_slice()).into()
}
