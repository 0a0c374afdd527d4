//! Bearer-token authentication for every route but `/healthz`.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::header::AUTHORIZATION;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::error::ApiError;
/// How the HTTP API authenticates callers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthMode {
    /// `Authorization: Bearer <TASKER_API_TOKEN>` on every route but `/healthz`.
    Token(String),
    /// API Gateway IAM authorization in front; the function trusts what reaches it.
    Iam,
    /// No authentication (only `tasker serve` on loopback without a token).
    Open,
    /// Misconfigured: every route but `/healthz` answers 401; the reason is logged.
    Deny(String),
}

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
            ApiError::unauthorized("authentication is not configured on this service", false)
                .into_response()
        }
        AuthMode::Token(expected) => {
            let presented = request
                .headers()
                .get(AUTHORIZATION)
                .and_then(|value| value.to_str().ok())
                .and_then(bearer_token);
            match presented {
                Some(token) if token_matches(token, expected) => next.run(request).await,
                Some(_) => {
                    ApiError::unauthorized("the bearer token is not valid", true).into_response()
                }
                None => {
                    ApiError::unauthorized("missing `Authorization: Bearer <token>` header", false)
                        .into_response()
                }
            }
        }
    }
}

/// The token of an `Authorization: Bearer <token>` value. The scheme is matched without
/// regard to case (RFC 9110 section 11.1); spaces around the token are not part of it.
fn bearer_token(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim_start().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// Compares digests in constant time, so neither the content nor the length of the expected
/// token leaks through timing.
pub(crate) fn token_matches(presented: &str, expected: &str) -> bool {
    let presented = Sha256::digest(presented.as_bytes());
    let expected = Sha256::digest(expected.as_bytes());
    presented.as_slice().ct_eq(expected.as_slice()).into()
}

#[cfg(test)]
mod tests {
    use super::bearer_token;

    #[test]
    fn the_scheme_is_matched_without_regard_to_case() {
        for value in ["Bearer t0k", "bearer t0k", "BEARER  t0k ", "bEaReR t0k"] {
            assert_eq!(bearer_token(value), Some("t0k"), "{value:?}");
        }
        for value in ["Basic dXNlcg==", "Bearer", "Bearer   ", "Bearert0k", "t0k"] {
            assert_eq!(bearer_token(value), None, "{value:?}");
        }
    }
}
