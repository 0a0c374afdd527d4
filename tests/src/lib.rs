//! Support for Tasker's end-to-end tests: DynamoDB Local tables, PostgreSQL databases, a webhook receiver on
//! 127.0.0.1, a real `tasker` process, and the sample Lambda events.

pub mod browser;
pub mod capacity;
pub mod dynamo;
pub mod events;
pub mod fixtures;
pub mod http;
pub mod postgres;
pub mod process;
pub mod proxy;
pub mod queue;
pub mod receiver;
pub mod sqs;
pub mod template;
pub mod throttle;

use std::path::PathBuf;
use std::time::Duration;

/// The workspace root (where `events/` and `template.yaml` live).
pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(PathBuf::from)
        .unwrap_or_default()
}

/// Polls `check` every 100 ms until it returns `Some`, or panics after `limit` naming `what`.
pub async fn eventually<T, F, Fut>(what: &str, limit: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let started = std::time::Instant::now();
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            started.elapsed() < limit,
            "timed out after {limit:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
