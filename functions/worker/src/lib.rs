//! The worker Lambda (SQS mode): each SQS message names a task; the batch's tasks are claimed
//! and run as the processor would, and the messages to deliver again are reported as batch
//! item failures (the event source mapping has `ReportBatchItemFailures` on).

use std::time::{Instant, SystemTime};

use aws_lambda_events::event::sqs::{BatchItemFailure, SqsBatchResponse, SqsEvent};
use lambda_runtime::LambdaEvent;
use tasker::Tasker;
use tasker::lambda::PLAUSIBLE_DEADLINE_MS;
use tasker::store::{FlowControl, TaskDelivery, TaskQueue};
use tasker::tasker::{Handled, Message, WorkSummary};

/// Time kept back from the invocation's deadline to answer Lambda.
const ANSWER_RESERVE: std::time::Duration = std::time::Duration::from_millis(500);

/// Works one batch; a message that names no task, or whose task could not be claimed or run
/// in time, is reported back, so SQS delivers it again (and its redrive policy moves a
/// poison message to the dead-letter queue). Then hands the batch's metrics line (the
/// processor's counts, under `service`) to `emit`, so the alarms see the worker's failures.
pub async fn handle<S: TaskQueue + TaskDelivery + FlowControl>(
    tasker: &Tasker<S>,
    service: &str,
    event: LambdaEvent<SqsEvent>,
    emit: &(dyn Fn(&str) + Sync),
) -> SqsBatchResponse {
    let started = Instant::now();
    // A local emulator's "deadline" that is not a Unix time is no deadline: each attempt is
    // still bounded by its type's timeout.
    let deadline = (event.context.deadline >= PLAUSIBLE_DEADLINE_MS).then(|| {
        let remaining = event
            .context
            .deadline()
            .duration_since(SystemTime::now())
            .unwrap_or_default()
            .saturating_sub(ANSWER_RESERVE);
        Instant::now() + remaining
    });
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
        succeeded = summary.succeeded,
        retried = summary.retried,
        failed = summary.failed,
        released = summary.released,
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
