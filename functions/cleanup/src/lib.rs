//! The cleanup Lambda: deletes finished tasks older than the retention, once per scheduled event.

use std::time::Duration;

use lambda_runtime::LambdaEvent;
use tasker::store::TaskPurger;
use tasker::{CleanupSummary, Tasker, TaskerError};

/// Deletes finished tasks that finished more than `retention` ago.
pub async fn handle<S: TaskPurger>(
    tasker: &Tasker<S>,
    retention: Duration,
    event: LambdaEvent<serde_json::Value>,
) -> Result<CleanupSummary, TaskerError> {
    tracing::info!(request_id = %event.context.request_id, "cleanup invoked");
    tasker.cleanup(retention).await
}
