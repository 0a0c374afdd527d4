//! The crash pass, the same for every system: N jobs queued, a worker process draining them
//! is SIGKILLed once half are done, and a fresh worker process (what a restart or a second
//! server would be) works the queue for a while. Each worker appends `S <n>` as a job starts
//! and `D <n>` as it ends to one log file; the log says what was running at the kill, which
//! jobs ran twice, which were not done by the end, and when the last one was.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use futures::StreamExt;
use serde::Serialize;
use tasker::{NewTask, Tasker};
use tokio::process::{Child, Command};

use super::crash_log::Tally;
use super::redis::{Persistence, Redis};
use super::{Peers, node};
use crate::dispatch::{self, CrashSettings};
use crate::stores::{self, Bench};

/// What each peer's defaults do with a dead worker's jobs (its documentation's words).
const BULLMQ_NOTE: &str = "moves them back to waiting at a stalled-jobs check after their lock expires (lockDuration 30 s, a check every 30 s by default)";
const PG_BOSS_NOTE: &str = "retries them once they expire (expireInSeconds: 15 minutes by default), at the next supervise run";
const GRAPHILE_NOTE: &str = "frees a dead worker's locked jobs after 4 hours (a fixed timeout)";

/// Runs the crash pass for Tasker on SQLite and for each peer whose server and packages are
/// here, adding their rows (or why not) to `peers`.
pub async fn measure_all(bench: &Bench, root: &Path, peers: &mut Peers) {
    let shape = peers.crash_shape;
    if shape.jobs == 0 {
        return;
    }
    let dir = bench.dir.path();
    eprintln!("peers: crash pass, Tasker");
    let ran = tasker(bench, shape, &log_in(dir, "tasker")).await;
    let note = format!(
        "runs them again once their lease ends: the type's timeout plus the lease grace \
         ({} s + {} s here, 30 s + 30 s by default)",
        bench.args.crash_timeout, bench.args.crash_grace
    );
    peers.add_crash("Tasker", "SQLite", &note, ran);

    eprintln!("peers: crash pass, BullMQ");
    let setup = Persistence::Default.name();
    let ran = match Redis::start(Persistence::Default) {
        Ok(redis) => {
            let env = [("REDIS_URL", redis.url.as_str())];
            node_pass(root, "bullmq", &env, shape, &log_in(dir, "bullmq")).await
        }
        Err(reason) => Err(reason),
    };
    peers.add_crash("BullMQ", setup, BULLMQ_NOTE, ran);

    for (name, note) in [
        ("pg-boss", PG_BOSS_NOTE),
        ("graphile-worker", GRAPHILE_NOTE),
    ] {
        eprintln!("peers: crash pass, {name}");
        let ran = match &bench.postgres {
            Some(_) => {
                let url = bench.fresh_database().await;
                let env = [("DATABASE_URL", url.as_str())];
                node_pass(root, name, &env, shape, &log_in(dir, name)).await
            }
            None => Err("PostgreSQL is not running in this run (--store)".to_owned()),
        };
        let setup = "PostgreSQL 15, default synchronous_commit";
        peers.add_crash(name, setup, note, ran);
    }
}

/// Tasker's pass: the tasks created in a SQLite file, each worker the bench's own binary
/// running `tasker serve`'s loop over it (`--crash-worker`).
async fn tasker(bench: &Bench, shape: CrashShape, log: &Path) -> Result<CrashCounts, String> {
    let args = &bench.args;
    let spec = format!(
        "sqlite:{}",
        bench.dir.path().join("crash-peers.db").display()
    );
    let settings = CrashSettings {
        tasks: shape.jobs,
        work: Duration::from_millis(shape.job_ms),
        timeout: Duration::from_secs(args.crash_timeout),
        grace: Duration::from_secs(args.crash_grace),
    };
    let store = stores::worker_store(&spec).await;
    let registry = dispatch::crash_registry(settings, None);
    let tasker = Tasker::new(store, registry, dispatch::crash_processor(settings));
    let created = futures::stream::iter(0..shape.jobs)
        .map(|n| tasker.create(NewTask::new("work", format!("{{\"n\":{n}}}"))))
        .buffer_unordered(shape.concurrency)
        .filter(|created| std::future::ready(created.is_err()))
        .next()
        .await;
    if let Some(Err(err)) = created {
        return Err(format!("creating the tasks failed ({err})"));
    }
    let exe = std::env::current_exe().map_err(|err| format!("no bench binary ({err})"))?;
    let worker = || {
        let mut command = Command::new(&exe);
        command
            .arg("--crash-worker")
            .arg(&spec)
            .arg("--crash-log")
            .arg(log)
            .args(["--poll-interval", &args.poll_interval.to_string()])
            .args(["--crash-work-ms", &shape.job_ms.to_string()])
            .args(["--crash-timeout", &args.crash_timeout.to_string()])
            .args(["--crash-grace", &args.crash_grace.to_string()]);
        Ok(command)
    };
    pass(shape, log, &worker).await
}

/// A node peer's pass: its jobs enqueued by one run of its program, each worker another.
async fn node_pass(
    root: &Path,
    name: &str,
    env: &[(&str, &str)],
    shape: CrashShape,
    log: &Path,
) -> Result<CrashCounts, String> {
    let queue = format!("crash_{}", std::process::id());
    let role = |role: &str| -> Result<Command, String> {
        let mut command = node::command(root, name, env)?;
        command
            .args(["--crash-role", role, "--queue", &queue])
            .args(["--jobs", &shape.jobs.to_string()])
            .args(["--concurrency", &shape.concurrency.to_string()])
            .args(["--job-ms", &shape.job_ms.to_string()])
            .arg("--log")
            .arg(log);
        Ok(command)
    };
    node::output(role("enqueue")?, HALF_WITHIN).await?;
    pass(shape, log, &|| role("work")).await
}

/// The crash pass's sizes, the same for every system.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct CrashShape {
    /// Jobs queued before the first worker starts.
    pub jobs: usize,
    /// Each job's handler time, in milliseconds.
    pub job_ms: u64,
    /// Jobs each worker runs at once.
    pub concurrency: usize,
    /// How long the second worker is watched after the kill, in seconds.
    pub watch_seconds: f64,
}

/// What one system did when its worker was killed mid-drain.
#[derive(Debug, Clone, Serialize)]
pub struct CrashRow {
    pub system: String,
    pub setup: String,
    #[serde(flatten)]
    pub counts: CrashCounts,
    /// What the system's own settings say about a dead worker's jobs.
    pub note: String,
}

/// The counts of one system's pass.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct CrashCounts {
    pub jobs: usize,
    /// Jobs done when the worker was killed.
    pub done_at_kill: usize,
    /// Jobs started and not done when it was killed.
    pub running_at_kill: usize,
    /// Jobs whose handler started more than once.
    pub run_twice: usize,
    /// Jobs done more than once (a job run twice whose first run had ended before the kill).
    pub done_twice: usize,
    /// Jobs not done when the watch ended.
    pub not_done: usize,
    /// From the kill until every job was done; none when some were not within the watch.
    pub recovery_seconds: Option<f64>,
}

/// How to start one system's worker process: a command, fresh each time.
pub type WorkerCommand<'a> = &'a dyn Fn() -> Result<Command, String>;

/// The longest the first worker may take to do half the jobs.
const HALF_WITHIN: Duration = Duration::from_secs(120);

/// Runs the pass for one system whose jobs are queued already: `worker` makes a worker
/// process appending to `log`.
async fn pass(
    shape: CrashShape,
    log: &Path,
    worker: WorkerCommand<'_>,
) -> Result<CrashCounts, String> {
    let mut first = spawn(worker)?;
    let half = shape.jobs.div_ceil(2);
    let started = Instant::now();
    loop {
        if Tally::read(log, shape.jobs)?.done >= half {
            break;
        }
        exited(&mut first, "the first worker")?;
        if started.elapsed() > HALF_WITHIN {
            return Err(format!(
                "half the jobs were not done within {} s",
                HALF_WITHIN.as_secs()
            ));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    first
        .kill()
        .await
        .map_err(|err| format!("SIGKILL failed ({err})"))?;
    let killed = Instant::now();
    let at_kill = Tally::read(log, shape.jobs)?;
    let mut second = spawn(worker)?;
    let watch = Duration::from_secs_f64(shape.watch_seconds);
    let mut recovery = None;
    while killed.elapsed() < watch {
        if Tally::read(log, shape.jobs)?.done == shape.jobs {
            recovery = Some(killed.elapsed().as_secs_f64());
            break;
        }
        exited(&mut second, "the second worker")?;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let _ = second.kill().await;
    let end = Tally::read(log, shape.jobs)?;
    Ok(CrashCounts {
        jobs: shape.jobs,
        done_at_kill: at_kill.done,
        running_at_kill: at_kill.running,
        run_twice: end.run_twice,
        done_twice: end.done_twice,
        not_done: shape.jobs - end.done,
        recovery_seconds: recovery,
    })
}

/// A fresh log file for one system's pass in `dir`.
fn log_in(dir: &Path, system: &str) -> PathBuf {
    dir.join(format!("crash-{system}.log"))
}

fn spawn(worker: WorkerCommand<'_>) -> Result<Child, String> {
    worker()?
        .kill_on_drop(true)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .spawn()
        .map_err(|err| format!("the worker did not start ({err})"))
}

/// An error when `child` exited on its own: a worker runs until it is killed.
fn exited(child: &mut Child, which: &str) -> Result<(), String> {
    match child.try_wait() {
        Ok(None) => Ok(()),
        Ok(Some(status)) => Err(format!("{which} exited on its own ({status})")),
        Err(err) => Err(format!("waiting for {which} failed ({err})")),
    }
}
