//! SQS mode's workers on one machine (`tasker worker`): receive up to ten messages, work them
//! as the worker Lambda would, delete the ones done with, repeat; several such loops at once.

use std::future::Future;
use std::time::Duration;

use super::Stop;
use crate::engine::{Handled, Message, Tasker, WorkSummary};
use crate::push::sqs::{BATCH_MAX, SqsQueue};
use crate::report::Report;
use crate::store::Store;

/// The pause after an empty short poll (`wait` of zero), so an idle worker asks 50 times a
/// second rather than as fast as the queue answers.
const SHORT_POLL_PAUSE: Duration = Duration::from_millis(20);

/// Receives and works messages with as many loops as it takes to keep `concurrency` tasks
/// running (ten messages a batch), until `stop`; the batches in hand are finished first. The
/// counts of every loop.
pub async fn receive_all<S: Store>(
    tasker: &Tasker<S>,
    queue: &SqsQueue,
    concurrency: usize,
    wait: Duration,
    stop: Stop,
) -> WorkSummary {
    let receivers = concurrency.div_ceil(BATCH_MAX).max(1);
    tracing::info!(receivers, "reading the queue");
    let loops = (0..receivers).map(|_| receive(tasker, queue, wait, stop.wait()));
    let mut total = WorkSummary::default();
    for summary in futures::future::join_all(loops).await {
        total.absorb(&summary);
    }
    total
}

/// Receives and works batches until `stop` completes (a batch in hand is finished first).
/// `wait` is the long poll of each receive (zero: short polls, [`SHORT_POLL_PAUSE`] apart
/// while the queue is empty; each is a billed request). A message left undeleted is
/// delivered again after the queue's visibility timeout, and its claim then drops it or runs
/// it.
pub async fn receive<S: Store>(
    tasker: &Tasker<S>,
    queue: &SqsQueue,
    wait: Duration,
    stop: impl Future<Output = ()>,
) -> WorkSummary {
    let mut summary = WorkSummary::default();
    let mut stop = std::pin::pin!(stop);
    loop {
        let received = tokio::select! {
            () = &mut stop => {
                // What the worker counted of finished tasks, written before it goes.
                tasker.store().queue_flush(tasker.now(), true).await;
                return summary;
            }
            received = queue.receive(BATCH_MAX, wait) => received,
        };
        let received = match received {
            Ok(received) => received,
            Err(err) => {
                tracing::error!(error = %Report(&err), "receiving from the queue failed; trying again in a second");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        if received.is_empty() && wait.is_zero() {
            tokio::time::sleep(SHORT_POLL_PAUSE).await;
        }
        let messages: Vec<Message> = received
            .iter()
            .map(|message| Message {
                message_id: message.message_id.clone(),
                body: message.body.clone(),
            })
            .collect();
        let handled = tasker.work(&messages, None).await;
        let mut done = Vec::with_capacity(received.len());
        for (message, handled) in received.iter().zip(handled) {
            summary.count(handled);
            if handled == Handled::Again {
                tracing::warn!(message_id = %message.message_id, receives = message.receive_count, "message left on the queue to be delivered again");
            } else {
                done.push(message.receipt_handle.as_str());
            }
        }
        if done.is_empty() {
            continue;
        }
        if let Err(err) = queue.delete(&done).await {
            tracing::warn!(error = %Report(&err), "deleting handled messages failed; they will be delivered again and dropped");
        }
    }
}
