//! End to end: a real `tasker serve` process, a real HTTP client, a webhook receiver on
//! 127.0.0.1, on SQLite and on DynamoDB Local.

use std::time::{Duration, SystemTime};

use hmac::{Hmac, KeyInit, Mac};
use reqwest::StatusCode;
use serde_json::{Value, json};
use sha2::Sha256;
use tasker_tests::process::{self, Serve};
use tasker_tests::receiver::Receiver;
use tasker_tests::{dynamo, eventually};

const TOKEN: &str = "e2e-token";
const SECRET: &str = "e2e-webhook-secret";
const PATIENCE: Duration = Duration::from_secs(30);

struct Api {
    client: reqwest::Client,
    base: String,
}

impl Api {
    async fn create(&self, body: Value) -> (StatusCode, Value) {
        let response = self
            .client
            .post(format!("{}/tasks", self.base))
            .bearer_auth(TOKEN)
            .json(&body)
            .send()
            .await
            .expect("POST /tasks");
        let status = response.status();
        (status, response.json().await.expect("JSON answer"))
    }

    async fn created(&self, body: Value) -> Value {
        let (status, task) = self.create(body).await;
        assert_eq!(status, StatusCode::CREATED, "{task}");
        task
    }

    async fn get(&self, id: &str) -> (StatusCode, Value) {
        let response = self
            .client
            .get(format!("{}/tasks/{id}", self.base))
            .bearer_auth(TOKEN)
            .send()
            .await
            .expect("GET /tasks/{id}");
        let status = response.status();
        (status, response.json().await.expect("JSON answer"))
    }

    async fn cancel(&self, id: &str) -> (StatusCode, Value) {
        let response = self
            .client
            .delete(format!("{}/tasks/{id}", self.base))
            .bearer_auth(TOKEN)
            .send()
            .await
            .expect("DELETE /tasks/{id}");
        let status = response.status();
        (status, response.json().await.expect("JSON answer"))
    }

    async fn cancel_by_reference(&self, body: Value) -> (StatusCode, Value) {
        let response = self
            .client
            .post(format!("{}/tasks/cancel", self.base))
            .bearer_auth(TOKEN)
            .json(&body)
            .send()
            .await
            .expect("POST /tasks/cancel");
        let status = response.status();
        (status, response.json().await.expect("JSON answer"))
    }

    async fn wait_for_status(&self, id: &str, status: &str) -> Value {
        eventually(&format!("task {id} to be {status}"), PATIENCE, || async {
            let (_, task) = self.get(id).await;
            (task["status"] == status).then_some(task)
        })
        .await
    }
}

fn id_of(task: &Value) -> String {
    task["id"].as_str().expect("task id").to_owned()
}

fn hmac_hex(body: &[u8]) -> String {
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(SECRET.as_bytes()).expect("key");
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

/// The whole life of tasks through one `tasker serve`: delivery, retries, schedule, cancel,
/// references, auth, cleanup, and a clean stop.
async fn full_lifecycle(store_args: &[&str], mut envs: Vec<(&'static str, String)>) {
    let receiver = Receiver::start().await;
    envs.extend([
        ("TASKER_WEBHOOK_ALLOW_PRIVATE", "true".to_owned()),
        ("TASKER_WEBHOOK_SECRET", SECRET.to_owned()),
        ("TASKER_API_TOKEN", TOKEN.to_owned()),
        // Short backoff so three attempts fit in seconds (full jitter within 1 s, then 2 s).
        ("TASKER_RETRY_INITIAL", "1s".to_owned()),
        ("TASKER_RETRY_MAX", "2s".to_owned()),
    ]);
    let mut args = store_args.to_vec();
    args.extend(["--interval", "1"]);
    let mut serve = Serve::start(&args, &envs).await;
    let api = Api {
        client: reqwest::Client::new(),
        base: serve.base.clone(),
    };

    // Auth: the token is required, /healthz is open.
    let unauthenticated = api
        .client
        .post(format!("{}/tasks", api.base))
        .json(&json!({"type": "sendWebhook", "payload": {}}))
        .send()
        .await
        .expect("POST");
    assert_eq!(unauthenticated.status(), StatusCode::UNAUTHORIZED);

    // GIVEN a webhook to deliver now, one that always fails, and one due in 3 seconds
    let hook_url = format!("{}/hooks/delivered", receiver.base);
    let delivered = api
        .created(json!({
            "type": "sendWebhook",
            "payload": {"url": hook_url, "body": {"hello": "world", "n": [1, 2]}, "headers": {"X-Custom": "yes"}}
        }))
        .await;
    let failing = api
        .created(json!({
            "type": "sendWebhook",
            "payload": {"url": format!("{}/status/500/failing", receiver.base), "body": {}},
            "maxAttempts": 3
        }))
        .await;
    let delayed = api
        .created(json!({
            "type": "sendWebhook",
            "payload": {"url": format!("{}/hooks/delayed", receiver.base), "body": {"late": true}},
            "delaySeconds": 3
        }))
        .await;
    assert_eq!(delayed["status"], "pending");

    // THEN the first is delivered once, with the task id and a valid signature
    let done = api.wait_for_status(&id_of(&delivered), "succeeded").await;
    assert_eq!(done["attempts"], 1);
    let requests = receiver.requests_to("/hooks/delivered");
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

    // AND the failing one is tried maxAttempts times, then kept as failed with its error
    let failed = api.wait_for_status(&id_of(&failing), "failed").await;
    assert_eq!(failed["attempts"], 3);
    assert!(
        failed["lastError"]
            .as_str()
            .unwrap_or_default()
            .contains("500"),
        "{failed}"
    );
    assert!(failed["lastFailedAttemptAt"].is_string());
    assert_eq!(receiver.requests_to("/status/500/failing").len(), 3);

    // The operator CLI (a second process on the same store) finds the failed task and
    // retries it: it runs its 3 attempts again and fails again, its history kept.
    let cli = |command: &[&str]| -> Value {
        let mut full = command.to_vec();
        full.extend(store_args);
        full.push("--json");
        let output = process::run(&full, &envs);
        assert!(
            output.status.success(),
            "tasker {command:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        serde_json::from_slice(&output.stdout).expect("JSON output")
    };
    let listed = cli(&["list", "--status", "failed"]);
    assert_eq!(
        listed["tasks"].as_array().map(Vec::len),
        Some(1),
        "{listed}"
    );
    assert_eq!(listed["tasks"][0]["id"], failing["id"]);
    assert!(listed["nextCursor"].is_null());
    let stats = cli(&["stats"]);
    assert_eq!(stats["counts"]["failed"], 1, "{stats}");
    assert_eq!(cli(&["show", &id_of(&failing)])["status"], "failed");
    let retried = cli(&["retry", "--all-failed", "--type", "sendWebhook"]);
    assert_eq!(retried["retried"], 1, "{retried}");
    assert_eq!(retried["ids"][0], failing["id"]);
    let failed_again = api.wait_for_status(&id_of(&failing), "failed").await;
    assert_eq!(failed_again["attempts"], 3);
    assert_eq!(receiver.requests_to("/status/500/failing").len(), 6);
    assert_eq!(
        cli(&["retry", "--all-failed", "--type", "other"])["retried"],
        0
    );

    // AND the delayed one did not run before its time
    let finished = api.wait_for_status(&id_of(&delayed), "succeeded").await;
    let scheduled: SystemTime =
        humantime::parse_rfc3339(finished["scheduledAt"].as_str().expect("scheduledAt"))
            .expect("RFC 3339");
    let delayed_requests = receiver.requests_to("/hooks/delayed");
    assert_eq!(delayed_requests.len(), 1);
    assert!(
        delayed_requests[0].at >= scheduled,
        "ran before scheduledAt"
    );

    // Cancel by id: pending -> cancelled; again -> 409; unknown -> 404.
    let later = api
        .created(json!({"type": "sendWebhook", "payload": {"url": hook_url, "body": {}}, "delaySeconds": 3600}))
        .await;
    let (status, cancelled) = api.cancel(&id_of(&later)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(cancelled["status"], "cancelled");
    let (status, again) = api.cancel(&id_of(&later)).await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(again["error"]["code"], "conflict");
    let (status, _) = api.cancel("01JD0000000000000000000000").await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // References: a duplicate is refused naming the first; cancel by reference frees it.
    let referenced = json!({
        "type": "sendWebhook",
        "payload": {"url": hook_url, "body": {}},
        "delaySeconds": 3600,
        "referenceUid": "booking-1"
    });
    let first = api.created(referenced.clone()).await;
    let (status, duplicate) = api.create(referenced.clone()).await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(duplicate["error"]["code"], "duplicate");
    assert_eq!(duplicate["error"]["existingId"], first["id"]);
    let (status, by_reference) = api
        .cancel_by_reference(json!({"referenceUid": "booking-1", "type": "sendWebhook"}))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(by_reference, json!({"cancelled": 1, "ids": [first["id"]]}));
    let replacement = api.created(referenced).await;

    // Cleanup (a second process on the same store) deletes the 5 finished tasks only.
    let mut cleanup_args = vec!["cleanup"];
    cleanup_args.extend(store_args);
    let output = process::run(&cleanup_args, &envs);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let summary: Value = serde_json::from_slice(&output.stdout).expect("cleanup JSON");
    assert_eq!(summary, json!({"deleted": 5}));
    for gone in [&delivered, &failing, &delayed, &later, &first] {
        assert_eq!(api.get(&id_of(gone)).await.0, StatusCode::NOT_FOUND);
    }
    let (status, kept) = api.get(&id_of(&replacement)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(kept["status"], "pending");

    // Ctrl-C stops the process cleanly, and the pending task is still there afterwards.
    let exit = serve.interrupt(Duration::from_secs(20));
    assert!(exit.success(), "tasker serve exited with {exit}");
    let restarted = Serve::start(&args, &envs).await;
    let api = Api {
        client: reqwest::Client::new(),
        base: restarted.base.clone(),
    };
    assert_eq!(api.get(&id_of(&replacement)).await.1["status"], "pending");
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
