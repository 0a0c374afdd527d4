//! The HTTP API in process: bad input always gets a 4xx with a code, on every store.

use axum::body::Body;
use http::{Method, StatusCode};
use serde_json::json;
use tasker::{AnyStore, AuthMode, SqliteStore, Store};
use tasker_tests::http::{call, router};

/// (body, expected status, expected code): one row per case, so the table is as long as the
/// cases are many.
fn bad_creates() -> Vec<(Vec<u8>, StatusCode, &'static str)> {
    let bad = StatusCode::BAD_REQUEST;
    let case = |body: &str, status, code| (body.as_bytes().to_vec(), status, code);
    vec![
        case("", bad, "invalid_json"),
        case("{\"type\": ", bad, "invalid_json"),
        (vec![0xff, 0xfe, b'{'], bad, "invalid_json"),
        case("null", bad, "invalid_body"),
        case("\"text\"", bad, "invalid_body"),
        case("[]", bad, "invalid_body"),
        case(r#"{"payload":{}}"#, bad, "missing_field"),
        case(r#"{"type":"sendWebhook"}"#, bad, "missing_field"),
        case(r#"{"type":7,"payload":{}}"#, bad, "invalid_field"),
        case(r#"{"type":"","payload":{}}"#, bad, "invalid_field"),
        case(r#"{"type":"bad type!","payload":{}}"#, bad, "invalid_field"),
        case(r#"{"type":"noSuchType","payload":{}}"#, bad, "unknown_type"),
        // U+0000: PostgreSQL's text cannot hold it, and no store takes it.
        case(
            r#"{"type":"sendWebhook","payload":{"body":"\u0000"},"referenceUid":"a\u0000"}"#,
            bad,
            "invalid_field",
        ),
        case(
            r#"{"type":"sendWebhook","payload":{},"idempotencyKey":"\u0000"}"#,
            bad,
            "invalid_field",
        ),
        case(
            r#"{"type":"sendWebhook","payload":{},"scheduledAt":"31/12/2026"}"#,
            bad,
            "invalid_field",
        ),
        case(
            r#"{"type":"sendWebhook","payload":{},"scheduledAt":"2026-02-30T00:00:00Z"}"#,
            bad,
            "invalid_field",
        ),
        case(
            r#"{"type":"sendWebhook","payload":{},"scheduledAt":12}"#,
            bad,
            "invalid_field",
        ),
        case(
            r#"{"type":"sendWebhook","payload":{},"delaySeconds":"10"}"#,
            bad,
            "invalid_field",
        ),
        case(
            r#"{"type":"sendWebhook","payload":{},"delaySeconds":1.5}"#,
            bad,
            "invalid_field",
        ),
        case(
            r#"{"type":"sendWebhook","payload":{},"delaySeconds":99999999999999999999}"#,
            bad,
            "invalid_field",
        ),
        case(
            r#"{"type":"sendWebhook","payload":{},"delaySeconds":5,"scheduledAt":"2030-01-01T00:00:00Z"}"#,
            bad,
            "invalid_field",
        ),
        case(
            r#"{"type":"sendWebhook","payload":{},"maxAttempts":0}"#,
            bad,
            "invalid_field",
        ),
        case(
            r#"{"type":"sendWebhook","payload":{},"maxAttempts":51}"#,
            bad,
            "invalid_field",
        ),
        case(
            r#"{"type":"sendWebhook","payload":{},"maxAttempts":true}"#,
            bad,
            "invalid_field",
        ),
        case(
            r#"{"type":"sendWebhook","payload":{},"referenceUid":5}"#,
            bad,
            "invalid_field",
        ),
        case(
            r#"{"type":"sendWebhook","payload":{},"referenceUid":""}"#,
            bad,
            "invalid_field",
        ),
        case(
            r#"{"type":"sendWebhook","payload":{},"unexpected":1}"#,
            bad,
            "unknown_field",
        ),
        // A field given twice would let the last copy win: `delaySeconds` null means "now".
        case(
            r#"{"type":"sendWebhook","payload":{},"delaySeconds":3600,"delaySeconds":null}"#,
            bad,
            "duplicate_field",
        ),
        case(
            r#"{"type":"sendWebhook","type":"sendWebhook","payload":{}}"#,
            bad,
            "duplicate_field",
        ),
        case(
            r#"{"type":"sendWebhook","payload":{"url":"a","url":"b"}}"#,
            bad,
            "duplicate_field",
        ),
        // null is never "absent": every field is either left out or a value of its type.
        case(
            r#"{"type":"sendWebhook","payload":null}"#,
            bad,
            "invalid_field",
        ),
        case(
            r#"{"type":"sendWebhook","payload":{},"delaySeconds":null}"#,
            bad,
            "invalid_field",
        ),
        case(
            r#"{"type":"sendWebhook","payload":{},"maxAttempts":null}"#,
            bad,
            "invalid_field",
        ),
        case(
            r#"{"type":"sendWebhook","payload":{},"scheduledAt":null}"#,
            bad,
            "invalid_field",
        ),
        case(
            r#"{"type":"sendWebhook","payload":{},"referenceUid":null}"#,
            bad,
            "invalid_field",
        ),
        case(
            r#"{"type":"sendWebhook","payload":{},"idempotencyKey":null}"#,
            bad,
            "invalid_field",
        ),
        case(
            r#"{"type":"sendWebhook","payload":{},"scheduledAt":"1969-12-31T23:59:59Z"}"#,
            bad,
            "invalid_field",
        ),
        (
            format!(
                r#"{{"type":"sendWebhook","payload":{{}},"referenceUid":"{}"}}"#,
                "r".repeat(257)
            )
            .into_bytes(),
            bad,
            "invalid_field",
        ),
        (
            format!(
                r#"{{"type":"sendWebhook","payload":"{}"}}"#,
                "x".repeat(256 * 1024 + 1)
            )
            .into_bytes(),
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
        ),
        (
            format!(
                r#"{{"type":"sendWebhook","payload":"{}"}}"#,
                "x".repeat(2 * 1024 * 1024)
            )
            .into_bytes(),
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
        ),
    ]
}

async fn bad_input_is_refused_with_a_code<S: Store>(store: S) {
    let app = router(store, AuthMode::Open);
    bad_creates_are_refused(&app).await;
    bad_cancels_are_refused(&app).await;
    bad_listings_are_refused(&app).await;
    unknown_ids_routes_and_methods_are_refused(&app).await;
}

async fn bad_creates_are_refused(app: &axum::Router) {
    for (body, status, code) in bad_creates() {
        let shown = String::from_utf8_lossy(&body[..body.len().min(120)]).into_owned();
        let (got, json) = call(app, Method::POST, "/tasks", body, None).await;
        assert_eq!(got, status, "{shown}: {json}");
        assert_eq!(json["error"]["code"], code, "{shown}: {json}");
        assert!(
            !json["error"]["message"]
                .as_str()
                .unwrap_or_default()
                .is_empty(),
            "{shown}: no message"
        );
    }
}

/// Cancel by reference rejects bad bodies the same way.
async fn bad_cancels_are_refused(app: &axum::Router) {
    for (body, code) in [
        ("{", "invalid_json"),
        ("{}", "missing_field"),
        (r#"{"referenceUid":1}"#, "invalid_field"),
        (r#"{"referenceUid":"r","type":"bad type"}"#, "invalid_field"),
        (r#"{"referenceUid":"r","other":1}"#, "unknown_field"),
        (r#"{"referenceUid":"r\u0000"}"#, "invalid_field"),
    ] {
        let (status, json) = call(app, Method::POST, "/tasks/cancel", body, None).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}: {json}");
        assert_eq!(json["error"]["code"], code, "{body}: {json}");
    }
}

/// Listing refuses unknown, repeated, empty and out-of-range parameters and foreign cursors.
async fn bad_listings_are_refused(app: &axum::Router) {
    for (query, code) in [
        ("state=failed", "unknown_parameter"),
        ("status=done", "invalid_parameter"),
        ("status=failed&status=pending", "invalid_parameter"),
        ("limit=0", "invalid_parameter"),
        ("limit=101", "invalid_parameter"),
        ("limit=-1", "invalid_parameter"),
        ("type=", "invalid_parameter"),
        ("type=a%00b", "invalid_parameter"),
        ("referenceUid=%00", "invalid_parameter"),
        ("schedule=s%00", "invalid_parameter"),
        ("cursor=abc", "invalid_cursor"),
        ("cursor=%ff%fe", "invalid_cursor"),
    ] {
        let path = format!("/tasks?{query}");
        let (status, json) = call(app, Method::GET, &path, Body::empty(), None).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{query}: {json}");
        assert_eq!(json["error"]["code"], code, "{query}: {json}");
    }
}

async fn unknown_ids_routes_and_methods_are_refused(app: &axum::Router) {
    for (method, path, status, code) in [
        (
            Method::GET,
            "/tasks/not-an-id",
            StatusCode::NOT_FOUND,
            "not_found",
        ),
        (
            Method::GET,
            "/tasks/01JD0000000000000000000000",
            StatusCode::NOT_FOUND,
            "not_found",
        ),
        (
            Method::DELETE,
            "/tasks/%00%ff",
            StatusCode::NOT_FOUND,
            "not_found",
        ),
        (
            Method::GET,
            "/nope",
            StatusCode::NOT_FOUND,
            "route_not_found",
        ),
        (
            Method::PUT,
            "/tasks",
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
        ),
        (
            Method::GET,
            "/tasks/cancel",
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
        ),
    ] {
        let (got, json) = call(app, method.clone(), path, Body::empty(), None).await;
        assert_eq!(got, status, "{method} {path}: {json}");
        assert_eq!(json["error"]["code"], code, "{method} {path}: {json}");
    }
}

#[tokio::test]
async fn bad_input_is_refused_with_a_code_on_sqlite() {
    bad_input_is_refused_with_a_code(SqliteStore::in_memory().expect("sqlite")).await;
}

#[tokio::test]
async fn bad_input_is_refused_with_a_code_on_dynamodb() {
    bad_input_is_refused_with_a_code(tasker_tests::dynamo::fresh_store().await).await;
}

#[tokio::test]
async fn bad_input_is_refused_with_a_code_on_postgres() {
    bad_input_is_refused_with_a_code(tasker_tests::postgres::fresh_store().await).await;
}

/// GIVEN 7 tasks, 2 of them cancelled WHEN listed 3 at a time through the API THEN the pages
/// follow `nextCursor` to every task once, newest first, and the stats count them.
async fn listing_pages_through_the_api<S: Store>(store: S) {
    let app = router(store, AuthMode::Open);
    let mut created = Vec::new();
    for i in 0..7 {
        let body = json!({"type": "sendWebhook", "payload": {}, "delaySeconds": 60 + i});
        let (status, task) = call(&app, Method::POST, "/tasks", body.to_string(), None).await;
        assert_eq!(status, StatusCode::CREATED, "{task}");
        created.push(task["id"].as_str().expect("id").to_owned());
    }
    for id in &created[..2] {
        let (status, _) = call(
            &app,
            Method::DELETE,
            &format!("/tasks/{id}"),
            Body::empty(),
            None,
        )
        .await;
        assert_eq!(status, StatusCode::OK);
    }
    let mut listed = Vec::new();
    let mut path = "/tasks?limit=3&status=pending".to_owned();
    loop {
        let (status, page) = call(&app, Method::GET, &path, Body::empty(), None).await;
        assert_eq!(status, StatusCode::OK, "{page}");
        let tasks = page["tasks"].as_array().expect("tasks");
        assert!(tasks.len() <= 3);
        listed.extend(
            tasks
                .iter()
                .map(|t| t["id"].as_str().expect("id").to_owned()),
        );
        match page["nextCursor"].as_str() {
            Some(cursor) => {
                path = format!("/tasks?limit=3&status=pending&cursor={}", urlencode(cursor));
            }
            None => break,
        }
    }
    // Later due instants are newer: the last created is listed first.
    let expected: Vec<String> = created[2..].iter().rev().cloned().collect();
    assert_eq!(listed, expected);
    let (status, stats) = call(&app, Method::GET, "/stats", Body::empty(), None).await;
    assert_eq!(status, StatusCode::OK, "{stats}");
    assert_eq!(stats["counts"]["pending"], 5);
    assert_eq!(stats["counts"]["cancelled"], 2);
    assert_eq!(stats["due"], 0);
    assert!(stats["oldestDueAgeSeconds"].is_null());
}

fn urlencode(text: &str) -> String {
    text.replace('#', "%23").replace(':', "%3A")
}

#[tokio::test]
async fn listing_pages_through_the_api_on_sqlite() {
    listing_pages_through_the_api(SqliteStore::in_memory().expect("sqlite")).await;
}

#[tokio::test]
async fn listing_pages_through_the_api_on_dynamodb() {
    listing_pages_through_the_api(tasker_tests::dynamo::fresh_store().await).await;
}

#[tokio::test]
async fn listing_pages_through_the_api_on_postgres() {
    listing_pages_through_the_api(tasker_tests::postgres::fresh_store().await).await;
}

#[tokio::test]
async fn a_valid_create_round_trips_through_the_api() {
    let app = router(
        AnyStore::Sqlite(SqliteStore::in_memory().expect("sqlite")),
        AuthMode::Open,
    );
    let body = json!({
        "type": "sendWebhook",
        "payload": {"z": 1, "a": [true, null]},
        "scheduledAt": "2030-06-01T12:00:00+02:00",
        "maxAttempts": 5,
        "referenceUid": "booking-7"
    });
    let (status, created) = call(&app, Method::POST, "/tasks", body.to_string(), None).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert_eq!(
        created["payload"], r#"{"z":1,"a":[true,null]}"#,
        "key order kept"
    );
    assert_eq!(created["scheduledAt"], "2030-06-01T10:00:00.000Z");
    assert_eq!(created["attempts"], 0);
    let path = format!("/tasks/{}", created["id"].as_str().expect("id"));
    let (status, mut fetched) = call(&app, Method::GET, &path, Body::empty(), None).await;
    assert_eq!(status, StatusCode::OK);
    let waiting = fetched
        .as_object_mut()
        .and_then(|fields| fields.remove("waiting"));
    assert_eq!(fetched, created, "the task as created, and why it waits");
    assert_eq!(
        waiting,
        Some(json!({
            "reason": "scheduled",
            "until": "2030-06-01T10:00:00.000Z",
            "message": "scheduled for 2030-06-01T10:00:00.000Z",
        }))
    );
    assert_eq!(created["retryPolicy"]["initialIntervalMs"], 30_000);
}

/// GIVEN a task for later and one due now, and no processor WHEN each is read by id THEN the
/// first is scheduled, the second due; once its type is paused, paused since then; once
/// cancelled, nothing.
async fn a_task_read_by_id_says_why_it_waits<S: Store>(store: S) {
    let app = router(store, AuthMode::Open);
    let create = |body: serde_json::Value| {
        let app = app.clone();
        async move {
            let (status, task) = call(&app, Method::POST, "/tasks", body.to_string(), None).await;
            assert_eq!(status, StatusCode::CREATED, "{task}");
            format!("/tasks/{}", task["id"].as_str().expect("id"))
        }
    };
    let waiting = |path: String| {
        let app = app.clone();
        async move {
            let (status, task) = call(&app, Method::GET, &path, Body::empty(), None).await;
            assert_eq!(status, StatusCode::OK, "{task}");
            task["waiting"].clone()
        }
    };
    let later = create(json!({"type": "sendWebhook", "payload": {}, "delaySeconds": 3600})).await;
    let now = create(json!({"type": "sendWebhook", "payload": {}})).await;
    assert_eq!(waiting(later.clone()).await["reason"], "scheduled");
    let due = waiting(now.clone()).await;
    assert_eq!(due["reason"], "due", "{due}");
    assert!(
        due["message"]
            .as_str()
            .unwrap_or_default()
            .starts_with("due since ")
    );

    let (status, _) = call(
        &app,
        Method::POST,
        "/types/sendWebhook/pause",
        Body::empty(),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let paused = waiting(now.clone()).await;
    assert_eq!(paused["reason"], "typePaused", "{paused}");
    assert!(paused["since"].is_string(), "{paused}");
    assert_eq!(
        waiting(later.clone()).await["reason"],
        "scheduled",
        "not due yet"
    );
    // A listing says the same of each (newest first: the later one is queued later).
    let (status, page) = call(&app, Method::GET, "/tasks", Body::empty(), None).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    let reasons: Vec<_> = page["tasks"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|task| task["waiting"]["reason"].clone())
        .collect();
    assert_eq!(
        reasons,
        vec![json!("scheduled"), json!("typePaused")],
        "{page}"
    );

    let (status, _) = call(&app, Method::DELETE, &now, Body::empty(), None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(waiting(now).await, serde_json::Value::Null, "finished");
}

#[tokio::test]
async fn a_task_read_by_id_says_why_it_waits_on_sqlite() {
    a_task_read_by_id_says_why_it_waits(SqliteStore::in_memory().expect("sqlite")).await;
}

#[tokio::test]
async fn a_task_read_by_id_says_why_it_waits_on_dynamodb() {
    a_task_read_by_id_says_why_it_waits(tasker_tests::dynamo::fresh_store().await).await;
}

#[tokio::test]
async fn a_task_read_by_id_says_why_it_waits_on_postgres() {
    a_task_read_by_id_says_why_it_waits(tasker_tests::postgres::fresh_store().await).await;
}

#[tokio::test]
async fn a_repeated_idempotency_key_answers_200_with_the_first_task() {
    let app = router(
        AnyStore::Sqlite(SqliteStore::in_memory().expect("sqlite")),
        AuthMode::Open,
    );
    let body = json!({"type": "sendWebhook", "payload": {"n": 1}, "idempotencyKey": "order-7"});
    let (status, first) = call(&app, Method::POST, "/tasks", body.to_string(), None).await;
    assert_eq!(status, StatusCode::CREATED);
    let (status, again) = call(&app, Method::POST, "/tasks", body.to_string(), None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(again, first);
    let (status, json) = call(
        &app,
        Method::POST,
        "/tasks",
        json!({"type": "sendWebhook", "payload": {}, "idempotencyKey": ""}).to_string(),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(json["error"]["code"], "invalid_field");
}

#[tokio::test]
async fn the_token_is_required_everywhere_but_healthz() {
    let app = router(
        AnyStore::Sqlite(SqliteStore::in_memory().expect("sqlite")),
        AuthMode::Token("s3cret-token".into()),
    );
    let create = r#"{"type":"sendWebhook","payload":{}}"#;
    for token in [None, Some("wrong"), Some("s3cret-token-and-more"), Some("")] {
        let (status, json) = call(&app, Method::POST, "/tasks", create, token).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{token:?}");
        assert_eq!(json["error"]["code"], "unauthorized");
    }
    let (status, _) = call(&app, Method::POST, "/tasks", create, Some("s3cret-token")).await;
    assert_eq!(status, StatusCode::CREATED);
    let (status, _) = call(&app, Method::GET, "/healthz", Body::empty(), None).await;
    assert_eq!(status, StatusCode::OK);
    // Unknown routes are hidden behind auth too.
    let (status, _) = call(&app, Method::GET, "/nope", Body::empty(), None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

/// Sends `request` through `app`: the status, one header's value and the JSON body.
async fn answer_with_header(
    app: &axum::Router,
    request: http::Request<Body>,
    header: &str,
) -> (StatusCode, Option<String>, serde_json::Value) {
    use tower::ServiceExt;
    let response = app.clone().oneshot(request).await.expect("answer");
    let status = response.status();
    let value = response
        .headers()
        .get(header)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .expect("body");
    (
        status,
        value,
        serde_json::from_slice(&bytes).unwrap_or_default(),
    )
}

#[tokio::test]
async fn json_bodies_need_the_json_content_type() {
    let app = router(
        AnyStore::Sqlite(SqliteStore::in_memory().expect("sqlite")),
        AuthMode::Open,
    );
    let bodies = [
        ("/tasks", r#"{"type":"sendWebhook","payload":{}}"#),
        ("/tasks/cancel", r#"{"referenceUid":"r"}"#),
        (
            "/tasks/batch",
            r#"{"tasks":[{"type":"sendWebhook","payload":{}}]}"#,
        ),
    ];
    for (path, body) in bodies {
        // What a cross-site page may send without a CORS preflight, and what curl -d sends.
        for content_type in [
            Some("text/plain"),
            Some("text/plain;charset=UTF-8"),
            Some("application/x-www-form-urlencoded"),
            Some("multipart/form-data; boundary=x"),
            Some("application/jsonx"),
            None,
        ] {
            let mut request = http::Request::builder().method(Method::POST).uri(path);
            if let Some(content_type) = content_type {
                request = request.header("content-type", content_type);
            }
            let request = request.body(Body::from(body)).expect("request");
            let (status, _, json) = answer_with_header(&app, request, "content-type").await;
            assert_eq!(
                status,
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "{path} {content_type:?}"
            );
            assert_eq!(json["error"]["code"], "unsupported_media_type");
            assert!(
                json["error"]["message"]
                    .as_str()
                    .is_some_and(|m| m.contains("Content-Type")),
                "{json}"
            );
        }
        for content_type in ["application/json", "Application/JSON; charset=utf-8"] {
            let request = http::Request::builder()
                .method(Method::POST)
                .uri(path)
                .header("content-type", content_type)
                .body(Body::from(body))
                .expect("request");
            let (status, _, json) = answer_with_header(&app, request, "content-type").await;
            assert!(
                status.is_success(),
                "{path} {content_type}: {status} {json}"
            );
        }
    }
    let (status, json) = call(&app, Method::GET, "/stats", Body::empty(), None).await;
    assert_eq!(status, StatusCode::OK);
    // Two accepted content types, each through `/tasks` and `/tasks/batch`.
    assert_eq!(json["counts"]["pending"], 4);
}

#[tokio::test]
async fn the_bearer_scheme_ignores_case_and_a_401_says_how_to_authenticate() {
    let app = router(
        AnyStore::Sqlite(SqliteStore::in_memory().expect("sqlite")),
        AuthMode::Token("s3cret-token".into()),
    );
    let stats = |authorization: Option<&str>| {
        let mut request = http::Request::builder().uri("/stats");
        if let Some(value) = authorization {
            request = request.header("authorization", value);
        }
        request.body(Body::empty()).expect("request")
    };
    for scheme in ["Bearer", "bearer", "BEARER"] {
        let value = format!("{scheme} s3cret-token");
        let (status, _, _) =
            answer_with_header(&app, stats(Some(&value)), "www-authenticate").await;
        assert_eq!(status, StatusCode::OK, "{value}");
    }
    let (status, challenge, _) = answer_with_header(&app, stats(None), "www-authenticate").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(challenge.as_deref(), Some(r#"Bearer realm="tasker""#));
    let (status, challenge, _) =
        answer_with_header(&app, stats(Some("bearer wrong")), "www-authenticate").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        challenge.as_deref(),
        Some(r#"Bearer realm="tasker", error="invalid_token""#)
    );
}

/// GIVEN webhook payloads that set a framing, host or hop-by-hop header WHEN created one at a
/// time, in a batch or as a schedule THEN each is refused with a 400 naming the field and the
/// header, and nothing is stored; a payload with ordinary headers is created.
#[tokio::test]
async fn webhook_framing_and_host_headers_are_refused_at_create() {
    let app = router(
        AnyStore::Sqlite(SqliteStore::in_memory().expect("sqlite")),
        AuthMode::Open,
    );
    for header in [
        "Content-Length",
        "host",
        "Transfer-Encoding",
        "Connection",
        "Upgrade",
    ] {
        let payload =
            json!({"url": "http://127.0.0.1:9/", "body": {"a": 1}, "headers": {header: "1"}});
        let task = json!({"type": "sendWebhook", "payload": payload});
        let (status, json) = call(&app, Method::POST, "/tasks", task.to_string(), None).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{header}: {json}");
        assert_eq!(json["error"]["code"], "invalid_field", "{json}");
        let message = json["error"]["message"].as_str().unwrap_or_default();
        assert!(
            message.contains("payload.headers") && message.contains(header),
            "{message}"
        );

        let batch = json!({"tasks": [task]});
        let (status, json) =
            call(&app, Method::POST, "/tasks/batch", batch.to_string(), None).await;
        assert_eq!(status, StatusCode::OK, "{json}");
        assert_eq!(json["results"][0]["status"], "error", "{json}");

        let schedule = json!({
            "name": format!("refused-{}", header.to_lowercase()),
            "cron": "0 * * * *",
            "type": "sendWebhook",
            "payload": payload,
        });
        let (status, json) =
            call(&app, Method::POST, "/schedules", schedule.to_string(), None).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{header}: {json}");
    }
    let (_, listed) = call(&app, Method::GET, "/tasks", Body::empty(), None).await;
    assert_eq!(listed["tasks"], json!([]), "nothing stored");

    let fine =
        json!({"url": "http://127.0.0.1:9/", "body": 1, "headers": {"Authorization": "Bearer t"}});
    let task = json!({"type": "sendWebhook", "payload": fine});
    let (status, json) = call(&app, Method::POST, "/tasks", task.to_string(), None).await;
    assert_eq!(status, StatusCode::CREATED, "{json}");
}
