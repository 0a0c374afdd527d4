//! What one benchmark run measured, as typed values: the report is made from them and they are
//! written as JSON (`target/bench/results.json`).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use tasker::RunSummary;
use tasker_tests::capacity::{Consumed, WRITE_OPERATIONS};

/// The whole run.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Results {
    /// Tasks per phase.
    pub tasks: usize,
    /// The machine it ran on.
    pub machine: Machine,
    /// Wall time of the run.
    pub seconds: f64,
    /// One entry per store measured.
    pub stores: Vec<StoreResults>,
    /// The apalis peer on the same jobs, when it ran.
    pub peer: Option<PeerResults>,
    /// Tasker beside BullMQ, pg-boss and graphile-worker, when measured.
    pub peers: Option<crate::peers::Peers>,
    /// The Lambda binaries, when measured.
    pub lambda: Option<LambdaResults>,
    /// SQS mode on DynamoDB Local and moto, when measured.
    pub sqs: Option<SqsResults>,
    /// Listings and counts at two table sizes, per store.
    pub scale: Vec<Scale>,
    /// Drains behind blocked work, per store.
    pub blocked: Vec<BlockedResults>,
}

/// Drains of fast tasks behind blocked work on one store.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BlockedResults {
    /// The store.
    pub store: String,
    /// Fast tasks per drain.
    pub tasks: usize,
    /// One row per case, the first with nothing blocked.
    pub cases: Vec<BlockedCase>,
    /// SQLite: a claim behind a paused backlog.
    pub paused_claim: Option<PausedClaim>,
}

/// One case: what is ahead of the fast tasks, and the two drains.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BlockedCase {
    /// What is ahead.
    pub case: String,
    /// Drained by the process that met the blocked work.
    pub warm: BlockedDrain,
    /// Drained by a new process over the same store.
    pub fresh: BlockedDrain,
}

/// One drain of the fast tasks.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BlockedDrain {
    /// Wall time until every fast task succeeded.
    pub seconds: f64,
    /// DynamoDB read units of the drain per fast task.
    pub read_units_per_task: Option<f64>,
    /// DynamoDB write units of the drain per fast task.
    pub write_units_per_task: Option<f64>,
}

/// SQLite: the median claim of 16 due tasks with and without a paused backlog ahead.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PausedClaim {
    /// Paused tasks ahead.
    pub backlog: usize,
    /// Median ms of a claim behind them.
    pub median_ms: f64,
    /// Median ms of the same claim with none.
    pub median_ms_without: f64,
}

/// Listings and counts on a table of `small` tasks and of `full` tasks.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Scale {
    /// The store.
    pub store: String,
    /// Tasks at the first measure.
    pub small: usize,
    /// Tasks at the second.
    pub full: usize,
    /// Seconds the load (and the first measure) took.
    pub load_seconds: f64,
    /// One row per call.
    pub calls: Vec<ScaleCall>,
    /// `GET /stats` at the small size, as answered (how exact it is included).
    pub stats_small: serde_json::Value,
    /// The same at the full size.
    pub stats_full: serde_json::Value,
}

/// One call at both sizes: median milliseconds and, on DynamoDB, read units.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ScaleCall {
    /// What was called.
    pub call: String,
    /// Median ms at the small size.
    pub small_ms: f64,
    /// Median ms at the full size.
    pub full_ms: f64,
    /// Median read units at the small size (DynamoDB).
    pub small_read_units: Option<f64>,
    /// Median read units at the full size (DynamoDB).
    pub full_read_units: Option<f64>,
}

/// SQS mode: start delays and drains by worker count.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SqsResults {
    /// Due → start with the messages sent at the create, one worker long-polling (1 s).
    pub start_delay: StartDelay,
    /// The same with short polls 20 ms apart: without moto's one-second wake-up.
    pub start_delay_short_polls: StartDelay,
    /// The same backlog drained by 1, 2 and 4 workers.
    pub drains: Vec<SqsDrain>,
}

/// One SQS-mode drain.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SqsDrain {
    /// Workers reading the queue, each with its own store client.
    pub workers: usize,
    /// Tasks drained.
    pub tasks: usize,
    /// From the first create to the last success.
    pub seconds: f64,
    /// Tasks per second.
    pub per_second: f64,
    /// DynamoDB write units per task, enqueue → success.
    pub write_units_per_task: f64,
    /// DynamoDB read units per task.
    pub read_units_per_task: f64,
    /// SQS calls per task: sends, receives (empty ones too) and deletes.
    pub sqs_calls_per_task: f64,
}

/// The machine.
#[derive(Debug, Serialize)]
pub struct Machine {
    /// Cores available.
    pub cpus: usize,
}

impl Machine {
    /// This machine.
    pub fn here() -> Self {
        Self {
            cpus: std::thread::available_parallelism().map_or(0, |n| n.get()),
        }
    }
}

/// Every phase on one store.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StoreResults {
    /// `SQLite` or `DynamoDB Local`.
    pub store: String,
    /// Tasks per phase.
    pub tasks: usize,
    /// Single conditional writes per second, 16 at once.
    pub ceiling_writes_per_second: f64,
    /// Library creates per second, 16 at once.
    pub enqueue_library_concurrent_per_second: f64,
    /// Library creates per second, one at a time.
    pub enqueue_library_sequential_per_second: f64,
    /// HTTP creates per second, one request at a time.
    pub enqueue_http_single_per_second: f64,
    /// Tasks created one request at a time.
    pub http_single_tasks: usize,
    /// HTTP creates per second, batches of 100.
    pub enqueue_http_batch_per_second: f64,
    /// Drain of N due no-op tasks, tasks per second.
    pub drain_per_second: f64,
    /// The drain's wall time.
    pub drain_seconds: f64,
    /// Store writes (claims and outcomes) per task in the drain.
    pub writes_per_task: f64,
    /// Drain ÷ (ceiling ÷ writes per task).
    pub drain_ratio: f64,
    /// DynamoDB capacity units (DynamoDB only).
    pub units: Option<Units>,
    /// One backlog drained by one, two and four processors.
    pub racing: Vec<crate::racing::Racing>,
    /// Due → start delays in poll mode.
    pub start_delay: StartDelay,
    /// Schedules' fire lag in poll mode.
    pub fire_lag: FireLag,
    /// The dispatcher under slow tasks (skipped with `--no-dispatch`).
    pub dispatch: Option<Dispatch>,
}

/// The dispatcher under slow tasks.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Dispatch {
    /// A slow task's handler time.
    pub slow_seconds: f64,
    /// A fast task's handler time.
    pub fast_ms: f64,
    /// One task in this many is slow.
    pub slow_every: usize,
    /// Tasks created through the processing Tasker (`tasker serve`).
    pub serve: MixedLatency,
    /// Tasks created by another process, found by polling.
    pub poll: MixedLatency,
    /// PostgreSQL: fast tasks created one by one by another process on an idle server.
    pub idle_wake: Option<MixedLatency>,
    /// The poll interval of both passes.
    pub poll_interval_seconds: f64,
    /// The same mix, all due at once.
    pub occupancy: Occupancy,
    /// A processor killed mid-run.
    pub crash: Crash,
}

/// Fast tasks' due → start delays among slow ones, tasks created live.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MixedLatency {
    /// Fast tasks measured.
    pub fast_tasks: usize,
    /// Tasks created per second.
    pub rate_per_second: f64,
    /// Median due → start.
    pub p50_ms: f64,
    /// 99th percentile due → start.
    pub p99_ms: f64,
    /// Largest due → start.
    pub max_ms: f64,
}

/// The mix's drain, all due at once, against total handler time ÷ slots.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Occupancy {
    /// Tasks in the mix.
    pub tasks: usize,
    /// From the processor's start until every handler finished.
    pub drain_seconds: f64,
    /// Total handler time ÷ slots.
    pub ideal_seconds: f64,
    /// Ideal ÷ drain.
    pub ratio: f64,
}

/// A processor killed mid-run and another one finishing its tasks.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Crash {
    /// Tasks in the pass.
    pub tasks: usize,
    /// Tasks the killed process held.
    pub running_at_kill: u64,
    /// The task type's timeout.
    pub timeout_seconds: f64,
    /// The lease grace.
    pub grace_seconds: f64,
    /// From the kill until every task succeeded.
    pub recovery_seconds: f64,
}

/// Capacity units through the measuring proxy.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Units {
    /// Write units per task from enqueue to success.
    pub write_units_per_task: f64,
    /// Read units per task from enqueue to success.
    pub read_units_per_task: f64,
    /// Conditional-check failures over the whole pass.
    pub condition_failures: u64,
    /// Write calls per task in the drain.
    pub drain_write_calls_per_task: f64,
    /// Every operation of the enqueue.
    pub enqueue: Ledger,
    /// Every operation of the drain.
    pub process: Ledger,
    /// Two processors racing over one backlog.
    pub race: Race,
}

/// Calls and units per DynamoDB operation.
pub type Ledger = BTreeMap<String, LedgerEntry>;

/// One operation's calls and units.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LedgerEntry {
    /// Calls made.
    pub calls: u64,
    /// Units on the table.
    pub table_units: f64,
    /// Units on the indexes.
    pub index_units: f64,
    /// Calls whose condition failed.
    pub condition_failures: u64,
}

/// The ledger of what the proxy counted.
pub fn ledger(consumed: &BTreeMap<String, Consumed>) -> Ledger {
    consumed
        .iter()
        .map(|(operation, c)| {
            let entry = LedgerEntry {
                calls: c.calls,
                table_units: c.table_units,
                index_units: c.index_units,
                condition_failures: c.condition_failures,
            };
            (operation.clone(), entry)
        })
        .collect()
}

/// The sums over a ledger.
#[derive(Debug, Clone, Copy, Default)]
pub struct Sums {
    /// Write units.
    pub write_units: f64,
    /// Read units.
    pub read_units: f64,
    /// Write calls.
    pub write_calls: u64,
    /// Failed conditions.
    pub condition_failures: u64,
}

/// Write and read units, write calls and condition failures in `consumed`.
pub fn sums(consumed: &BTreeMap<String, Consumed>) -> Sums {
    let mut sums = Sums::default();
    for (operation, c) in consumed {
        if WRITE_OPERATIONS.contains(&operation.as_str()) {
            sums.write_units += c.units();
            sums.write_calls += c.calls;
        } else {
            sums.read_units += c.units();
        }
        sums.condition_failures += c.condition_failures;
    }
    sums
}

/// Two processors racing over the same backlog.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Race {
    /// Tasks each processor ran.
    pub succeeded: [usize; 2],
    /// Failed conditions per task.
    pub condition_failures_per_task: f64,
    /// Write units per task in the drain.
    pub drain_write_units_per_task: f64,
    /// Read units per task in the drain.
    pub drain_read_units_per_task: f64,
    /// Every operation of the race.
    pub ledger: Ledger,
}

/// Schedules in poll mode: tick → task created, and a tick's capacity units (DynamoDB).
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FireLag {
    /// Schedules firing every second.
    pub schedules: usize,
    /// How long they fired.
    pub seconds: u64,
    /// Ticks fired (tasks created).
    pub ticks: usize,
    /// Median tick → task created, in milliseconds.
    pub p50_ms: f64,
    /// 99th percentile, in milliseconds.
    pub p99_ms: f64,
    /// Largest, in milliseconds.
    pub max_ms: f64,
    /// DynamoDB write units per tick, from firing to its task's success.
    pub write_units_per_tick: Option<f64>,
    /// DynamoDB read units per tick, the same.
    pub read_units_per_tick: Option<f64>,
}

/// Start delays in poll mode.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StartDelay {
    /// Tasks measured.
    pub tasks: usize,
    /// The poll interval.
    pub poll_interval_seconds: f64,
    /// Median due → start, in milliseconds.
    pub p50_ms: f64,
    /// 99th percentile due → start, in milliseconds.
    pub p99_ms: f64,
    /// Largest due → start, in milliseconds.
    pub max_ms: f64,
}

/// What the apalis peer printed (its own snake_case keys).
#[derive(Debug, Serialize, Deserialize)]
pub struct ApalisResults {
    /// Its version.
    pub apalis_version: String,
    /// Jobs run.
    pub jobs: usize,
    /// Enqueue wall time.
    pub enqueue_seconds: f64,
    /// Jobs per second enqueued one at a time.
    pub enqueue_per_second: f64,
    /// Drain wall time.
    pub drain_seconds: f64,
    /// Jobs per second drained.
    pub drain_per_second: f64,
}

/// Tasker against the apalis peer on the same jobs.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PeerResults {
    /// The peer's own numbers.
    pub apalis: ApalisResults,
    /// Tasker's sequential enqueue rate on SQLite.
    pub tasker_enqueue_per_second: f64,
    /// Tasker's drain rate on SQLite.
    pub tasker_drain_per_second: f64,
    /// Tasker's enqueue + drain time for the same jobs.
    pub tasker_total_seconds: f64,
    /// The peer's enqueue + drain time.
    pub apalis_total_seconds: f64,
    /// The peer's total ÷ Tasker's.
    pub speedup: f64,
}

/// The Lambda binaries built for this machine.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LambdaResults {
    /// Per function name.
    pub functions: BTreeMap<String, FunctionResults>,
    /// One processor invocation over N tasks.
    pub processor_invocation: Invocation,
}

/// One function's start.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FunctionResults {
    /// Median init time, in milliseconds.
    pub init_ms_median: f64,
    /// Every init time measured, sorted.
    pub init_ms_all: Vec<f64>,
    /// The binary's size.
    pub host_binary_bytes: u64,
}

/// One processor invocation.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Invocation {
    /// Tasks due when it started.
    pub tasks: usize,
    /// What the function answered.
    pub answer: RunSummary,
    /// Its wall time.
    pub seconds: f64,
    /// The process's peak resident memory, when the system tells.
    pub peak_rss_bytes: Option<u64>,
}
