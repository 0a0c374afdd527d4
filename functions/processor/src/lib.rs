//! The processor Lambda: one processQueue run per scheduled event.

use std::time::{Instant, SystemTime};

use lambda_runtime::{Diagnostic, LambdaEvent};
use tasker::store::TaskQueue;
use tasker::{RunSummary, Tasker, TaskerError};

/// A run failed before it could process anything.
#[derive(Debug, thiserror::Error)]
#[error("processor run failed: {0}")]
pub struct ProcessorError(#[from] pub TaskerError);

impl From<ProcessorError> for Diagnostic {
    fn from(err: ProcessorError) -> Self {
        Diagnostic {
            error_type: err.0.error_type().into(),
            error_message: err.to_string(),
        }
    }
}

/// Runs the queue until the invocation's deadline leaves less than the configured margin.
pub async fn handle<S: TaskQueue>(
    tasker: &Tasker<S>,
    event: LambdaEvent<serde_json::Value>,
) -> Result<RunSummary, ProcessorError> {
    let remaining = event
        .context
        .deadline()
        .duration_since(SystemTime::now())
        .unwrap_or_default();
    tracing::info!(
        request_id = %event.context.request_id,
        event_time = event.payload.get("time").and_then(|t| t.as_str()).unwrap_or("-"),
        remaining_ms = u64::try_from(remaining.as_millis()).unwrap_or(u64::MAX),
        "processor invoked"
    );
    Ok(tasker
        .process_queue(Some(Instant::now() + remaining))
        .await?)
}
