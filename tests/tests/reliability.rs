//! Reliability under races, throttling and a store outage: every task runs exactly once (or, for
//! tasks in flight when the store went away, at most twice), and none is lost.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use tokio::sync::watch;

use tasker::{
    DynamoStore, ManualClock, NewTask, ProcessorSettings, Registry, SqliteStore, Store, Task,
    TaskId, TaskStatus, Tasker, Timestamp,
};
use tasker_tests::dynamo::{self, OwnDynamoLocal};
use tasker_tests::throttle::ThrottlingProxy;

/// How many times each task's handler ran.
type Executions = Arc<Mutex<HashMap<TaskId, u32>>>;

const RECORD: &str = "record";

/// A registry whose handler counts its runs of each task; with a `gate`, each run waits until
/// the gate is open (the outage test holds every handler while it stops the store).
fn recording_registry(gate: Option<watch::Receiver<bool>>) -> (Registry, Executions) {
    let executions: Executions = Arc::default();
    let seen = Arc::clone(&executions);
    let mut registry = Registry::new();
    registry
        .register(RECORD, move |ctx| {
            let seen = Arc::clone(&seen);
            let gate = gate.clone();
            async move {
                *seen
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .entry(ctx.id)
                    .or_default() += 1;
                if let Some(mut gate) = gate {
                    // A closed channel counts as open: nothing holds the handler any more.
                    let _ = gate.wait_for(|open| *open).await;
                }
                Ok(())
            }
        })
        .expect("register");
    (registry, executions)
}

fn settings() -> ProcessorSettings {
    ProcessorSettings {
        batch_size: 100,
        concurrency: 16,
        max_run: Duration::from_secs(60),
        time_margin: Duration::from_secs(1),
        lease_grace: Duration::from_secs(1),
    }
}

async fn create_many<S: Store>(store: &S, count: usize) -> Vec<TaskId> {
    futures::stream::iter(0..count)
        .map(|i| {
            let store = store.clone();
            async move {
                // Stamped as it is created: DynamoDB refuses a create that reaches it long
                // after its task's creation instant, which one shared stamp hit under load.
                let task = Task::from_new(
                    NewTask::new(RECORD, format!("{{\"n\":{i}}}")),
                    Timestamp::now_utc(),
                );
                store
                    .task_create(task)
                    .await
                    .expect("create")
                    .into_task()
                    .id
            }
        })
        .buffer_unordered(32)
        .collect()
        .await
}

async fn statuses<S: Store>(store: &S, ids: &[TaskId]) -> HashMap<TaskId, TaskStatus> {
    futures::stream::iter(ids.to_vec())
        .map(|id| {
            let store = store.clone();
            async move {
                let task = store
                    .task_get(id)
                    .await
                    .expect("get")
                    .expect("task not lost");
                (id, task.status)
            }
        })
        .buffer_unordered(32)
        .collect()
        .await
}

/// What one processor's claims came to.
#[derive(Debug, Default, Clone, Copy)]
struct Claims {
    /// Claims not given back unstarted (a run out of time, a spent lease).
    kept: usize,
    /// Of those, outcomes that could not be written. A give-back that failed is one (its
    /// handler never ran and the task is claimed again once the lease ends), so only
    /// `kept - unrecorded` attempts surely started.
    unrecorded: usize,
}

/// Runs `tasker` until a run claims nothing; store errors only pause it.
async fn drain<S: Store>(tasker: Tasker<S>) -> Claims {
    let mut claims = Claims::default();
    let mut idle_runs = 0;
    for _ in 0..500 {
        match tasker.process_queue(None).await {
            Ok(summary) if summary.claimed == 0 && summary.errors() == 0 => {
                idle_runs += 1;
                if idle_runs >= 2 {
                    break;
                }
            }
            Ok(summary) => {
                idle_runs = 0;
                claims.kept += summary.claimed - summary.outcomes.released;
                claims.unrecorded += summary.outcomes.unrecorded;
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
    claims
}

/// GIVEN 2,000 due tasks WHEN 4 processors drain the queue at the same time THEN every task ran
/// exactly once and succeeded.
async fn four_processors_race<S: Store>(stores: Vec<S>) {
    let ids = create_many(&stores[0], 2000).await;
    let (registry, executions) = recording_registry(None);
    let processors: Vec<_> = stores
        .iter()
        .map(|store| {
            let tasker = Tasker::new(store.clone(), registry.clone(), settings());
            tokio::spawn(drain(tasker))
        })
        .collect();
    let mut claims = Vec::new();
    for processor in processors {
        claims.push(processor.await.expect("processor"));
    }

    let executions = executions.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let duplicates = executions.values().filter(|n| **n > 1).count();
    assert_eq!(duplicates, 0, "tasks ran more than once");
    assert_eq!(executions.len(), ids.len(), "every task ran");
    // Every claim kept started one attempt, but for those whose outcome (or give-back) a
    // loaded store failed to take: those started at most one.
    let kept: usize = claims.iter().map(|c| c.kept).sum();
    let unrecorded: usize = claims.iter().map(|c| c.unrecorded).sum();
    assert!(
        (kept.saturating_sub(unrecorded)..=kept).contains(&ids.len()),
        "{kept} claims kept, {unrecorded} unrecorded, for {} tasks",
        ids.len()
    );
    let statuses = statuses(&stores[0], &ids).await;
    assert!(statuses.values().all(|s| *s == TaskStatus::Succeeded));
    eprintln!(
        "race: {} tasks, claims per processor {:?}, {unrecorded} unrecorded, duplicates 0, lost 0",
        ids.len(),
        claims.iter().map(|c| c.kept).collect::<Vec<_>>()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn four_processors_race_on_sqlite() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("race.db");
    // Four connections to one file, as four `tasker process` would have.
    let stores = (0..4)
        .map(|_| SqliteStore::open(&path).expect("open"))
        .collect();
    four_processors_race(stores).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn four_processors_race_on_dynamodb() {
    let table = dynamo::fresh_table(&dynamo::client()).await;
    let stores = (0..4)
        .map(|_| DynamoStore::new(dynamo::client(), &table, dynamo::RETENTION))
        .collect();
    four_processors_race(stores).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn throttled_dynamodb_still_runs_every_task_once() {
    // GIVEN 300 due tasks, and two processors whose every call goes through a proxy that
    // throttles 200 of every 1000 calls
    let table = dynamo::fresh_table(&dynamo::client()).await;
    let direct = DynamoStore::new(dynamo::client(), &table, dynamo::RETENTION);
    let ids = create_many(&direct, 300).await;
    let proxy = ThrottlingProxy::start(&dynamo::endpoint(), 200).await;
    let (registry, executions) = recording_registry(None);
    let processors: Vec<_> = (0..2)
        .map(|_| {
            let store = DynamoStore::new(
                dynamo::client_for(&proxy.endpoint),
                &table,
                dynamo::RETENTION,
            );
            let mut settings = settings();
            settings.batch_size = 50;
            tokio::spawn(drain(Tasker::new(store, registry.clone(), settings)))
        })
        .collect();
    for processor in processors {
        processor.await.expect("processor");
    }

    // THEN the SDK and Tasker retried through it: every task ran once and succeeded
    let (calls, throttled) = proxy.counts();
    assert!(throttled > 0, "the proxy throttled nothing");
    let executions = executions.lock().unwrap_or_else(|p| p.into_inner()).clone();
    assert_eq!(executions.len(), ids.len());
    assert!(executions.values().all(|n| *n == 1), "a task ran twice");
    let statuses = statuses(&direct, &ids).await;
    assert!(statuses.values().all(|s| *s == TaskStatus::Succeeded));
    eprintln!(
        "throttling: {calls} calls, {throttled} throttled, {} tasks once each",
        ids.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_store_outage_mid_run_loses_nothing() {
    // GIVEN a DynamoDB Local of our own with 8 tasks whose handlers run until the store is
    // stopped (a fixed 2 s once ended first on a loaded machine)
    let mut local = OwnDynamoLocal::start().await;
    let client = dynamo::client_for(&local.endpoint());
    let table = dynamo::fresh_table(&client).await;
    let store = DynamoStore::new(client, &table, dynamo::RETENTION);
    let ids = create_many(&store, 8).await;
    let (open, gate) = watch::channel(false);
    let (registry, executions) = recording_registry(Some(gate));
    let clock = Arc::new(ManualClock::new(Timestamp::now_utc()));
    let mut settings = settings();
    settings.max_run = Duration::from_secs(10);
    let tasker = Tasker::with_clock(store.clone(), registry, settings, clock.clone());

    // WHEN DynamoDB Local dies while the handlers run
    let run = tokio::spawn({
        let tasker = tasker.clone();
        async move { tasker.process_queue(None).await }
    });
    let started = Arc::clone(&executions);
    tasker_tests::eventually("handlers to start", Duration::from_secs(20), || {
        let started = Arc::clone(&started);
        async move { (started.lock().unwrap_or_else(|p| p.into_inner()).len() == 8).then_some(()) }
    })
    .await;
    local.stop();
    open.send_replace(true);
    let summary = run.await.expect("run").expect("the run itself completes");

    // THEN the run reports the outcomes it could not record
    assert_eq!(summary.claimed, 8);
    // 8 outcomes could not be written, plus each claim tried (one per interval) while the
    // handlers ran and their outcomes were retried.
    assert!(summary.errors() >= 8, "{summary:?}");
    assert_eq!(summary.outcomes.succeeded, 0);

    // WHEN DynamoDB Local is back with the same data and the leases have expired
    local.resume().await;
    let after_outage = statuses(&store, &ids).await;
    assert!(
        after_outage.values().all(|s| *s == TaskStatus::Running),
        "nothing may be settled without its write: {after_outage:?}"
    );
    clock.advance(Duration::from_secs(120));
    let summary = tasker.process_queue(None).await.expect("second run");

    // THEN the next run finishes every task; only the 8 in flight at the outage ran twice
    assert_eq!(summary.outcomes.succeeded, 8, "{summary:?}");
    let statuses = statuses(&store, &ids).await;
    assert!(statuses.values().all(|s| *s == TaskStatus::Succeeded));
    let executions = executions.lock().unwrap_or_else(|p| p.into_inner()).clone();
    assert!(executions.values().all(|n| *n == 2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn writes_whose_answer_was_lost_are_not_mistaken_for_conflicts() {
    // GIVEN a proxy that applies 150 of every 1000 calls but answers them with
    // InternalServerError, so the SDK retries writes that already landed
    let table = dynamo::fresh_table(&dynamo::client()).await;
    let direct = DynamoStore::new(dynamo::client(), &table, dynamo::RETENTION);
    let proxy = ThrottlingProxy::start_with(&dynamo::endpoint(), 0, 150).await;
    let flaky = DynamoStore::new(
        dynamo::client_for(&proxy.endpoint),
        &table,
        dynamo::RETENTION,
    );

    // WHEN 100 tasks with a reference and an idempotency key each are created through it
    let mut ids = Vec::new();
    for i in 0..100 {
        let mut new = NewTask::new(RECORD, "{}");
        new.reference_uid = Some(format!("ref-{i}"));
        new.idempotency_key = Some(format!("key-{i}"));
        let created = flaky
            .task_create(Task::from_new(new, Timestamp::now_utc()))
            .await
            .unwrap_or_else(|err| panic!("create {i} failed: {err}"));
        assert!(
            matches!(created, tasker::store::Created::New(_)),
            "create {i}"
        );
        ids.push(created.into_task().id);
    }
    // THEN each key names its one task, and each reference is held by it
    for (i, id) in ids.iter().enumerate() {
        let mut again = NewTask::new(RECORD, "{}");
        again.idempotency_key = Some(format!("key-{i}"));
        let existing = direct
            .task_create(Task::from_new(again, Timestamp::now_utc()))
            .await
            .expect("create");
        assert_eq!(existing.task().id, *id, "key-{i}");
        let mut duplicate = NewTask::new(RECORD, "{}");
        duplicate.reference_uid = Some(format!("ref-{i}"));
        let refused = direct
            .task_create(Task::from_new(duplicate, Timestamp::now_utc()))
            .await;
        assert!(
            matches!(refused, Err(tasker::StoreError::Duplicate { existing }) if existing == *id),
            "ref-{i}: {refused:?}"
        );
    }

    // WHEN two processors run them through the same proxy
    let (registry, executions) = recording_registry(None);
    let processors: Vec<_> = (0..2)
        .map(|_| {
            let store = DynamoStore::new(
                dynamo::client_for(&proxy.endpoint),
                &table,
                dynamo::RETENTION,
            );
            tokio::spawn(drain(Tasker::new(store, registry.clone(), settings())))
        })
        .collect();
    for processor in processors {
        processor.await.expect("processor");
    }

    // THEN every task ran exactly once and succeeded, although answers were lost
    assert!(proxy.lost() > 0, "the proxy lost no answers");
    let executions = executions.lock().unwrap_or_else(|p| p.into_inner()).clone();
    assert_eq!(executions.len(), ids.len());
    assert!(executions.values().all(|n| *n == 1), "a task ran twice");
    let statuses = statuses(&direct, &ids).await;
    assert!(
        statuses.values().all(|s| *s == TaskStatus::Succeeded),
        "{statuses:?}"
    );
    eprintln!(
        "lost answers: {} of {} calls",
        proxy.lost(),
        proxy.counts().0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn four_processors_race_on_postgres() {
    let url = tasker_tests::postgres::fresh_database().await;
    // Four pools on one database, as four processes would have.
    let mut stores = Vec::new();
    for _ in 0..4 {
        let store = tasker::store::postgres::PgStore::connect(&url, 4)
            .await
            .expect("connect to PostgreSQL");
        stores.push(store);
    }
    four_processors_race(stores).await;
}
