//! The processor Lambda: one processQueue run per scheduled event, then one line of CloudWatch
//! Embedded Metric Format with the run's counts and the backlog; in SQS mode one mover run
//! instead (the workers run the tasks). Due schedules fire at the start, and in poll mode
//! every second of the window. Errors reach Lambda through the library's one
//! `TaskerError` to `Diagnostic` conversion.

use std::time::{Instant, SystemTime};

use lambda_runtime::LambdaEvent;
use tasker::lambda::PLAUSIBLE_DEADLINE_MS;
use tasker::store::{FlowControl, QueueStats, ScheduleStore, TaskDelivery, TaskQueue, TaskWriter};
use tasker::{PollSettings, Report, RunSummary, Tasker, TaskerError, metrics};

/// How long before the invocation's deadline schedules stop firing.
const FIRE_MARGIN: std::time::Duration = std::time::Duration::from_secs(10);

/// The longest the backlog read for the metrics may take (less if the deadline is nearer).
const BACKLOG_BUDGET: std::time::Duration = std::time::Duration::from_secs(5);

fn remaining_now(event: &LambdaEvent<serde_json::Value>) -> std::time::Duration {
    event
        .context
        .deadline()
        .duration_since(SystemTime::now())
        .unwrap_or_default()
        .saturating_sub(std::time::Duration::from_millis(500))
}

/// Fires the due schedules once; a failure is logged (the run goes on, and the schedules stay
/// due for the next one).
async fn fire_once<S: ScheduleStore + TaskWriter>(tasker: &Tasker<S>) {
    if let Err(err) = tasker.fire_schedules().await {
        tracing::warn!(error = %Report(&err), "could not fire the due schedules");
    }
}

/// Runs the queue until the invocation's deadline leaves less than the configured margin (in
/// poll mode, again every `poll.interval` until `poll.window` has passed), then hands the
/// metrics line to `emit` (stdout in Lambda, where CloudWatch picks it up).
pub async fn handle<
    S: TaskQueue + TaskDelivery + QueueStats + ScheduleStore + TaskWriter + FlowControl,
>(
    tasker: &Tasker<S>,
    service: &str,
    poll: PollSettings,
    event: LambdaEvent<serde_json::Value>,
    emit: &(dyn Fn(&str) + Sync),
) -> Result<RunSummary, TaskerError> {
    // Lambda sends the deadline as Unix milliseconds. Some local emulators send a duration
    // instead (cargo lambda watch sends its --timeout, e.g. 60000): a "deadline" before 2001 is
    // no deadline: a run is bounded by TASKER_MAX_RUN, a poll window by its length, and each
    // attempt by its type's timeout.
    let plausible = event.context.deadline >= PLAUSIBLE_DEADLINE_MS;
    let remaining = event
        .context
        .deadline()
        .duration_since(SystemTime::now())
        .unwrap_or_default();
    tracing::info!(
        request_id = %event.context.request_id,
        event_time = event.payload.get("time").and_then(|t| t.as_str()).unwrap_or("-"),
        remaining_ms = u64::try_from(remaining.as_millis()).unwrap_or(u64::MAX),
        deadline_ms = event.context.deadline,
        "processor invoked"
    );
    if !plausible {
        tracing::warn!(
            deadline_ms = event.context.deadline,
            "the invocation deadline is not a Unix time; running until TASKER_MAX_RUN"
        );
    }
    let deadline = plausible.then(|| Instant::now() + remaining);
    // SQS mode: the workers run the tasks and emit their counts; this run moves tasks onto
    // the queue, and its line carries the backlog.
    let summary = if tasker.pushes() {
        fire_once(tasker).await;
        tasker.move_due().await?;
        RunSummary::default()
    } else if poll.window.is_zero() {
        fire_once(tasker).await;
        tasker.poll_queue(deadline, poll).await?
    } else {
        // Schedules fire through the window, beside the dispatch, as `tasker serve` does.
        // A pass must not run the invocation into its deadline: the window ends a margin
        // before it, as the dispatch's does.
        let window_end = tokio::time::Instant::now() + poll.window;
        let window_end = deadline.map_or(window_end, |d| {
            let margin_before = tokio::time::Instant::from(d)
                .checked_sub(FIRE_MARGIN)
                .unwrap_or_else(tokio::time::Instant::now);
            window_end.min(margin_before)
        });
        let (summary, ()) = tokio::join!(
            tasker.poll_queue(deadline, poll),
            tasker.fire_schedules_until(tokio::time::sleep_until(window_end))
        );
        summary?
    };
    // The backlog is for the metrics only: without it the run still counts, and reading it
    // must not push the invocation past its deadline.
    let budget = if plausible {
        BACKLOG_BUDGET.min(remaining_now(&event))
    } else {
        BACKLOG_BUDGET
    };
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
