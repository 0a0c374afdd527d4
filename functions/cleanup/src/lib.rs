//! The cleanup Lambda: once per scheduled event, deletes finished tasks older than the
//! retention, sweeps below the due queue's watermarks for tasks out of the processors' sight,
//! then prints one line of CloudWatch Embedded Metric Format with the counts.

use std::time::Duration;

use lambda_runtime::{LambdaEvent, service_fn};
use tasker::{CleanupSummary, Store, Tasker, TaskerError, compose, metrics};

/// The cleanup function: reads the configuration, opens the store once per cold start, and
/// cleans up once per scheduled event.
pub async fn run() -> Result<(), lambda_runtime::Error> {
    let (config, tasker) = tasker::lambda::cold_start(compose::no_types).await?;
    let settings = CleanupSettings {
        age: config.cleanup_age(),
        sweep_entries: config.sweep_entries,
        service: &config.service,
    };
    let emit = |line: &str| println!("{line}");
    lambda_runtime::run(service_fn(|event: LambdaEvent<serde_json::Value>| {
        handle(&tasker, settings, event, &emit)
    }))
    .await
}

/// What a cleanup run does.
#[derive(Debug, Clone, Copy)]
pub struct CleanupSettings<'a> {
    /// Finished tasks older than this are deleted.
    pub age: Duration,
    /// Entries the sweep reads at most.
    pub sweep_entries: u64,
    /// The `Service` dimension of the metrics.
    pub service: &'a str,
}

/// Deletes finished tasks that finished more than `settings.age` ago and sweeps, then hands the
/// metrics line to `emit` (stdout in Lambda, where CloudWatch picks it up).
pub async fn handle<S: Store>(
    tasker: &Tasker<S>,
    settings: CleanupSettings<'_>,
    event: LambdaEvent<serde_json::Value>,
    emit: &(dyn Fn(&str) + Sync),
) -> Result<CleanupSummary, TaskerError> {
    tracing::info!(request_id = %event.context.request_id, "cleanup invoked");
    let summary = tasker.cleanup(settings.age, settings.sweep_entries).await?;
    emit(&metrics::cleanup_metrics(
        settings.service,
        &summary,
        tasker.now(),
    ));
    Ok(summary)
}
