//! The `/schedules` routes in process, on both stores: each operation, and bad input as a 4xx
//! whose code and message name what is wrong.

use http::{Method, StatusCode};
use serde_json::{Value, json};
use tasker::{AnyStore, AuthMode, SqliteStore, Store};
use tasker_tests::http::{call, router};

async fn send(app: &axum::Router, method: Method, path: &str, body: Value) -> (StatusCode, Value) {
    let body = if body.is_null() {
        String::new()
    } else {
        body.to_string()
    };
    call(app, method, path, body, None).await
}

fn nightly() -> Value {
    json!({
        "name": "nightly",
        "cron": "0 2 * * *",
        "timezone": "Europe/Berlin",
        "type": "sendWebhook",
        "payload": {"url": "http://127.0.0.1:9/hook", "body": {}},
        "missed": "all"
    })
}

async fn operations_work<S: Store>(store: S) {
    let app = router(store, AuthMode::Open);
    let (status, created) = send(&app, Method::POST, "/schedules", nightly()).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert_eq!(created["name"], "nightly");
    assert_eq!(created["missed"], "all");
    assert_eq!(created["paused"], false);
    assert_eq!(
        created["payload"],
        r#"{"url":"http://127.0.0.1:9/hook","body":{}}"#
    );
    let runs = created["nextRuns"].as_array().expect("nextRuns");
    assert_eq!(runs.len(), 5);
    assert_eq!(runs[0], created["nextRunAt"]);
    // 02:00 in Berlin is 00:00 or 01:00 UTC, depending on the season.
    for run in runs {
        let text = run.as_str().expect("instant");
        assert!(
            text.ends_with("T00:00:00.000Z") || text.ends_with("T01:00:00.000Z"),
            "{text}"
        );
    }

    let (status, again) = send(&app, Method::POST, "/schedules", nightly()).await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(again["error"]["code"], "schedule_exists");

    let (status, list) = send(&app, Method::GET, "/schedules", Value::Null).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(list["schedules"].as_array().map(Vec::len), Some(1));
    assert_eq!(list["schedules"][0]["nextRuns"], created["nextRuns"]);

    // PUT with a new expression starts from its next tick; the path names the schedule.
    let replaced = json!({"cron": "*/10 * * * *", "type": "sendWebhook"});
    let (status, put) = send(&app, Method::PUT, "/schedules/nightly", replaced).await;
    assert_eq!(status, StatusCode::OK, "{put}");
    assert_eq!(put["cron"], "*/10 * * * *");
    assert_eq!(put["timezone"], "UTC");
    assert_eq!(put["payload"], "{}");
    assert_ne!(put["nextRunAt"], created["nextRunAt"]);
    let fresh = json!({"cron": "0 9 * * MON-FRI", "type": "sendWebhook"});
    let (status, _) = send(&app, Method::PUT, "/schedules/weekdays", fresh.clone()).await;
    assert_eq!(status, StatusCode::CREATED);
    let (status, same) = send(&app, Method::PUT, "/schedules/weekdays", fresh).await;
    assert_eq!(status, StatusCode::OK, "a repeated PUT changes nothing");
    assert_eq!(same["updatedAt"], same["createdAt"]);

    let (status, paused) = send(&app, Method::POST, "/schedules/nightly/pause", Value::Null).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(paused["paused"], true);
    assert_eq!(paused["nextRuns"], json!([]));
    let (status, resumed) =
        send(&app, Method::POST, "/schedules/nightly/resume", Value::Null).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(resumed["paused"], false);

    let (status, task) = send(
        &app,
        Method::POST,
        "/schedules/nightly/trigger",
        Value::Null,
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{task}");
    assert_eq!(task["scheduleName"], "nightly");
    assert_eq!(task["scheduleTick"], task["scheduledAt"]);
    let (status, listed) = send(&app, Method::GET, "/tasks?schedule=nightly", Value::Null).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(listed["tasks"][0]["id"], task["id"]);
    let (_, none) = send(&app, Method::GET, "/tasks?schedule=weekdays", Value::Null).await;
    assert_eq!(none["tasks"], json!([]));

    let (status, _) = send(&app, Method::DELETE, "/schedules/nightly", Value::Null).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    for (method, path) in [
        (Method::GET, "/schedules/nightly"),
        (Method::DELETE, "/schedules/nightly"),
        (Method::POST, "/schedules/nightly/pause"),
        (Method::POST, "/schedules/nightly/trigger"),
        (Method::GET, "/schedules/not%20a%20name"),
    ] {
        let (status, body) = send(&app, method.clone(), path, Value::Null).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{method} {path}");
        assert_eq!(body["error"]["code"], "not_found");
    }
}

/// (body, status, code, words the message must hold)
fn bad_schedules() -> Vec<(Value, StatusCode, &'static str, &'static str)> {
    let bad = StatusCode::BAD_REQUEST;
    let with = |field: &str, value: Value| {
        let mut body = nightly();
        body[field] = value;
        body
    };
    let without = |field: &str| {
        let mut body = nightly();
        body.as_object_mut().map(|o| o.remove(field));
        body
    };
    vec![
        (
            with("cron", json!("61 * * * *")),
            bad,
            "invalid_field",
            "`cron` minute field \"61\"",
        ),
        (
            with("cron", json!("* * *")),
            bad,
            "invalid_field",
            "`cron` has 3 fields",
        ),
        (
            with("cron", json!("0 0 9 * * FUNDAY")),
            bad,
            "invalid_field",
            "day-of-week field",
        ),
        (
            with("cron", json!("0 0 30 2 *")),
            bad,
            "invalid_field",
            "never fires",
        ),
        (
            with("cron", json!(5)),
            bad,
            "invalid_field",
            "`cron` must be a string",
        ),
        (
            with("timezone", json!("Mars/Olympus_Mons")),
            bad,
            "invalid_field",
            "`timezone`",
        ),
        (
            with("type", json!("noSuchType")),
            bad,
            "unknown_type",
            "noSuchType",
        ),
        (
            with("name", json!("has space")),
            bad,
            "invalid_field",
            "`name`",
        ),
        (
            with("missed", json!("sometimes")),
            bad,
            "invalid_field",
            "`missed`",
        ),
        (
            with("paused", json!("yes")),
            bad,
            "invalid_field",
            "`paused`",
        ),
        (
            with("maxAttempts", json!(0)),
            bad,
            "invalid_field",
            "`maxAttempts`",
        ),
        (
            with("payload", Value::Null),
            bad,
            "invalid_field",
            "`payload`",
        ),
        (with("extra", json!(1)), bad, "unknown_field", "`extra`"),
        (without("cron"), bad, "missing_field", "`cron`"),
        (without("name"), bad, "missing_field", "`name`"),
        (without("type"), bad, "missing_field", "`type`"),
    ]
}

async fn bad_input_gets_a_4xx_naming_the_field<S: Store>(store: S) {
    let app = router(store, AuthMode::Open);
    for (body, status, code, words) in bad_schedules() {
        let (got, answer) = send(&app, Method::POST, "/schedules", body.clone()).await;
        assert_eq!(got, status, "{body}: {answer}");
        assert_eq!(answer["error"]["code"], code, "{body}: {answer}");
        let message = answer["error"]["message"].as_str().unwrap_or_default();
        assert!(
            message.contains(words),
            "{body}: {message:?} lacks {words:?}"
        );
    }
    let mismatch = json!({"name": "other", "cron": "* * * * *", "type": "sendWebhook"});
    let (status, answer) = send(&app, Method::PUT, "/schedules/nightly", mismatch).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        answer["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("`name`")
    );
    let (status, answer) = send(&app, Method::GET, "/tasks?schedule=", Value::Null).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
    // Nothing was stored by any refused request.
    let (_, list) = send(&app, Method::GET, "/schedules", Value::Null).await;
    assert_eq!(list["schedules"], json!([]));
}

#[tokio::test]
async fn operations_work_on_sqlite() {
    operations_work(SqliteStore::in_memory().expect("sqlite")).await;
}

#[tokio::test]
async fn operations_work_on_dynamodb() {
    operations_work(AnyStore::DynamoDb(
        tasker_tests::dynamo::fresh_store().await,
    ))
    .await;
}

#[tokio::test]
async fn bad_input_is_refused_on_sqlite() {
    bad_input_gets_a_4xx_naming_the_field(SqliteStore::in_memory().expect("sqlite")).await;
}

#[tokio::test]
async fn bad_input_is_refused_on_dynamodb() {
    bad_input_gets_a_4xx_naming_the_field(AnyStore::DynamoDb(
        tasker_tests::dynamo::fresh_store().await,
    ))
    .await;
}
