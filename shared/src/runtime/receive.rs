//! SQS mode's workers on one machine (`tasker worker`): keep up to `concurrency` messages in
//! hand, worked as the worker Lambda works each one, and receive more as soon as enough slots
//! free, not when a whole batch is done: one slow task, or one held task waited out in place,
//! never holds back the messages behind it. Messages done with are deleted ten per call.

use std::future::Future;
use std::time::Duration;

use futures::stream::{FuturesUnordered, StreamExt};
use tokio::time::Instant;

use super::Stop;
use crate::engine::{Handled, Message, Tasker, WorkSummary};
use crate::push::PushError;
use crate::push::sqs::{BATCH_MAX, Received, SqsQueue};
use crate::report::Report;
use crate::store::Store;

/// The pause after an empty short poll (`wait` of zero), so an idle worker asks 50 times a
/// second rather than as fast as the queue answers.
const SHORT_POLL_PAUSE: Duration = Duration::from_millis(20);
/// The longest a message done with waits for nine others to be deleted with.
const DELETE_WITHIN: Duration = Duration::from_millis(500);

/// Receives and works messages, up to `concurrency` in hand, until `stop`; the messages in
/// hand are finished first. The counts of what it did.
pub async fn receive_all<S: Store>(
    tasker: &Tasker<S>,
    queue: &SqsQueue,
    concurrency: usize,
    wait: Duration,
    stop: Stop,
) -> WorkSummary {
    tracing::info!(concurrency, "reading the queue");
    receive_up_to(tasker, queue, concurrency, wait, stop.wait()).await
}

/// [`receive_all`] with the Tasker's own concurrency, until `stop` completes.
pub async fn receive<S: Store>(
    tasker: &Tasker<S>,
    queue: &SqsQueue,
    wait: Duration,
    stop: impl Future<Output = ()>,
) -> WorkSummary {
    receive_up_to(tasker, queue, tasker.concurrency(), wait, stop).await
}

/// Receives and works messages, up to `concurrency` in hand, until `stop` completes. `wait`
/// is the long poll of each receive (zero: short polls, [`SHORT_POLL_PAUSE`] apart while the
/// queue is empty; each is a billed request). A receive asks for as many messages as are
/// free slots (ten at most) and starts once half a batch's slots are free, or any while no
/// other receive is on its way, so a busy worker still receives several messages per request.
/// A message left undeleted is delivered again after the queue's visibility timeout, and its
/// claim then drops it or runs it.
async fn receive_up_to<S: Store>(
    tasker: &Tasker<S>,
    queue: &SqsQueue,
    concurrency: usize,
    wait: Duration,
    stop: impl Future<Output = ()>,
) -> WorkSummary {
    let concurrency = concurrency.max(1);
    let mut summary = WorkSummary::default();
    let mut stop = std::pin::pin!(stop);
    let mut stopping = false;
    let mut receiving = FuturesUnordered::new();
    let mut asked = 0;
    let mut in_hand = FuturesUnordered::new();
    let mut done = Done::default();
    let mut deleting = FuturesUnordered::new();
    loop {
        while let Some(max) = (!stopping)
            .then(|| concurrency.saturating_sub(in_hand.len() + asked))
            .and_then(|free| receive_size(concurrency, free, receiving.is_empty()))
        {
            asked += max;
            receiving.push(receive_some(tasker, queue, max, wait));
        }
        if done.due(in_hand.is_empty()) {
            deleting.push(delete(queue, done.take()));
        }
        if stopping && in_hand.is_empty() && deleting.is_empty() && done.is_empty() {
            tasker.store().queue_flush(tasker.now(), true).await;
            return summary;
        }
        tokio::select! {
            () = &mut stop, if !stopping => {
                // Messages a receive in flight was about to hand over come again after their
                // visibility timeout.
                stopping = true;
                receiving.clear();
                asked = 0;
            }
            Some((max, received)) = receiving.next(), if !receiving.is_empty() => {
                asked -= max;
                match received {
                    Ok(received) => {
                        for message in received {
                            in_hand.push(work(tasker, message));
                        }
                    }
                    Err(err) => {
                        tracing::error!(error = %Report(&err), "receiving from the queue failed; trying again in a second");
                    }
                }
            }
            Some((message, handled)) = in_hand.next(), if !in_hand.is_empty() => {
                summary.count(handled);
                if handled == Handled::Again {
                    tracing::warn!(message_id = %message.message_id, receives = message.receive_count, "message left on the queue to be delivered again");
                } else {
                    done.push(message.receipt_handle);
                }
            }
            Some(()) = deleting.next(), if !deleting.is_empty() => {}
            () = tokio::time::sleep_until(done.by.unwrap_or_else(Instant::now)), if done.by.is_some() => {}
        }
    }
}

/// How many messages to receive next with `free` of `concurrency` slots neither in hand nor
/// asked for: the free slots (a batch at most) once half a batch is free, or any while no
/// receive is on its way (else slots under half a batch would stay idle as long as the tasks
/// in hand run); none otherwise.
fn receive_size(concurrency: usize, free: usize, none_on_its_way: bool) -> Option<usize> {
    let batch = concurrency.min(BATCH_MAX);
    let start = free >= batch.div_ceil(2) || (free > 0 && none_on_its_way);
    start.then(|| free.min(batch))
}

/// The receipts of the messages done with, not yet deleted, and by when they are.
#[derive(Debug, Default)]
struct Done {
    receipts: Vec<String>,
    by: Option<Instant>,
}

impl Done {
    fn push(&mut self, receipt: String) {
        self.receipts.push(receipt);
        self.by
            .get_or_insert_with(|| Instant::now() + DELETE_WITHIN);
    }

    fn is_empty(&self) -> bool {
        self.receipts.is_empty()
    }

    /// True when they are to be deleted now: a full batch, nothing else in hand to wait for,
    /// or the first of them done [`DELETE_WITHIN`] ago.
    fn due(&self, idle: bool) -> bool {
        self.receipts.len() >= BATCH_MAX
            || (!self.is_empty() && idle)
            || self.by.is_some_and(|by| by <= Instant::now())
    }

    fn take(&mut self) -> Vec<String> {
        self.by = None;
        std::mem::take(&mut self.receipts)
    }
}

/// One receive of at most `max` messages; answers `max` with them, after a pause when a short
/// poll found none or the receive failed (a second: the next one likely fails too).
async fn receive_some<S: Store>(
    tasker: &Tasker<S>,
    queue: &SqsQueue,
    max: usize,
    wait: Duration,
) -> (usize, Result<Vec<Received>, PushError>) {
    let received = queue.receive(max, wait).await;
    // What the store keeps for a while (DynamoDB's counts of finished tasks) is written within
    // its time while the queue is idle too: a message's work writes it otherwise.
    tasker.store().queue_flush(tasker.now(), false).await;
    // Retries' messages this worker could not send go again once their wait is over.
    tasker.resend().await;
    match &received {
        Err(_) => tokio::time::sleep(Duration::from_secs(1)).await,
        Ok(none) if none.is_empty() && wait.is_zero() => {
            tokio::time::sleep(SHORT_POLL_PAUSE).await;
        }
        Ok(_) => {}
    }
    (max, received)
}

/// Works `message`; answers it with what became of it.
async fn work<S: Store>(tasker: &Tasker<S>, message: Received) -> (Received, Handled) {
    let work = Message {
        message_id: message.message_id.clone(),
        body: message.body.clone(),
    };
    let handled = tasker.work_message(&work).await;
    (message, handled)
}

/// Deletes the messages with `receipts`; a failure is logged (they come again and are dropped).
async fn delete(queue: &SqsQueue, receipts: Vec<String>) {
    let receipts: Vec<&str> = receipts.iter().map(String::as_str).collect();
    if let Err(err) = queue.delete(&receipts).await {
        tracing::warn!(error = %Report(&err), "deleting handled messages failed; they will be delivered again and dropped");
    }
}

#[cfg(test)]
mod tests {
    use super::receive_size;

    #[test]
    fn a_receive_waits_for_half_a_batch_of_free_slots_unless_none_is_on_its_way() {
        assert_eq!(receive_size(16, 16, true), Some(10));
        assert_eq!(receive_size(16, 6, false), Some(6));
        assert_eq!(receive_size(16, 4, false), None);
        assert_eq!(receive_size(16, 4, true), Some(4));
        assert_eq!(receive_size(2, 1, false), Some(1));
        assert_eq!(receive_size(16, 0, true), None);
    }
}
