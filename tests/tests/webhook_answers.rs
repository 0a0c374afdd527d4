//! A receiver's answers steer the next attempt: `410 Gone` fails the task at once, `429` and
//! `503` with `Retry-After` (seconds or an HTTP date) wait as long as asked, at most a day, and
//! the task's `lastError` names the status and the body's first bytes. Against a real
//! `tasker serve` on SQLite and a receiver on 127.0.0.1.

use std::time::{Duration, SystemTime};

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tasker_tests::eventually;
use tasker_tests::fixtures::ApiClient;
use tasker_tests::process::Serve;
use tasker_tests::receiver::Receiver;

const TOKEN: &str = "answers-token";

struct Server {
    _serve: Serve,
    _dir: tempfile::TempDir,
    api: ApiClient,
    receiver: Receiver,
}

impl Server {
    /// `tasker serve` on a new SQLite file, polling every second, backing off 100-200 ms.
    async fn start() -> Self {
        Self::start_with(&[]).await
    }

    /// The same with the variables `extra` besides.
    async fn start_with(extra: &[(&'static str, &str)]) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let db = dir.path().join("tasker.db");
        let db = db.to_str().expect("utf-8 path");
        let mut envs = vec![
            ("TASKER_WEBHOOK_ALLOW_PRIVATE", "true".to_owned()),
            ("TASKER_API_TOKEN", TOKEN.to_owned()),
            ("TASKER_RETRY_INITIAL", "100ms".to_owned()),
            ("TASKER_RETRY_MAX", "200ms".to_owned()),
        ];
        envs.extend(
            extra
                .iter()
                .map(|(name, value)| (*name, (*value).to_owned())),
        );
        let serve = Serve::start(&["--db", db, "--interval", "1"], &envs).await;
        Self {
            api: ApiClient::new(&serve.base, TOKEN),
            _serve: serve,
            _dir: dir,
            receiver: Receiver::start().await,
        }
    }

    /// A webhook to `path_and_query` on the receiver, with `max_attempts`.
    async fn webhook(&self, path_and_query: &str, max_attempts: u32) -> String {
        let url = format!("{}{path_and_query}", self.receiver.base);
        self.webhook_to(&url, max_attempts).await
    }

    /// A webhook to `url`, with `max_attempts`.
    async fn webhook_to(&self, url: &str, max_attempts: u32) -> String {
        let body = json!({
            "type": "sendWebhook",
            "payload": {"url": url, "body": {}},
            "maxAttempts": max_attempts,
        });
        let (status, task) = self.api.send(Method::POST, "/tasks", Some(&body)).await;
        assert_eq!(status, StatusCode::CREATED, "{task}");
        task["id"].as_str().expect("an id").to_owned()
    }

    /// The task once `done` holds for it (30 s at most).
    async fn task_when(&self, id: &str, what: &str, done: impl Fn(&Value) -> bool) -> Value {
        eventually(
            &format!("task {id}: {what}"),
            Duration::from_secs(30),
            || async {
                let (_, task) = self
                    .api
                    .send(Method::GET, &format!("/tasks/{id}"), None)
                    .await;
                done(&task).then_some(task)
            },
        )
        .await
    }

    /// When the receiver saw each request to `path`.
    fn arrivals(&self, path: &str) -> Vec<SystemTime> {
        self.receiver
            .requests_to(path)
            .iter()
            .map(|r| r.at)
            .collect()
    }
}

fn error_of(task: &Value) -> &str {
    task["lastError"].as_str().unwrap_or_default()
}

fn gap(arrivals: &[SystemTime]) -> Duration {
    arrivals[1].duration_since(arrivals[0]).unwrap_or_default()
}

/// GIVEN receivers answering 410, 429 with `Retry-After: 3`, 503 with a date 3 s ahead, and
/// 429 asking for a week, and a port nothing listens on WHEN their webhooks run THEN the 410
/// fails on its first attempt; the 429's second attempt comes 3 s or more after the first,
/// the 503's 2 s or more (a date has whole seconds); the week is cut to a day; the dead port
/// uses its attempts; every `lastError` names status and body.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receivers_answers_steer_the_next_attempt() {
    let server = Server::start().await;
    let gone = server.webhook("/status/410/gone", 3).await;
    let seconds = server.webhook("/status/429/seconds?retry-after=3", 2).await;
    let date = server.webhook("/status/503/date?retry-after-in=3", 2).await;
    let week = server
        .webhook("/status/429/week?retry-after=604800", 2)
        .await;
    // A port nothing listens on: one bound and closed at once.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free port")
        .port();
    let dead = server
        .webhook_to(&format!("http://127.0.0.1:{port}/x"), 2)
        .await;

    let failed = |t: &Value| t["status"] == "failed";
    let gone = server.task_when(&gone, "failed", failed).await;
    assert_eq!(gone["attempts"], 1, "{gone}");
    assert_eq!(
        error_of(&gone),
        "webhook answered HTTP 410 Gone: answered 410 Gone to /status/410/gone"
    );
    assert_eq!(server.arrivals("/status/410/gone").len(), 1);

    let seconds = server.task_when(&seconds, "failed", failed).await;
    assert_eq!(seconds["attempts"], 2, "{seconds}");
    assert_eq!(
        error_of(&seconds),
        "webhook answered HTTP 429 Too Many Requests (Retry-After: 3s): \
         answered 429 Too Many Requests to /status/429/seconds"
    );
    let arrivals = server.arrivals("/status/429/seconds");
    assert_eq!(arrivals.len(), 2);
    assert!(gap(&arrivals) >= Duration::from_secs(3), "{arrivals:?}");

    let date = server.task_when(&date, "failed", failed).await;
    assert_eq!(date["attempts"], 2, "{date}");
    assert!(
        error_of(&date).starts_with("webhook answered HTTP 503 Service Unavailable (Retry-After: "),
        "{date}"
    );
    let arrivals = server.arrivals("/status/503/date");
    assert_eq!(arrivals.len(), 2);
    assert!(gap(&arrivals) >= Duration::from_secs(2), "{arrivals:?}");

    // The dead port: each attempt fails to connect, the second after the backoff; then the
    // task fails.
    let dead = server.task_when(&dead, "failed", failed).await;
    assert_eq!(dead["attempts"], 2, "{dead}");
    assert!(
        error_of(&dead).starts_with("webhook request failed: "),
        "{dead}"
    );

    // The week-long wait: pending again after one attempt, due a day after it.
    let week = server
        .task_when(&week, "retried", |t| {
            t["attempts"] == 1 && t["status"] == "pending"
        })
        .await;
    let first = server.arrivals("/status/429/week")[0];
    let due: SystemTime =
        humantime::parse_rfc3339(week["scheduledAt"].as_str().unwrap_or_default())
            .expect("scheduledAt");
    let day = Duration::from_secs(24 * 3600);
    let wait = due.duration_since(first).unwrap_or_default();
    assert!(
        wait >= day - Duration::from_secs(5) && wait <= day + Duration::from_secs(5),
        "due {wait:?} after the attempt: {week}"
    );
    assert!(
        error_of(&week).contains("(Retry-After: 7days): answered 429"),
        "{week}"
    );
    // And it says why it waits.
    assert_eq!(week["waiting"]["reason"], "backingOff", "{week}");
    assert_eq!(week["waiting"]["afterAttempt"], 1, "{week}");
    assert_eq!(week["waiting"]["until"], week["scheduledAt"], "{week}");
}

/// GIVEN the circuit breaker on (open 4 s) WHEN ten webhooks to one host all answer 503 THEN its
/// circuit opens: a webhook to the same host is held, not sent, its attempt uncounted and its
/// `waiting` naming the host; after the 4 s it goes out as the probe, succeeds, and the
/// circuit is closed again: the next webhook to the host runs at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_circuit_holds_a_hosts_webhooks_until_a_probe_succeeds() {
    let server = Server::start_with(&[("TASKER_WEBHOOK_BREAKER", "4s")]).await;
    let mut failing = Vec::new();
    for i in 0..10 {
        failing.push(server.webhook(&format!("/status/503/down-{i}"), 1).await);
    }
    for id in &failing {
        server
            .task_when(id, "failed", |task| task["status"] == "failed")
            .await;
    }
    let opened = SystemTime::now();
    let held = server.webhook("/after", 3).await;
    let waiting = server
        .task_when(&held, "held for the circuit", |task| {
            task["waiting"]["reason"] == "circuitOpen"
        })
        .await;
    let host = server
        .receiver
        .base
        .trim_start_matches("http://")
        .to_owned();
    assert_eq!(waiting["waiting"]["host"], host.as_str(), "{waiting}");
    assert_eq!(
        waiting["attempts"], 0,
        "a held attempt is not counted: {waiting}"
    );
    assert_eq!(waiting["status"], "pending");
    let (_, stats) = server.api.send(Method::GET, "/stats", None).await;
    assert_eq!(stats["waiting"]["circuitOpen"], 1, "{stats}");

    let done = server
        .task_when(&held, "sent as the probe", |task| {
            task["status"] == "succeeded"
        })
        .await;
    assert_eq!(done["attempts"], 1, "{done}");
    let probe = server.arrivals("/after");
    assert_eq!(probe.len(), 1);
    let waited = probe[0].duration_since(opened).unwrap_or_default();
    assert!(
        waited >= Duration::from_secs(3),
        "the probe went out after {waited:?}"
    );
    let next = server.webhook("/next", 1).await;
    server
        .task_when(&next, "run at once", |task| task["status"] == "succeeded")
        .await;
}
