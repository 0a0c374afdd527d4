//! The DynamoDB due queue: what a task's life writes, the watermark, and the cursors
//! (`tasker::store::dynamodb::due`), against DynamoDB Local through a capacity-counting proxy.

use std::time::Duration;
use tasker::store::{Claim, ListPage};

use tasker::store::dynamodb::due::{LOOKBACK, RESCAN};
use tasker::store::dynamodb::item::shard_of;
use tasker::store::dynamodb::schema::QUEUE_SHARDS;
use tasker::store::{Leases, ListFilter, ListKey};
use tasker::task::TaskStatus;
use tasker::{DynamoStore, NewTask, Task, Timestamp};
use tasker_tests::capacity::{CapacityProxy, measured_reads};
use tasker_tests::dynamo;
use tasker_tests::fixtures::{at, t0};
use tasker_tests::queue::{
    another_process, create, finished_below_watermarks, read_units, run_all, write_units,
};

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
    // Past the margin and the longest wait: a scan raises every shard's watermark to its
    // newest finished entry.
    let (done, later) = finished_below_watermarks(&store).await;
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
    let reads = measured_reads(&proxy.take(), &["BatchGetItem"]);
    assert!(
        (0.5..=2.5).contains(&reads),
        "read {reads} units: the watermarks and the one new task, not the 120 finished"
    );

    // The first process's counts of finished tasks, written as at the end of its run.
    store.queue_flush(later, true).await;
    other.queue_flush(later, true).await;
    let counts = other.task_count_by_status(later).await.expect("counts");
    assert_eq!((counts.succeeded, counts.total()), (121, 121));
    let mut listed = 0;
    let mut after = None;
    loop {
        let filter = ListFilter {
            status: Some(TaskStatus::Succeeded),
            ..ListFilter::default()
        };
        let page = other
            .task_list(ListPage {
                filter: &filter,
                after: after.as_ref(),
                limit: 50,
                now: later,
            })
            .await
            .expect("list");
        listed += page.tasks.len();
        match page.next {
            Some(next) => after = Some(next),
            None => break,
        }
    }
    assert_eq!(listed, 121);

    let purged = other
        .task_purge_finished(at(30), &|_| {})
        .await
        .expect("purge");
    assert_eq!(purged, 120, "the old ones go; the one that just ran stays");
}

/// A task created at `now` in the same shard as `other`.
async fn create_in_shard_of(store: &DynamoStore, other: &Task, now: Timestamp) -> Task {
    loop {
        let task = Task::from_new(NewTask::new("noop", "{}"), now);
        if shard_of(task.id) == shard_of(other.id) {
            return store.task_create(task).await.expect("create").into_task();
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

/// GIVEN 40 tasks another processor claimed under a 10-minute lease WHEN this process scans ten
/// times THEN it reads their items once, on the first scan, and again only once the lease has
/// expired, when it claims them.
#[tokio::test]
async fn tasks_running_under_another_lease_are_read_once_per_lease() {
    let proxy = CapacityProxy::start(&dynamo::endpoint()).await;
    let store = dynamo::fresh_store_at(&proxy.endpoint).await;
    for _ in 0..40 {
        create(&store, t0()).await;
    }
    let held = store
        .task_claim(Claim::due(
            at(1),
            1000,
            &Leases::fixed(Duration::from_secs(600)),
        ))
        .await
        .expect("claim");
    assert_eq!(held.len(), 40);
    let other = another_process(&store, &proxy.endpoint);
    proxy.take();
    let leases = Leases::fixed(Duration::from_secs(60));
    let scan = |now: Timestamp| other.task_claim(Claim::due(now, 100, &leases));
    assert!(scan(at(2)).await.expect("scan").is_empty());
    let first = read_units(&proxy.take(), "BatchGetItem");
    for second in 3..12 {
        assert!(scan(at(second)).await.expect("scan").is_empty());
    }
    let again = read_units(&proxy.take(), "BatchGetItem");
    eprintln!(
        "40 tasks under another lease, 10 scans: {first} read units on the first, {again} on \
         the other 9 (each would have read {first} before)"
    );
    assert!(first >= 20.0, "the first scan reads the 40 items: {first}");
    assert_eq!(again, 0.0, "later scans skip them while the lease runs");
    let claimed = scan(at(601)).await.expect("scan");
    assert_eq!(claimed.len(), 40, "once the lease expired they are claimed");
}
