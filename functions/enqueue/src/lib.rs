//! The enqueue Lambda: the Tasker HTTP API behind API Gateway.

use std::sync::Arc;

use tasker::api::{self, ApiStore};
use tasker::{AuthMode, Config, StartupError};

/// The API router over `store`; authentication fails closed when neither a token nor IAM is set.
pub fn app<S: ApiStore>(config: &Config, store: S) -> Result<axum::Router, StartupError> {
    let auth = config.lambda_auth();
    if let AuthMode::Deny(reason) = &auth {
        tracing::error!(reason = %reason, "API authentication is not configured");
    }
    let tasker = Arc::new(config.tasker_over(store)?);
    Ok(api::router(tasker, auth))
}
