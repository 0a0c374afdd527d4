//! `apalis-peer`: how fast [apalis](https://crates.io/crates/apalis) 1.x with its SQLite
//! backend (`apalis-sqlite`) enqueues and drains N no-op jobs, so that Tasker's numbers
//! can be read side by side with a well-known Rust job queue.
//!
//! Usage: `apalis-peer --jobs N --db PATH [--concurrency C] [--batch-size B] [--poll-ms MS]`
//! (the last two only to explore apalis's tuning; the defaults are the published settings).
//!
//! What is measured, each phase with a monotonic clock:
//! 1. **enqueue**: N `TaskSink::push` calls, one job per call, sequentially from one task.
//!    apalis-sqlite flushes each push as its own transaction.
//! 2. **drain**: one worker with concurrency C (default 16, as Tasker's processor) whose
//!    handler does nothing and returns `Ok`; timed from worker start until a direct
//!    `SELECT COUNT(*)` finds all N jobs in apalis's done state (`status = 'Done'`,
//!    written by its acknowledgement), polled every 20 ms. The worker is then stopped
//!    gracefully.
//! 3. **enqueue_batched** (extra): the same N jobs through apalis's real bulk API,
//!    `TaskSink::push_bulk` (one transaction), into a separate scratch database at
//!    `PATH.batched` so that it cannot affect the drain; the file is deleted afterwards.
//!
//! Settings chosen to be fair to apalis:
//! - Journal: WAL with `synchronous = NORMAL` on every pooled connection, the same
//!   durability as Tasker's SQLite store. apalis's own `setup()` turns WAL on (it
//!   persists in the file) but sets `synchronous = OFF` on whichever single connection
//!   runs it, so setup runs on a throwaway one-connection pool and the benchmark pool
//!   sets its pragmas explicitly.
//! - Poll interval [`POLL_INTERVAL_MS`] = 10 ms: apalis only uses it to wake an idle worker;
//!   while jobs are available it fetches the next batch as soon as the previous one is
//!   handed out, so a drain never sleeps on it.
//! - Fetch size [`BATCH_SIZE`] = 100: jobs claimed per fetch query (apalis default 10, no
//!   upper bound); it also sizes the channel of lock/ack events that apalis writes in
//!   batches. 10, 50, 100, 500 and 1000 were tried: 100 was among the fastest, and larger
//!   fetches only let one worker hoard more locked jobs.
//! - `lock_tasks` and `persist_results` keep apalis's defaults (on): the acknowledgement
//!   is what records a job as done, which is what Tasker records too.
//!
//! Observed: in apalis-sqlite 1.0.0 the acknowledgement query (`queries/task/ack.sql`)
//! finds its rows by `lock_by = worker`, which is never cleared, and re-reads the JSON
//! payload for every such row, so each ack costs O(jobs this worker already finished).
//! The drain rate therefore falls as N grows; compare runs at the same N.
//!
//! Output: exactly one JSON line on stdout; progress and notes go to stderr.

use std::{
    error::Error,
    fmt::Display,
    io::ErrorKind,
    process::ExitCode,
    str::FromStr,
    time::{Duration, Instant},
};

use apalis::prelude::*;
use apalis_sqlite::{Config, SqliteStorage};
use serde::{Deserialize, Serialize};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};

/// The apalis / apalis-sqlite version pinned in Cargo.toml, echoed in the output.
const APALIS_VERSION: &str = "1.0.0";
/// Default of how often an idle worker wakes up to look for jobs, in milliseconds.
const POLL_INTERVAL_MS: u64 = 10;
/// Default of the jobs claimed per fetch query.
const BATCH_SIZE: usize = 100;
/// How often the drain phase counts done jobs.
const COUNT_EVERY: Duration = Duration::from_millis(20);
/// Give up if the drain takes longer than this.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(600);
/// The apalis queue (the `job_type` column) that all jobs go to.
const QUEUE: &str = "apalis-peer-noop";

/// Result type of the benchmark's fallible steps.
type Res<T> = Result<T, Box<dyn Error>>;

/// The job: a tiny payload.
#[derive(Debug, Serialize, Deserialize)]
struct Noop {
    /// Sequence number, so that payloads differ.
    n: u64,
}

/// The handler: does nothing and succeeds.
async fn noop(_job: Noop) -> Result<(), BoxDynError> {
    Ok(())
}

/// Command-line arguments.
struct Args {
    /// Number of jobs to enqueue and drain.
    jobs: u64,
    /// Path of the SQLite database file (recreated).
    db: String,
    /// Worker concurrency.
    concurrency: usize,
    /// Jobs claimed per fetch query.
    batch_size: usize,
    /// Idle poll interval.
    poll: Duration,
}

/// Parses the value of a numeric flag.
fn number<T: FromStr<Err: Display>>(flag: &str, value: &str) -> Res<T> {
    Ok(value.parse().map_err(|e| format!("{flag} {value}: {e}"))?)
}

/// Parses `--jobs N --db PATH [--concurrency C] [--batch-size B] [--poll-ms MS]`.
fn parse_args() -> Res<Args> {
    let (mut jobs, mut db, mut concurrency) = (None, None, 16);
    let (mut batch_size, mut poll_ms) = (BATCH_SIZE, POLL_INTERVAL_MS);
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value = args.next().ok_or(format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--jobs" => jobs = Some(number(&flag, &value)?),
            "--db" => db = Some(value),
            "--concurrency" => concurrency = number(&flag, &value)?,
            "--batch-size" => batch_size = number(&flag, &value)?,
            "--poll-ms" => poll_ms = number(&flag, &value)?,
            _ => return Err(format!("unknown argument {flag}").into()),
        }
    }
    let usage =
        "usage: apalis-peer --jobs N --db PATH [--concurrency C] [--batch-size B] [--poll-ms MS]";
    let args = Args {
        jobs: jobs.ok_or(usage)?,
        db: db.ok_or(usage)?,
        concurrency,
        batch_size,
        poll: Duration::from_millis(poll_ms),
    };
    if args.jobs == 0 || args.concurrency == 0 || args.batch_size == 0 || poll_ms == 0 {
        return Err("--jobs, --concurrency, --batch-size and --poll-ms must be positive".into());
    }
    Ok(args)
}

/// Deletes the database at `path` with its WAL side files, creates it anew, runs apalis's
/// setup and migrations, and returns a pool on it (WAL, `synchronous = NORMAL`).
async fn fresh_db(path: &str) -> Res<SqlitePool> {
    remove_db(path)?;
    let options = SqliteConnectOptions::new()
        .filename(path)
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Normal)
        .busy_timeout(Duration::from_secs(10));
    let setup = SqlitePoolOptions::new()
        .max_connections(1)
        .connect_with(options.clone())
        .await?;
    SqliteStorage::setup(&setup).await?;
    setup.close().await;
    Ok(SqlitePoolOptions::new().connect_with(options).await?)
}

/// Deletes a database file and its `-wal`/`-shm` files, if present.
fn remove_db(path: &str) -> Res<()> {
    for file in [
        path.to_owned(),
        format!("{path}-wal"),
        format!("{path}-shm"),
    ] {
        match std::fs::remove_file(&file) {
            Err(e) if e.kind() != ErrorKind::NotFound => {
                return Err(format!("cannot remove {file}: {e}").into());
            }
            _ => {}
        }
    }
    Ok(())
}

/// A storage handle on the benchmark queue that fetches `batch_size` jobs per query.
fn storage(pool: &SqlitePool, batch_size: usize) -> SqliteStorage<Noop> {
    SqliteStorage::new(pool).with_config(Config::default().queue(QUEUE).batch_size(batch_size))
}

/// Counts the benchmark's jobs, all of them or only those in `status`.
async fn count(pool: &SqlitePool, status: Option<&str>) -> Res<u64> {
    let n: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM Jobs WHERE job_type = ?1 AND (?2 IS NULL OR status = ?2)",
    )
    .bind(QUEUE)
    .bind(status)
    .fetch_one(pool)
    .await?;
    Ok(u64::try_from(n)?)
}

/// Pushes `jobs` jobs one call each and returns the elapsed time.
async fn enqueue(pool: &SqlitePool, jobs: u64) -> Res<Duration> {
    let mut storage = storage(pool, BATCH_SIZE);
    let start = Instant::now();
    for n in 0..jobs {
        storage
            .push(Noop { n })
            .await
            .map_err(|e| format!("push {n}: {e}"))?;
    }
    Ok(start.elapsed())
}

/// Pushes `jobs` jobs with one `push_bulk` call into a scratch database next to `db`.
async fn enqueue_batched(db: &str, jobs: u64) -> Res<Duration> {
    let path = format!("{db}.batched");
    let pool = fresh_db(&path).await?;
    let batch = (0..jobs).map(|n| Noop { n }).collect();
    let start = Instant::now();
    storage(&pool, BATCH_SIZE)
        .push_bulk(batch)
        .await
        .map_err(|e| format!("push_bulk: {e}"))?;
    let elapsed = start.elapsed();
    let stored = count(&pool, None).await?;
    pool.close().await;
    remove_db(&path)?;
    if stored != jobs {
        return Err(format!("push_bulk stored {stored} of {jobs} jobs").into());
    }
    Ok(elapsed)
}

/// Polls until `jobs` jobs are done; returns the time since `start` when they were.
async fn wait_done(pool: &SqlitePool, jobs: u64, start: Instant) -> Res<Duration> {
    let mut last_report = start;
    loop {
        let done = count(pool, Some("Done")).await?;
        if done >= jobs {
            return Ok(start.elapsed());
        }
        if start.elapsed() > DRAIN_TIMEOUT {
            return Err(format!(
                "timeout: only {done} of {jobs} jobs done after {DRAIN_TIMEOUT:?}"
            )
            .into());
        }
        if last_report.elapsed() >= Duration::from_secs(1) {
            eprintln!("  drain: {done}/{jobs} done");
            last_report = Instant::now();
        }
        tokio::time::sleep(COUNT_EVERY).await;
    }
}

/// Runs a worker until all jobs are done, then stops it gracefully; returns the drain time.
async fn drain(pool: &SqlitePool, args: &Args) -> Res<Duration> {
    let backend = storage(pool, args.batch_size).poll_with_interval(args.poll);
    let worker = WorkerBuilder::new("apalis-peer")
        .backend(backend)
        .concurrency(args.concurrency)
        .build(noop);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let start = Instant::now();
    let run = worker.run_until(async move {
        // A dropped sender also means stop.
        let _ = stopped.await;
        Ok::<_, std::io::Error>(())
    });
    tokio::pin!(run);
    tokio::select! {
        ended = &mut run => Err(format!("worker ended before the jobs were done: {ended:?}").into()),
        outcome = wait_done(pool, args.jobs, start) => {
            let _ = stop.send(());
            run.await.map_err(|e| format!("worker shutdown: {e}"))?;
            outcome
        }
    }
}

/// Jobs per second, guarding against a zero duration.
fn rate(jobs: u64, elapsed: Duration) -> f64 {
    jobs as f64 / elapsed.as_secs_f64().max(f64::MIN_POSITIVE)
}

/// Runs all phases and prints the JSON line.
async fn run(args: Args) -> Res<()> {
    let (jobs, db, concurrency) = (args.jobs, &args.db, args.concurrency);
    let pool = fresh_db(db).await?;
    eprintln!(
        "apalis-peer: apalis-sqlite {APALIS_VERSION}, {jobs} jobs, concurrency {concurrency}, db {db}"
    );

    let enqueue_time = enqueue(&pool, jobs).await?;
    eprintln!("  enqueue: {jobs} in {enqueue_time:.3?}");
    let pending = count(&pool, Some("Pending")).await?;
    if pending != jobs {
        return Err(format!("expected {jobs} pending jobs after enqueue, found {pending}").into());
    }

    let drain_time = drain(&pool, &args).await?;
    let done = count(&pool, Some("Done")).await?;
    eprintln!("  drain: {done} done in {drain_time:.3?}");
    pool.close().await;

    let batched_time = enqueue_batched(db, jobs).await?;
    eprintln!("  enqueue_batched: {jobs} in {batched_time:.3?}");

    println!(
        concat!(
            r#"{{"peer":"apalis-sqlite","apalis_version":"{}","jobs":{},"concurrency":{},"#,
            r#""enqueue_seconds":{:.6},"enqueue_per_second":{:.1},"#,
            r#""drain_seconds":{:.6},"drain_per_second":{:.1},"done":{},"#,
            r#""enqueue_batched_seconds":{:.6},"enqueue_batched_per_second":{:.1},"#,
            r#""poll_interval_ms":{},"batch_size":{},"journal_mode":"wal","synchronous":"normal"}}"#
        ),
        APALIS_VERSION,
        jobs,
        concurrency,
        enqueue_time.as_secs_f64(),
        rate(jobs, enqueue_time),
        drain_time.as_secs_f64(),
        rate(jobs, drain_time),
        done,
        batched_time.as_secs_f64(),
        rate(jobs, batched_time),
        args.poll.as_millis(),
        args.batch_size,
    );
    Ok(())
}

#[tokio::main]
async fn main() -> ExitCode {
    let outcome = match parse_args() {
        Ok(args) => run(args).await,
        Err(e) => Err(e),
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("apalis-peer: error: {e}");
            ExitCode::FAILURE
        }
    }
}
