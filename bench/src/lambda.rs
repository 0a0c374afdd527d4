//! The Lambda binaries on this machine: init time (process start → first request for an event
//! from the Runtime API) and peak memory of a processor invocation, against a Runtime API served
//! here on 127.0.0.1 the way Lambda serves it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use indicatif::ProgressBar;
use tasker::{AnyStore, ProcessorSettings, RunSummary, Tasker};
use tokio::sync::{Mutex, mpsc};

use crate::phases;
use crate::results::{FunctionResults, Invocation, LambdaResults};

/// What the Runtime API saw.
#[derive(Debug)]
enum Seen {
    /// The function asked for its next event.
    Next(Instant),
    /// The function answered an event.
    Response(String),
    /// The function reported an error.
    Error(String),
}

struct Runtime {
    seen: mpsc::UnboundedSender<Seen>,
    events: Mutex<mpsc::UnboundedReceiver<serde_json::Value>>,
}

async fn next(State(runtime): State<Arc<Runtime>>) -> impl IntoResponse {
    let _ = runtime.seen.send(Seen::Next(Instant::now()));
    let event = runtime.events.lock().await.recv().await;
    let deadline = SystemTime::now() + Duration::from_secs(300);
    let deadline_ms = deadline
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or_default();
    let mut headers = HeaderMap::new();
    headers.insert(
        "lambda-runtime-aws-request-id",
        "bench-request".parse().expect("header"),
    );
    headers.insert(
        "lambda-runtime-deadline-ms",
        deadline_ms.to_string().parse().expect("header"),
    );
    headers.insert(
        "lambda-runtime-invoked-function-arn",
        "arn:aws:lambda:us-east-1:123456789012:function:bench"
            .parse()
            .expect("header"),
    );
    (headers, event.unwrap_or_default().to_string())
}

async fn response(State(runtime): State<Arc<Runtime>>, body: String) {
    let _ = runtime.seen.send(Seen::Response(body));
}

async fn error(State(runtime): State<Arc<Runtime>>, body: String) {
    let _ = runtime.seen.send(Seen::Error(body));
}

/// A Runtime API on a free port: its `host:port`, what it sees, and where to put events.
async fn runtime_api() -> (
    String,
    mpsc::UnboundedReceiver<Seen>,
    mpsc::UnboundedSender<serde_json::Value>,
) {
    let (seen_tx, seen_rx) = mpsc::unbounded_channel();
    let (events_tx, events_rx) = mpsc::unbounded_channel();
    let runtime = Arc::new(Runtime {
        seen: seen_tx,
        events: Mutex::new(events_rx),
    });
    let app = Router::new()
        .route("/2018-06-01/runtime/invocation/next", get(next))
        .route(
            "/2018-06-01/runtime/invocation/{id}/response",
            post(response),
        )
        .route("/2018-06-01/runtime/invocation/{id}/error", post(error))
        .route("/2018-06-01/runtime/init/error", post(error))
        .with_state(runtime);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let address = listener.local_addr().expect("address").to_string();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (address, seen_rx, events_tx)
}

/// The environment Lambda gives a function, plus Tasker's.
fn lambda_env(name: &str, api: &str, extra: &[(String, String)]) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = [
        ("AWS_LAMBDA_RUNTIME_API", api.to_owned()),
        ("AWS_LAMBDA_FUNCTION_NAME", name.to_owned()),
        ("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "128".to_owned()),
        ("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST".to_owned()),
        ("AWS_LAMBDA_LOG_STREAM_NAME", "bench".to_owned()),
        ("AWS_LAMBDA_LOG_GROUP_NAME", format!("/aws/lambda/{name}")),
        ("AWS_REGION", "us-east-1".to_owned()),
        ("AWS_ACCESS_KEY_ID", "bench".to_owned()),
        ("AWS_SECRET_ACCESS_KEY", "bench".to_owned()),
        ("AWS_EC2_METADATA_DISABLED", "true".to_owned()),
        ("TASKER_STORE", "dynamodb".to_owned()),
        ("TASKER_API_TOKEN", "bench".to_owned()),
        ("RUST_LOG", "warn".to_owned()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    env.extend(extra.iter().cloned());
    env
}

fn spawn(binary: &Path, env: &[(String, String)]) -> tokio::process::Child {
    tokio::process::Command::new(binary)
        .env_clear()
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|err| panic!("start {}: {err}", binary.display()))
}

/// Milliseconds from process start to its first request for an event, `runs` times.
pub async fn init_times(binary: &Path, runs: usize, extra: &[(String, String)]) -> Vec<f64> {
    let name = binary
        .parent()
        .and_then(Path::file_name)
        .map_or("function".into(), |n| n.to_string_lossy().into_owned());
    let mut times = Vec::with_capacity(runs);
    for _ in 0..runs {
        let (api, mut seen, _events) = runtime_api().await;
        let env = lambda_env(&name, &api, extra);
        let started = Instant::now();
        let mut child = spawn(binary, &env);
        let first = tokio::time::timeout(Duration::from_secs(30), async {
            loop {
                match seen.recv().await {
                    Some(Seen::Next(at)) => return Ok(at),
                    Some(Seen::Error(body)) => return Err(body),
                    Some(Seen::Response(_)) => {}
                    None => return Err("runtime API closed".to_owned()),
                }
            }
        })
        .await;
        let _ = child.kill().await;
        match first {
            Ok(Ok(at)) => times.push(at.duration_since(started).as_secs_f64() * 1000.0),
            Ok(Err(err)) => panic!("{} failed to start: {err}", binary.display()),
            Err(_) => panic!("{} did not ask for an event within 30 s", binary.display()),
        }
    }
    times
}

/// Peak resident memory (VmHWM) of `pid`, in bytes.
fn peak_rss(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// One processor invocation (a scheduled event) over `extra`'s table: its answer, how long it
/// took, and the process's peak resident memory afterwards.
pub async fn processor_invocation(
    binary: &Path,
    extra: &[(String, String)],
) -> (RunSummary, Duration, Option<u64>) {
    let (api, mut seen, events) = runtime_api().await;
    let env = lambda_env("processor", &api, extra);
    let mut child = spawn(binary, &env);
    let pid = child.id().expect("pid");
    let event: serde_json::Value =
        serde_json::from_str(&tasker_tests::events::text("scheduled-processor.json"))
            .expect("event");
    let mut sent_at = None;
    let answer = tokio::time::timeout(Duration::from_secs(600), async {
        loop {
            match seen.recv().await {
                Some(Seen::Next(_)) if sent_at.is_none() => {
                    sent_at = Some(Instant::now());
                    events.send(event.clone()).expect("deliver event");
                }
                Some(Seen::Next(_)) => {}
                Some(Seen::Response(body)) => return Ok(body),
                Some(Seen::Error(body)) => return Err(body),
                None => return Err("runtime API closed".to_owned()),
            }
        }
    })
    .await;
    let took = sent_at.map(|at| at.elapsed()).unwrap_or_default();
    let rss = peak_rss(pid);
    let _ = child.kill().await;
    let body = match answer {
        Ok(Ok(body)) => body,
        Ok(Err(err)) => panic!("processor failed: {err}"),
        Err(_) => panic!("processor did not answer within 10 minutes"),
    };
    let summary = serde_json::from_str(&body)
        .unwrap_or_else(|err| panic!("the processor answered {body:?}, not a run summary: {err}"));
    (summary, took, rss)
}

/// The Lambda functions, as `template.yaml` deploys them.
pub const FUNCTIONS: [&str; 4] = ["enqueue", "processor", "cleanup", "worker"];

/// Builds each function binary for this machine in release, one build per function as SAM makes
/// them, so each links only its own features; their folder.
pub fn build_functions(target_dir: &Path) -> PathBuf {
    for function in FUNCTIONS {
        let status = std::process::Command::new(std::env::var("CARGO").unwrap_or("cargo".into()))
            .args(["build", "--release", "--locked", "-p", function])
            .env("CARGO_TARGET_DIR", target_dir)
            .status()
            .expect("run cargo build");
        assert!(status.success(), "building {function} failed");
    }
    target_dir.join("release")
}

/// Init times of each function and one processor invocation over `tasks` due tasks, against
/// DynamoDB Local at `endpoint`.
pub async fn measure(endpoint: &str, target_dir: &Path, tasks: usize) -> LambdaResults {
    let folder = build_functions(target_dir);
    let store = tasker_tests::dynamo::fresh_store_at(endpoint).await;
    let extra = vec![
        ("TASKER_TABLE".to_owned(), store.table().to_owned()),
        ("AWS_ENDPOINT_URL_DYNAMODB".to_owned(), endpoint.to_owned()),
    ];
    let mut functions = BTreeMap::new();
    for name in FUNCTIONS {
        let binary = folder.join(name);
        let mut times = init_times(&binary, 7, &extra).await;
        times.sort_by(f64::total_cmp);
        let results = FunctionResults {
            init_ms_median: times[times.len() / 2],
            init_ms_all: times,
            host_binary_bytes: std::fs::metadata(&binary).map(|m| m.len()).unwrap_or(0),
        };
        functions.insert(name.to_owned(), results);
    }
    // One invocation drains the tasks: the processor's peak memory doing real work. It runs
    // registered types only: these are `noop`, which it does not know, so each attempt fails at
    // once and is retried later: a drain of real store work.
    let tasker = Tasker::new(
        AnyStore::DynamoDb(store),
        phases::noop_registry(ProgressBar::hidden()),
        ProcessorSettings::default(),
    );
    let progress = crate::bar(tasks, "Lambda: tasks for one processor invocation");
    phases::enqueue_library(&tasker, tasks, phases::CONCURRENCY, &progress).await;
    progress.finish_and_clear();
    let (answer, took, rss) = processor_invocation(&folder.join("processor"), &extra).await;
    LambdaResults {
        functions,
        processor_invocation: Invocation {
            tasks,
            answer,
            seconds: took.as_secs_f64(),
            peak_rss_bytes: rss,
        },
    }
}
