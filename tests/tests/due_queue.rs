//! The DynamoDB due queue: what a task's life writes, the watermark, and the cursors
//! (`tasker::store::dynamodb::due`), against DynamoDB Local through a capacity-counting proxy.

use std::collections::BTreeMap;
use std::time::Duration;

use tasker::store::dynamodb::due::{LOOKBACK, MARGIN, RESCAN, WATERMARK_MAX_LAG};
use tasker::store::dynamodb::item::shard_of;
use tasker::store::dynamodb::schema::QUEUE_SHARDS;
use tasker::store::{
    ListFilter, ListKey, Settlement, TaskLister, TaskPurger, TaskQueue, TaskWriter,
};
use tasker::task::TaskStatus;
use tasker::{DynamoStore, NewTask, Task, Timestamp};
use tasker_tests::capacity::{CapacityProxy, Consumed, WRITE_OPERATIONS};
use tasker_tests::dynamo;
use tasker_tests::fixtures::{at, t0};

async fn create(store: &DynamoStore, now: Timestamp) -> Task {
    store
        .create(Task::from_new(NewTask::new("noop", "{}"), now))
        .await
        .expect("create")
        .into_task()
}

/// Claims everything due at `now` and records each as a success a second later.
async fn run_all(store: &DynamoStore, now: Timestamp) -> Vec<Task> {
    let claimed = store
        .claim_due(now, now, 1000, now.plus(Duration::from_secs(60)))
        .await
        .expect("claim");
    for task in &claimed {
        store
            .settle(
                task,
                Settlement::Succeeded,
                now.plus(Duration::from_secs(1)),
            )
            .await
            .expect("settle");
    }
    claimed
}

fn write_units(ledger: &BTreeMap<String, Consumed>) -> (f64, f64, u64) {
    let writes = ledger
        .iter()
        .filter(|(operation, _)| WRITE_OPERATIONS.contains(&operation.as_str()));
    writes.fold((0.0, 0.0, 0), |(table, index, failures), (_, c)| {
        (
            table + c.table_units,
            index + c.index_units,
            failures + c.condition_failures,
        )
    })
}

fn read_units(ledger: &BTreeMap<String, Consumed>, operation: &str) -> f64 {
    ledger.get(operation).map_or(0.0, Consumed::units)
}

/// The same table as `store`, as a process that knows nothing of it yet would see it.
fn another_process(store: &DynamoStore, endpoint: &str) -> DynamoStore {
    DynamoStore::new(dynamo::client_for(endpoint), store.table(), Duration::ZERO)
}

async fn watermark(store: &DynamoStore, shard: u32) -> Option<ListKey> {
    let marks = store.watermarks().await.expect("read the watermarks");
    marks.get(shard as usize).cloned().flatten()
}

/// GIVEN 40 tasks WHEN each is created, claimed and succeeds THEN the claims and successes
/// wrote the table only: 4 write units per task in all, and no claim failed its condition.
#[tokio::test]
async fn a_task_that_succeeds_costs_four_write_units() {
    let proxy = CapacityProxy::start(&dynamo::endpoint()).await;
    let store = dynamo::fresh_store_at(&proxy.endpoint).await;
    proxy.take();
    for _ in 0..40 {
        create(&store, t0()).await;
    }
    let (table, index, _) = write_units(&proxy.take());
    assert_eq!(
        (table, index),
        (40.0, 40.0),
        "a create writes the item and its entry"
    );

    assert_eq!(run_all(&store, at(1)).await.len(), 40);
    let (table, index, failures) = write_units(&proxy.take());
    assert_eq!(
        (table, index),
        (80.0, 0.0),
        "claims and successes leave the index alone"
    );
    assert_eq!(failures, 0);
}

/// GIVEN 120 succeeded tasks more than an hour old WHEN a processor scans again THEN it writes
/// each shard's watermark past them; a new process reads from there (the old items are not
/// read again), counts and lists them as succeeded, and cleanup deletes them.
#[tokio::test]
async fn the_watermark_lets_new_processes_skip_finished_tasks() {
    let proxy = CapacityProxy::start(&dynamo::endpoint()).await;
    let store = dynamo::fresh_store_at(&proxy.endpoint).await;
    let mut done = Vec::new();
    for i in 0..120 {
        done.push(create(&store, at(i / 10)).await);
    }
    assert_eq!(run_all(&store, at(20)).await.len(), 120);
    for shard in 0..QUEUE_SHARDS {
        assert_eq!(
            watermark(&store, shard).await,
            None,
            "nothing is old enough yet"
        );
    }

    // Past the margin and the longest wait: the next scan raises every shard's watermark to
    // its newest finished entry.
    let later = at(20).plus(WATERMARK_MAX_LAG + MARGIN);
    assert!(run_all(&store, later).await.is_empty());
    for shard in 0..QUEUE_SHARDS {
        let newest = done
            .iter()
            .filter(|task| shard_of(task.id) == shard)
            .map(ListKey::of)
            .max();
        assert_eq!(watermark(&store, shard).await, newest, "shard {shard}");
    }

    let fresh = create(&store, later).await;
    let other = another_process(&store, &proxy.endpoint);
    proxy.take();
    let claimed = run_all(&other, later).await;
    assert_eq!(
        claimed.iter().map(|t| t.id).collect::<Vec<_>>(),
        vec![fresh.id]
    );
    let reads = read_units(&proxy.take(), "BatchGetItem");
    assert!(
        reads <= 2.5,
        "read {reads} units: the watermarks and the one new task, not the 120 finished"
    );

    let counts = other.counts(later).await.expect("counts");
    assert_eq!((counts.succeeded, counts.total()), (121, 121));
    let mut listed = 0;
    let mut after = None;
    loop {
        let filter = ListFilter {
            status: Some(TaskStatus::Succeeded),
            ..ListFilter::default()
        };
        let page = other.list(&filter, after, 50, later).await.expect("list");
        listed += page.tasks.len();
        match page.next {
            Some(next) => after = Some(next),
            None => break,
        }
    }
    assert_eq!(listed, 121);

    let purged = other
        .purge_finished_before(at(30), &|_| {})
        .await
        .expect("purge");
    assert_eq!(purged, 120, "the old ones go; the one that just ran stays");
}

/// A task created at `now` in the same shard as `other`.
async fn create_in_shard_of(store: &DynamoStore, other: &Task, now: Timestamp) -> Task {
    loop {
        let task = Task::from_new(NewTask::new("noop", "{}"), now);
        if shard_of(task.id) == shard_of(other.id) {
            return store.create(task).await.expect("create").into_task();
        }
    }
}

/// GIVEN a cursor past a finished task WHEN entries appear behind it (as creates that took a
/// while to land do) THEN one within the look-back is claimed at once, and an older one as soon
/// as the cursor falls back to the watermark.
#[tokio::test]
async fn entries_that_land_behind_the_cursor_are_still_claimed() {
    let store = dynamo::fresh_store().await;
    let first = create(&store, at(10)).await;
    assert_eq!(run_all(&store, at(11)).await.len(), 1);
    assert!(
        run_all(&store, at(12)).await.is_empty(),
        "this scan moves the cursor past it"
    );

    let just_behind = create_in_shard_of(&store, &first, at(8)).await;
    let claimed = run_all(&store, at(13)).await;
    assert_eq!(
        claimed.iter().map(|t| t.id).collect::<Vec<_>>(),
        vec![just_behind.id]
    );

    let far_behind = create_in_shard_of(&store, &first, at(5)).await;
    let later = at(10).plus(LOOKBACK).plus(Duration::from_secs(5));
    assert!(
        run_all(&store, later).await.is_empty(),
        "older than the look-back: waits for the rescan"
    );
    let claimed = run_all(&store, at(11).plus(RESCAN)).await;
    assert_eq!(
        claimed.iter().map(|t| t.id).collect::<Vec<_>>(),
        vec![far_behind.id]
    );
}
