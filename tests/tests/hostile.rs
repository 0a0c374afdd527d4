//! Property-based hostile input against the HTTP router: whatever arrives, the answer is a 4xx
//! with an error code, never a 5xx or a panic, and a rejected request leaves the store unchanged.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tasker::store::Claim;

use http::{Method, StatusCode};
use proptest::prelude::*;
use serde_json::{Value, json};
use tasker::store::Leases;
use tasker::{AnyStore, AuthMode, SqliteStore, Store, Timestamp};
use tasker_tests::http::{call, router};

/// Cases tried across all properties, printed at the end of each property.
static TRIED: AtomicUsize = AtomicUsize::new(0);

struct Fixture {
    runtime: tokio::runtime::Runtime,
    app: axum::Router,
    store: AnyStore,
}

/// The router over a fresh SQLite store.
fn fixture() -> Fixture {
    fixture_on(false)
}

/// The router over a fresh store: a new DynamoDB Local table when `dynamodb`.
fn fixture_on(dynamodb: bool) -> Fixture {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let store = if dynamodb {
        AnyStore::DynamoDb(runtime.block_on(tasker_tests::dynamo::fresh_store()))
    } else {
        AnyStore::Sqlite(SqliteStore::in_memory().expect("sqlite"))
    };
    let app = router(store.clone(), AuthMode::Token("hostile-token".into()));
    Fixture {
        runtime,
        app,
        store,
    }
}

impl Fixture {
    /// Sends a request and checks the answer is a 4xx with a code; returns the status.
    fn refused(&self, method: Method, path: &str, body: Vec<u8>, token: bool) -> StatusCode {
        TRIED.fetch_add(1, Ordering::Relaxed);
        let token = token.then_some("hostile-token");
        let (status, json) = self
            .runtime
            .block_on(call(&self.app, method, path, body, token));
        assert!(
            status.is_client_error(),
            "{status} for hostile input: {json}"
        );
        assert!(json["error"]["code"].is_string(), "no error code: {json}");
        status
    }

    /// Nothing was stored: no task is due, even far in the future.
    fn assert_store_empty(&self) {
        self.runtime.block_on(async {
            let far = Timestamp::MAX;
            let due = self
                .store
                .task_claim(Claim::due(
                    far,
                    10_000,
                    &Leases::fixed(Duration::from_secs(60)),
                ))
                .await
                .expect("claim");
            assert!(
                due.is_empty(),
                "a rejected request stored {} tasks",
                due.len()
            );
        });
    }
}

/// Any JSON value, nested up to a few levels.
fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<f64>().prop_map(|f| json!(f)),
        ".{0,40}".prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 64, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..8).prop_map(Value::Array),
            prop::collection::hash_map(".{0,12}", inner, 0..8)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Values that break a rule of the field they are put in.
fn bad_field() -> impl Strategy<Value = (String, Value)> {
    prop_oneof![
        any_json()
            .prop_filter(
                "not a valid type",
                |v| !matches!(v, Value::String(s) if s == "sendWebhook")
            )
            .prop_map(|v| ("type".to_owned(), v)),
        ".{0,40}".prop_map(|s| ("scheduledAt".to_owned(), json!(s))),
        (-1.0e30f64..1.0e30f64)
            .prop_filter("not a valid delay", |f| *f < 0.0
                || f.fract() != 0.0
                || *f > 3.2e7)
            .prop_map(|f| ("delaySeconds".to_owned(), json!(f))),
        prop_oneof![
            Just(json!(0)),
            Just(json!(51)),
            Just(json!(-3)),
            Just(json!(1e300)),
            Just(json!("3"))
        ]
        .prop_map(|v| ("maxAttempts".to_owned(), v)),
        "[a-z]{257,400}".prop_map(|s| ("referenceUid".to_owned(), json!(s))),
        "[a-z]{257,400}".prop_map(|s| ("idempotencyKey".to_owned(), json!(s))),
        "[a-zA-Z]{1,20}"
            .prop_filter("unknown field name", |k| ![
                "type",
                "payload",
                "scheduledAt",
                "delaySeconds",
                "maxAttempts",
                "referenceUid",
                "idempotencyKey"
            ]
            .contains(&k.as_str()))
            .prop_map(|k| (k, json!(1))),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 256,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn arbitrary_bytes_are_refused(body in prop::collection::vec(any::<u8>(), 0..4096)) {
        let fixture = fixture();
        fixture.refused(Method::POST, "/tasks", body.clone(), true);
        fixture.refused(Method::POST, "/tasks/cancel", body, true);
        fixture.assert_store_empty();
    }

    #[test]
    fn arbitrary_json_is_refused(value in any_json()) {
        let fixture = fixture();
        fixture.refused(Method::POST, "/tasks", value.to_string().into_bytes(), true);
        fixture.assert_store_empty();
    }

    #[test]
    fn a_valid_create_with_one_bad_field_is_refused((field, value) in bad_field()) {
        let fixture = fixture();
        let mut body = json!({"type": "sendWebhook", "payload": {"url": "https://example.com", "body": {}}});
        body[field.as_str()] = value;
        fixture.refused(Method::POST, "/tasks", body.to_string().into_bytes(), true);
        fixture.assert_store_empty();
    }

    #[test]
    fn hostile_paths_and_tokens_are_refused(
        segment in "[^/?#]{0,80}",
        token in proptest::option::of(".{0,64}"),
    ) {
        let fixture = fixture();
        let path = format!("/tasks/{}", urlencode(&segment));
        fixture.refused(Method::GET, &path, Vec::new(), true);
        fixture.refused(Method::DELETE, &path, Vec::new(), true);
        // A wrong or missing token is refused on every route but /healthz.
        let body = br#"{"type":"sendWebhook","payload":{}}"#.to_vec();
        if token.as_deref() != Some("hostile-token") {
            let status = fixture.refused_with_token(token.as_deref(), body);
            prop_assert_eq!(status, StatusCode::UNAUTHORIZED);
        }
        fixture.assert_store_empty();
    }
}

impl Fixture {
    fn refused_with_token(&self, token: Option<&str>, body: Vec<u8>) -> StatusCode {
        TRIED.fetch_add(1, Ordering::Relaxed);
        let (status, _) =
            self.runtime
                .block_on(call(&self.app, Method::POST, "/tasks", body, token));
        status
    }
}

fn urlencode(text: &str) -> String {
    text.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

#[test]
fn deep_nesting_huge_numbers_and_big_bodies_are_refused() {
    let fixture = fixture();
    let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    let deep_object = format!(
        r#"{{"type":"sendWebhook","payload":{}1{}}}"#,
        r#"{"a":"#.repeat(5_000),
        "}".repeat(5_000)
    );
    let cases: Vec<Vec<u8>> = vec![
        deep.into_bytes(),
        deep_object.into_bytes(),
        format!(
            r#"{{"type":"sendWebhook","payload":{{}},"maxAttempts":{}}}"#,
            "9".repeat(10_000)
        )
        .into_bytes(),
        format!(
            r#"{{"type":"sendWebhook","payload":{{}},"delaySeconds":1{}}}"#,
            "0".repeat(400)
        )
        .into_bytes(),
        format!(
            r#"{{"type":"sendWebhook","payload":"{}"}}"#,
            "x".repeat(1024 * 1024)
        )
        .into_bytes(),
        vec![b'a'; 1024 * 1024],
        format!(r#"{{"type":"{}","payload":{{}}}}"#, "t".repeat(100_000)).into_bytes(),
        b"{\"type\":\"sendWebhook\",\"payload\":\"\xff\xfe\"}".to_vec(),
        br#"{"type":"sendWebhook","payload":{},"scheduledAt":"+275760-09-13T00:00:00Z"}"#.to_vec(),
        br#"{"type":"sendWebhook","payload":{},"scheduledAt":"1969-12-31T23:59:59Z"}"#.to_vec(),
        br#"{"type":"sendWebhook","payload":{},"type":"sendWebhook","payload":{}, "x":1}"#.to_vec(),
    ];
    for body in cases {
        fixture.refused(Method::POST, "/tasks", body, true);
    }
    fixture.assert_store_empty();
    eprintln!(
        "hostile: {} requests tried so far in this binary",
        TRIED.load(Ordering::Relaxed)
    );
}

proptest! {
    // Fewer cases on DynamoDB Local: each case makes a table of its own.
    #![proptest_config(ProptestConfig {
        cases: 48,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn hostile_creates_are_refused_on_dynamodb(
        value in any_json(),
        (field, bad) in bad_field(),
        segment in "[^/?#]{0,80}",
    ) {
        let fixture = fixture_on(true);
        fixture.refused(Method::POST, "/tasks", value.to_string().into_bytes(), true);
        let mut body = json!({"type": "sendWebhook", "payload": {"url": "https://example.com", "body": {}}});
        body[field.as_str()] = bad;
        fixture.refused(Method::POST, "/tasks", body.to_string().into_bytes(), true);
        let path = format!("/tasks/{}", urlencode(&segment));
        fixture.refused(Method::GET, &path, Vec::new(), true);
        fixture.refused(Method::DELETE, &path, Vec::new(), true);
        fixture.assert_store_empty();
    }
}
