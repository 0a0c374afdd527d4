//! Every sample event in `events/` drives the real Lambda handler against DynamoDB Local.

use std::time::Duration;

use http::StatusCode;
use serde_json::Value;
use tasker::{AnyStore, Config, NewTask, PollSettings, Store, Task, TaskStatus, Timestamp};
use tasker_tests::events::send;
use tasker_tests::fixtures::config;
use tasker_tests::{dynamo, events};
use tower::ServiceExt;

/// The token the sample events carry.
fn token_config() -> Config {
    config(&[("TASKER_API_TOKEN", "test-token")])
}

async fn fresh_store() -> AnyStore {
    AnyStore::DynamoDb(dynamo::fresh_store().await)
}

/// The enqueue function over a fresh table, configured with the events' token.
async fn enqueue_app() -> axum::Router {
    enqueue::app(
        &token_config(),
        fresh_store().await,
        None,
        tasker::compose::builtin_types,
    )
    .expect("app")
}

/// Creates the sample event's task; its id.
async fn create_sample(app: &axum::Router) -> String {
    let (status, created) = send(app, "apigw-create-task.json", None).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    created["id"].as_str().expect("id").to_owned()
}

#[tokio::test]
async fn the_create_event_stores_the_task_once_per_reference() {
    let app = enqueue_app().await;
    // WHEN the create event arrives THEN the task is stored as the seed describes
    let (status, created) = send(&app, "apigw-create-task.json", None).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let id = created["id"].as_str().expect("id");
    assert_eq!(created["type"], "sendWebhook");
    assert_eq!(created["status"], "pending");
    assert_eq!(created["maxAttempts"], 3);
    assert_eq!(created["referenceUid"], "booking-42");
    assert_eq!(
        created["payload"],
        r#"{"url":"http://127.0.0.1:9/hook","body":{"hello":"world"}}"#
    );
    // AND the same reference again is a duplicate naming the first task
    let (status, duplicate) = send(&app, "apigw-create-task.json", None).await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(duplicate["error"]["code"], "duplicate");
    assert_eq!(duplicate["error"]["existingId"], id);
    // AND the get event reads the same task, due now (no processor runs here)
    let (status, mut fetched) = send(&app, "apigw-get-task.json", Some(id)).await;
    assert_eq!(status, StatusCode::OK);
    let waiting = fetched
        .as_object_mut()
        .and_then(|fields| fields.remove("waiting"));
    assert_eq!(fetched, created);
    assert_eq!(waiting.map(|w| w["reason"].clone()), Some("due".into()));
}

#[tokio::test]
async fn an_unknown_id_is_not_found() {
    let app = enqueue_app().await;
    let (status, missing) = send(&app, "apigw-get-task.json", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(missing["error"]["code"], "not_found");
    let (status, _) = send(&app, "apigw-cancel-task.json", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn cancel_events_cancel_by_reference_and_by_id() {
    // GIVEN a pending task with the sample reference
    let app = enqueue_app().await;
    let id = create_sample(&app).await;
    // WHEN cancelled by reference THEN the pending task is cancelled
    let (status, cancelled) = send(&app, "apigw-cancel-by-reference.json", None).await;
    assert_eq!(status, StatusCode::OK, "{cancelled}");
    assert_eq!(cancelled["cancelled"], 1);
    assert_eq!(cancelled["ids"][0], id.as_str());
    // AND cancelling it again by id is a conflict
    let (status, conflict) = send(&app, "apigw-cancel-task.json", Some(&id)).await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(conflict["error"]["code"], "conflict");
    // AND the reference is free again: a second task takes it and is cancelled by id
    let second = create_sample(&app).await;
    let (status, cancelled) = send(&app, "apigw-cancel-task.json", Some(&second)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(cancelled["status"], "cancelled");
}

#[tokio::test]
async fn the_retry_event_puts_a_cancelled_task_back_once() {
    // GIVEN a cancelled task
    let app = enqueue_app().await;
    let id = create_sample(&app).await;
    let (status, _) = send(&app, "apigw-cancel-task.json", Some(&id)).await;
    assert_eq!(status, StatusCode::OK);
    // WHEN it is retried THEN it is pending again with a fresh attempt budget
    let (status, retried) = send(&app, "apigw-retry-task.json", Some(&id)).await;
    assert_eq!(status, StatusCode::OK, "{retried}");
    assert_eq!(retried["status"], "pending");
    assert_eq!(retried["attempts"], 0);
    // AND a pending task cannot be retried
    let (status, conflict) = send(&app, "apigw-retry-task.json", Some(&id)).await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(conflict["error"]["code"], "conflict");
}

#[tokio::test]
async fn the_batch_event_answers_each_item() {
    let app = enqueue_app().await;
    // WHEN the batch arrives THEN each item gets its own result; the valid ones are stored
    let (status, batch) = send(&app, "apigw-batch-create.json", None).await;
    assert_eq!(status, StatusCode::OK, "{batch}");
    let results = batch["results"].as_array().expect("results");
    assert_eq!(results.len(), 3);
    assert_eq!(results[0]["status"], "created");
    assert_eq!(results[1]["status"], "created");
    assert_eq!(results[2]["status"], "error");
    assert_eq!(results[2]["error"]["error"]["code"], "unknown_type");
    let stored = results[1]["id"].as_str().expect("id");
    let (status, _) = send(&app, "apigw-get-task.json", Some(stored)).await;
    assert_eq!(status, StatusCode::OK);
    // AND the same batch again meets the first's reference
    let (status, again) = send(&app, "apigw-batch-create.json", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(again["results"][0]["status"], "duplicate");
    assert_eq!(
        again["results"][0]["error"]["error"]["existingId"],
        results[0]["id"]
    );
}

#[tokio::test]
async fn list_and_stats_events_agree() {
    // GIVEN a cancelled task and the batch's two pending ones
    let app = enqueue_app().await;
    let id = create_sample(&app).await;
    send(&app, "apigw-cancel-task.json", Some(&id)).await;
    send(&app, "apigw-batch-create.json", None).await;
    // WHEN listed and counted THEN the pending tasks, newest first, agree with the counts
    let (status, page) = send(&app, "apigw-list-tasks.json", None).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    let listed = page["tasks"].as_array().expect("tasks");
    assert!(listed.iter().all(|task| task["status"] == "pending"));
    assert_eq!(listed.len(), 2, "{page}");
    assert!(page["nextCursor"].is_null());
    let (status, stats) = send(&app, "apigw-stats.json", None).await;
    assert_eq!(status, StatusCode::OK, "{stats}");
    assert_eq!(stats["counts"]["pending"], listed.len());
    assert_eq!(stats["counts"]["cancelled"], 1);
}

#[tokio::test]
async fn health_needs_no_token_and_bad_requests_are_refused_with_codes() {
    let app = enqueue_app().await;
    let (status, _) = send(&app, "apigw-healthz.json", None).await;
    assert_eq!(status, StatusCode::OK);
    let (status, body) = send(&app, "apigw-unauthorized.json", None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["error"]["code"], "unauthorized");
    let (status, body) = send(&app, "apigw-create-task-invalid.json", None).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"]["code"], "invalid_field");
    let message = body["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("`type`"), "{message}");
}

#[tokio::test]
async fn enqueue_fails_closed_without_auth_configuration() {
    // GIVEN neither TASKER_API_TOKEN nor TASKER_AUTH=iam
    let app = enqueue::app(
        &config(&[]),
        fresh_store().await,
        None,
        tasker::compose::builtin_types,
    )
    .expect("app");
    // THEN every route but /healthz answers 401
    for name in [
        "apigw-create-task.json",
        "apigw-get-task.json",
        "apigw-cancel-task.json",
        "apigw-cancel-by-reference.json",
        "apigw-list-tasks.json",
        "apigw-stats.json",
    ] {
        let (status, body) = send(&app, name, None).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{name}");
        assert_eq!(body["error"]["code"], "unauthorized", "{name}");
    }
    let (status, _) = send(&app, "apigw-healthz.json", None).await;
    assert_eq!(status, StatusCode::OK);

    // AND with IAM in front, requests pass without a token
    let iam = enqueue::app(
        &config(&[("TASKER_AUTH", "iam")]),
        fresh_store().await,
        None,
        tasker::compose::builtin_types,
    )
    .expect("app");
    let (status, _) = send(&iam, "apigw-create-task.json", None).await;
    assert_eq!(status, StatusCode::CREATED);
}

/// GIVEN a task created through the API event, whose webhook targets 127.0.0.1 (which the
/// production default refuses), and the processor's Tasker over the same table.
async fn a_task_the_webhook_refuses() -> (tasker::Tasker<AnyStore>, tasker::TaskId) {
    let store = fresh_store().await;
    let config = token_config();
    let app =
        enqueue::app(&config, store.clone(), None, tasker::compose::builtin_types).expect("app");
    let id = create_sample(&app).await.parse().expect("task id");
    (
        tasker::compose::tasker_over(&config, store, tasker::compose::builtin_types)
            .expect("tasker"),
        id,
    )
}

/// Runs the processor for the scheduled event, with `remaining` before its deadline; the run
/// and the metrics lines it emitted.
async fn run_processor(
    tasker: &tasker::Tasker<AnyStore>,
    remaining: Duration,
) -> (tasker::RunSummary, Vec<String>) {
    let event = events::scheduled("scheduled-processor.json", remaining);
    let lines = std::sync::Mutex::new(Vec::new());
    let emit = |line: &str| lines.lock().expect("lines").push(line.to_owned());
    let summary = processor::handle(tasker, "tasker-test", PollSettings::default(), event, &emit)
        .await
        .expect("processor run");
    (summary, lines.into_inner().expect("lines"))
}

/// The one Embedded Metric Format line of a run carries every metric, matching `summary`.
fn assert_metrics_line(lines: &[String], summary: &tasker::RunSummary) {
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
    let every = [
        "Claimed",
        "Succeeded",
        "Retried",
        "Failed",
        "Released",
        "HeldByCircuit",
        "StoreErrors",
        "RunDuration",
        "QueueDepth",
        "OldestDueAge",
    ];
    for name in every {
        assert!(names.contains(&name), "{name} missing from {names:?}");
        assert!(emf[name].is_number(), "{name} has no value");
    }
    assert_eq!(emf["Claimed"], summary.claimed);
    assert_eq!(emf["Failed"], summary.outcomes.failed);
    assert_eq!(emf["QueueDepth"], 0);
}

#[tokio::test]
async fn the_processor_event_runs_the_queue_and_emits_its_metrics() {
    let (tasker, id) = a_task_the_webhook_refuses().await;
    // WHEN the scheduled event arrives
    let (summary, lines) = run_processor(&tasker, Duration::from_secs(60)).await;
    // THEN one metrics line matches the summary, which has the documented shape
    assert_metrics_line(&lines, &summary);
    let json = serde_json::to_value(summary).expect("summary JSON");
    for key in ["claimed", "succeeded", "retried", "failed", "durationMs"] {
        assert!(json.get(key).is_some(), "summary lacks {key}: {json}");
    }
    // AND the refusal failed the task for good
    assert_eq!((summary.claimed, summary.outcomes.failed), (1, 1), "{json}");
    let task = tasker.get(id).await.expect("task");
    assert_eq!(task.status, TaskStatus::Failed);
    assert!(task.last_error.unwrap_or_default().contains("refused"));
}

#[tokio::test]
async fn a_processor_invocation_at_its_deadline_starts_nothing() {
    let (tasker, id) = a_task_the_webhook_refuses().await;
    let (summary, _) = run_processor(&tasker, Duration::ZERO).await;
    assert_eq!(summary.claimed, 0);
    assert_eq!(
        tasker.get(id).await.expect("task").status,
        TaskStatus::Pending
    );
}

#[tokio::test]
async fn the_cleanup_event_deletes_finished_tasks() {
    // GIVEN a task the processor failed for good
    let (tasker, id) = a_task_the_webhook_refuses().await;
    assert_eq!(
        run_processor(&tasker, Duration::from_secs(60))
            .await
            .0
            .outcomes
            .failed,
        1
    );
    // WHEN the cleanup event arrives THEN the finished task is deleted (the queue index is
    // eventually consistent, so a task finished a moment ago may need a second run)
    let settings = cleanup::CleanupSettings {
        age: Duration::ZERO,
        sweep_entries: 1000,
        service: "tasker-test",
    };
    let lines = std::sync::Mutex::new(Vec::new());
    let emit = |line: &str| lines.lock().expect("lines").push(line.to_owned());
    let mut deleted = 0;
    for _ in 0..20 {
        let event = events::scheduled("scheduled-cleanup.json", Duration::from_secs(60));
        let summary = cleanup::handle(&tasker, settings, event, &emit)
            .await
            .expect("cleanup run");
        deleted += summary.deleted;
        if deleted > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(deleted, 1);
    // AND each run emitted one metrics line; the last counts the delete and no rescue
    let lines = lines.into_inner().expect("lines");
    let last: Value = serde_json::from_str(lines.last().expect("a metrics line")).expect("EMF");
    assert_eq!(
        (last["Deleted"].clone(), last["Rescued"].clone()),
        (serde_json::json!(1), serde_json::json!(0))
    );
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
        store.task_create(task).await.expect("create");
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
    assert_eq!(
        (summary.claimed, summary.outcomes.succeeded),
        (2, 2),
        "{summary:?}"
    );
    for id in ids {
        let task = tasker.get(id).await.expect("task");
        assert_eq!(task.status, TaskStatus::Succeeded);
        assert!(task.succeeded_at.expect("succeeded") >= task.scheduled_at);
    }
}

/// A plain GET of `path` through `app`, with `headers`; the status, headers and body text.
async fn browse(
    app: &axum::Router,
    path: &str,
    headers: &[(&str, &str)],
) -> (StatusCode, http::HeaderMap, String) {
    let mut request = http::Request::get(path);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    answer(
        app,
        request.body(axum::body::Body::empty()).expect("request"),
    )
    .await
}

/// `request` through `app`: the status, headers and body text.
async fn answer(
    app: &axum::Router,
    request: http::Request<axum::body::Body>,
) -> (StatusCode, http::HeaderMap, String) {
    let response = app
        .clone()
        .oneshot(request)
        .await
        .expect("the router answers");
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .expect("read the body");
    (
        status,
        headers,
        String::from_utf8_lossy(&bytes).into_owned(),
    )
}

#[tokio::test]
async fn the_lambda_dashboard_is_off_by_default_and_fails_closed_without_a_token() {
    // GIVEN TASKER_DASHBOARD=true but no token (or IAM, which a browser cannot sign)
    for vars in [
        vec![("TASKER_DASHBOARD", "true")],
        vec![("TASKER_DASHBOARD", "true"), ("TASKER_AUTH", "iam")],
    ] {
        let app = enqueue::app(
            &config(&vars),
            fresh_store().await,
            None,
            tasker::compose::builtin_types,
        )
        .expect("app");
        // THEN every page is refused
        for path in ["/ui", "/ui/", "/ui/tasks", "/ui/login"] {
            let (status, _, body) = browse(&app, path, &[]).await;
            assert_eq!(status, StatusCode::UNAUTHORIZED, "{vars:?} {path}");
            assert!(body.contains("Dashboard closed"), "{body}");
        }
    }
    // GIVEN the default (off): /ui is just an unknown API path behind the token
    let app = enqueue::app(
        &token_config(),
        fresh_store().await,
        None,
        tasker::compose::builtin_types,
    )
    .expect("app");
    let (status, _, _) = browse(&app, "/ui/", &[]).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    // GIVEN it on with a token, behind API Gateway's HTTPS
    let app = enqueue::app(
        &config(&[("TASKER_DASHBOARD", "true"), ("TASKER_API_TOKEN", "t0k")]),
        fresh_store().await,
        None,
        tasker::compose::builtin_types,
    )
    .expect("app");
    let (status, headers, _) = browse(&app, "/ui/", &[]).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert_eq!(headers["location"], "/ui/login");
    let (status, headers, body) =
        browse(&app, "/ui/login", &[("x-forwarded-proto", "https")]).await;
    assert_eq!(status, StatusCode::OK);
    assert!(body.contains("API token"), "{body}");
    let cookie = headers["set-cookie"].to_str().expect("text");
    for part in [
        "tasker_csrf=",
        "HttpOnly",
        "SameSite=Strict",
        "Secure",
        "Path=/ui",
    ] {
        assert!(cookie.contains(part), "{cookie}");
    }
    let policy = headers["content-security-policy"].to_str().expect("text");
    assert!(policy.contains("default-src 'none'") && !policy.contains("script-src"));
    // AND the API itself is unchanged
    let (status, _, _) = browse(&app, "/stats", &[]).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

/// A form POST of `body` to `path` through `app`, with `headers`; the status, headers and body.
async fn post_form(
    app: &axum::Router,
    path: &str,
    headers: &[(&str, &str)],
    body: String,
) -> (StatusCode, http::HeaderMap, String) {
    let mut request = http::Request::post(path)
        .header("host", "abc123.execute-api.eu-west-1.amazonaws.com")
        .header("content-type", "application/x-www-form-urlencoded");
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    answer(
        app,
        request.body(axum::body::Body::from(body)).expect("request"),
    )
    .await
}

fn cookie_set(headers: &http::HeaderMap, name: &str) -> String {
    headers
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|v| v.strip_prefix(&format!("{name}=")))
        .and_then(|v| v.split(';').next())
        .unwrap_or_else(|| panic!("a {name} cookie"))
        .to_owned()
}

fn csrf_in(html: &str) -> String {
    let (_, after) = html
        .split_once(r#"name="csrf" value=""#)
        .expect("a csrf field");
    after.split('"').next().expect("its value").to_owned()
}

/// GIVEN the enqueue Lambda's dashboard (which has no Host allowlist in front of it) WHEN a
/// login or an action comes from another site's page (`Origin`, `Sec-Fetch-Site`) or repeats a
/// planted CSRF cookie THEN it is refused 403 and the task stays as it was; from its own pages
/// the same forms work.
#[tokio::test]
async fn the_lambda_dashboard_refuses_forms_from_other_sites() {
    let store = fresh_store().await;
    let config = config(&[("TASKER_DASHBOARD", "true"), ("TASKER_API_TOKEN", "t0k")]);
    let app =
        enqueue::app(&config, store.clone(), None, tasker::compose::builtin_types).expect("app");
    let tasker = tasker::compose::tasker_over(&config, store, tasker::compose::builtin_types)
        .expect("tasker");
    let new = NewTask {
        scheduled_at: Some(Timestamp::now_utc().plus(Duration::from_secs(3600))),
        ..NewTask::new(
            "sendWebhook",
            r#"{"url": "https://example.com/hook", "body": {}}"#,
        )
    };
    let id = tasker.create(new).await.expect("create").task().id;
    let evil = ("origin", "https://evil.example");
    let own = (
        "origin",
        "https://abc123.execute-api.eu-west-1.amazonaws.com",
    );

    let (_, headers, html) = browse(&app, "/ui/login", &[]).await;
    let nonce = format!("tasker_csrf={}", cookie_set(&headers, "tasker_csrf"));
    let login = format!("token=t0k&csrf={}", csrf_in(&html));
    let with = |extra: (&'static str, &'static str)| vec![("cookie", nonce.as_str()), extra];
    let (status, _, _) = post_form(&app, "/ui/login", &with(evil), login.clone()).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "a login from another site");
    let (status, headers, _) = post_form(&app, "/ui/login", &with(own), login).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    let session = format!("tasker_session={}", cookie_set(&headers, "tasker_session"));

    let (_, _, html) = browse(&app, "/ui", &[("cookie", session.as_str())]).await;
    let cancel = |csrf: &str| format!("action=cancel&id={id}&csrf={csrf}");
    let planted = "0123456789abcdef0123456789abcdef";
    let tossed = format!("tasker_csrf={planted}; {session}");
    for (headers, body) in [
        (
            vec![("cookie", session.as_str()), evil],
            cancel(&csrf_in(&html)),
        ),
        (
            vec![
                ("cookie", session.as_str()),
                ("sec-fetch-site", "cross-site"),
            ],
            cancel(&csrf_in(&html)),
        ),
        (vec![("cookie", tossed.as_str())], cancel(planted)),
    ] {
        let (status, _, _) = post_form(&app, "/ui/act", &headers, body).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{headers:?}");
    }
    assert_eq!(
        tasker.get(id).await.expect("task").status,
        TaskStatus::Pending
    );
    let (status, _, _) = post_form(
        &app,
        "/ui/act",
        &[("cookie", session.as_str()), own],
        cancel(&csrf_in(&html)),
    )
    .await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert_eq!(
        tasker.get(id).await.expect("task").status,
        TaskStatus::Cancelled
    );
}

/// GIVEN the built-in types with a 280 s timeout (a claim of 310 s with the default 30 s grace)
/// WHEN the first invocation of a 300 s function arrives THEN it is refused, naming the type,
/// the variables and the function's Timeout (such a function used to claim tasks it could never
/// finish); 270 s fits, and once an invocation passed, later ones are not checked again.
#[tokio::test]
async fn a_type_whose_claim_outlasts_the_function_is_refused_at_the_first_invocation() {
    let store = fresh_store().await;
    let tasker_with = |timeout: &str| {
        let config = config(&[("TASKER_HANDLER_TIMEOUT", timeout)]);
        tasker::compose::tasker_over(&config, store.clone(), tasker::compose::builtin_types)
            .expect("tasker")
    };
    let first = || events::scheduled("scheduled-processor.json", Duration::from_secs(300));

    let too_long = tasker_with("280s");
    let err = tasker::lambda::FitCheck::default()
        .check(&too_long, &first().context)
        .expect_err("a 310 s claim in a 300 s function");
    assert_eq!(err.error_type(), "LeaseTooLong");
    let message = err.to_string();
    for part in [
        "\"sendWebhook\" holds each claim 310 s",
        "TASKER_HANDLER_TIMEOUT",
        "TASKER_LEASE_GRACE, 30 s",
        "gives an invocation 300 s",
        "raise the function's Timeout",
    ] {
        assert!(message.contains(part), "{part} missing from {message}");
    }

    let fits = tasker_with("270s");
    let check = tasker::lambda::FitCheck::default();
    check.check(&fits, &first().context).expect("300 s fits");
    let late = events::scheduled("scheduled-processor.json", Duration::ZERO);
    check
        .check(&fits, &late.context)
        .expect("checked once per function instance");
}
