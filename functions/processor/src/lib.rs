//! The processor Lambda: one invocation of the runtime per scheduled event (due schedules
//! fire; poll mode runs the queue, once or through its window; SQS mode moves tasks onto the
//! queue), then one line of CloudWatch Embedded Metric Format with the run's counts and the
//! backlog. Errors reach Lambda through the library's one `TaskerError` to `Diagnostic`
//! conversion.

use std::time::Duration;

use lambda_runtime::{LambdaEvent, service_fn};
use tasker::compose::TaskTypes;
use tasker::lambda::FitCheck;
use tasker::runtime::{self, Invocation};
use tasker::{PollSettings, Report, RunSummary, Store, Tasker, TaskerError, metrics};

/// The longest the backlog read for the metrics may take (less if the deadline is nearer).
const BACKLOG_BUDGET: Duration = Duration::from_secs(5);
/// Time kept back from the deadline for the metrics line and the answer.
const ANSWER_RESERVE: Duration = Duration::from_millis(500);

/// The processor function with `types`: reads the configuration, opens the store (and the
/// queue in SQS mode) once per cold start, and serves invocations.
pub async fn run(types: TaskTypes) -> Result<(), lambda_runtime::Error> {
    let (config, tasker) = tasker::lambda::cold_start(types).await?;
    let emit = |line: &str| println!("{line}");
    let fit = FitCheck::default();
    lambda_runtime::run(service_fn(|event: LambdaEvent<serde_json::Value>| async {
        // Poll mode runs attempts in the invocation: each type's claims must fit in it.
        if runtime::mode_of(&tasker) == tasker::Dispatch::Poll {
            fit.check(&tasker, &event.context)?;
        }
        handle(&tasker, &config.service, config.poll, event, &emit).await
    }))
    .await
}

/// Runs one invocation until its deadline leaves less than the configured margin, then hands
/// the metrics line to `emit` (stdout in Lambda, where CloudWatch picks it up).
pub async fn handle<S: Store>(
    tasker: &Tasker<S>,
    service: &str,
    poll: PollSettings,
    event: LambdaEvent<serde_json::Value>,
    emit: &(dyn Fn(&str) + Sync),
) -> Result<RunSummary, TaskerError> {
    let deadline = tasker::lambda::deadline(&event.context, Duration::ZERO);
    tracing::info!(
        request_id = %event.context.request_id,
        event_time = event.payload.get("time").and_then(|t| t.as_str()).unwrap_or("-"),
        remaining_ms = u64::try_from(tasker::lambda::remaining(&event.context, Duration::ZERO).as_millis()).unwrap_or(u64::MAX),
        deadline_ms = event.context.deadline,
        "processor invoked"
    );
    if deadline.is_none() {
        tracing::warn!(
            deadline_ms = event.context.deadline,
            "the invocation deadline is not a Unix time; running until TASKER_MAX_RUN"
        );
    }
    let mode = runtime::mode_of(tasker);
    // SQS mode: the workers run the tasks and emit their counts; this run's line carries the
    // backlog.
    let summary = runtime::invoke(tasker, mode, Invocation { deadline, poll })
        .await?
        .run;
    // The backlog is for the metrics only: without it the run still counts, and reading it
    // must not push the invocation past its deadline.
    let budget = deadline.map_or(BACKLOG_BUDGET, |_| {
        BACKLOG_BUDGET.min(tasker::lambda::remaining(&event.context, ANSWER_RESERVE))
    });
    let backlog = match tokio::time::timeout(budget, tasker.backlog()).await {
        Ok(Ok(backlog)) => Some(backlog),
        Ok(Err(err)) => {
            tracing::warn!(error = %Report(&err), "could not read the backlog for the metrics");
            None
        }
        Err(_) => {
            tracing::warn!("reading the backlog took too long; metrics without it");
            None
        }
    };
    emit(&metrics::run_metrics(
        service,
        &summary,
        backlog.as_ref(),
        tasker.now(),
    ));
    Ok(summary)
}
