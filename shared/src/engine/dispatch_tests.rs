//! Continuous dispatch, driven by barriers: handlers block until the test releases them, and
//! the test waits for events, never for time. The time limits below only turn a hang into a
//! failure with a message.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};

use super::*;
use crate::clock::ManualClock;
use crate::store::{Claim, SqliteStore};
use crate::task::{NewTask, TaskId, TaskStatus};

/// Long enough for any event here; reaching it is a failure, not a measurement.
const HANG: Duration = Duration::from_secs(30);

fn start() -> Timestamp {
    "2030-01-01T00:00:00Z"
        .parse()
        .unwrap_or_else(|_| Timestamp::now_utc())
}

/// A registry with `slow` (reports its start, then blocks until `release` turns true) and
/// `fast` (reports its end at once), and the receivers of those reports.
struct Handlers {
    registry: Registry,
    slow_started: mpsc::UnboundedReceiver<TaskId>,
    fast_done: mpsc::UnboundedReceiver<TaskId>,
    release: watch::Sender<bool>,
}

fn handlers(slow_timeout: Duration) -> Handlers {
    let (started_tx, slow_started) = mpsc::unbounded_channel();
    let (done_tx, fast_done) = mpsc::unbounded_channel();
    let (release, released) = watch::channel(false);
    let mut registry = Registry::new();
    let slow = TypeSettings {
        timeout: slow_timeout,
        ..TypeSettings::default()
    };
    registry
        .register_with("slow", slow, move |ctx| {
            let started = started_tx.clone();
            let mut released = released.clone();
            async move {
                let _ = started.send(ctx.id);
                let _ = released.wait_for(|go| *go).await;
                Ok(())
            }
        })
        .expect("register slow");
    registry
        .register("fast", move |ctx| {
            let done = done_tx.clone();
            async move {
                let _ = done.send(ctx.id);
                Ok(())
            }
        })
        .expect("register fast");
    Handlers {
        registry,
        slow_started,
        fast_done,
        release,
    }
}

/// `tasker serve`'s loop for `tasker`, polling every `interval`: the sender that stops it,
/// and the loop's task.
fn serve(
    tasker: &Tasker<SqliteStore>,
    interval: Duration,
) -> (
    watch::Sender<bool>,
    tokio::task::JoinHandle<super::RunSummary>,
) {
    let (stop_tx, mut stop_rx) = watch::channel(false);
    let tasker = tasker.clone();
    let serving = tokio::spawn(async move {
        tasker
            .serve_queue(interval, async move {
                let _ = stop_rx.wait_for(|stop| *stop).await;
            })
            .await
    });
    (stop_tx, serving)
}

fn tasker(registry: Registry, concurrency: usize) -> (Tasker<SqliteStore>, Arc<ManualClock>) {
    let clock = Arc::new(ManualClock::new(start()));
    let settings = ProcessorSettings {
        concurrency,
        ..ProcessorSettings::default()
    };
    let store = SqliteStore::in_memory().expect("sqlite");
    (
        Tasker::with_clock(store, registry, settings, clock.clone()),
        clock,
    )
}

async fn create(tasker: &Tasker<SqliteStore>, task_type: &str) -> TaskId {
    tasker
        .create(NewTask::new(task_type, "{}"))
        .await
        .expect("create")
        .into_task()
        .id
}

async fn next<T>(events: &mut mpsc::UnboundedReceiver<T>, what: &str) -> T {
    tokio::time::timeout(HANG, events.recv())
        .await
        .unwrap_or_else(|_| panic!("no {what} within {HANG:?}"))
        .unwrap_or_else(|| panic!("{what}: the handlers are gone"))
}

/// The summary of a spawned run, once it ends.
async fn finished(run: tokio::task::JoinHandle<Result<RunSummary, TaskerError>>) -> RunSummary {
    tokio::time::timeout(HANG, run)
        .await
        .expect("the run ends")
        .expect("run task")
        .expect("run")
}

async fn status(tasker: &Tasker<SqliteStore>, id: TaskId) -> TaskStatus {
    tasker.get(id).await.expect("get").status
}

#[tokio::test]
async fn a_blocked_handler_holds_one_slot_while_the_tasks_behind_it_run() {
    let mut h = handlers(Duration::from_secs(30));
    let (tasker, _) = tasker(h.registry, 4);
    let slow = create(&tasker, "slow").await;
    let mut fast = Vec::new();
    for _ in 0..20 {
        fast.push(create(&tasker, "fast").await);
    }
    let run = tokio::spawn({
        let tasker = tasker.clone();
        async move { tasker.process_queue(None).await }
    });
    assert_eq!(next(&mut h.slow_started, "slow start").await, slow);
    // Twenty tasks through the three other slots, while the slow one still holds its own.
    for _ in 0..fast.len() {
        next(&mut h.fast_done, "fast task").await;
    }
    for id in &fast {
        let done = tokio::time::timeout(HANG, async {
            while status(&tasker, *id).await != TaskStatus::Succeeded {
                tokio::task::yield_now().await;
            }
        });
        done.await.expect("a fast task's outcome is recorded");
    }
    assert_eq!(status(&tasker, slow).await, TaskStatus::Running);
    h.release.send_replace(true);
    let summary = finished(run).await;
    assert_eq!(
        (summary.claimed, summary.outcomes.succeeded),
        (21, 21),
        "{summary:?}"
    );
}

#[tokio::test]
async fn a_task_created_during_a_run_is_claimed_in_that_run() {
    let mut h = handlers(Duration::from_secs(30));
    let (tasker, _) = tasker(h.registry, 16);
    create(&tasker, "slow").await;
    let run = tokio::spawn({
        let tasker = tasker.clone();
        async move { tasker.process_queue(None).await }
    });
    next(&mut h.slow_started, "slow start").await;
    let late = create(&tasker, "fast").await;
    assert_eq!(next(&mut h.fast_done, "the late task").await, late);
    h.release.send_replace(true);
    let summary = finished(run).await;
    assert_eq!(
        (summary.claimed, summary.outcomes.succeeded),
        (2, 2),
        "{summary:?}"
    );
}

#[tokio::test]
async fn serve_starts_a_task_created_due_now_without_waiting_for_the_interval() {
    let mut h = handlers(Duration::from_secs(30));
    let (tasker, _) = tasker(h.registry, 16);
    // An hour's interval: only the wake on create can start these tasks within the test.
    let (stop_tx, serve) = serve(&tasker, Duration::from_secs(3600));
    let slow = create(&tasker, "slow").await;
    assert_eq!(next(&mut h.slow_started, "slow start").await, slow);
    for _ in 0..3 {
        let id = create(&tasker, "fast").await;
        assert_eq!(next(&mut h.fast_done, "a fast task").await, id);
    }
    let _ = stop_tx.send(true);
    h.release.send_replace(true);
    let summary = tokio::time::timeout(HANG, serve)
        .await
        .expect("serve stops")
        .expect("serve task");
    assert_eq!(
        (summary.claimed, summary.outcomes.succeeded),
        (4, 4),
        "{summary:?}"
    );
}

#[tokio::test]
async fn serve_starts_a_task_created_for_later_at_its_instant_without_waiting_for_the_interval() {
    let mut h = handlers(Duration::from_secs(30));
    let (tasker, clock) = tasker(h.registry, 16);
    // An hour's interval: only the look at the created task's instant can start it here.
    let (stop_tx, serve) = serve(&tasker, Duration::from_secs(3600));
    // The first claim has found nothing: the loop waits for the interval.
    tokio::time::sleep(Duration::from_millis(50)).await;
    let mut later = NewTask::new("fast", "{}");
    later.scheduled_at = Some(clock.now().plus(Duration::from_millis(200)));
    let id = tasker.create(later).await.expect("create").into_task().id;
    // Due by the test's clock at once; the loop looks when the real 200 ms have passed.
    clock.advance(Duration::from_millis(200));
    assert_eq!(
        next(&mut h.fast_done, "the task created for later").await,
        id
    );
    let _ = stop_tx.send(true);
    let summary = tokio::time::timeout(HANG, serve)
        .await
        .expect("serve stops")
        .expect("serve task");
    assert_eq!(summary.outcomes.succeeded, 1, "{summary:?}");
}

#[tokio::test]
async fn a_dead_processors_task_is_due_again_at_claim_plus_timeout_plus_grace() {
    let mut h = handlers(Duration::from_secs(45));
    let (tasker, clock) = tasker(h.registry, 16);
    let id = create(&tasker, "slow").await;
    let run = tokio::spawn({
        let tasker = tasker.clone();
        async move { tasker.process_queue(None).await }
    });
    next(&mut h.slow_started, "slow start").await;
    // The processor dies mid-attempt: nothing settles the task.
    run.abort();
    let _ = run.await;
    let grace = ProcessorSettings::default().lease_grace;
    let lease = start().plus(Duration::from_secs(45) + grace);
    let task = tasker.get(id).await.expect("get");
    assert_eq!(task.status, TaskStatus::Running);
    assert_eq!(
        task.lease_expires_at,
        Some(lease),
        "the type's timeout, not the run's"
    );

    let other = tasker.store().clone();
    clock.advance(lease.since(start()) - Duration::from_millis(1));
    let now = clock.now();
    let leases = Leases::fixed(Duration::from_secs(60));
    let early = other
        .task_claim(Claim::due(now, 10, &leases))
        .await
        .expect("claim");
    assert!(early.is_empty(), "still leased a millisecond before");
    clock.advance(Duration::from_millis(1));
    let now = clock.now();
    let again = other
        .task_claim(Claim::due(now, 10, &leases))
        .await
        .expect("claim");
    assert_eq!(again.iter().map(|t| t.id).collect::<Vec<_>>(), [id]);
    assert_eq!(again[0].attempts, 2);
}

#[tokio::test]
async fn a_lease_grace_below_the_settle_reserve_still_runs_tasks_with_short_timeouts() {
    let mut registry = Registry::new();
    let short = TypeSettings {
        timeout: Duration::from_millis(500),
        ..TypeSettings::default()
    };
    registry
        .register_with("short", short, |_| async { Ok(()) })
        .expect("register");
    let settings = ProcessorSettings {
        lease_grace: Duration::from_secs(1),
        ..ProcessorSettings::default()
    };
    let store = SqliteStore::in_memory().expect("sqlite");
    let clock = Arc::new(ManualClock::new(start()));
    let tasker = Tasker::with_clock(store, registry, settings, clock);
    for _ in 0..3 {
        create(&tasker, "short").await;
    }
    let summary = tokio::time::timeout(HANG, tasker.process_queue(None))
        .await
        .expect("the run ends")
        .expect("run");
    assert_eq!(
        (summary.outcomes.succeeded, summary.outcomes.released),
        (3, 0),
        "{summary:?}"
    );
}

/// GIVEN one slot on a SQLite file and two tasks, the first one's outcome held up by another
/// connection's write lock WHEN the lock goes THEN the second task's handler starts only once
/// the first one's outcome is committed: a claim made for the slot that outcome lends is
/// queued behind it. (The pause under the lock only gives the dispatcher time to claim ahead;
/// what is asserted holds whether it did or not.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claim_ahead_of_an_outcome_starts_nothing_before_that_outcome_commits() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let path = dir.path().join("tasker.db");
    // The first task is `slow`: it runs until released.
    let mut h = handlers(Duration::from_secs(30));
    let (seen_tx, mut seen) = mpsc::unbounded_channel();
    let db = path.clone();
    h.registry
        .register("second", move |ctx| {
            // The first task's status as this handler starts, through a connection of its own.
            let read = rusqlite::Connection::open(&db).and_then(|conn| {
                conn.query_row(
                    "SELECT status FROM tasks WHERE id = ?1",
                    [ctx.payload.trim_matches('"')],
                    |row| row.get::<_, String>(0),
                )
            });
            let _ = seen_tx.send(read.map_err(|err| err.to_string()));
            async { Ok(()) }
        })
        .expect("register second");
    let clock = Arc::new(ManualClock::new(start()));
    let settings = ProcessorSettings {
        concurrency: 1,
        ..ProcessorSettings::default()
    };
    let store = SqliteStore::open(&path).expect("sqlite file");
    let tasker = Tasker::with_clock(store, h.registry, settings, clock.clone());
    let first = create(&tasker, "slow").await;
    clock.advance(Duration::from_millis(1));
    let payload = serde_json::to_string(&first.to_string()).expect("json");
    tasker
        .create(NewTask::new("second", &payload))
        .await
        .expect("create second");
    let run = tokio::spawn({
        let tasker = tasker.clone();
        async move { tasker.process_queue(None).await }
    });
    assert_eq!(next(&mut h.slow_started, "first start").await, first);
    let lock = rusqlite::Connection::open(&path).expect("a second connection");
    lock.execute_batch("BEGIN IMMEDIATE")
        .expect("the write lock");
    h.release.send_replace(true);
    tokio::time::sleep(Duration::from_millis(300)).await;
    lock.execute_batch("ROLLBACK").expect("the lock let go");
    let seen = next(&mut seen, "second start").await;
    assert_eq!(
        seen.as_deref(),
        Ok("succeeded"),
        "the first task as the second started"
    );
    let summary = finished(run).await;
    assert_eq!(
        (summary.claimed, summary.outcomes.succeeded),
        (2, 2),
        "{summary:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claims_in_flight_together_never_start_more_attempts_than_the_slots() {
    use std::sync::atomic::{AtomicUsize, Ordering};

    const TASKS: usize = 400;
    const SLOTS: usize = 4;
    let dir = tempfile::tempdir().expect("temporary directory");
    let running = Arc::new(AtomicUsize::new(0));
    let most = Arc::new(AtomicUsize::new(0));
    let mut registry = Registry::new();
    let (now, top) = (Arc::clone(&running), Arc::clone(&most));
    registry
        .register("counted", move |_| {
            let (now, top) = (Arc::clone(&now), Arc::clone(&top));
            async move {
                let at_once = now.fetch_add(1, Ordering::SeqCst) + 1;
                top.fetch_max(at_once, Ordering::SeqCst);
                // Long enough for the other slots' claims to come back meanwhile.
                for _ in 0..20 {
                    tokio::task::yield_now().await;
                }
                now.fetch_sub(1, Ordering::SeqCst);
                Ok(())
            }
        })
        .expect("register counted");
    let settings = ProcessorSettings {
        concurrency: SLOTS,
        ..ProcessorSettings::default()
    };
    let store = SqliteStore::open(dir.path().join("tasker.db")).expect("sqlite file");
    let tasker = Tasker::new(store, registry, settings);
    let tasks: Vec<NewTask> = (0..TASKS).map(|_| NewTask::new("counted", "{}")).collect();
    for created in tasker.create_many(tasks).await {
        created.expect("create");
    }
    let summary = tasker.process_queue(None).await.expect("run");
    assert_eq!(
        (summary.claimed, summary.outcomes.succeeded),
        (TASKS, TASKS),
        "{summary:?}"
    );
    let most = most.load(Ordering::SeqCst);
    assert!(
        most <= SLOTS,
        "{most} handlers ran at once with {SLOTS} slots"
    );
}
