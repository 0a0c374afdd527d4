//! Open entries on DynamoDB (`tasker::store::dynamodb::due`): a task under a long lease is
//! passed by the cursors and listed by the watermark, so a process that starts cold pays for
//! what is open, not for what finished behind it; once the lease expires (its holder crashed)
//! it is claimed again, once.

use std::time::Duration;

use tasker::store::dynamodb::due::{MARGIN, WATERMARK_MAX_LAG};
use tasker::store::dynamodb::item::shard_of;
use tasker::store::{Claim, Leases, ListFilter, ListKey, ListPage};
use tasker::task::TaskStatus;
use tasker::{DynamoStore, Task, Timestamp};
use tasker_tests::capacity::CapacityProxy;
use tasker_tests::dynamo;
use tasker_tests::fixtures::at;
use tasker_tests::queue::{another_process, create, read_units, run_all};

/// The held task's lease: two hours from its claim at `at(1)`.
const LEASE: Duration = Duration::from_secs(7_200);

async fn claim_held(store: &DynamoStore) -> Task {
    let held = store
        .task_claim(Claim::due(at(1), 1, &Leases::fixed(LEASE)))
        .await
        .expect("claim");
    held.into_iter().next().expect("the held task is claimed")
}

async fn running(store: &DynamoStore, now: Timestamp) -> Vec<Task> {
    let filter = ListFilter {
        status: Some(TaskStatus::Running),
        ..ListFilter::default()
    };
    let page = ListPage {
        filter: &filter,
        after: None,
        limit: 10,
        now,
    };
    store.task_list(page).await.expect("list").tasks
}

/// GIVEN a task held under a two-hour lease ahead of 120 that finished, and a scan past the
/// watermark's margin WHEN a new process claims new tasks THEN it reads their items and not the
/// finished ones; the held task is still listed and counted as running, the sweep leaves it
/// alone, and once its lease has expired two new processes racing claim it once.
#[tokio::test]
async fn a_task_held_past_the_margin_costs_a_new_process_nothing() {
    let proxy = CapacityProxy::start(&dynamo::endpoint()).await;
    let first = dynamo::fresh_store_at(&proxy.endpoint).await;
    let held = create(&first, at(0)).await;
    assert_eq!(claim_held(&first).await.id, held.id);
    for i in 0..120 {
        create(&first, at(2 + i / 10)).await;
    }
    assert_eq!(run_all(&first, at(20)).await.len(), 120);
    let later = at(20).plus(WATERMARK_MAX_LAG + MARGIN);
    assert!(run_all(&first, later).await.is_empty());
    let shard = shard_of(held.id) as usize;
    let listed = first.watermark_open().await.expect("read the watermarks");
    assert_eq!(
        listed[shard],
        [ListKey::of(&held)],
        "the watermark lists it"
    );
    let marks = first.watermarks().await.expect("read the watermarks");
    assert!(
        marks[shard]
            .as_ref()
            .is_some_and(|mark| *mark > ListKey::of(&held)),
        "and passed it: {marks:?}"
    );

    let new = another_process(&first, &proxy.endpoint);
    for _ in 0..10 {
        create(&new, later).await;
    }
    proxy.take();
    let before = new.queue_reads().await;
    let claimed = run_all(&new, later.plus(Duration::from_secs(1))).await;
    assert_eq!(claimed.len(), 10);
    assert!(claimed.iter().all(|task| task.id != held.id));
    let read = new.queue_reads().await;
    assert_eq!(read.items - before.items, 10, "the new tasks' items only");
    let units = read_units(&proxy.take(), "BatchGetItem");
    assert!(
        units <= 8.0,
        "{units} read units: the watermarks and 10 items, not the 120 finished"
    );

    let running_now = running(&new, later).await;
    assert_eq!(
        running_now.iter().map(|t| t.id).collect::<Vec<_>>(),
        [held.id],
        "listed as running below the watermark"
    );
    let expired = at(2).plus(LEASE);
    let swept = new.queue_sweep(expired, 1_000).await.expect("sweep");
    assert_eq!(
        swept.rescued, 0,
        "the sweep leaves a listed open entry to the scans"
    );

    // The first process is gone; two new ones race for the task once its lease expired.
    let (a, b) = (
        another_process(&first, &proxy.endpoint),
        another_process(&first, &proxy.endpoint),
    );
    let leases = Leases::fixed(Duration::from_secs(60));
    let (x, y) = tokio::join!(
        a.task_claim(Claim::due(expired, 10, &leases)),
        b.task_claim(Claim::due(expired, 10, &leases)),
    );
    let claims: Vec<Task> = [x, y]
        .into_iter()
        .flat_map(|claimed| claimed.expect("claim"))
        .collect();
    assert_eq!(
        claims.iter().map(|t| t.id).collect::<Vec<_>>(),
        [held.id],
        "claimed again, once"
    );
    assert_eq!(claims[0].attempts, 2);
}
