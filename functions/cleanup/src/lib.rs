//! The cleanup Lambda: deletes finished tasks older than the retention, once per scheduled event.

use std::time::Duration;

use lambda_runtime::{Diagnostic, LambdaEvent};
use tasker::store::TaskPurger;
use tasker::{CleanupSummary, Tasker, TaskerError};

/// The cleanup run failed.
#[derive(Debug, thiserror::Error)]
#[error("cleanup run failed: {0}")]
pub struct CleanupError(#[from] pub TaskerError);

impl From<CleanupError> for Diagnostic {
    fn from(err: CleanupError) -> Self {
        Diagnostic {
            error_type: err.0.error_type().into(),
            error_message: err.to_string(),
        }
    }
}

/// Deletes finished tasks that finished more than `retention` ago.
pub async fn handle<S: TaskPurger>(
    tasker: &Tasker<S>,
    retention: Duration,
    event: LambdaEvent<serde_json::Value>,
) -> Result<CleanupSummary, CleanupError> {
    tracing::info!(request_id = %event.context.request_id, "cleanup invoked");
    Ok(tasker.cleanup(retention).await?)
}
