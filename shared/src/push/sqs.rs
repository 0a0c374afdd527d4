//! The SQS queue SQS mode sends to and `tasker worker` reads: sends in batches of ten,
//! long-poll receives, batch deletes, and a count of every call for the benchmark.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use aws_sdk_sqs::Client;
use aws_sdk_sqs::config::BehaviorVersion;
use aws_sdk_sqs::config::timeout::TimeoutConfig;
use aws_sdk_sqs::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_sqs::types::{
    DeleteMessageBatchRequestEntry, MessageSystemAttributeName, QueueAttributeName,
    SendMessageBatchRequestEntry,
};

use super::{Delivery, Push, PushError, PushFuture};
use crate::task::TaskId;

/// SQS takes at most ten messages per batch call.
pub const BATCH_MAX: usize = 10;

/// One received message.
#[derive(Debug, Clone)]
pub struct Received {
    /// SQS's id of the message.
    pub message_id: String,
    /// What deletes it (or changes its visibility).
    pub receipt_handle: String,
    /// The task id it should carry.
    pub body: String,
    /// How often SQS has handed it out, this time included.
    pub receive_count: u32,
}

/// One SQS queue.
#[derive(Debug, Clone)]
pub struct SqsQueue {
    /// Sends, deletes and reads of the queue's depth: short time limits, because a create
    /// waits for its send.
    client: Client,
    /// Receives: long polls of up to 20 s.
    poller: Client,
    url: String,
    calls: Arc<AtomicU64>,
}

impl SqsQueue {
    /// The queue at `url`, through clients from the standard AWS environment
    /// (`AWS_ENDPOINT_URL_SQS` for a local SQS such as moto's server).
    pub async fn from_env(url: impl Into<String>) -> Self {
        let shared = aws_config::defaults(BehaviorVersion::latest()).load().await;
        let limits = |attempt: u64, operation: u64| {
            TimeoutConfig::builder()
                .connect_timeout(Duration::from_secs(2))
                .operation_attempt_timeout(Duration::from_secs(attempt))
                .operation_timeout(Duration::from_secs(operation))
                .build()
        };
        // A stalled SQS must not hold a create past API Gateway's 30 s: a send gives up within
        // 5 s (the task is stored; the mover sends it later).
        let client = Client::from_conf(
            aws_sdk_sqs::config::Builder::from(&shared)
                .timeout_config(limits(2, 5))
                .build(),
        );
        let poller = Client::from_conf(
            aws_sdk_sqs::config::Builder::from(&shared)
                .timeout_config(limits(25, 60))
                .build(),
        );
        Self {
            client,
            poller,
            url: url.into(),
            calls: Arc::default(),
        }
    }

    /// The queue at `url` through `client` (for every call).
    pub fn new(client: Client, url: impl Into<String>) -> Self {
        Self {
            poller: client.clone(),
            client,
            url: url.into(),
            calls: Arc::default(),
        }
    }

    /// The queue's URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// SQS calls this queue (and its clones) made so far: what SQS bills.
    pub fn calls(&self) -> u64 {
        self.calls.load(Ordering::Relaxed)
    }

    fn count(&self) {
        self.calls.fetch_add(1, Ordering::Relaxed);
    }

    /// Up to `max` messages (at most ten), waiting up to `wait` for the first.
    pub async fn receive(&self, max: usize, wait: Duration) -> Result<Vec<Received>, PushError> {
        self.count();
        let answer = self
            .poller
            .receive_message()
            .queue_url(&self.url)
            .max_number_of_messages(i32::try_from(max.clamp(1, BATCH_MAX)).unwrap_or(10))
            .wait_time_seconds(i32::try_from(wait.as_secs().min(20)).unwrap_or(20))
            .message_system_attribute_names(MessageSystemAttributeName::ApproximateReceiveCount)
            .send()
            .await
            .map_err(|err| call_error("ReceiveMessage", err))?;
        Ok(answer
            .messages
            .unwrap_or_default()
            .into_iter()
            .filter_map(|message| {
                let receive_count = message
                    .attributes
                    .as_ref()
                    .and_then(|a| a.get(&MessageSystemAttributeName::ApproximateReceiveCount))
                    .and_then(|count| count.parse().ok())
                    .unwrap_or(1);
                Some(Received {
                    message_id: message.message_id?,
                    receipt_handle: message.receipt_handle?,
                    body: message.body.unwrap_or_default(),
                    receive_count,
                })
            })
            .collect())
    }

    /// Deletes the messages with `receipts`, ten per call; answers how many SQS refused (an
    /// expired receipt: the message is handed out again, and its claim drops it).
    pub async fn delete(&self, receipts: &[&str]) -> Result<usize, PushError> {
        let mut refused = 0;
        for chunk in receipts.chunks(BATCH_MAX) {
            let entries = chunk
                .iter()
                .enumerate()
                .map(|(i, receipt)| {
                    DeleteMessageBatchRequestEntry::builder()
                        .id(i.to_string())
                        .receipt_handle(*receipt)
                        .build()
                        .map_err(|err| build_error("DeleteMessageBatch", err))
                })
                .collect::<Result<Vec<_>, _>>()?;
            self.count();
            let answer = self
                .client
                .delete_message_batch()
                .queue_url(&self.url)
                .set_entries(Some(entries))
                .send()
                .await
                .map_err(|err| call_error("DeleteMessageBatch", err))?;
            refused += answer.failed.len();
        }
        Ok(refused)
    }

    async fn send_all(&self, deliveries: &[Delivery]) -> Result<(), PushError> {
        let mut refused = Vec::new();
        let mut first = None;
        for chunk in deliveries.chunks(BATCH_MAX) {
            self.count();
            if let [one] = chunk {
                self.client
                    .send_message()
                    .queue_url(&self.url)
                    .message_body(one.body())
                    .delay_seconds(i32::try_from(one.delay_seconds).unwrap_or(900))
                    .send()
                    .await
                    .map_err(|err| call_error("SendMessage", err))?;
                continue;
            }
            let entries = chunk
                .iter()
                .enumerate()
                .map(|(i, delivery)| {
                    SendMessageBatchRequestEntry::builder()
                        .id(i.to_string())
                        .message_body(delivery.body())
                        .delay_seconds(i32::try_from(delivery.delay_seconds).unwrap_or(900))
                        .build()
                        .map_err(|err| build_error("SendMessageBatch", err))
                })
                .collect::<Result<Vec<_>, _>>()?;
            let answer = self
                .client
                .send_message_batch()
                .queue_url(&self.url)
                .set_entries(Some(entries))
                .send()
                .await
                .map_err(|err| call_error("SendMessageBatch", err))?;
            for failed in answer.failed {
                let task: Option<TaskId> = failed
                    .id
                    .parse::<usize>()
                    .ok()
                    .and_then(|i| chunk.get(i))
                    .map(|delivery| delivery.id);
                refused.extend(task);
                first.get_or_insert_with(|| failed.message.unwrap_or_else(|| failed.code.clone()));
            }
        }
        match first {
            None => Ok(()),
            Some(first) => Err(PushError::Refused {
                ids: refused,
                first,
            }),
        }
    }

    /// The queue's visibility timeout: how long a received message stays hidden before SQS
    /// hands it out again.
    pub async fn visibility_timeout(&self) -> Result<Duration, PushError> {
        self.count();
        let answer = self
            .client
            .get_queue_attributes()
            .queue_url(&self.url)
            .attribute_names(QueueAttributeName::VisibilityTimeout)
            .send()
            .await
            .map_err(|err| call_error("GetQueueAttributes", err))?;
        answer
            .attributes
            .as_ref()
            .and_then(|a| a.get(&QueueAttributeName::VisibilityTimeout))
            .and_then(|seconds| seconds.parse().ok())
            .map(Duration::from_secs)
            .ok_or_else(|| PushError::Call {
                message: "GetQueueAttributes answered without a VisibilityTimeout".to_owned(),
                source: None,
            })
    }

    async fn waiting_now(&self) -> Result<u64, PushError> {
        self.count();
        let answer = self
            .client
            .get_queue_attributes()
            .queue_url(&self.url)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
            .send()
            .await
            .map_err(|err| call_error("GetQueueAttributes", err))?;
        Ok(answer
            .attributes
            .as_ref()
            .and_then(|a| a.get(&QueueAttributeName::ApproximateNumberOfMessages))
            .and_then(|count| count.parse().ok())
            .unwrap_or(0))
    }
}

impl Push for SqsQueue {
    fn send<'a>(&'a self, deliveries: &'a [Delivery]) -> PushFuture<'a, ()> {
        Box::pin(self.send_all(deliveries))
    }

    fn waiting(&self) -> PushFuture<'_, u64> {
        Box::pin(self.waiting_now())
    }
}

fn call_error<E, R>(operation: &str, err: SdkError<E, R>) -> PushError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug + Send + Sync + 'static,
{
    PushError::Call {
        message: format!("{operation}: {}", DisplayErrorContext(&err)),
        source: Some(Box::new(err)),
    }
}

fn build_error(operation: &str, err: aws_sdk_sqs::error::BuildError) -> PushError {
    PushError::Call {
        message: format!("{operation}: {err}"),
        source: Some(Box::new(err)),
    }
}
