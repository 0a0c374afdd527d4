//! The enqueue Lambda: the Tasker HTTP API behind API Gateway.

use std::sync::Arc;

use tasker::Store;
use tasker::api;
use tasker::compose::TaskTypes;
use tasker::push::Push;
use tasker::{AuthMode, Config, StartupError, compose};

/// The enqueue function with `types` (the types a create may name): reads the configuration,
/// opens the store (and the queue in SQS mode) once per cold start, and serves the API.
pub async fn run(types: TaskTypes) -> Result<(), lambda_http::Error> {
    lambda_http::tracing::init_default_subscriber();
    let config = Config::from_env()?;
    let store = compose::open_store(&config).await?;
    let queue = compose::open_queue(&config)
        .await
        .map(|queue| Arc::new(queue) as Arc<dyn Push>);
    lambda_http::run(app(&config, store, queue, types)?).await
}

/// The API router over `store`, sending to `queue` in SQS mode; authentication fails closed
/// when neither a token nor IAM is set.
pub fn app<S: Store>(
    config: &Config,
    store: S,
    queue: Option<Arc<dyn Push>>,
    types: TaskTypes,
) -> Result<axum::Router, StartupError> {
    let auth = config.lambda_auth();
    if let AuthMode::Deny(reason) = &auth {
        tracing::error!(reason = %reason, "API authentication is not configured");
    }
    let mut tasker = compose::tasker_over(config, store, types)?;
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
