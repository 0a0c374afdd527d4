//! Tasker's benchmark, one run on one machine:
//!
//! `cargo run --release -p tasker-bench -- [--store sqlite|dynamodb|both] [--tasks 10000]`
//!
//! For each store it measures the store's ceiling (single conditional writes per second at the
//! processor's concurrency), enqueue (library, HTTP one at a time, HTTP batches), the drain of
//! N due no-op tasks and its ratio to the ceiling ÷ writes per task, DynamoDB capacity units per
//! task (from `ReturnConsumedCapacity = INDEXES` on every call, through a proxy) and the due →
//! start delay in poll mode. It then runs the apalis SQLite peer on the same N jobs and the
//! Lambda binaries against a local Runtime API (init time, peak memory). DynamoDB is DynamoDB
//! Local (from `scripts/setup-test-tools.sh`), started here on 127.0.0.1. It prints a Markdown
//! report and writes the numbers as JSON.

mod lambda;
mod peer;
mod phases;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{Value, json};
use tasker::{DynamoStore, PollSettings, ProcessorSettings, SqliteStore, Store, Tasker};
use tasker_tests::capacity::{CapacityProxy, Consumed, WRITE_OPERATIONS};
use tasker_tests::dynamo;

use crate::phases::CONCURRENCY;

#[derive(Parser)]
#[command(about = "Tasker's benchmark: one run, a Markdown report and a JSON file")]
struct Args {
    /// Which stores to measure.
    #[arg(long, default_value = "both", value_parser = ["sqlite", "dynamodb", "both"])]
    store: String,
    /// Tasks per phase (ceiling writes, enqueue, drain, units).
    #[arg(long, default_value_t = 10_000)]
    tasks: usize,
    /// Tasks created over HTTP one request at a time.
    #[arg(long, default_value_t = 2_000)]
    http_tasks: usize,
    /// Tasks timed for the start delay.
    #[arg(long, default_value_t = 200)]
    delay_tasks: usize,
    /// Poll interval of the start-delay phase, in seconds.
    #[arg(long, default_value_t = 1.0)]
    poll_interval: f64,
    /// Skip the apalis peer.
    #[arg(long)]
    no_peer: bool,
    /// Skip the Lambda binaries (init time, memory).
    #[arg(long)]
    no_lambda: bool,
    /// Where to write the JSON results (default: <target>/bench/results.json).
    #[arg(long)]
    json: Option<PathBuf>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Sqlite,
    DynamoDb,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Self::Sqlite => "SQLite",
            Self::DynamoDb => "DynamoDB Local",
        }
    }
}

/// Where stores are made: a temporary folder and DynamoDB Local.
struct Bench {
    dir: tempfile::TempDir,
    endpoint: Option<String>,
    args: Args,
}

impl Bench {
    async fn store(&self, kind: Kind, label: &str) -> Store {
        match kind {
            Kind::Sqlite => Store::Sqlite(
                SqliteStore::open(self.dir.path().join(format!("{label}.db"))).expect("SQLite"),
            ),
            Kind::DynamoDb => {
                let endpoint = self.endpoint.as_deref().expect("DynamoDB Local");
                Store::DynamoDb(dynamo::fresh_store_at(endpoint).await)
            }
        }
    }
}

fn bar(len: usize, message: &str) -> ProgressBar {
    let bar = ProgressBar::new(len as u64).with_style(
        ProgressStyle::with_template("{msg:<40} [{bar:30}] {pos}/{len} {per_sec}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    bar.set_message(message.to_owned());
    bar
}

fn ledger_json(ledger: &BTreeMap<String, Consumed>) -> Value {
    ledger
        .iter()
        .map(|(operation, c)| {
            (
                operation.clone(),
                json!({"calls": c.calls, "tableUnits": c.table_units, "indexUnits": c.index_units,
                       "conditionFailures": c.condition_failures}),
            )
        })
        .collect::<serde_json::Map<_, _>>()
        .into()
}

/// Write units, read units, write calls and condition failures in `ledger`.
fn sums(ledger: &BTreeMap<String, Consumed>) -> (f64, f64, u64, u64) {
    let mut sums = (0.0, 0.0, 0, 0);
    for (operation, consumed) in ledger {
        if WRITE_OPERATIONS.contains(&operation.as_str()) {
            sums.0 += consumed.units();
            sums.2 += consumed.calls;
        } else {
            sums.1 += consumed.units();
        }
        sums.3 += consumed.condition_failures;
    }
    sums
}

/// Every phase on one store.
async fn bench_store(bench: &Bench, kind: Kind) -> Value {
    let n = bench.args.tasks;
    let label = kind.name();

    let progress = bar(n, &format!("{label}: ceiling (conditional writes)"));
    let ceiling = match kind {
        Kind::Sqlite => {
            phases::sqlite_ceiling(&bench.dir.path().join("ceiling.db"), n, &progress).await
        }
        Kind::DynamoDb => {
            let client = dynamo::client_for(bench.endpoint.as_deref().expect("endpoint"));
            // DynamoDB Local is a JVM: the first thousands of calls run slower while it warms
            // up, which would make the ceiling look low and every ratio to it look good.
            let warm_up = dynamo::fresh_table(&client).await;
            let hidden = ProgressBar::hidden();
            phases::dynamo_ceiling(&client, &warm_up, n.min(5_000), &hidden).await;
            let table = dynamo::fresh_table(&client).await;
            phases::dynamo_ceiling(&client, &table, n, &progress).await
        }
    };
    progress.finish_and_clear();

    let store = bench.store(kind, "drain").await;
    let tasker = Tasker::new(
        store.clone(),
        phases::noop_registry(ProgressBar::hidden()),
        ProcessorSettings::default(),
    );
    let progress = bar(
        n,
        &format!("{label}: enqueue, library, {CONCURRENCY} at once"),
    );
    let enqueue_concurrent = phases::enqueue_library(&tasker, n, CONCURRENCY, &progress).await;
    progress.finish_and_clear();

    let progress = bar(n, &format!("{label}: drain"));
    let drain = phases::drain(store, n, &progress).await;
    progress.finish_and_clear();
    assert_eq!(drain.succeeded, n, "every task of the drain succeeded");

    let store = bench.store(kind, "sequential").await;
    let tasker = Tasker::new(
        store,
        phases::noop_registry(ProgressBar::hidden()),
        ProcessorSettings::default(),
    );
    let progress = bar(n, &format!("{label}: enqueue, library, one at a time"));
    let enqueue_sequential = phases::enqueue_library(&tasker, n, 1, &progress).await;
    progress.finish_and_clear();

    let store = bench.store(kind, "http").await;
    let tasker = Arc::new(Tasker::new(
        store,
        phases::noop_registry(ProgressBar::hidden()),
        ProcessorSettings::default(),
    ));
    let base = phases::serve_api(tasker).await;
    let single = bench.args.http_tasks;
    let progress = bar(single, &format!("{label}: enqueue, HTTP one at a time"));
    let http_single = phases::enqueue_http_single(&base, single, &progress).await;
    progress.finish_and_clear();
    let progress = bar(n, &format!("{label}: enqueue, HTTP batches of 100"));
    let http_batch = phases::enqueue_http_batch(&base, n, &progress).await;
    progress.finish_and_clear();

    // Capacity units: the same life (enqueue → success) through the measuring proxy.
    let units = match (kind, &bench.endpoint) {
        (Kind::DynamoDb, Some(endpoint)) => {
            let proxy = CapacityProxy::start(endpoint).await;
            let store = Store::DynamoDb(dynamo::fresh_store_at(&proxy.endpoint).await);
            proxy.take();
            let tasker = Tasker::new(
                store.clone(),
                phases::noop_registry(ProgressBar::hidden()),
                ProcessorSettings::default(),
            );
            let progress = bar(n, &format!("{label}: units pass, enqueue"));
            phases::enqueue_library(&tasker, n, CONCURRENCY, &progress).await;
            progress.finish_and_clear();
            let enqueue = proxy.take();
            let progress = bar(n, &format!("{label}: units pass, drain"));
            let drained = phases::drain(store, n, &progress).await;
            progress.finish_and_clear();
            let process = proxy.take();
            let (enqueue_w, enqueue_r, _, enqueue_f) = sums(&enqueue);
            let (process_w, process_r, process_calls, process_f) = sums(&process);
            let per = |x: f64| x / drained.succeeded.max(1) as f64;

            // Two processors (two processes' worth of state) racing over the same backlog: what
            // their collisions cost. Each claim that loses its condition is billed on AWS.
            let first = dynamo::fresh_store_at(&proxy.endpoint).await;
            let second = DynamoStore::new(
                dynamo::client_for(&proxy.endpoint),
                first.table(),
                Duration::ZERO,
            );
            let tasker = Tasker::new(
                Store::DynamoDb(first.clone()),
                phases::noop_registry(ProgressBar::hidden()),
                ProcessorSettings::default(),
            );
            let progress = bar(n, &format!("{label}: race pass, enqueue"));
            phases::enqueue_library(&tasker, n, CONCURRENCY, &progress).await;
            progress.finish_and_clear();
            proxy.take();
            let progress = bar(n, &format!("{label}: race pass, two processors"));
            let (a, b) = tokio::join!(
                phases::drain(Store::DynamoDb(first), n, &progress),
                phases::drain(Store::DynamoDb(second), n, &progress),
            );
            progress.finish_and_clear();
            let race = proxy.take();
            let (race_w, race_r, _, race_f) = sums(&race);
            let raced = (a.succeeded + b.succeeded).max(1) as f64;
            Some(json!({
                "writeUnitsPerTask": per(enqueue_w + process_w),
                "readUnitsPerTask": per(enqueue_r + process_r),
                "conditionFailures": enqueue_f + process_f,
                "drainWriteCallsPerTask": per(process_calls as f64),
                "enqueue": ledger_json(&enqueue),
                "process": ledger_json(&process),
                "race": {
                    "succeeded": [a.succeeded, b.succeeded],
                    "conditionFailuresPerTask": race_f as f64 / raced,
                    "drainWriteUnitsPerTask": race_w / raced,
                    "drainReadUnitsPerTask": race_r / raced,
                    "ledger": ledger_json(&race),
                },
            }))
        }
        _ => None,
    };

    let writes_per_task = units
        .as_ref()
        .and_then(|u| u["drainWriteCallsPerTask"].as_f64())
        .unwrap_or(drain.writes_per_task);
    let drain_ratio = drain.per_second / (ceiling / writes_per_task);

    let store = bench.store(kind, "delay").await;
    let poll = PollSettings {
        window: Duration::ZERO,
        interval: Duration::from_secs_f64(bench.args.poll_interval),
    };
    let progress = bar(
        bench.args.delay_tasks,
        &format!("{label}: start delay, poll mode"),
    );
    let delay = phases::start_delay(store, bench.args.delay_tasks, poll, &progress).await;
    progress.finish_and_clear();

    json!({
        "store": label,
        "tasks": n,
        "ceilingWritesPerSecond": ceiling,
        "enqueueLibraryConcurrentPerSecond": enqueue_concurrent,
        "enqueueLibrarySequentialPerSecond": enqueue_sequential,
        "enqueueHttpSinglePerSecond": http_single,
        "httpSingleTasks": single,
        "enqueueHttpBatchPerSecond": http_batch,
        "drainPerSecond": drain.per_second,
        "drainSeconds": n as f64 / drain.per_second,
        "writesPerTask": writes_per_task,
        "drainRatio": drain_ratio,
        "units": units,
        "startDelay": {
            "tasks": delay.tasks,
            "pollIntervalSeconds": bench.args.poll_interval,
            "p50Ms": delay.p50_ms,
            "p99Ms": delay.p99_ms,
            "maxMs": delay.max_ms,
        },
    })
}

/// Init times and a processor invocation of the release binaries built for this machine.
async fn bench_lambda(bench: &Bench, target_dir: &Path) -> Value {
    let endpoint = bench.endpoint.clone().expect("DynamoDB Local");
    let folder = lambda::build_functions(target_dir);
    let store = dynamo::fresh_store_at(&endpoint).await;
    let table = store.table().to_owned();
    let extra = vec![
        ("TASKER_TABLE".to_owned(), table),
        ("AWS_ENDPOINT_URL_DYNAMODB".to_owned(), endpoint),
    ];
    let mut functions = serde_json::Map::new();
    for name in ["enqueue", "processor", "cleanup"] {
        let binary = folder.join(name);
        let mut times = lambda::init_times(&binary, 7, &extra).await;
        times.sort_by(f64::total_cmp);
        let size = std::fs::metadata(&binary).map(|m| m.len()).unwrap_or(0);
        functions.insert(
            name.to_owned(),
            json!({"initMsMedian": times[times.len() / 2], "initMsAll": times, "hostBinaryBytes": size}),
        );
    }
    // One invocation drains N tasks: the processor's peak memory doing real work.
    let n = bench.args.tasks;
    let tasker = Tasker::new(
        Store::DynamoDb(store),
        phases::noop_registry(ProgressBar::hidden()),
        ProcessorSettings::default(),
    );
    let progress = bar(n, "Lambda: tasks for one processor invocation");
    phases::enqueue_library(&tasker, n, CONCURRENCY, &progress).await;
    progress.finish_and_clear();
    // The Lambda processor runs registered types only: these are `noop`, which it does not
    // know, so each attempt fails at once and is retried later: a drain of real store work.
    let (answer, took, rss) = lambda::processor_invocation(&folder.join("processor"), &extra).await;
    json!({
        "functions": functions,
        "processorInvocation": {
            "tasks": n,
            "answer": answer,
            "seconds": took.as_secs_f64(),
            "peakRssBytes": rss,
        },
    })
}

/// Starts DynamoDB Local with `scripts/dynamodb-local.sh`; its pid and endpoint.
fn start_dynamodb_local(root: &Path, log: &Path) -> (u32, String) {
    let output = std::process::Command::new(root.join("scripts/dynamodb-local.sh"))
        .arg(log)
        .stderr(std::process::Stdio::inherit())
        .output()
        .expect("run scripts/dynamodb-local.sh");
    assert!(
        output.status.success(),
        "DynamoDB Local did not start (run scripts/setup-test-tools.sh first)"
    );
    let line = String::from_utf8_lossy(&output.stdout);
    let mut parts = line.split_whitespace();
    let pid = parts.next().and_then(|p| p.parse().ok()).expect("pid");
    let endpoint = parts.next().expect("endpoint").to_owned();
    (pid, endpoint)
}

fn f(value: &Value) -> String {
    match value.as_f64() {
        Some(x) if x >= 100.0 => format!("{x:.0}"),
        Some(x) if x >= 10.0 => format!("{x:.1}"),
        Some(x) => format!("{x:.2}"),
        None => "—".to_owned(),
    }
}

/// How one row of the report shows a store's results.
type Cell = dyn Fn(&Value) -> String;

fn report(results: &Value) -> String {
    let stores = results["stores"].as_array().cloned().unwrap_or_default();
    let mut out = String::new();
    let header: Vec<String> = stores
        .iter()
        .map(|s| s["store"].as_str().unwrap_or("?").to_owned())
        .collect();
    out += &format!("| measure | {} |\n", header.join(" | "));
    out += &format!("|---|{}\n", "---|".repeat(stores.len()));
    let rows: [(&str, &Cell); 15] = [
        ("ceiling: single conditional writes/s, 16 at once", &|s| {
            f(&s["ceilingWritesPerSecond"])
        }),
        ("enqueue, library, 16 at once (tasks/s)", &|s| {
            f(&s["enqueueLibraryConcurrentPerSecond"])
        }),
        ("enqueue, library, one at a time (tasks/s)", &|s| {
            f(&s["enqueueLibrarySequentialPerSecond"])
        }),
        ("enqueue, HTTP, one request at a time (tasks/s)", &|s| {
            f(&s["enqueueHttpSinglePerSecond"])
        }),
        ("enqueue, HTTP, batches of 100 (tasks/s)", &|s| {
            f(&s["enqueueHttpBatchPerSecond"])
        }),
        ("drain of N due no-op tasks (tasks/s)", &|s| {
            f(&s["drainPerSecond"])
        }),
        ("store writes per task in the drain", &|s| {
            f(&s["writesPerTask"])
        }),
        ("drain ÷ (ceiling ÷ writes per task)", &|s| {
            f(&s["drainRatio"])
        }),
        ("write units per task, enqueue → success", &|s| {
            f(&s["units"]["writeUnitsPerTask"])
        }),
        ("read units per task, enqueue → success", &|s| {
            f(&s["units"]["readUnitsPerTask"])
        }),
        ("conditional-check failures (whole units pass)", &|s| {
            s["units"]["conditionFailures"]
                .as_u64()
                .map_or("—".into(), |c| c.to_string())
        }),
        ("two racing processors: tasks each", &|s| {
            let each = &s["units"]["race"]["succeeded"];
            match (each[0].as_u64(), each[1].as_u64()) {
                (Some(a), Some(b)) => format!("{a} / {b}"),
                _ => "—".into(),
            }
        }),
        (
            "two racing processors: failed conditions / drain write units, per task",
            &|s| {
                let race = &s["units"]["race"];
                if race.is_null() {
                    return "—".into();
                }
                format!(
                    "{:.3} / {:.2}",
                    race["conditionFailuresPerTask"]
                        .as_f64()
                        .unwrap_or_default(),
                    race["drainWriteUnitsPerTask"].as_f64().unwrap_or_default()
                )
            },
        ),
        ("start delay p50 / p99 / max (ms), poll mode", &|s| {
            format!(
                "{} / {} / {}",
                f(&s["startDelay"]["p50Ms"]),
                f(&s["startDelay"]["p99Ms"]),
                f(&s["startDelay"]["maxMs"])
            )
        }),
        ("start-delay poll interval (s)", &|s| {
            f(&s["startDelay"]["pollIntervalSeconds"])
        }),
    ];
    for (name, cell) in rows {
        let cells: Vec<String> = stores.iter().map(cell).collect();
        out += &format!("| {name} | {} |\n", cells.join(" | "));
    }
    if let Some(peer) = results.get("peer").filter(|p| !p.is_null()) {
        out += "\n| same N no-op jobs on SQLite | Tasker | apalis-sqlite | Tasker ÷ apalis |\n|---|---|---|---|\n";
        for (name, ours, theirs) in [
            (
                "enqueue, one at a time (jobs/s)",
                &peer["taskerEnqueuePerSecond"],
                &peer["apalis"]["enqueue_per_second"],
            ),
            (
                "drain (jobs/s)",
                &peer["taskerDrainPerSecond"],
                &peer["apalis"]["drain_per_second"],
            ),
        ] {
            let ratio = match (ours.as_f64(), theirs.as_f64()) {
                (Some(a), Some(b)) if b > 0.0 => format!("{:.2}", a / b),
                _ => "—".into(),
            };
            out += &format!("| {name} | {} | {} | {ratio} |\n", f(ours), f(theirs));
        }
        out += &format!(
            "| enqueue + drain, total seconds | {} | {} | {} |\n",
            f(&peer["taskerTotalSeconds"]),
            f(&peer["apalisTotalSeconds"]),
            f(&peer["speedup"])
        );
    }
    if let Some(lambda) = results.get("lambda").filter(|l| !l.is_null()) {
        out += "\n| Lambda binary (built for this machine) | init, median of 7 (ms) | size (bytes) |\n|---|---|---|\n";
        for name in ["enqueue", "processor", "cleanup"] {
            let function = &lambda["functions"][name];
            out += &format!(
                "| {name} | {} | {} |\n",
                f(&function["initMsMedian"]),
                function["hostBinaryBytes"]
            );
        }
        let invocation = &lambda["processorInvocation"];
        out += &format!(
            "\nOne processor invocation over {} due tasks: {} s, peak resident memory {} MiB; answer {}\n",
            invocation["tasks"],
            f(&invocation["seconds"]),
            invocation["peakRssBytes"]
                .as_f64()
                .map_or("?".into(), |b| format!("{:.1}", b / 1_048_576.0)),
            invocation["answer"]
        );
    }
    out
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    let root = tasker_tests::workspace_root();
    let target_dir =
        std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root.join("target"), PathBuf::from);
    let dir = tempfile::tempdir().expect("temp dir");
    let kinds: Vec<Kind> = match args.store.as_str() {
        "sqlite" => vec![Kind::Sqlite],
        "dynamodb" => vec![Kind::DynamoDb],
        _ => vec![Kind::Sqlite, Kind::DynamoDb],
    };
    let wants_dynamo = kinds.contains(&Kind::DynamoDb) || !args.no_lambda;
    let local = wants_dynamo.then(|| start_dynamodb_local(&root, &dir.path().join("ddb.log")));
    let bench = Bench {
        dir,
        endpoint: local.as_ref().map(|(_, endpoint)| endpoint.clone()),
        args,
    };
    let started = Instant::now();

    let mut stores = Vec::new();
    for &kind in &kinds {
        stores.push(bench_store(&bench, kind).await);
    }

    let peer = if kinds.contains(&Kind::Sqlite) && !bench.args.no_peer {
        eprintln!(
            "apalis peer: building and running on {} jobs",
            bench.args.tasks
        );
        let apalis = peer::run(&root, &target_dir, bench.dir.path(), bench.args.tasks);
        let sqlite = &stores[0];
        let ours_enqueue = sqlite["enqueueLibrarySequentialPerSecond"]
            .as_f64()
            .unwrap_or(f64::NAN);
        let ours_drain = sqlite["drainPerSecond"].as_f64().unwrap_or(f64::NAN);
        let n = bench.args.tasks as f64;
        let ours_total = n / ours_enqueue + n / ours_drain;
        let theirs_total = apalis["enqueue_seconds"].as_f64().unwrap_or(f64::NAN)
            + apalis["drain_seconds"].as_f64().unwrap_or(f64::NAN);
        json!({
            "apalis": apalis,
            "taskerEnqueuePerSecond": ours_enqueue,
            "taskerDrainPerSecond": ours_drain,
            "taskerTotalSeconds": ours_total,
            "apalisTotalSeconds": theirs_total,
            "speedup": theirs_total / ours_total,
        })
    } else {
        Value::Null
    };

    let lambda = if bench.args.no_lambda {
        Value::Null
    } else {
        bench_lambda(&bench, &target_dir).await
    };

    let results = json!({
        "tasks": bench.args.tasks,
        "machine": {"cpus": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0)},
        "seconds": started.elapsed().as_secs_f64(),
        "stores": stores,
        "peer": peer,
        "lambda": lambda,
    });
    println!("{}", report(&results));
    let path = bench
        .args
        .json
        .clone()
        .unwrap_or_else(|| target_dir.join("bench/results.json"));
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).expect("results folder");
    }
    std::fs::write(
        &path,
        serde_json::to_string_pretty(&results).expect("JSON") + "\n",
    )
    .expect("write results");
    eprintln!(
        "results: {} ({:.0} s)",
        path.display(),
        started.elapsed().as_secs_f64()
    );
    if let Some((pid, _)) = local {
        let _ = std::process::Command::new("kill")
            .arg(pid.to_string())
            .status();
    }
}
