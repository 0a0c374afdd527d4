//! Fresh SQS queues in moto's server, whose endpoint `scripts/test.sh` exports.

use std::time::Duration;

use aws_sdk_sqs::Client;
use aws_sdk_sqs::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_sqs::types::QueueAttributeName;
use tasker::push::sqs::SqsQueue;

/// The variable holding moto's endpoint, e.g. `http://127.0.0.1:5123`.
pub const ENDPOINT_VAR: &str = "TASKER_TEST_SQS_ENDPOINT";

/// moto's endpoint; panics with instructions when it is not set.
pub fn endpoint() -> String {
    match std::env::var(ENDPOINT_VAR) {
        Ok(endpoint) if endpoint.starts_with("http://127.0.0.1:") => endpoint,
        Ok(other) => panic!("{ENDPOINT_VAR}={other} must point at 127.0.0.1"),
        Err(_) => panic!(
            "{ENDPOINT_VAR} is not set: run the tests with scripts/test.sh, which starts \
             moto's server and exports it"
        ),
    }
}

/// A client for the SQS-compatible `endpoint` on 127.0.0.1.
pub fn client_for(endpoint: &str) -> Client {
    assert!(
        endpoint.starts_with("http://127.0.0.1:"),
        "tests only talk to 127.0.0.1"
    );
    let config = aws_sdk_sqs::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .endpoint_url(endpoint)
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new("test", "test", None, None, "tasker-tests"))
        .timeout_config(
            aws_sdk_sqs::config::timeout::TimeoutConfig::builder()
                .connect_timeout(Duration::from_secs(2))
                .operation_attempt_timeout(Duration::from_secs(25))
                .build(),
        )
        .build();
    Client::from_conf(config)
}

/// A queue and its dead-letter queue.
pub struct Queues {
    /// The work queue, as Tasker sends to and reads it.
    pub queue: SqsQueue,
    /// The dead-letter queue's URL.
    pub dlq_url: String,
    /// A client for both.
    pub client: Client,
}

/// A uniquely named queue with a dead-letter queue after `max_receives`, and messages
/// invisible for `visibility` after each receive.
pub async fn fresh_queues(max_receives: u32, visibility: Duration) -> Queues {
    fresh_queues_at(&endpoint(), max_receives, visibility).await
}

/// [`fresh_queues`] in the SQS-compatible `endpoint` on 127.0.0.1.
pub async fn fresh_queues_at(endpoint: &str, max_receives: u32, visibility: Duration) -> Queues {
    let client = client_for(endpoint);
    let name = format!(
        "tasker-test-{}",
        ulid::Ulid::new().to_string().to_lowercase()
    );
    let dlq_url = create(&client, &format!("{name}-dlq"), Vec::new()).await;
    let dlq_arn = client
        .get_queue_attributes()
        .queue_url(&dlq_url)
        .attribute_names(QueueAttributeName::QueueArn)
        .send()
        .await
        .expect("dead-letter queue's ARN")
        .attributes
        .and_then(|mut a| a.remove(&QueueAttributeName::QueueArn))
        .expect("a QueueArn attribute");
    let redrive =
        format!(r#"{{"deadLetterTargetArn":"{dlq_arn}","maxReceiveCount":"{max_receives}"}}"#);
    let url = create(
        &client,
        &name,
        vec![
            (QueueAttributeName::RedrivePolicy, redrive),
            (
                QueueAttributeName::VisibilityTimeout,
                visibility.as_secs().to_string(),
            ),
        ],
    )
    .await;
    Queues {
        queue: SqsQueue::new(client.clone(), url),
        dlq_url,
        client,
    }
}

async fn create(
    client: &Client,
    name: &str,
    attributes: Vec<(QueueAttributeName, String)>,
) -> String {
    let mut request = client.create_queue().queue_name(name);
    for (name, value) in attributes {
        request = request.attributes(name, value);
    }
    request
        .send()
        .await
        .unwrap_or_else(|err| panic!("create queue {name} in moto: {err:?}"))
        .queue_url
        .expect("a queue URL")
}

/// The bodies of the messages waiting in the queue at `url` now (received and left to become
/// visible again after the queue's visibility timeout).
pub async fn peek(client: &Client, url: &str) -> Vec<String> {
    let answer = client
        .receive_message()
        .queue_url(url)
        .max_number_of_messages(10)
        .wait_time_seconds(1)
        .send()
        .await
        .expect("receive");
    answer
        .messages
        .unwrap_or_default()
        .into_iter()
        .filter_map(|m| m.body)
        .collect()
}

/// Messages in the queue at `url`: waiting to be received, and received but neither deleted
/// nor visible again yet (in flight), as the queue counts them.
pub async fn messages_in(client: &Client, url: &str) -> (u64, u64) {
    let answer = client
        .get_queue_attributes()
        .queue_url(url)
        .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
        .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesNotVisible)
        .send()
        .await
        .expect("queue attributes");
    let count = |name: QueueAttributeName| {
        answer
            .attributes
            .as_ref()
            .and_then(|attributes| attributes.get(&name))
            .and_then(|value| value.parse().ok())
            .unwrap_or(u64::MAX)
    };
    (
        count(QueueAttributeName::ApproximateNumberOfMessages),
        count(QueueAttributeName::ApproximateNumberOfMessagesNotVisible),
    )
}

/// A TCP gate in front of moto: while shut, each connection is closed as it is accepted (a
/// send fails as against an SQS that is down); once opened, bytes flow both ways unchanged.
pub struct Gate {
    /// The gate's endpoint, for a client in place of moto's.
    pub endpoint: String,
    open: std::sync::Arc<std::sync::atomic::AtomicBool>,
    server: tokio::task::JoinHandle<()>,
}

impl Gate {
    /// A shut gate in front of moto's server.
    pub async fn shut() -> Self {
        let upstream = endpoint()
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .to_owned();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the gate");
        let endpoint = format!("http://{}", listener.local_addr().expect("gate address"));
        let open = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let is_open = open.clone();
        let server = tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                if !is_open.load(std::sync::atomic::Ordering::SeqCst) {
                    drop(inbound);
                    continue;
                }
                let upstream = upstream.clone();
                tokio::spawn(async move {
                    if let Ok(mut outbound) = tokio::net::TcpStream::connect(&upstream).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
            }
        });
        Self {
            endpoint,
            open,
            server,
        }
    }

    /// Lets connections through from now on.
    pub fn open(&self) {
        self.open.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

impl Drop for Gate {
    fn drop(&mut self) {
        self.server.abort();
    }
}
