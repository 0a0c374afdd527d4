//! Every sample event in `events/` drives the real Lambda handler against DynamoDB Local.

use std::collections::HashMap;
use std::time::Duration;

use axum::body::Body;
use http::StatusCode;
use serde_json::Value;
use tasker::store::TaskWriter;
use tasker::{Config, NewTask, PollSettings, Store, Task, TaskStatus, Timestamp};
use tasker_tests::{dynamo, events};
use tower::ServiceExt;

fn config(vars: &[(&str, &str)]) -> Config {
    let vars: HashMap<String, String> = vars
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    Config::from_lookup(|name| vars.get(name).cloned()).expect("valid config")
}

/// The token the sample events carry.
fn token_config() -> Config {
    config(&[("TASKER_API_TOKEN", "test-token")])
}

async fn send(app: &axum::Router, request: lambda_http::Request) -> (StatusCode, Value) {
    let (parts, body) = request.into_parts();
    let request = http::Request::from_parts(parts, Body::from(body.to_vec()));
    let response = app.clone().oneshot(request).await.expect("router answers");
    let status = response.status();
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .expect("read body");
    let json = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    (status, json)
}

async fn fresh_store() -> Store {
    Store::DynamoDb(dynamo::fresh_store().await)
}

#[tokio::test]
async fn api_gateway_events_drive_every_route() {
    // GIVEN the enqueue function over a fresh table, configured with the events' token
    let store = fresh_store().await;
    let app = enqueue::app(&token_config(), store.clone()).expect("app");

    // WHEN the create event arrives THEN the task is stored as the seed describes
    let (status, created) = send(&app, events::http_request("apigw-create-task.json", None)).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let id = created["id"].as_str().expect("id").to_owned();
    assert_eq!(created["type"], "sendWebhook");
    assert_eq!(created["status"], "pending");
    assert_eq!(created["maxAttempts"], 3);
    assert_eq!(created["referenceUid"], "booking-42");
    assert_eq!(
        created["payload"],
        r#"{"url":"http://127.0.0.1:9/hook","body":{"hello":"world"}}"#
    );

    // AND the same reference again is a duplicate naming the first task
    let (status, duplicate) =
        send(&app, events::http_request("apigw-create-task.json", None)).await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(duplicate["error"]["code"], "duplicate");
    assert_eq!(duplicate["error"]["existingId"], id.as_str());

    // WHEN it is read THEN it is the same task
    let (status, fetched) =
        send(&app, events::http_request("apigw-get-task.json", Some(&id))).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(fetched, created);

    // WHEN an unknown id is read or cancelled THEN 404
    let (status, missing) = send(&app, events::http_request("apigw-get-task.json", None)).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(missing["error"]["code"], "not_found");
    let (status, _) = send(&app, events::http_request("apigw-cancel-task.json", None)).await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // WHEN cancelled by reference THEN the pending task is cancelled
    let (status, cancelled) = send(
        &app,
        events::http_request("apigw-cancel-by-reference.json", None),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{cancelled}");
    assert_eq!(cancelled["cancelled"], 1);
    assert_eq!(cancelled["ids"][0], id.as_str());

    // AND cancelling it again by id is a conflict
    let (status, conflict) = send(
        &app,
        events::http_request("apigw-cancel-task.json", Some(&id)),
    )
    .await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(conflict["error"]["code"], "conflict");

    // AND with the first one cancelled the reference can be used again, then cancelled by id
    let (status, second) = send(&app, events::http_request("apigw-create-task.json", None)).await;
    assert_eq!(status, StatusCode::CREATED);
    let second_id = second["id"].as_str().expect("id");
    let (status, cancelled) = send(
        &app,
        events::http_request("apigw-cancel-task.json", Some(second_id)),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(cancelled["status"], "cancelled");

    // Retry: the cancelled second task is pending again; a pending one cannot be retried.
    let (status, retried) = send(
        &app,
        events::http_request("apigw-retry-task.json", Some(second_id)),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{retried}");
    assert_eq!(retried["status"], "pending");
    assert_eq!(retried["attempts"], 0);
    let (status, conflict) = send(
        &app,
        events::http_request("apigw-retry-task.json", Some(second_id)),
    )
    .await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(conflict["error"]["code"], "conflict");

    // Batch: each item gets its own result; the valid ones are stored.
    let (status, batch) = send(&app, events::http_request("apigw-batch-create.json", None)).await;
    assert_eq!(status, StatusCode::OK, "{batch}");
    let results = batch["results"].as_array().expect("results");
    assert_eq!(results.len(), 3);
    assert_eq!(results[0]["status"], "created");
    assert_eq!(results[1]["status"], "created");
    assert_eq!(results[2]["status"], "error");
    assert_eq!(results[2]["error"]["error"]["code"], "unknown_type");
    let stored = results[1]["id"].as_str().expect("id");
    let (status, _) = send(
        &app,
        events::http_request("apigw-get-task.json", Some(stored)),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let (status, again) = send(&app, events::http_request("apigw-batch-create.json", None)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(again["results"][0]["status"], "duplicate");
    assert_eq!(
        again["results"][0]["error"]["error"]["existingId"],
        results[0]["id"]
    );

    // List and stats: the pending tasks, newest first, agree with the counts.
    let (status, page) = send(&app, events::http_request("apigw-list-tasks.json", None)).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    let listed = page["tasks"].as_array().expect("tasks");
    assert!(listed.iter().all(|task| task["status"] == "pending"));
    assert!(page["nextCursor"].is_null());
    let (status, stats) = send(&app, events::http_request("apigw-stats.json", None)).await;
    assert_eq!(status, StatusCode::OK, "{stats}");
    assert_eq!(stats["counts"]["pending"], listed.len());
    assert_eq!(stats["counts"]["cancelled"], 1);
    assert!(
        listed.len() >= 3,
        "the retried task and the batch's two: {page}"
    );

    // Health needs no token; a wrong token and bad input are refused with codes.
    let (status, _) = send(&app, events::http_request("apigw-healthz.json", None)).await;
    assert_eq!(status, StatusCode::OK);
    let (status, body) = send(&app, events::http_request("apigw-unauthorized.json", None)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["error"]["code"], "unauthorized");
    let (status, body) = send(
        &app,
        events::http_request("apigw-create-task-invalid.json", None),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"]["code"], "invalid_field");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("`type`")
    );
}

#[tokio::test]
async fn enqueue_fails_closed_without_auth_configuration() {
    // GIVEN neither TASKER_API_TOKEN nor TASKER_AUTH=iam
    let app = enqueue::app(&config(&[]), fresh_store().await).expect("app");
    // THEN every route but /healthz answers 401
    for name in [
        "apigw-create-task.json",
        "apigw-get-task.json",
        "apigw-cancel-task.json",
        "apigw-cancel-by-reference.json",
        "apigw-list-tasks.json",
        "apigw-stats.json",
    ] {
        let (status, body) = send(&app, events::http_request(name, None)).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{name}");
        assert_eq!(body["error"]["code"], "unauthorized", "{name}");
    }
    let (status, _) = send(&app, events::http_request("apigw-healthz.json", None)).await;
    assert_eq!(status, StatusCode::OK);

    // AND with IAM in front, requests pass without a token
    let iam = enqueue::app(&config(&[("TASKER_AUTH", "iam")]), fresh_store().await).expect("app");
    let (status, _) = send(&iam, events::http_request("apigw-create-task.json", None)).await;
    assert_eq!(status, StatusCode::CREATED);
}

#[tokio::test]
async fn scheduled_events_run_the_processor_and_cleanup() {
    // GIVEN a task created through the API event (its webhook targets 127.0.0.1, which the
    // production default refuses) and a processor over the same table
    let store = fresh_store().await;
    let config = token_config();
    let app = enqueue::app(&config, store.clone()).expect("app");
    let (status, created) = send(&app, events::http_request("apigw-create-task.json", None)).await;
    assert_eq!(status, StatusCode::CREATED);
    let id: tasker::TaskId = created["id"]
        .as_str()
        .expect("id")
        .parse()
        .expect("task id");
    let tasker = config.tasker_over(store.clone()).expect("tasker");

    // WHEN the scheduled event arrives
    let event = events::scheduled("scheduled-processor.json", Duration::from_secs(60));
    let lines = std::sync::Mutex::new(Vec::new());
    let emit = |line: &str| lines.lock().expect("lines").push(line.to_owned());
    let summary = processor::handle(
        &tasker,
        "tasker-test",
        PollSettings::default(),
        event,
        &emit,
    )
    .await
    .expect("processor run");

    // THEN one Embedded Metric Format line carries every metric, matching the summary
    let lines = lines.into_inner().expect("lines");
    assert_eq!(lines.len(), 1);
    let emf: Value = serde_json::from_str(&lines[0]).expect("EMF is JSON");
    let directive = &emf["_aws"]["CloudWatchMetrics"][0];
    assert_eq!(directive["Namespace"], "Tasker");
    assert_eq!(directive["Dimensions"], serde_json::json!([["Service"]]));
    assert_eq!(emf["Service"], "tasker-test");
    assert!(emf["_aws"]["Timestamp"].as_i64().is_some());
    let names: Vec<&str> = directive["Metrics"]
        .as_array()
        .expect("metric definitions")
        .iter()
        .map(|m| m["Name"].as_str().expect("name"))
        .collect();
    for name in [
        "Claimed",
        "Succeeded",
        "Retried",
        "Failed",
        "Released",
        "StoreErrors",
        "RunDuration",
        "QueueDepth",
        "OldestDueAge",
    ] {
        assert!(names.contains(&name), "{name} missing from {names:?}");
        assert!(emf[name].is_number(), "{name} has no value");
    }
    assert_eq!(emf["Claimed"], summary.claimed);
    assert_eq!(emf["Failed"], summary.failed);
    assert_eq!(emf["QueueDepth"], 0);

    // THEN the summary has the documented shape and the refusal failed the task for good
    let json = serde_json::to_value(summary).expect("summary JSON");
    for key in ["claimed", "succeeded", "retried", "failed", "durationMs"] {
        assert!(json.get(key).is_some(), "summary lacks {key}: {json}");
    }
    assert_eq!((summary.claimed, summary.failed), (1, 1), "{json}");
    let task = tasker.get(id).await.expect("task");
    assert_eq!(task.status, TaskStatus::Failed);
    assert!(task.last_error.unwrap_or_default().contains("refused"));

    // AND an invocation already at its deadline starts nothing
    let late = events::scheduled("scheduled-processor.json", Duration::ZERO);
    let summary = processor::handle(
        &tasker,
        "tasker-test",
        PollSettings::default(),
        late,
        &|_| {},
    )
    .await
    .expect("processor run");
    assert_eq!(summary.claimed, 0);

    // WHEN the cleanup event arrives THEN the finished task is deleted (the queue index is
    // eventually consistent, so a task finished a moment ago may need a second run)
    let mut deleted = 0;
    for _ in 0..20 {
        let event = events::scheduled("scheduled-cleanup.json", Duration::from_secs(60));
        let summary = cleanup::handle(&tasker, Duration::ZERO, event)
            .await
            .expect("cleanup run");
        deleted += summary.deleted;
        if deleted > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(deleted, 1);
    assert!(matches!(
        tasker.get(id).await,
        Err(tasker::TaskerError::Store(tasker::StoreError::NotFound(_)))
    ));
}

#[tokio::test]
async fn poll_mode_starts_tasks_that_fall_due_during_the_invocation() {
    // GIVEN a processor in poll mode (window 3 s, every 200 ms) and tasks due 0.5 s and 1.5 s
    // after the invocation starts, which a single run at the start would not see
    let store = fresh_store().await;
    let mut registry = tasker::Registry::new();
    registry
        .register("noop", |_| async { Ok(()) })
        .expect("register");
    let tasker = tasker::Tasker::new(
        store.clone(),
        registry,
        tasker::ProcessorSettings::default(),
    );
    let now = Timestamp::now_utc();
    let mut ids = Vec::new();
    for offset in [500, 1500] {
        let mut new = NewTask::new("noop", "{}");
        new.scheduled_at = Some(now.plus(Duration::from_millis(offset)));
        let task = Task::from_new(new, now);
        ids.push(task.id);
        store.create(task).await.expect("create");
    }
    let poll = PollSettings {
        window: Duration::from_secs(3),
        interval: Duration::from_millis(200),
    };

    // WHEN one scheduled event arrives
    let event = events::scheduled("scheduled-processor.json", Duration::from_secs(60));
    let summary = processor::handle(&tasker, "tasker-test", poll, event, &|_| {})
        .await
        .expect("processor run");

    // THEN that one invocation ran both, each after its due instant
    assert_eq!((summary.claimed, summary.succeeded), (2, 2), "{summary:?}");
    for id in ids {
        let task = tasker.get(id).await.expect("task");
        assert_eq!(task.status, TaskStatus::Succeeded);
        assert!(task.succeeded_at.expect("succeeded") >= task.scheduled_at);
    }
}
