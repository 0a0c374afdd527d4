//! The enqueue Lambda: the Tasker HTTP API behind API Gateway.

use std::sync::Arc;

use tasker::api::{self, ApiStore};
use tasker::push::Push;
use tasker::{AuthMode, Config, StartupError};

/// The API router over `store`, sending to `queue` in SQS mode; authentication fails closed
/// when neither a token nor IAM is set.
pub fn app<S: ApiStore>(
    config: &Config,
    store: S,
    queue: Option<Arc<dyn Push>>,
) -> Result<axum::Router, StartupError> {
    let auth = config.lambda_auth();
    if let AuthMode::Deny(reason) = &auth {
        tracing::error!(reason = %reason, "API authentication is not configured");
    }
    let mut tasker = config.tasker_over(store)?;
    if let Some(queue) = queue {
        tasker = tasker.with_push(queue);
    }
    let tasker = Arc::new(tasker);
    let api = api::router(Arc::clone(&tasker), auth.clone());
    if config.dashboard {
        // Beside the API, with its own sessions; closed like the API without a token.
        return Ok(tasker::dashboard::beside(api, tasker, auth, false));
    }
    Ok(api)
}
