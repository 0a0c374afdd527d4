//! Fuzz targets for every parser of outside input, as proptest harnesses that `cargo test`
//! runs on the stable toolchain: the strict JSON reader, the create, batch and cancel bodies,
//! the listing query and its cursor, task ids, cron and time-zone text, the schedules YAML of
//! `tasker schedules apply`, the dashboard's cookies and its forms (through the real router).
//!
//! Each target draws half its inputs from its corpus (`tests/fuzz/<target>/`, seeds kept in
//! the repository) with a few mutations each (bytes flipped, inserted, removed, or a token of
//! the formats spliced in), half as arbitrary bytes, and asserts what matters: no panic, an
//! accepted input round-trips or keeps its rules, a refusal carries a 4xx and a code.
//! `TASKER_FUZZ_CASES` sets the cases per target (256 by default; a longer run, say 100000,
//! is how the counts in the closing note of issue 28 were made). A failure prints the input:
//! add it to the corpus with the fix.

use std::sync::{Arc, OnceLock};

use axum::body::Body;
use http::{Request, StatusCode};
use proptest::prelude::*;
use proptest::sample::select;
use serde_json::Value;
use tasker::api::payload_text::{payload_text, raw_members};
use tasker::api::requests::{
    parse_batch, parse_cancel_by_reference, parse_create, parse_list_query,
};
use tasker::api::strict_json::{self, StrictJsonError};
use tasker::dashboard::session;
use tasker::schedule::Timing;
use tasker::store::ListKey;
use tasker::{AuthMode, ProcessorSettings, Registry, SqliteStore, TaskId, Tasker, Timestamp};
use tower::ServiceExt;

/// Pieces of the formats the targets read, spliced into seeds.
const TOKENS: &[&str] = &[
    "{",
    "}",
    "[",
    "]",
    "\"",
    ":",
    ",",
    "\\",
    "\\u0000",
    "\\ud800",
    "1e999",
    "-0",
    "0.1e-400",
    "123456789012345678901234567890",
    "null",
    "true",
    "#",
    "*",
    "/",
    "?",
    "L",
    "W",
    "%",
    "%ZZ",
    "&",
    "=",
    ";",
    "\n",
    " ",
    "\t",
    "\u{feff}",
    "é",
    "*/0",
    "5#5",
    "60",
    "-1",
    "Z",
    "T",
    "~",
    "&b",
    "*b",
    "<<:",
    "- ",
    "!!binary",
    "tasker_session=",
    "tasker_csrf=",
];

fn cases() -> u32 {
    std::env::var("TASKER_FUZZ_CASES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(256)
}

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: cases(),
        failure_persistence: None,
        max_shrink_iters: 2_000,
        ..ProptestConfig::default()
    }
}

/// The seeds of `target`'s corpus.
fn corpus(target: &str) -> Vec<Vec<u8>> {
    let dir = tasker_tests::workspace_root()
        .join("tests/fuzz")
        .join(target);
    let mut seeds: Vec<Vec<u8>> = std::fs::read_dir(&dir)
        .unwrap_or_else(|err| panic!("corpus {}: {err}", dir.display()))
        .filter_map(|entry| std::fs::read(entry.ok()?.path()).ok())
        .collect();
    seeds.sort();
    assert!(!seeds.is_empty(), "corpus {} is empty", dir.display());
    seeds
}

#[derive(Debug, Clone)]
enum Mutation {
    Set(usize, u8),
    Insert(usize, u8),
    Remove(usize),
    Splice(usize, &'static str),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), any::<u8>()).prop_map(|(at, b)| Mutation::Set(at, b)),
        (any::<usize>(), any::<u8>()).prop_map(|(at, b)| Mutation::Insert(at, b)),
        any::<usize>().prop_map(Mutation::Remove),
        (any::<usize>(), select(TOKENS)).prop_map(|(at, t)| Mutation::Splice(at, t)),
    ]
}

fn mutate(mut bytes: Vec<u8>, mutations: &[Mutation]) -> Vec<u8> {
    for m in mutations {
        let at = |i: usize, len: usize| i % (len + 1);
        match *m {
            Mutation::Set(i, b) if !bytes.is_empty() => {
                let i = i % bytes.len();
                bytes[i] = b;
            }
            Mutation::Insert(i, b) => bytes.insert(at(i, bytes.len()), b),
            Mutation::Remove(i) if !bytes.is_empty() => {
                let i = i % bytes.len();
                bytes.remove(i);
            }
            Mutation::Splice(i, token) => {
                let i = at(i, bytes.len());
                bytes.splice(i..i, token.bytes());
            }
            _ => {}
        }
    }
    bytes
}

/// Inputs for `target`: mutated seeds, unchanged seeds, or arbitrary bytes.
fn input(target: &str) -> impl Strategy<Value = Vec<u8>> + use<> {
    let seeds = corpus(target);
    prop_oneof![
        4 => (select(seeds.clone()), prop::collection::vec(mutation(), 1..6))
            .prop_map(|(seed, ms)| mutate(seed, &ms)),
        1 => select(seeds),
        3 => prop::collection::vec(any::<u8>(), 0..400),
    ]
}

/// Inputs for `target` as text (invalid UTF-8 replaced: these parsers take `&str`).
fn text(target: &str) -> impl Strategy<Value = String> + use<> {
    input(target).prop_map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
}

fn now() -> Timestamp {
    "2026-12-06T12:00:00Z".parse().expect("an instant")
}

fn assert_refusal(err: &tasker::api::error::ApiError) {
    assert!(
        err.status.is_client_error(),
        "{} {}",
        err.status,
        err.message
    );
    assert!(!err.code.is_empty() && !err.message.is_empty(), "{err:?}");
}

/// A payload's stored text keeps the value sent, and storing it again changes nothing.
fn assert_payload_kept(stored: &str, sent: Option<&str>) {
    let Some(sent) = sent else {
        return;
    };
    if sent.trim_start().starts_with('"') {
        return;
    }
    let (kept, given): (Value, Value) = (
        serde_json::from_str(stored).expect("a stored payload is JSON"),
        serde_json::from_str(sent).expect("the payload sent is JSON"),
    );
    assert_eq!(kept, given);
    assert_eq!(payload_text(stored).as_deref(), Some(stored));
}

proptest! {
    #![proptest_config(config())]

    /// Strict JSON agrees with serde_json, except that it refuses repeated keys; what it
    /// accepts prints and reads back the same.
    #[test]
    fn strict_json(bytes in input("json")) {
        let strict = strict_json::parse(&bytes);
        let loose = serde_json::from_slice::<Value>(&bytes);
        match (&strict, &loose) {
            (Ok(value), Ok(same)) => {
                prop_assert_eq!(value, same);
                prop_assert_eq!(&strict_json::parse(value.to_string().as_bytes()).expect("reads back"), value);
            }
            (Ok(value), Err(err)) => prop_assert!(false, "strict took {value} that serde refused: {err}"),
            (Err(StrictJsonError::DuplicateKey { .. }), Ok(_)) | (Err(_), Err(_)) => {}
            (Err(err), Ok(_)) => prop_assert!(false, "refused valid JSON: {err:?}"),
        }
    }

    /// A create is a valid task whose payload is the one sent, or a 4xx with a code.
    #[test]
    fn create_bodies(bytes in input("create")) {
        match parse_create(&bytes, now()) {
            Ok(new) => {
                prop_assert!(new.validate().is_ok());
                let raw = raw_members(&bytes);
                assert_payload_kept(&new.payload, raw.get("payload").map(|p| p.get()));
            }
            Err(err) => assert_refusal(&err),
        }
    }

    /// A batch is 1 to 100 items, each a valid task or a 4xx with a code.
    #[test]
    fn batch_bodies(bytes in input("batch")) {
        match parse_batch(&bytes, now()) {
            Ok(items) => {
                prop_assert!((1..=100).contains(&items.len()));
                for item in items {
                    match item {
                        Ok(new) => prop_assert!(new.validate().is_ok()),
                        Err(err) => assert_refusal(&err),
                    }
                }
            }
            Err(err) => assert_refusal(&err),
        }
    }

    #[test]
    fn cancel_bodies(bytes in input("cancel")) {
        match parse_cancel_by_reference(&bytes) {
            Ok(cancel) => prop_assert!(tasker::task::validate_reference_uid(&cancel.reference_uid).is_ok()),
            Err(err) => assert_refusal(&err),
        }
    }

    /// A listing query's cursor, once accepted, is the canonical text of its key.
    #[test]
    fn listing_queries(query in text("query")) {
        match parse_list_query(Some(&query)) {
            Ok(parsed) => {
                prop_assert!((1..=tasker::engine::MAX_LIST_LIMIT).contains(&parsed.limit));
                if let Some(cursor) = parsed.cursor {
                    prop_assert_eq!(cursor.as_str().parse::<ListKey>().expect("reads back"), cursor);
                }
            }
            Err(err) => assert_refusal(&err),
        }
    }

    /// Cursors and task ids have one spelling each: what is accepted prints as it was given.
    #[test]
    fn cursors_and_task_ids(text in text("query"), id in "[0-9A-Za-z]{0,30}") {
        for candidate in [text.as_str(), id.as_str()] {
            if let Ok(key) = candidate.parse::<ListKey>() {
                prop_assert_eq!(key.as_str(), candidate);
            }
            if let Ok(id) = candidate.parse::<TaskId>() {
                prop_assert_eq!(id.to_string(), candidate);
            }
        }
        let id = TaskId::new(time::OffsetDateTime::now_utc());
        prop_assert_eq!(id.to_string().parse::<TaskId>().expect("reads back"), id);
    }

    /// A cron and zone (first and second line) that are accepted fire within five years.
    #[test]
    fn cron_and_time_zones(text in text("cron")) {
        let (cron, zone) = text.split_once('\n').unwrap_or((&text, "UTC"));
        if let Ok(timing) = Timing::parse(cron, zone) {
            let next = timing.next_after(now());
            prop_assert!(next.is_some_and(|next| next > now()), "{cron:?} {zone:?} never fires");
        }
    }

    /// A schedules file is a list of schedules with unique names, each valid or refused by a
    /// rule that names its field.
    #[test]
    fn schedules_files(text in text("yaml")) {
        match tasker_cli::schedules::parse_file(&text) {
            Ok(specs) => {
                let mut names = std::collections::BTreeSet::new();
                for spec in &specs {
                    // The name, cron and zone rules are checked next (`apply` does before it
                    // writes anything): a refusal there names its field.
                    if let Err(err) = spec.validate() {
                        prop_assert!(err.to_string().starts_with('`'), "{err}");
                    }
                    prop_assert!(names.insert(spec.name.clone()));
                }
            }
            Err(message) => prop_assert!(message.len() > 2),
        }
    }

    /// Cookies are found by name whatever surrounds them, never with a `;` inside; no text
    /// that was not signed is a session.
    #[test]
    fn cookies(bytes in input("cookie")) {
        let mut headers = http::HeaderMap::new();
        if let Ok(value) = http::HeaderValue::from_bytes(&bytes) {
            headers.insert(http::header::COOKIE, value);
        }
        for name in [session::SESSION_COOKIE, session::CSRF_COOKIE] {
            if let Some(value) = session::cookie(&headers, name) {
                prop_assert!(!value.contains(';'));
                prop_assert!(!session::valid_session("fuzz-token", value, 1_700_000_000));
            }
        }
    }

    /// Dashboard forms, with any body and any cookies, are answered without a 5xx.
    #[test]
    fn dashboard_forms(body in input("form"), cookies in input("cookie"), login in any::<bool>()) {
        let path = if login { "/ui/login" } else { "/ui/act" };
        let mut request = Request::post(path)
            .header("content-type", "application/x-www-form-urlencoded");
        if let Ok(value) = http::HeaderValue::from_bytes(&cookies) {
            request = request.header("cookie", value);
        }
        let request = request.body(Body::from(body)).expect("a request");
        let status = runtime().block_on(async {
            dashboard().clone().oneshot(request).await.map(|r| r.status())
        }).unwrap_or_else(|err| match err {});
        prop_assert!(
            status.is_client_error() || status.is_redirection() || status == StatusCode::OK,
            "{path}: {status}"
        );
    }
}

fn runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime")
    })
}

/// The dashboard over an in-memory SQLite store, behind a token.
fn dashboard() -> &'static axum::Router {
    static ROUTER: OnceLock<axum::Router> = OnceLock::new();
    ROUTER.get_or_init(|| {
        let mut registry = Registry::new();
        registry
            .register("sendWebhook", |_| async { Ok(()) })
            .expect("register");
        let store = SqliteStore::in_memory().expect("sqlite");
        let tasker = Arc::new(Tasker::new(store, registry, ProcessorSettings::default()));
        tasker::dashboard::router(tasker, AuthMode::Token("fuzz-token".to_owned()))
    })
}
