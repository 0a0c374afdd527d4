//! Limits per key across processes: two `tasker serve` over one SQLite file, over one
//! PostgreSQL database and over one DynamoDB table, and two SQS-mode workers, share one key's
//! limits (2 at once, 5 starts a second) while tasks of other keys and without one run beside
//! them unslowed.

use std::time::{Duration, SystemTime};

use tasker_tests::fixtures::ApiClient;
use tasker_tests::process::Serve;
use tasker_tests::receiver::{Received, Receiver};

/// With `TASKER_TEST_KEYED_BASELINE` set, the same tasks run with no limits and only their
/// delivery is checked: the times printed are what the limits are measured against.
fn baseline() -> bool {
    std::env::var_os("TASKER_TEST_KEYED_BASELINE").is_some()
}

/// Tasks on the limited key, and as many on other keys: 40 (about 8 s at the key's rate), or
/// `TASKER_TEST_KEYED_TASKS` for a longer measurement (the issue's 300: a minute).
fn keyed_tasks() -> usize {
    std::env::var("TASKER_TEST_KEYED_TASKS")
        .ok()
        .and_then(|n| n.parse().ok())
        .filter(|n| *n >= 10)
        .unwrap_or(40)
}
/// Every task of other keys starts within this share of the limited key's span (poll mode):
/// they run beside the key, not behind it.
const OTHERS_WITHIN: f64 = 0.75;
/// The same in SQS mode, whose workers take the key's messages in turn with the others' (a
/// held task's message comes back): on CI's loaded 2 cores the others' last start came at
/// 0.751 and 0.757 of the key's span, against 0.13-0.21 on an idle machine. Behind the key
/// would be 1 or more.
const SQS_OTHERS_WITHIN: f64 = 0.9;
/// Each webhook's answer takes this long, so two at once is a limit that binds.
const ANSWER_MS: u64 = 300;
const LIMITS: &str =
    r#"[{"type": "sendWebhook", "keyPrefix": "slow.", "concurrency": 2, "rate": "5/1s"}]"#;

/// A serving process's variables, with the key limits `limits`.
fn envs(limits: &str) -> Vec<(&'static str, String)> {
    [
        ("TASKER_WEBHOOK_ALLOW_PRIVATE", "true"),
        ("TASKER_CONCURRENCY", "8"),
        ("TASKER_KEY_LIMITS", if baseline() { "[]" } else { limits }),
    ]
    .map(|(name, value)| (name, value.to_owned()))
    .to_vec()
}

/// Creates the keyed tasks through `first` and the others through `second`, all at once.
async fn create_all(first: &Serve, second: &Serve, receiver: &str) {
    let keyed: Vec<_> = (0..keyed_tasks())
        .map(|i| {
            serde_json::json!({
                "type": "sendWebhook",
                "payload": {"url": format!("{receiver}/delay/{ANSWER_MS}/slow-{i}"), "body": i},
                "rateKey": "slow.example",
                "concurrencyKey": "slow.example",
            })
        })
        .collect();
    let others: Vec<_> = (0..keyed_tasks())
        .map(|i| {
            let mut task = serde_json::json!({
                "type": "sendWebhook",
                "payload": {"url": format!("{receiver}/delay/{ANSWER_MS}/other-{i}"), "body": i},
            });
            if i % 2 == 0 {
                task["rateKey"] = format!("other-{i}").into();
            }
            task
        })
        .collect();
    let send = |serve: &Serve, tasks: Vec<serde_json::Value>| {
        let api = ApiClient::open(&serve.base);
        async move {
            // A batch holds at most 100.
            for chunk in tasks.chunks(100) {
                let body = serde_json::json!({ "tasks": chunk });
                let (status, answer) = api
                    .send(reqwest::Method::POST, "/tasks/batch", Some(&body))
                    .await;
                assert_eq!(status, 200, "{answer}");
            }
        }
    };
    futures::join!(send(first, keyed), send(second, others));
}

fn seconds(at: SystemTime, from: SystemTime) -> f64 {
    at.duration_since(from).unwrap_or_default().as_secs_f64()
}

/// The most of `requests` answering at once.
fn most_at_once(requests: &[&Received]) -> usize {
    let mut edges: Vec<(SystemTime, i32)> = Vec::new();
    for request in requests {
        edges.push((request.at, 1));
        edges.push((request.answered.unwrap_or(SystemTime::now()), -1));
    }
    // An answer and a start at the same instant: the answer first.
    edges.sort();
    let (mut now, mut most) = (0i32, 0i32);
    for (_, step) in edges {
        now += step;
        most = most.max(now);
    }
    usize::try_from(most).unwrap_or_default()
}

/// The most starts among `starts` (sorted) in any window of one second.
fn most_in_a_second(starts: &[SystemTime]) -> usize {
    let mut most = 0;
    for (i, first) in starts.iter().enumerate() {
        let within = starts[i..]
            .iter()
            .take_while(|at| seconds(**at, *first) < 1.0)
            .count();
        most = most.max(within);
    }
    most
}

/// Runs the case over two processes started with `args`.
async fn two_processes_share_a_keys_limits(args: &[&str]) {
    let receiver = Receiver::start().await;
    let first = Serve::start(args, &envs(LIMITS)).await;
    let second = Serve::start(args, &envs(LIMITS)).await;
    let created = SystemTime::now();
    create_all(&first, &second, &receiver.base).await;
    check_the_limits(
        &ApiClient::open(&first.base),
        &receiver,
        created,
        &format!("{args:?}"),
        Some(2),
        OTHERS_WITHIN,
    )
    .await;
    drop((first, second));
}

/// What the receiver saw by `created` + 10 s steps (a slow drain against a stuck task), and
/// the paths it never answered.
fn progress(all: &[Received], created: SystemTime) -> String {
    let mut steps: Vec<[usize; 2]> = Vec::new();
    for request in all {
        let step = (seconds(request.at, created) / 10.0) as usize;
        if steps.len() <= step {
            steps.resize(step + 1, [0, 0]);
        }
        steps[step][usize::from(!request.path.contains("/slow-"))] += 1;
    }
    let unanswered: Vec<&str> = all
        .iter()
        .filter(|r| r.answered.is_none())
        .map(|r| r.path.as_str())
        .collect();
    format!(
        "{} requests; [keyed, other] started in each 10 s since the create: {steps:?}; \
         unanswered: {unanswered:?}",
        all.len()
    )
}

/// The tasks not yet finished, as the API lists them: id, payload, attempts, scheduled time,
/// lease and last error.
async fn still_waiting(api: &ApiClient) -> String {
    let mut lines = Vec::new();
    for status in ["pending", "running"] {
        let (code, page) = api
            .send(
                reqwest::Method::GET,
                &format!("/tasks?status={status}&limit=50"),
                None,
            )
            .await;
        let tasks = page["tasks"].as_array().cloned().unwrap_or_default();
        lines.push(format!("{status} ({code}, {}):", tasks.len()));
        for task in tasks {
            lines.push(format!(
                "  {} {} attempts {} scheduled {} lease {} last error {}",
                task["id"],
                task["payload"],
                task["attempts"],
                task["scheduledAt"],
                task["leaseExpiresAt"],
                task["lastError"]
            ));
        }
    }
    lines.join("\n")
}

/// Waits for every webhook, then checks: every task delivered once; the key's never more than
/// 2 at once nor 6 starts in a second (5, plus one for the edges of the receiver's clock), its
/// span at least what 5 a second allow; every other task started within `others_within` of
/// the key's span ([`OTHERS_WITHIN`] in poll mode).
async fn check_the_limits(
    api: &ApiClient,
    receiver: &Receiver,
    created: SystemTime,
    label: &str,
    max_at_once: Option<usize>,
    others_within: f64,
) {
    let n = keyed_tasks();
    // For a hang, not for speed: 40 tasks take 12-15 s on an idle machine, and 140 s ran out
    // in CI, whose DynamoDB Local then served its heaviest tests 10-30 times slower than
    // alone. Under nextest's 5-minute kill, so that what is printed here is seen.
    let limit = Duration::from_secs(240 + n as u64 / 2);
    let waited = std::time::Instant::now();
    loop {
        let all = receiver.all();
        if all.len() >= 2 * n && all.iter().all(|r| r.answered.is_some()) {
            break;
        }
        if waited.elapsed() > limit {
            let left = still_waiting(api).await;
            panic!(
                "timed out after {limit:?} waiting for every webhook answered; {}; {left}",
                progress(&all, created)
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let all = receiver.all();
    let twice: Vec<_> = receiver
        .count_by_path()
        .into_iter()
        .filter(|(_, n)| *n > 1)
        .collect();
    assert!(twice.is_empty(), "delivered twice: {twice:?}");
    let keyed: Vec<&Received> = all.iter().filter(|r| r.path.contains("/slow-")).collect();
    let others: Vec<&Received> = all.iter().filter(|r| r.path.contains("/other-")).collect();
    assert_eq!((keyed.len(), others.len()), (n, n));

    let mut starts: Vec<SystemTime> = keyed.iter().map(|r| r.at).collect();
    starts.sort();
    let span = seconds(starts[n - 1], starts[0]);
    let (at_once, per_second) = (most_at_once(&keyed), most_in_a_second(&starts));
    let mut delays: Vec<f64> = others.iter().map(|r| seconds(r.at, created)).collect();
    delays.sort_by(f64::total_cmp);
    let others_last = delays[n - 1];
    let (p50, p99) = (
        delays[n.div_ceil(2) - 1],
        delays[(n * 99).div_ceil(100) - 1],
    );
    eprintln!(
        "{label}: the key's {n} tasks over {span:.1} s, at most {at_once} at once and \
         {per_second} starts in a second; the other tasks started {p50:.2} s (p50), {p99:.2} s \
         (p99) and {others_last:.2} s (last) after their create"
    );
    if baseline() {
        return;
    }
    if let Some(most) = max_at_once {
        assert!(at_once <= most, "the key ran {at_once} at once");
    }
    assert!(
        per_second <= 6,
        "the key started {per_second} in one second"
    );
    let least = (n - 1) as f64 / 5.0 - 0.5;
    assert!(
        span >= least,
        "{n} starts at 5 a second take {least} s or more, not {span}"
    );
    assert!(
        others_last < span * others_within,
        "tasks of other keys waited behind the limited key: the last started after \
         {others_last:.1} s of the key's {span:.1} s"
    );
}

/// GIVEN two `tasker serve` over one SQLite file WHEN 40 tasks of a key limited to 2 at once
/// and 5 a second, and 40 of other keys or none, are created at once THEN the limits hold
/// across both and the others run beside them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_share_a_keys_limits_on_sqlite() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let db = dir.path().join("tasker.db");
    let db = db.to_str().expect("utf-8 path");
    two_processes_share_a_keys_limits(&["--db", db, "--interval", "1"]).await;
}

/// The same over one PostgreSQL database.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_share_a_keys_limits_on_postgres() {
    let url = tasker_tests::postgres::fresh_database().await;
    two_processes_share_a_keys_limits(&[
        "--store",
        "postgres",
        "--database-url",
        &url,
        "--interval",
        "1",
    ])
    .await;
}

/// GIVEN a `tasker serve` whose rate key allows 100 starts a second WHEN the key's receiver
/// answers a task `429` with `Retry-After: 2` THEN no other task of the key starts within those
/// 2 s (the whole key waits, not only the task), and then they all run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_429_with_retry_after_pauses_its_rate_key() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let db = dir.path().join("tasker.db");
    let db = db.to_str().expect("utf-8 path");
    let receiver = Receiver::start().await;
    let envs = envs(r#"[{"keyPrefix": "host.", "rate": "100/1s", "burst": 10}]"#);
    let serve = Serve::start(&["--db", db, "--interval", "1"], &envs).await;
    let api = ApiClient::open(&serve.base);
    let create = |path: String| {
        let body = serde_json::json!({
            "type": "sendWebhook",
            "payload": {"url": format!("{}{path}", receiver.base), "body": 1},
            "rateKey": "host.example",
            "maxAttempts": 1,
        });
        let api = &api;
        async move {
            let (status, answer) = api.send(reqwest::Method::POST, "/tasks", Some(&body)).await;
            assert_eq!(status, 201, "{answer}");
            answer["id"].as_str().expect("an id").to_owned()
        }
    };
    let first = create("/status/429/first?retry-after=2".to_owned()).await;
    // Failed (its only attempt): the key's wait was written before the outcome.
    tasker_tests::eventually(
        "the first webhook's task to fail",
        Duration::from_secs(30),
        || async {
            let (_, task) = api
                .send(reqwest::Method::GET, &format!("/tasks/{first}"), None)
                .await;
            (task["status"] == "failed").then_some(())
        },
    )
    .await;
    let answered = receiver.all()[0].answered.expect("answered");
    for i in 0..3 {
        create(format!("/after-{i}")).await;
    }
    tasker_tests::eventually(
        "the key's other webhooks",
        Duration::from_secs(30),
        || async { (receiver.all().len() >= 4).then_some(()) },
    )
    .await;
    for request in &receiver.all()[1..] {
        let waited = seconds(request.at, answered);
        assert!(
            waited >= 1.9,
            "{} started {waited:.2} s after the 429 asked for 2 s",
            request.path
        );
    }
    drop(serve);
}

/// A running `tasker worker`; killed when dropped.
struct Worker(std::process::Child);

impl Worker {
    /// Stops the worker as Ctrl-C would; answers the number of messages it handled, from the
    /// counts it prints.
    fn stop(mut self) -> u64 {
        let pid = self.0.id().to_string();
        let status = std::process::Command::new("kill")
            .args(["-INT", &pid])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -INT {pid}");
        let _ = self.0.wait();
        let mut out = String::new();
        if let Some(stdout) = self.0.stdout.as_mut() {
            std::io::Read::read_to_string(stdout, &mut out).expect("the worker's counts");
        }
        let counts: serde_json::Value = serde_json::from_str(out.trim()).expect("counts as JSON");
        counts["messages"].as_u64().expect("a count of messages")
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// GIVEN SQS mode over the store `store_env` names: `tasker serve` sending and two `tasker
/// worker` running WHEN the same 80 webhooks are created THEN the key's limits hold across
/// both workers as they do in poll mode.
async fn two_sqs_workers_share_a_keys_limits(store_env: Vec<(&'static str, String)>, label: &str) {
    let tasker_tests::sqs::Queues { queue, .. } =
        tasker_tests::sqs::fresh_queues(5, Duration::from_secs(30)).await;
    let receiver = Receiver::start().await;
    let mut env = tasker_tests::dynamo::child_env();
    env.extend(envs(LIMITS));
    env.extend(store_env);
    env.extend([
        ("TASKER_DISPATCH", "sqs".to_owned()),
        ("TASKER_QUEUE_URL", queue.url().to_owned()),
        ("AWS_ENDPOINT_URL_SQS", tasker_tests::sqs::endpoint()),
        ("TASKER_HANDLER_TIMEOUT", "3s".to_owned()),
        ("TASKER_LEASE_GRACE", "1s".to_owned()),
    ]);
    let workers: Vec<Worker> = (0..2)
        .map(|_| {
            let mut command = std::process::Command::new(tasker_tests::process::binary());
            command
                .args(["worker", "--queue-url", queue.url(), "--wait", "1"])
                .env_clear()
                .env("PATH", std::env::var("PATH").unwrap_or_default())
                .env(
                    "RUST_LOG",
                    std::env::var("TASKER_TEST_CHILD_LOG").unwrap_or_else(|_| "warn".into()),
                )
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::piped());
            for (key, value) in &env {
                command.env(key, value);
            }
            Worker(command.spawn().expect("start tasker worker"))
        })
        .collect();
    let serve = Serve::start(&[], &env).await;
    let created = SystemTime::now();
    create_all(&serve, &serve, &receiver.base).await;
    let api = ApiClient::open(&serve.base);
    check_the_limits(&api, &receiver, created, label, Some(2), SQS_OTHERS_WITHIN).await;
    drop(serve);
    let messages: u64 = workers.into_iter().map(Worker::stop).sum();
    let tasks = 2 * keyed_tasks();
    eprintln!(
        "{label}: the workers handled {messages} messages for {tasks} tasks ({:.2} per task)",
        messages as f64 / tasks as f64
    );
    assert!(messages >= tasks as u64, "every task took a message");
}

/// SQS mode with PostgreSQL as the source of truth.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_sqs_workers_share_a_keys_limits_on_postgres() {
    let url = tasker_tests::postgres::fresh_database().await;
    let store = vec![
        ("TASKER_STORE", "postgres".to_owned()),
        ("TASKER_DATABASE_URL", url),
    ];
    two_sqs_workers_share_a_keys_limits(store, "SQS mode over PostgreSQL, two workers").await;
}

/// SQS mode with DynamoDB as the source of truth.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_sqs_workers_share_a_keys_limits_on_dynamodb() {
    let table = tasker_tests::dynamo::fresh_table(&tasker_tests::dynamo::client()).await;
    let store = vec![
        ("TASKER_STORE", "dynamodb".to_owned()),
        ("TASKER_TABLE", table),
    ];
    two_sqs_workers_share_a_keys_limits(store, "SQS mode over DynamoDB Local, two workers").await;
}

/// GIVEN `keysFromHost` for webhooks, limited to one at a time WHEN webhooks are created
/// without keys THEN each gets its receiver's host as both keys, and they run one at a time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_keyed_by_their_host_run_under_its_limit() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let db = dir.path().join("tasker.db");
    let db = db.to_str().expect("utf-8 path");
    let receiver = Receiver::start().await;
    let envs = envs(r#"[{"type": "sendWebhook", "keysFromHost": true, "concurrency": 1}]"#);
    let serve = Serve::start(&["--db", db, "--interval", "1"], &envs).await;
    let api = ApiClient::open(&serve.base);
    let host = receiver.base.trim_start_matches("http://").to_owned();
    for i in 0..4 {
        let body = serde_json::json!({
            "type": "sendWebhook",
            "payload": {"url": format!("{}/delay/{ANSWER_MS}/host-{i}", receiver.base), "body": i},
        });
        let (status, task) = api.send(reqwest::Method::POST, "/tasks", Some(&body)).await;
        assert_eq!(status, 201, "{task}");
        assert_eq!(task["concurrencyKey"], host.as_str(), "{task}");
        assert_eq!(task["rateKey"], host.as_str(), "{task}");
    }
    tasker_tests::eventually(
        "every webhook answered",
        Duration::from_secs(30),
        || async {
            let all = receiver.all();
            (all.len() >= 4 && all.iter().all(|r| r.answered.is_some())).then_some(())
        },
    )
    .await;
    let all = receiver.all();
    let requests: Vec<&Received> = all.iter().collect();
    assert_eq!(most_at_once(&requests), 1, "one at a time per host");
    drop(serve);
}

/// GIVEN two `tasker serve` over one DynamoDB Local table WHEN the same 80 webhooks are
/// created THEN the key's limits hold across both (its slots and its rate in their items) and
/// the others run beside them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_share_a_keys_limits_on_dynamodb() {
    let table = tasker_tests::dynamo::fresh_table(&tasker_tests::dynamo::client()).await;
    let receiver = Receiver::start().await;
    let mut env = tasker_tests::dynamo::child_env();
    env.extend(envs(LIMITS));
    let args = ["--store", "dynamodb", "--table", &table, "--interval", "1"];
    let first = Serve::start(&args, &env).await;
    let second = Serve::start(&args, &env).await;
    let created = SystemTime::now();
    create_all(&first, &second, &receiver.base).await;
    let api = ApiClient::open(&first.base);
    check_the_limits(
        &api,
        &receiver,
        created,
        "DynamoDB Local",
        Some(2),
        OTHERS_WITHIN,
    )
    .await;
    drop((first, second));
}
