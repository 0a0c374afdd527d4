//! The worker Lambda (SQS mode): each SQS message names a task; the batch's tasks are claimed
//! and run as the processor would, and the messages to deliver again are reported as batch
//! item failures (the event source mapping has `ReportBatchItemFailures` on).

use std::time::{Duration, Instant};

use aws_lambda_events::event::sqs::{BatchItemFailure, SqsBatchResponse, SqsEvent};
use lambda_runtime::{LambdaEvent, service_fn};
use tasker::compose::TaskTypes;
use tasker::engine::{Handled, Message, WorkSummary};
use tasker::{Store, Tasker, TaskerError};

/// Time kept back from the invocation's deadline to answer Lambda.
const ANSWER_RESERVE: Duration = Duration::from_millis(500);

/// The worker function with `types`: reads the configuration, opens the store and the queue
/// (for retries' next messages) once per cold start, and serves batches.
pub async fn run(types: TaskTypes) -> Result<(), lambda_runtime::Error> {
    let (config, tasker) = tasker::lambda::cold_start(types).await?;
    let emit = |line: &str| println!("{line}");
    let fit = tasker::lambda::FitCheck::default();
    lambda_runtime::run(service_fn(|event: LambdaEvent<SqsEvent>| async {
        // A failed check fails the whole batch, naming the setting: the messages come back
        // and end in the dead-letter queue.
        fit.check(&tasker, &event.context)?;
        Ok::<_, TaskerError>(handle(&tasker, &config.service, event, &emit).await)
    }))
    .await
}

/// Works one batch; a message that names no task, or whose task could not be claimed or run
/// in time, is reported back, so SQS delivers it again (and its redrive policy moves a
/// poison message to the dead-letter queue). Then hands the batch's metrics line (the
/// processor's counts, under `service`) to `emit`, so the alarms see the worker's failures.
pub async fn handle<S: Store>(
    tasker: &Tasker<S>,
    service: &str,
    event: LambdaEvent<SqsEvent>,
    emit: &(dyn Fn(&str) + Sync),
) -> SqsBatchResponse {
    let started = Instant::now();
    // A local emulator's "deadline" that is not a Unix time is no deadline: each attempt is
    // still bounded by its type's timeout.
    let deadline = tasker::lambda::deadline(&event.context, ANSWER_RESERVE);
    let messages: Vec<Message> = event
        .payload
        .records
        .into_iter()
        .map(|record| Message {
            message_id: record.message_id.unwrap_or_default(),
            body: record.body.unwrap_or_default(),
        })
        .collect();
    let handled = tasker.work(&messages, deadline).await;
    let mut summary = WorkSummary::default();
    let mut response = SqsBatchResponse::default();
    for (message, handled) in messages.into_iter().zip(handled) {
        summary.count(handled);
        if handled == Handled::Again {
            let mut failure = BatchItemFailure::default();
            failure.item_identifier = message.message_id;
            response.batch_item_failures.push(failure);
        }
    }
    tracing::info!(
        request_id = %event.context.request_id,
        messages = summary.messages,
        succeeded = summary.outcomes.succeeded,
        retried = summary.outcomes.retried,
        failed = summary.outcomes.failed,
        released = summary.outcomes.released,
        dropped = summary.dropped,
        again = summary.again,
        "worker batch finished"
    );
    let duration_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    emit(&tasker::metrics::run_metrics(
        service,
        &summary.as_run(duration_ms),
        None,
        tasker.now(),
    ));
    response
}
