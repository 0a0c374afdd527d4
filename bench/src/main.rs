//! Tasker's benchmark, one run on one machine:
//!
//! `cargo run --release -p tasker-bench -- [--store sqlite|dynamodb|both] [--tasks 10000]`
//!
//! For each store it measures the store's ceiling (single conditional writes per second at the
//! processor's concurrency), enqueue (library, HTTP one at a time, HTTP batches), the drain of
//! N due no-op tasks and its ratio to the ceiling ÷ writes per task, DynamoDB capacity units per
//! task (from `ReturnConsumedCapacity = INDEXES` on every call, through a proxy) and the due →
//! start delay in poll mode, and the dispatcher under slow tasks (fast tasks' start delays among
//! slow ones, slot occupancy, recovery from a processor killed mid-run), and schedules' fire lag
//! (tick → task created) with a tick's capacity units, and listings and counts at scale (10,000
//! tasks against 1,000,000 on SQLite, 100,000 on DynamoDB Local). It then runs the apalis SQLite peer on the same N jobs and the
//! Lambda binaries against a local Runtime API (init time, peak memory). DynamoDB is DynamoDB
//! Local (from `scripts/setup-test-tools.sh`), started here on 127.0.0.1. It prints a Markdown
//! report and writes the numbers as JSON.

mod blocked;
mod dispatch;
mod lambda;
mod peers;
mod phases;
mod racing;
mod report;
mod results;
mod scale;
mod schedules;
mod sqs;
mod stores;

use std::path::{Path, PathBuf};
use std::time::Instant;

use clap::Parser;
use indicatif::{ProgressBar, ProgressStyle};

use crate::results::{Machine, Results};
use crate::stores::{Bench, Kind};

#[derive(Parser)]
#[command(about = "Tasker's benchmark: one run, a Markdown report and a JSON file")]
struct Args {
    /// Which stores to measure (`all`: SQLite, DynamoDB Local and PostgreSQL).
    #[arg(long, default_value = "all", value_parser = ["sqlite", "dynamodb", "postgres", "all"])]
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
    /// Tasks in each pass of the dispatcher's mix (mixed latency, occupancy).
    #[arg(long, default_value_t = 2_000)]
    mixed_tasks: usize,
    /// Tasks created per second in the mixed-latency passes.
    #[arg(long, default_value_t = 24.0)]
    mixed_rate: f64,
    /// A slow task's handler time in the mix, in milliseconds.
    #[arg(long, default_value_t = 10_000)]
    slow_ms: u64,
    /// A fast task's handler time in the mix, in milliseconds.
    #[arg(long, default_value_t = 10)]
    fast_ms: u64,
    /// Tasks of the idle-wake pass (PostgreSQL), created 5 per second by another process.
    #[arg(long, default_value_t = 100)]
    wake_tasks: usize,
    /// One task of the mix in this many is slow.
    #[arg(long, default_value_t = 20)]
    slow_every: usize,
    /// Tasks of the crash pass.
    #[arg(long, default_value_t = 200)]
    crash_tasks: usize,
    /// Each crash-pass task's handler time, in milliseconds.
    #[arg(long, default_value_t = 500)]
    crash_work_ms: u64,
    /// The crash pass's task timeout, in seconds (Tasker's default).
    #[arg(long, default_value_t = 30)]
    crash_timeout: u64,
    /// The crash pass's lease grace, in seconds (Tasker's default).
    #[arg(long, default_value_t = 30)]
    crash_grace: u64,
    /// Skip the dispatcher passes (mixed latency, occupancy, crash).
    #[arg(long)]
    no_dispatch: bool,
    /// Internal: run as the crash pass's processor over `sqlite:PATH`,
    /// `dynamodb:ENDPOINT#TABLE` or `postgres:URL` until killed.
    #[arg(long, hide = true)]
    crash_worker: Option<String>,
    /// Internal: the crash worker appends its attempts' starts and ends to this file.
    #[arg(long, hide = true)]
    crash_log: Option<PathBuf>,
    /// Skip the apalis peer.
    #[arg(long)]
    no_apalis: bool,
    /// Skip the peers' table (BullMQ, pg-boss, graphile-worker and Tasker in their shape).
    #[arg(long)]
    no_peers: bool,
    /// Run only the peers' table.
    #[arg(long, conflicts_with_all = ["only_blocked", "only_scale"])]
    only_peers: bool,
    /// Jobs created per second in the peers' start-delay passes.
    #[arg(long, default_value_t = 50.0)]
    peer_rate: f64,
    /// Workers of the peers' depth-target passes (2,000 jobs waiting, 1 ms jobs).
    #[arg(long, value_delimiter = ',', default_values_t = [4, 16, 64])]
    depth_workers: Vec<usize>,
    /// Jobs of the peers' crash pass (a worker SIGKILLed once half are done), 0 to skip it.
    #[arg(long, default_value_t = 2_000)]
    crash_peers_jobs: usize,
    /// Each crash-pass job's handler time, in milliseconds.
    #[arg(long, default_value_t = 20)]
    crash_peers_job_ms: u64,
    /// Seconds the peers' crash pass watches the second worker after the kill.
    #[arg(long, default_value_t = 120.0)]
    crash_peers_watch: f64,
    /// Seconds each depth-target pass is measured.
    #[arg(long, default_value_t = 10.0)]
    depth_seconds: f64,
    /// Skip the Lambda binaries (init time, memory).
    #[arg(long)]
    no_lambda: bool,
    /// Tasks of each SQS-mode drain (DynamoDB Local and moto's SQS).
    #[arg(long, default_value_t = 2_000)]
    sqs_tasks: usize,
    /// Schedules of the fire-lag phase (each fires every second).
    #[arg(long, default_value_t = 20)]
    schedules: usize,
    /// Seconds the fire-lag phase runs.
    #[arg(long, default_value_t = 20)]
    schedule_seconds: u64,
    /// Skip SQS mode.
    #[arg(long)]
    no_sqs: bool,
    /// Tasks of the scale phase's smaller table (every store).
    #[arg(long, default_value_t = 10_000)]
    scale_small: usize,
    /// Tasks of the scale phase's full table on SQLite.
    #[arg(long, default_value_t = 1_000_000)]
    scale_sqlite: usize,
    /// Tasks of the scale phase's full table on DynamoDB Local.
    #[arg(long, default_value_t = 100_000)]
    scale_dynamodb: usize,
    /// Tasks of the scale phase's full table on PostgreSQL.
    #[arg(long, default_value_t = 100_000)]
    scale_postgres: usize,
    /// Skip the scale phase.
    #[arg(long)]
    no_scale: bool,
    /// Fast tasks of each blocked-work drain.
    #[arg(long, default_value_t = 10_000)]
    blocked_tasks: usize,
    /// Due tasks of the paused type in the blocked-work phase.
    #[arg(long, default_value_t = 20_000)]
    blocked_paused: usize,
    /// Due tasks of the capped type in the blocked-work phase.
    #[arg(long, default_value_t = 1_000)]
    blocked_capped: usize,
    /// Paused tasks ahead of the claims timed on SQLite.
    #[arg(long, default_value_t = 100_000)]
    blocked_paused_sqlite: usize,
    /// Skip the blocked-work phase.
    #[arg(long)]
    no_blocked: bool,
    /// Run only the blocked-work phase.
    #[arg(long)]
    only_blocked: bool,
    /// Run only the scale phase.
    #[arg(long, conflicts_with = "only_blocked")]
    only_scale: bool,
    /// Where to write the JSON results (default: <target>/bench/results.json).
    #[arg(long)]
    json: Option<PathBuf>,
}

/// A progress bar on stderr for `len` steps.
fn bar(len: usize, message: &str) -> ProgressBar {
    let bar = ProgressBar::new(len as u64).with_style(
        ProgressStyle::with_template("{msg:<40} [{bar:30}] {pos}/{len} {per_sec}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    bar.set_message(message.to_owned());
    bar
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

/// Every measurement the arguments ask for.
async fn run(bench: &Bench, kinds: &[Kind], root: &Path, target_dir: &Path) -> Results {
    let started = Instant::now();
    let mut blocked = Vec::new();
    let mut peers = None;
    if !(bench.args.no_peers || bench.args.only_blocked || bench.args.only_scale) {
        let shape = peers::Shape {
            jobs: bench.args.tasks,
            batch: 100,
            concurrency: phases::CONCURRENCY,
            delay_jobs: bench.args.delay_tasks,
            rate: bench.args.peer_rate,
            depth_workers: bench.args.depth_workers.clone(),
            depth_seconds: bench.args.depth_seconds,
            depth_target: 2_000,
        };
        let crash = peers::crash::CrashShape {
            jobs: bench.args.crash_peers_jobs,
            job_ms: bench.args.crash_peers_job_ms,
            concurrency: phases::CONCURRENCY,
            watch_seconds: bench.args.crash_peers_watch,
        };
        peers = Some(peers::measure(bench, root, shape, crash).await);
    }
    // Everything but the scale phase, unless only that (or the peers) was asked for.
    let all = !bench.args.only_scale && !bench.args.only_peers;
    for &kind in kinds.iter().filter(|_| all && !bench.args.no_blocked) {
        blocked.push(blocked::measure(bench, kind).await);
    }
    if bench.args.only_blocked {
        return Results {
            tasks: bench.args.blocked_tasks,
            machine: Machine::here(),
            seconds: started.elapsed().as_secs_f64(),
            stores: Vec::new(),
            peer: None,
            peers,
            lambda: None,
            sqs: None,
            scale: Vec::new(),
            blocked,
        };
    }
    let mut stores = Vec::new();
    for &kind in kinds.iter().filter(|_| all) {
        stores.push(stores::bench_store(bench, kind).await);
    }
    let jobs = bench.args.tasks;
    let sqlite = stores.iter().find(|s| s.store == "SQLite");
    let peer = sqlite.filter(|_| !bench.args.no_apalis).map(|sqlite| {
        eprintln!("apalis peer: building and running on {jobs} jobs");
        peers::apalis::compare(
            sqlite,
            peers::apalis::run(root, target_dir, bench.dir.path(), jobs),
            jobs,
        )
    });
    let lambda = match (&bench.endpoint, bench.args.no_lambda || !all) {
        (Some(endpoint), false) => Some(lambda::measure(endpoint, target_dir, jobs).await),
        _ => None,
    };
    let sqs = match (&bench.endpoint, &bench.sqs_endpoint) {
        (Some(ddb), Some(sqs)) if all => {
            Some(sqs::measure(ddb, sqs, bench.args.sqs_tasks, bench.args.delay_tasks).await)
        }
        _ => None,
    };
    let mut scale = Vec::new();
    for &kind in kinds
        .iter()
        .filter(|_| !bench.args.no_scale && !bench.args.only_peers)
    {
        scale.push(stores::scale(bench, kind).await);
    }
    Results {
        scale,
        tasks: jobs,
        machine: Machine::here(),
        seconds: started.elapsed().as_secs_f64(),
        stores,
        peer,
        peers,
        lambda,
        sqs,
        blocked,
    }
}

/// Starts moto's server with `scripts/moto-server.sh`; its pid and endpoint.
fn start_moto(root: &Path, log: &Path) -> (u32, String) {
    let output = std::process::Command::new(root.join("scripts/moto-server.sh"))
        .arg(log)
        .stderr(std::process::Stdio::inherit())
        .output()
        .expect("run scripts/moto-server.sh");
    assert!(
        output.status.success(),
        "moto's server did not start (run scripts/setup-test-tools.sh first)"
    );
    let line = String::from_utf8_lossy(&output.stdout);
    let mut parts = line.split_whitespace();
    let pid = parts.next().and_then(|p| p.parse().ok()).expect("pid");
    let endpoint = parts.next().expect("endpoint").to_owned();
    (pid, endpoint)
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    if let Some(spec) = &args.crash_worker {
        let store = stores::worker_store(spec).await;
        let interval = std::time::Duration::from_secs_f64(args.poll_interval);
        let settings = stores::crash_settings(&args);
        dispatch::crash_worker(store, settings, interval, args.crash_log.as_deref()).await;
        return;
    }
    let root = tasker_tests::workspace_root();
    let target_dir =
        std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root.join("target"), PathBuf::from);
    let dir = tempfile::tempdir().expect("temp dir");
    let kinds: Vec<Kind> = match args.store.as_str() {
        "sqlite" => vec![Kind::Sqlite],
        "dynamodb" => vec![Kind::DynamoDb],
        "postgres" => vec![Kind::Postgres],
        _ => vec![Kind::Sqlite, Kind::DynamoDb, Kind::Postgres],
    };
    // PostgreSQL with its durable defaults (fsync, synchronous commits), as an application
    // runs it; stopped when the run ends.
    let postgres = (kinds.contains(&Kind::Postgres) || !args.no_peers)
        .then(tasker_tests::postgres::Cluster::start_durable);
    let wants_dynamo = kinds.contains(&Kind::DynamoDb) || !(args.no_lambda || args.only_blocked);
    let local = wants_dynamo.then(|| start_dynamodb_local(&root, &dir.path().join("ddb.log")));
    let moto = (kinds.contains(&Kind::DynamoDb) && !args.no_sqs && !args.only_blocked)
        .then(|| start_moto(&root, &dir.path().join("moto.log")));
    let json = args
        .json
        .clone()
        .unwrap_or_else(|| target_dir.join("bench/results.json"));
    let bench = Bench {
        dir,
        endpoint: local.as_ref().map(|(_, endpoint)| endpoint.clone()),
        sqs_endpoint: moto.as_ref().map(|(_, endpoint)| endpoint.clone()),
        postgres: postgres.as_ref().map(|cluster| cluster.url.clone()),
        args,
    };
    let results = run(&bench, &kinds, &root, &target_dir).await;
    println!("{}", report::report(&results));
    if let Some(parent) = json.parent() {
        std::fs::create_dir_all(parent).expect("results folder");
    }
    let text = serde_json::to_string_pretty(&results).expect("results as JSON") + "\n";
    std::fs::write(&json, text).expect("write results");
    eprintln!("results: {} ({:.0} s)", json.display(), results.seconds);
    for (pid, _) in local.into_iter().chain(moto) {
        let _ = std::process::Command::new("kill")
            .arg(pid.to_string())
            .status();
    }
    drop(postgres);
}
