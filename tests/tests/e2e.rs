//! End to end: a real `tasker serve` process, a real HTTP client, a webhook receiver on
//! 127.0.0.1, on SQLite and on DynamoDB Local. One life of tasks, told in steps that share the
//! server: delivery, retries, schedule, the operator CLI, cancel, references, cleanup, and a
//! clean stop.

use std::time::{Duration, SystemTime};

use hmac::{Hmac, KeyInit, Mac};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use sha2::Sha256;
use tasker_tests::fixtures::ApiClient;
use tasker_tests::process::{self, Serve};
use tasker_tests::receiver::Receiver;
use tasker_tests::{dynamo, eventually};

const TOKEN: &str = "e2e-token";
const SECRET: &str = "e2e-webhook-secret";
const PATIENCE: Duration = Duration::from_secs(30);

/// One `tasker serve` over a store, its client, and the webhook receiver.
struct Life {
    serve: Serve,
    api: ApiClient,
    receiver: Receiver,
    /// `serve`'s arguments, for a restart.
    serve_args: Vec<String>,
    /// The store flags every CLI command takes.
    store_args: Vec<String>,
    envs: Vec<(&'static str, String)>,
}

impl Life {
    /// GIVEN `tasker serve` over the store `store_args` with a token, a webhook secret and a
    /// short backoff (three attempts fit in seconds: full jitter within 1 s, then 2 s).
    async fn start(store_args: &[&str], mut envs: Vec<(&'static str, String)>) -> Self {
        let receiver = Receiver::start().await;
        envs.extend([
            ("TASKER_WEBHOOK_ALLOW_PRIVATE", "true".to_owned()),
            ("TASKER_WEBHOOK_SECRET", SECRET.to_owned()),
            ("TASKER_API_TOKEN", TOKEN.to_owned()),
            ("TASKER_RETRY_INITIAL", "1s".to_owned()),
            ("TASKER_RETRY_MAX", "2s".to_owned()),
            // The cleanup step deletes what just finished (the default keeps a day).
            ("TASKER_RETENTION", "0s".to_owned()),
        ]);
        let store_args: Vec<String> = store_args.iter().map(|a| (*a).to_owned()).collect();
        let mut serve_args = store_args.clone();
        serve_args.extend(["--interval".to_owned(), "1".to_owned()]);
        let serve = Serve::start(&strs(&serve_args), &envs).await;
        Self {
            api: ApiClient::new(&serve.base, TOKEN),
            serve,
            receiver,
            serve_args,
            store_args,
            envs,
        }
    }

    async fn created(&self, body: Value) -> Value {
        let (status, task) = self.api.send(Method::POST, "/tasks", Some(&body)).await;
        assert_eq!(status, StatusCode::CREATED, "{task}");
        task
    }

    async fn get(&self, task: &Value) -> (StatusCode, Value) {
        let path = format!("/tasks/{}", id_of(task));
        self.api.send(Method::GET, &path, None).await
    }

    async fn wait_for_status(&self, task: &Value, status: &str) -> Value {
        let what = format!("task {} to be {status}", id_of(task));
        eventually(&what, PATIENCE, || async {
            let (_, task) = self.get(task).await;
            (task["status"] == status).then_some(task)
        })
        .await
    }

    /// `tasker <command> <store flags> --json` as an operator runs it; its JSON output.
    fn cli(&self, command: &[&str]) -> Value {
        let mut full = command.to_vec();
        full.extend(strs(&self.store_args));
        full.push("--json");
        let output = process::run(&full, &self.envs);
        assert!(
            output.status.success(),
            "tasker {command:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        serde_json::from_slice(&output.stdout).expect("JSON output")
    }

    fn hook(&self, path: &str) -> String {
        format!("{}{path}", self.receiver.base)
    }
}

fn strs(args: &[String]) -> Vec<&str> {
    args.iter().map(String::as_str).collect()
}

fn id_of(task: &Value) -> String {
    task["id"].as_str().expect("task id").to_owned()
}

fn hmac_hex(body: &[u8]) -> String {
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(SECRET.as_bytes()).expect("key");
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

/// WHEN a create comes without the token THEN it is refused (only `/healthz` is open).
async fn the_token_is_required(life: &Life) {
    let unauthenticated = ApiClient::new(&life.api.base, "wrong-token");
    let body = json!({"type": "sendWebhook", "payload": {}});
    let (status, _) = unauthenticated
        .send(Method::POST, "/tasks", Some(&body))
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

/// WHEN a webhook is due now THEN it is delivered once, with the task id, a valid signature
/// and its own headers.
async fn a_webhook_is_delivered_signed(life: &Life) -> Value {
    let delivered = life
        .created(json!({
            "type": "sendWebhook",
            "payload": {"url": life.hook("/hooks/delivered"), "body": {"hello": "world", "n": [1, 2]}, "headers": {"X-Custom": "yes"}}
        }))
        .await;
    let done = life.wait_for_status(&delivered, "succeeded").await;
    assert_eq!(done["attempts"], 1);
    let requests = life.receiver.requests_to("/hooks/delivered");
    assert_eq!(requests.len(), 1);
    let request = &requests[0];
    assert_eq!(request.body.as_ref(), br#"{"hello":"world","n":[1,2]}"#);
    assert_eq!(
        request.headers["x-tasker-task-id"],
        id_of(&delivered).as_str()
    );
    assert_eq!(
        request.headers["x-tasker-signature"]
            .to_str()
            .expect("ascii"),
        format!("sha256={}", hmac_hex(&request.body))
    );
    assert_eq!(request.headers["x-custom"], "yes");
    assert_eq!(request.headers["content-type"], "application/json");
    delivered
}

/// A webhook body with what a parsed value would change: a number past 64 bits, trailing
/// zeros, an exponent, escapes and keys out of order, with whitespace between its tokens.
const EXACT_BODY: &str = r#"{ "n": 123456789012345678901234567890, "f": 1.10, "e": 1E3,
    "s": "\u00e9 \/", "k": {"y": 1, "x": [2, 3]} }"#;
/// [`EXACT_BODY`] as stored and delivered: every token as sent, no whitespace between them.
const EXACT_STORED: &str = r#"{"n":123456789012345678901234567890,"f":1.10,"e":1E3,"s":"\u00e9 \/","k":{"y":1,"x":[2,3]}}"#;

/// GIVEN a payload with a 30-digit number, `1.10`, `1E3`, escapes and unordered keys WHEN it
/// is created through the API, a batch, the CLI and a schedule THEN each stores it byte for
/// byte (only the whitespace between tokens goes), and the webhook delivers its body so; it
/// used to arrive as `1.2345678901234568e29`, `1.1`, `1000.0`, `"é /"`.
async fn exact_payloads_are_kept_byte_for_byte(life: &Life) -> Value {
    let hook = life.hook("/hooks/exact");
    let payload = format!(r#"{{"url": "{hook}", "body": {EXACT_BODY}}}"#);
    let stored = format!(r#"{{"url":"{hook}","body":{EXACT_STORED}}}"#);
    let (status, created) = life
        .api
        .send_text(
            Method::POST,
            "/tasks",
            &format!(r#"{{"type": "sendWebhook", "payload": {payload}}}"#),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert_eq!(created["payload"], stored.as_str(), "create");
    life.wait_for_status(&created, "succeeded").await;
    let requests = life.receiver.requests_to("/hooks/exact");
    assert_eq!(requests.len(), 1);
    assert_eq!(String::from_utf8_lossy(&requests[0].body), EXACT_STORED);

    let later = format!(r#"{{"type": "sendWebhook", "delaySeconds": 3600, "payload": {payload}}}"#);
    let (status, batch) = life
        .api
        .send_text(
            Method::POST,
            "/tasks/batch",
            &format!(r#"{{"tasks": [{later}]}}"#),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{batch}");
    let (_, task) = life.get(&batch["results"][0]).await;
    assert_eq!(task["payload"], stored.as_str(), "batch: {batch}");

    let cli = life.cli(&[
        "create",
        "--type",
        "sendWebhook",
        "--delay",
        "1h",
        "--payload",
        &payload,
    ]);
    assert_eq!(cli["payload"], stored.as_str(), "tasker create");

    let (status, schedule) = life
        .api
        .send_text(
            Method::PUT,
            "/schedules/exact",
            &format!(r#"{{"cron": "0 0 1 1 *", "type": "sendWebhook", "payload": {payload}}}"#),
        )
        .await;
    assert!(status.is_success(), "{schedule}");
    assert_eq!(schedule["payload"], stored.as_str(), "schedule");
    let (status, _) = life
        .api
        .send(Method::DELETE, "/schedules/exact", None)
        .await;
    assert!(status.is_success());
    created
}

/// WHEN a webhook always fails THEN it is tried `maxAttempts` times, then kept as failed with
/// its error.
async fn a_failing_webhook_uses_its_attempts(life: &Life) -> Value {
    let failing = life
        .created(json!({
            "type": "sendWebhook",
            "payload": {"url": life.hook("/status/500/failing"), "body": {}},
            "maxAttempts": 3
        }))
        .await;
    let failed = life.wait_for_status(&failing, "failed").await;
    assert_eq!(failed["attempts"], 3);
    let error = failed["lastError"].as_str().unwrap_or_default();
    assert!(error.contains("500"), "{failed}");
    assert!(failed["lastFailedAttemptAt"].is_string());
    assert_eq!(life.receiver.requests_to("/status/500/failing").len(), 3);
    failing
}

/// WHEN the operator CLI (a second process on the same store) retries the failed tasks THEN
/// the task runs its attempts again and fails again, its history kept.
async fn the_operator_retries_failed_tasks(life: &Life, failing: &Value) {
    let listed = life.cli(&["list", "--status", "failed"]);
    assert_eq!(
        listed["tasks"].as_array().map(Vec::len),
        Some(1),
        "{listed}"
    );
    assert_eq!(listed["tasks"][0]["id"], failing["id"]);
    assert!(listed["nextCursor"].is_null());
    // On DynamoDB the serving process writes its counts of finished tasks every 10 s at most.
    let mut stats = life.cli(&["stats"]);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while stats["counts"]["failed"] != 1 && std::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        stats = life.cli(&["stats"]);
    }
    assert_eq!(stats["counts"]["failed"], 1, "{stats}");
    assert_eq!(life.cli(&["show", &id_of(failing)])["status"], "failed");
    let retried = life.cli(&["retry", "--all-failed", "--type", "sendWebhook"]);
    assert_eq!(retried["retried"], 1, "{retried}");
    assert_eq!(retried["ids"][0], failing["id"]);
    let failed_again = life.wait_for_status(failing, "failed").await;
    assert_eq!(failed_again["attempts"], 3);
    assert_eq!(life.receiver.requests_to("/status/500/failing").len(), 6);
    let none = life.cli(&["retry", "--all-failed", "--type", "other"]);
    assert_eq!(none["retried"], 0);
}

/// GIVEN a webhook delayed 3 seconds WHEN it runs THEN not before its time.
async fn a_delayed_webhook_waits_for_its_time(life: &Life, delayed: &Value) {
    assert_eq!(delayed["status"], "pending");
    let finished = life.wait_for_status(delayed, "succeeded").await;
    let scheduled: SystemTime =
        humantime::parse_rfc3339(finished["scheduledAt"].as_str().expect("scheduledAt"))
            .expect("RFC 3339");
    let requests = life.receiver.requests_to("/hooks/delayed");
    assert_eq!(requests.len(), 1);
    assert!(requests[0].at >= scheduled, "ran before scheduledAt");
}

/// WHEN a pending task is cancelled by id THEN it is cancelled; again, 409; unknown, 404.
async fn cancel_by_id_follows_the_status_rules(life: &Life) -> Value {
    let later = life
        .created(json!({"type": "sendWebhook", "payload": {"url": life.hook("/hooks/delivered"), "body": {}}, "delaySeconds": 3600}))
        .await;
    // The operator's CLI says why it waits, as the API does.
    let shown = life.cli(&["show", &id_of(&later)]);
    assert_eq!(shown["waiting"]["reason"], "scheduled", "{shown}");
    assert_eq!(shown["waiting"]["until"], later["scheduledAt"], "{shown}");
    let path = format!("/tasks/{}", id_of(&later));
    let (status, cancelled) = life.api.send(Method::DELETE, &path, None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(cancelled["status"], "cancelled");
    let (status, again) = life.api.send(Method::DELETE, &path, None).await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(again["error"]["code"], "conflict");
    let unknown = "/tasks/01JD0000000000000000000000";
    assert_eq!(
        life.api.send(Method::DELETE, unknown, None).await.0,
        StatusCode::NOT_FOUND
    );
    later
}

/// WHEN a second task takes an active reference THEN it is refused naming the first; a cancel
/// by reference frees it. Returns the first task and its pending replacement.
async fn a_reference_is_held_until_cancelled(life: &Life) -> (Value, Value) {
    let referenced = json!({
        "type": "sendWebhook",
        "payload": {"url": life.hook("/hooks/delivered"), "body": {}},
        "delaySeconds": 3600,
        "referenceUid": "booking-1"
    });
    let first = life.created(referenced.clone()).await;
    let (status, duplicate) = life
        .api
        .send(Method::POST, "/tasks", Some(&referenced))
        .await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(duplicate["error"]["code"], "duplicate");
    assert_eq!(duplicate["error"]["existingId"], first["id"]);
    let by_reference = json!({"referenceUid": "booking-1", "type": "sendWebhook"});
    let (status, answer) = life
        .api
        .send(Method::POST, "/tasks/cancel", Some(&by_reference))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(answer, json!({"cancelled": 1, "ids": [first["id"]]}));
    let replacement = life.created(referenced).await;
    (first, replacement)
}

/// WHEN cleanup runs (a second process on the same store) THEN it deletes exactly the
/// finished tasks `gone` and keeps the pending `kept`.
async fn cleanup_deletes_only_finished_tasks(life: &Life, gone: &[&Value], kept: &Value) {
    let mut args = vec!["cleanup"];
    args.extend(strs(&life.store_args));
    let output = process::run(&args, &life.envs);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let summary: Value = serde_json::from_slice(&output.stdout).expect("cleanup JSON");
    assert_eq!(summary["deleted"], gone.len(), "{summary}");
    // The store's index keeps up here: the sweep below the watermark finds nothing to rescue.
    assert_eq!(summary["rescued"], 0, "{summary}");
    for task in gone {
        assert_eq!(life.get(task).await.0, StatusCode::NOT_FOUND);
    }
    let (status, still) = life.get(kept).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(still["status"], "pending");
}

/// WHEN Ctrl-C stops the server THEN it exits cleanly, and `pending` is still there after a
/// restart.
async fn a_clean_stop_keeps_pending_tasks(mut life: Life, pending: &Value) {
    let exit = life.serve.interrupt(Duration::from_secs(20));
    assert!(exit.success(), "tasker serve exited with {exit}");
    let restarted = Serve::start(&strs(&life.serve_args), &life.envs).await;
    life.api = ApiClient::new(&restarted.base, TOKEN);
    assert_eq!(life.get(pending).await.1["status"], "pending");
}

/// The whole life of tasks through one `tasker serve` over `store_args`.
async fn full_lifecycle(store_args: &[&str], envs: Vec<(&'static str, String)>) {
    let life = Life::start(store_args, envs).await;
    the_token_is_required(&life).await;
    let delayed = life
        .created(json!({
            "type": "sendWebhook",
            "payload": {"url": life.hook("/hooks/delayed"), "body": {"late": true}},
            "delaySeconds": 3
        }))
        .await;
    let delivered = a_webhook_is_delivered_signed(&life).await;
    let exact = exact_payloads_are_kept_byte_for_byte(&life).await;
    let failing = a_failing_webhook_uses_its_attempts(&life).await;
    the_operator_retries_failed_tasks(&life, &failing).await;
    a_delayed_webhook_waits_for_its_time(&life, &delayed).await;
    let later = cancel_by_id_follows_the_status_rules(&life).await;
    let (first, replacement) = a_reference_is_held_until_cancelled(&life).await;
    let finished = [&delivered, &exact, &failing, &delayed, &later, &first];
    cleanup_deletes_only_finished_tasks(&life, &finished, &replacement).await;
    a_clean_stop_keeps_pending_tasks(life, &replacement).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_lifecycle_on_sqlite() {
    let dir = tempfile::tempdir().expect("temp dir");
    let db = dir.path().join("tasker.db");
    let db = db.to_str().expect("utf-8 path").to_owned();
    full_lifecycle(&["--db", &db], Vec::new()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_lifecycle_on_dynamodb_local() {
    // The table comes from `tasker create-table`, as a user would make it.
    let table = format!(
        "tasker-e2e-{}",
        ulid::Ulid::new().to_string().to_lowercase()
    );
    let output = process::run(&["create-table", "--table", &table], &dynamo::child_env());
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&output.stdout).trim(),
        format!("created table {table}")
    );
    full_lifecycle(
        &["--store", "dynamodb", "--table", &table],
        dynamo::child_env(),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_lifecycle_on_postgres() {
    // A database of its own, in Tasker's schema, made by `tasker serve` at its start.
    let url = tasker_tests::postgres::fresh_database().await;
    full_lifecycle(&["--store", "postgres", "--database-url", &url], Vec::new()).await;
}
