//! The dispatcher under slow tasks: start delays of fast tasks among slow ones (with tasks
//! created live, in serve mode and in poll mode), occupancy of the slots in a drain of the same
//! mix, and how long a killed processor's tasks take to finish on another.

use std::fs::File;
use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime};

use futures::{StreamExt, TryStreamExt};
use indicatif::ProgressBar;
use serde_json::json;
use tasker::handlers::TypeSettings;
use tasker::store::StatusCounts;
use tasker::{
    AnyStore, NewTask, ProcessorSettings, Registry, TaskError, TaskId, TaskStatus, Tasker,
};
use tokio::sync::{Notify, watch};

use crate::phases::{CONCURRENCY, percentiles, unix_ms};
use crate::results::{Crash, MixedLatency, Occupancy};

/// The task mix: every `slow_every`-th task is slow.
#[derive(Debug, Clone, Copy)]
pub struct Mix {
    /// Tasks in a pass.
    pub tasks: usize,
    /// One task in this many is slow.
    pub slow_every: usize,
    /// A slow task's handler time.
    pub slow: Duration,
    /// A fast task's handler time.
    pub fast: Duration,
}

impl Mix {
    /// `tasks` tasks of `fast` each and none slow.
    pub fn fast_only(tasks: usize, fast: Duration) -> Self {
        Self {
            tasks,
            slow_every: usize::MAX,
            slow: fast,
            fast,
        }
    }

    fn is_slow(&self, index: usize) -> bool {
        index % self.slow_every.max(1) == self.slow_every.max(1) / 2
    }

    /// Total handler time ÷ slots: the shortest drain any dispatcher could achieve.
    fn ideal(&self) -> Duration {
        let slow = (0..self.tasks).filter(|&i| self.is_slow(i)).count();
        let handler_time = self.slow * slow as u32 + self.fast * (self.tasks - slow) as u32;
        handler_time / CONCURRENCY as u32
    }
}

/// What the `mixed` handler saw: each fast task's due → start delay, and how many finished.
#[derive(Default)]
struct Seen {
    fast_delays: std::sync::Mutex<Vec<f64>>,
    finished: AtomicUsize,
    all_done: Notify,
}

/// A registry whose `mixed` tasks sleep for their payload's `ms` and record their start delay.
fn mixed_registry(mix: Mix, tasks: usize, seen: Arc<Seen>, bar: ProgressBar) -> Registry {
    let mut registry = Registry::new();
    let settings = TypeSettings {
        timeout: mix.slow + Duration::from_secs(10),
        ..TypeSettings::default()
    };
    registry
        .register_with("mixed", settings, move |ctx| {
            let started = unix_ms(SystemTime::now());
            let payload: serde_json::Value = serde_json::from_str(&ctx.payload).unwrap_or_default();
            let due = payload["dueMs"].as_i64().unwrap_or(started);
            let ms = payload["ms"].as_u64().unwrap_or(0);
            let slow = payload["slow"].as_bool().unwrap_or(false);
            if !slow {
                seen.fast_delays
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push((started - due) as f64);
            }
            let seen = Arc::clone(&seen);
            let bar = bar.clone();
            async move {
                tokio::time::sleep(Duration::from_millis(ms)).await;
                bar.inc(1);
                if seen.finished.fetch_add(1, Ordering::SeqCst) + 1 == tasks {
                    seen.all_done.notify_one();
                }
                Ok::<(), TaskError>(())
            }
        })
        .expect("register mixed");
    registry
}

fn mixed_task(mix: Mix, index: usize) -> NewTask {
    let slow = mix.is_slow(index);
    let ms = if slow { mix.slow } else { mix.fast };
    let payload = json!({
        "dueMs": unix_ms(SystemTime::now()),
        "ms": u64::try_from(ms.as_millis()).unwrap_or(u64::MAX),
        "slow": slow,
    });
    NewTask::new("mixed", payload.to_string())
}

fn settings() -> ProcessorSettings {
    ProcessorSettings {
        concurrency: CONCURRENCY,
        ..ProcessorSettings::default()
    }
}

/// How tasks reach the processor in a mixed-latency pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// `tasker serve`: created through the processing Tasker, which wakes on a create.
    Serve,
    /// Poll mode: created by another process, so only the poll interval finds them.
    Poll,
}

/// `mix.tasks` tasks created due now at `rate` per second while one processor runs them; the
/// fast tasks' due → start delays. In poll mode the tasks are created through another Tasker,
/// over `creator` when given (a store client of its own, as another process has).
pub async fn mixed_latency(
    store: AnyStore,
    creator: Option<AnyStore>,
    mix: Mix,
    rate: f64,
    mode: Mode,
    interval: Duration,
    bar: &ProgressBar,
) -> MixedLatency {
    let seen = Arc::new(Seen::default());
    let registry = mixed_registry(mix, mix.tasks, Arc::clone(&seen), bar.clone());
    let tasker = Tasker::new(store.clone(), registry.clone(), settings());
    let other = Tasker::new(creator.unwrap_or(store), registry, settings());
    let creator = match mode {
        Mode::Serve => &tasker,
        Mode::Poll => &other,
    };
    let (stop_tx, mut stop_rx) = watch::channel(false);
    let processor = tasker.serve_queue(interval, async move {
        let _ = stop_rx.wait_for(|stop| *stop).await;
    });
    let load = async {
        let started = tokio::time::Instant::now();
        for index in 0..mix.tasks {
            let at = started + Duration::from_secs_f64(index as f64 / rate);
            tokio::time::sleep_until(at).await;
            creator
                .create(mixed_task(mix, index))
                .await
                .expect("create a mixed task");
        }
        seen.all_done.notified().await;
        let _ = stop_tx.send(true);
    };
    let (summary, ()) = tokio::join!(processor, load);
    assert_eq!(
        summary.outcomes.succeeded, mix.tasks,
        "every mixed task succeeded"
    );
    let delays = seen
        .fast_delays
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    let (p50_ms, p99_ms, max_ms) = percentiles(delays.clone());
    MixedLatency {
        fast_tasks: delays.len(),
        rate_per_second: rate,
        p50_ms,
        p99_ms,
        max_ms,
    }
}

/// The same mix, all due at once: drain time against the ideal.
pub async fn occupancy(store: AnyStore, mix: Mix, bar: &ProgressBar) -> Occupancy {
    let seen = Arc::new(Seen::default());
    let registry = mixed_registry(mix, mix.tasks, Arc::clone(&seen), bar.clone());
    let tasker = Tasker::new(store, registry, settings());
    futures::stream::iter(0..mix.tasks)
        .map(|index| tasker.create(mixed_task(mix, index)))
        .buffer_unordered(CONCURRENCY)
        .try_collect::<Vec<_>>()
        .await
        .expect("create the mix");
    let started = Instant::now();
    let (stop_tx, mut stop_rx) = watch::channel(false);
    let processor = tasker.serve_queue(Duration::from_secs(1), async move {
        let _ = stop_rx.wait_for(|stop| *stop).await;
    });
    let drained = async {
        seen.all_done.notified().await;
        let took = started.elapsed();
        let _ = stop_tx.send(true);
        took
    };
    let (summary, took) = tokio::join!(processor, drained);
    assert_eq!(
        summary.outcomes.succeeded, mix.tasks,
        "every task of the mix succeeded"
    );
    let ideal = mix.ideal();
    Occupancy {
        tasks: mix.tasks,
        drain_seconds: took.as_secs_f64(),
        ideal_seconds: ideal.as_secs_f64(),
        ratio: ideal.as_secs_f64() / took.as_secs_f64(),
    }
}

/// How the crash pass runs.
#[derive(Debug, Clone, Copy)]
pub struct CrashSettings {
    /// Tasks created before the first processor starts.
    pub tasks: usize,
    /// Each task's handler time.
    pub work: Duration,
    /// The task type's timeout.
    pub timeout: Duration,
    /// The processors' lease grace.
    pub grace: Duration,
}

/// The registry both processes of the crash pass run: `work` tasks that take `settings.work`.
/// With a `log`, each attempt appends `S <n>` as it starts and `D <n>` as it ends, `n` its
/// payload's, as the peers' crash workers do (`peers::crash` reads it).
pub fn crash_registry(settings: CrashSettings, log: Option<Arc<File>>) -> Registry {
    let mut registry = Registry::new();
    let type_settings = TypeSettings {
        timeout: settings.timeout,
        ..TypeSettings::default()
    };
    let work = settings.work;
    registry
        .register_with("work", type_settings, move |ctx| {
            let log = log.clone();
            async move {
                let n = log.as_ref().map(|_| job_number(&ctx.payload));
                append(log.as_deref(), "S", n);
                tokio::time::sleep(work).await;
                append(log.as_deref(), "D", n);
                Ok::<(), TaskError>(())
            }
        })
        .expect("register work");
    registry
}

/// The `n` of a crash task's payload `{"n": N}`.
fn job_number(payload: &str) -> u64 {
    serde_json::from_str::<serde_json::Value>(payload)
        .ok()
        .and_then(|value| value["n"].as_u64())
        .expect("a crash task's payload is {\"n\": N}")
}

/// Appends `mark n` to `log` in one write: an O_APPEND file keeps it through a SIGKILL.
fn append(log: Option<&File>, mark: &str, n: Option<u64>) {
    if let (Some(mut log), Some(n)) = (log, n) {
        log.write_all(format!("{mark} {n}\n").as_bytes())
            .expect("append to the crash log");
    }
}

/// The crash pass's processor settings.
pub fn crash_processor(settings: CrashSettings) -> ProcessorSettings {
    ProcessorSettings {
        lease_grace: settings.grace,
        ..self::settings()
    }
}

/// Creates `settings.tasks` tasks, starts `worker` (a child process running `tasker serve`'s
/// loop over the same store), kills it with SIGKILL once a fifth of the tasks succeeded, and
/// runs a processor here: the time from the kill until every task succeeded.
pub async fn crash_recovery(
    store: AnyStore,
    settings: CrashSettings,
    mut worker: std::process::Command,
    interval: Duration,
) -> Crash {
    let tasker = Tasker::new(
        store,
        crash_registry(settings, None),
        crash_processor(settings),
    );
    let ids: Vec<TaskId> = futures::stream::iter(0..settings.tasks)
        .map(|_| tasker.create(NewTask::new("work", "{}")))
        .buffer_unordered(CONCURRENCY)
        .map_ok(|created| created.into_task().id)
        .try_collect()
        .await
        .expect("create the crash pass's tasks");
    let mut child = worker.spawn().expect("start the crash worker");
    // Each task read: DynamoDB's counts of finished tasks are a process's, written every few
    // seconds, and the killed process's last ones are lost with it.
    let tasker = &tasker;
    let ids = &ids;
    let counts = || async move {
        let statuses: Vec<TaskStatus> = futures::stream::iter(ids)
            .map(|id| async move { tasker.get(*id).await.expect("read a crash task").status })
            .buffer_unordered(CONCURRENCY)
            .collect()
            .await;
        let mut counts = StatusCounts::default();
        for status in statuses {
            counts.add(status, 1);
        }
        counts
    };
    let mid_run = (settings.tasks / 5).max(1) as u64;
    while counts().await.succeeded < mid_run {
        assert!(
            child.try_wait().ok().flatten().is_none(),
            "the crash worker exited on its own"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    child.kill().expect("SIGKILL the crash worker");
    let killed = Instant::now();
    let _ = child.wait();
    let at_kill = counts().await;
    let (stop_tx, mut stop_rx) = watch::channel(false);
    let processor = tasker.serve_queue(interval, async move {
        let _ = stop_rx.wait_for(|stop| *stop).await;
    });
    let watch_done = async {
        while counts().await.succeeded < settings.tasks as u64 {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let took = killed.elapsed();
        let _ = stop_tx.send(true);
        took
    };
    let (_, took) = tokio::join!(processor, watch_done);
    Crash {
        tasks: settings.tasks,
        running_at_kill: at_kill.running,
        timeout_seconds: settings.timeout.as_secs_f64(),
        grace_seconds: settings.grace.as_secs_f64(),
        recovery_seconds: took.as_secs_f64(),
    }
}

/// The child side of the crash passes: `tasker serve`'s processor loop over `store` until
/// killed, its attempts appended to `log` when there is one.
pub async fn crash_worker(
    store: AnyStore,
    settings: CrashSettings,
    interval: Duration,
    log: Option<&Path>,
) {
    let log = log.map(|path| {
        let file = File::options()
            .create(true)
            .append(true)
            .open(path)
            .expect("open the crash log");
        Arc::new(file)
    });
    let tasker = Tasker::new(
        store,
        crash_registry(settings, log),
        crash_processor(settings),
    );
    tasker.serve_queue(interval, std::future::pending()).await;
}
