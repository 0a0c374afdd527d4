//! Tasker beside the queues a team would pick instead: the apalis SQLite peer
//! ([`apalis`]), and BullMQ on Redis, pg-boss and graphile-worker on PostgreSQL, each a small
//! node program under `bench/peers/` ([`node`]) running the same passes as Tasker's rows
//! ([`tasker`]) on servers this run starts on 127.0.0.1.

pub mod apalis;
pub mod crash;
mod crash_log;
mod node;
mod redis;
mod report;
mod tasker;

pub use self::report::table;

use std::path::Path;

use serde::{Deserialize, Serialize};

use self::crash::{CrashCounts, CrashRow, CrashShape};
use self::redis::{Persistence, Redis};
use self::tasker::Via;
use crate::stores::{Bench, Kind};

/// The passes' sizes, the same for every system.
#[derive(Debug, Clone, Serialize)]
pub struct Shape {
    /// Jobs of each enqueue-and-drain pass.
    pub jobs: usize,
    /// Jobs per batch of the batched enqueue.
    pub batch: usize,
    /// Jobs running at once.
    pub concurrency: usize,
    /// Jobs of each start-delay pass.
    pub delay_jobs: usize,
    /// Jobs created per second in the start-delay passes.
    pub rate: f64,
    /// Workers of each depth-target pass.
    pub depth_workers: Vec<usize>,
    /// Seconds each depth-target pass is measured (after a fifth of that to warm up).
    pub depth_seconds: f64,
    /// Jobs the depth-target producer keeps waiting.
    pub depth_target: usize,
}

impl Shape {
    /// The shape as a peer program's arguments.
    fn arguments(&self) -> Vec<String> {
        [
            ("--jobs", self.jobs.to_string()),
            ("--batch", self.batch.to_string()),
            ("--concurrency", self.concurrency.to_string()),
            ("--delay-jobs", self.delay_jobs.to_string()),
            ("--rate", self.rate.to_string()),
            (
                "--depth-workers",
                self.depth_workers
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(","),
            ),
            ("--depth-seconds", self.depth_seconds.to_string()),
            ("--depth-target", self.depth_target.to_string()),
        ]
        .into_iter()
        .flat_map(|(flag, value)| [flag.to_owned(), value])
        .collect()
    }
}

/// Start delays of one pass, in milliseconds.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct Delays {
    pub p50: f64,
    pub p99: f64,
    pub max: f64,
}

/// Jobs completed per second with `workers` running 1 ms jobs while a producer keeps the
/// shape's depth target waiting.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct Depth {
    pub workers: usize,
    pub jobs_per_s: f64,
}

/// One system's passes (the fields a peer program prints).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Row {
    pub system: String,
    pub version: String,
    /// Where its jobs live and how they reach it.
    #[serde(default)]
    pub setup: String,
    pub jobs: usize,
    pub concurrency: usize,
    /// Seconds to enqueue the jobs one at a time, each awaited.
    pub enqueue_one_s: f64,
    /// Seconds from the worker's start until every one of them ended.
    pub drain_s: f64,
    /// Seconds to enqueue the jobs in batches.
    pub enqueue_batch_s: f64,
    /// Seconds to drain those.
    pub drain_batch_s: f64,
    /// Jobs due when created: created → start.
    pub due_now_ms: Delays,
    /// Jobs due 1 s after they are created: due → start.
    pub delayed_1s_ms: Delays,
    /// The depth-target passes, one per worker count.
    #[serde(default)]
    pub depth: Vec<Depth>,
}

impl Row {
    /// Jobs per second of enqueue one at a time and drain, end to end.
    pub fn end_to_end_per_second(&self) -> f64 {
        self.jobs as f64 / (self.enqueue_one_s + self.drain_s)
    }
}

/// A system that has no row, and why.
#[derive(Debug, Clone, Serialize)]
pub struct Skipped {
    pub system: String,
    pub reason: String,
}

/// Every system's row, Tasker's first.
#[derive(Debug, Clone, Serialize)]
pub struct Peers {
    pub shape: Shape,
    pub rows: Vec<Row>,
    pub skipped: Vec<Skipped>,
    /// The crash pass: each system's worker SIGKILLed mid-drain.
    pub crash_shape: CrashShape,
    pub crash: Vec<CrashRow>,
}

/// Runs every system's passes in `shape`: Tasker on SQLite (library and HTTP) and on
/// DynamoDB Local when it runs, then each peer whose server and packages are here.
pub async fn measure(bench: &Bench, root: &Path, shape: Shape, crash: CrashShape) -> Peers {
    let mut peers = Peers {
        shape: shape.clone(),
        rows: Vec::new(),
        skipped: Vec::new(),
        crash_shape: crash,
        crash: Vec::new(),
    };
    let mut ours = vec![
        (Kind::Sqlite, Via::Library, "SQLite, library"),
        (Kind::Sqlite, Via::Http, "SQLite, HTTP API (`tasker serve`)"),
    ];
    if bench.endpoint.is_some() {
        ours.push((Kind::DynamoDb, Via::Library, "DynamoDB Local, library"));
    }
    for (kind, via, setup) in ours {
        eprintln!("peers: Tasker, {setup}");
        let mut row = tasker::row(bench, kind, via, &shape).await;
        row.setup = setup.to_owned();
        peers.rows.push(row);
    }
    for persistence in [Persistence::Default, Persistence::AofEverySec] {
        let ran = match Redis::start(persistence) {
            Ok(redis) => node::run(root, "bullmq", &[("REDIS_URL", &redis.url)], &shape).await,
            Err(reason) => Err(reason),
        };
        peers.add("BullMQ", persistence.name(), ran);
    }
    for name in ["pg-boss", "graphile-worker"] {
        let ran = match &bench.postgres {
            Some(_) => {
                let url = bench.fresh_database().await;
                node::run(root, name, &[("DATABASE_URL", &url)], &shape).await
            }
            None => Err("PostgreSQL is not running in this run (--store)".to_owned()),
        };
        peers.add(name, "PostgreSQL 15, default synchronous_commit", ran);
    }
    crash::measure_all(bench, root, &mut peers).await;
    peers
}

impl Peers {
    /// Adds `system`'s crash row (`setup` its store, `note` what its settings say), or says
    /// why there is none.
    fn add_crash(
        &mut self,
        system: &str,
        setup: &str,
        note: &str,
        ran: Result<CrashCounts, String>,
    ) {
        match ran {
            Ok(counts) => {
                eprintln!("peers: {system}, crash pass: done");
                self.crash.push(CrashRow {
                    system: system.to_owned(),
                    setup: setup.to_owned(),
                    counts,
                    note: note.to_owned(),
                });
            }
            Err(reason) => self.skip(format!("{system} (crash pass)"), reason),
        }
    }

    /// Lists `system` under the table with the `reason` it has no row.
    fn skip(&mut self, system: String, reason: String) {
        eprintln!("peers: {system} skipped: {reason}");
        self.skipped.push(Skipped { system, reason });
    }

    /// Adds `system`'s row (`setup` its store), or says why there is none.
    fn add(&mut self, system: &str, setup: &str, ran: Result<Row, String>) {
        match ran {
            Ok(mut row) => {
                eprintln!("peers: {system}, {setup}: done");
                row.setup = setup.to_owned();
                self.rows.push(row);
            }
            Err(reason) => self.skip(format!("{system} ({setup})"), reason),
        }
    }
}
