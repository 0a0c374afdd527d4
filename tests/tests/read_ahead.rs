//! The due queue's read-ahead on DynamoDB (`tasker::store::dynamodb::due::ahead`): small claims
//! in a backlog go on from the entries the last scan read, and what that skips is bounded.

use std::time::Duration;
use tasker::store::Claim;

use tasker::store::dynamodb::due::READ_AHEAD_AGE;
use tasker::store::dynamodb::item::shard_of;
use tasker::store::{Leases, Settlement};
use tasker::{DynamoStore, NewTask, Task, Timestamp};
use tasker_tests::capacity::CapacityProxy;
use tasker_tests::dynamo;
use tasker_tests::fixtures::{at, t0};
use tasker_tests::queue::another_process;

async fn claim(store: &DynamoStore, now: Timestamp, limit: usize) -> Vec<Task> {
    store
        .task_claim(Claim::due(
            now,
            limit,
            &Leases::fixed(Duration::from_secs(60)),
        ))
        .await
        .expect("claim")
}

async fn create_in_shard(store: &DynamoStore, shard: u32, scheduled: Timestamp) -> Task {
    loop {
        let task = Task::from_new(NewTask::new("noop", "{}"), scheduled);
        if shard_of(task.id) == shard {
            return store.task_create(task).await.expect("create").into_task();
        }
    }
}

/// GIVEN 160 due tasks WHEN a processor claims them 4 at a time within a second, each claim
/// followed by its outcomes THEN every task is claimed once, and the scans query the index
/// fewer times than there are claims (each used to query all 4 shards).
#[tokio::test]
async fn small_claims_in_a_backlog_go_on_from_the_entries_read_ahead() {
    let proxy = CapacityProxy::start(&dynamo::endpoint()).await;
    let store = dynamo::fresh_store_at(&proxy.endpoint).await;
    for _ in 0..160 {
        store
            .task_create(Task::from_new(NewTask::new("noop", "{}"), t0()))
            .await
            .expect("create");
    }
    proxy.take();
    let now = at(1);
    let mut claimed = Vec::new();
    let mut claims = 0;
    loop {
        let batch = claim(&store, now, 4).await;
        claims += 1;
        if batch.is_empty() {
            break;
        }
        for task in &batch {
            store
                .task_settle(task, Settlement::Succeeded, now)
                .await
                .expect("settle");
        }
        claimed.extend(batch.into_iter().map(|task| task.id));
    }
    let queries = proxy.take().get("Query").map_or(0, |q| q.calls);
    claimed.sort();
    claimed.dedup();
    assert_eq!(claimed.len(), 160, "every task claimed once");
    assert!(
        queries < claims,
        "{queries} queries for {claims} claims of 4 (4 per claim without the read-ahead)"
    );
}

/// GIVEN a processor whose last scan read ahead in a shard WHEN another process creates a task
/// due earlier there THEN this processor's claims within the read-ahead's age may go on past it,
/// and the first claim after it is the task's.
#[tokio::test]
async fn an_entry_another_process_writes_behind_the_read_ahead_waits_less_than_its_age() {
    let store = dynamo::fresh_store().await;
    for _ in 0..20 {
        create_in_shard(&store, 0, at(10)).await;
    }
    assert_eq!(claim(&store, at(11), 1).await.len(), 1);
    let other = another_process(&store, &dynamo::endpoint());
    let early = create_in_shard(&other, 0, at(5)).await;

    let soon = at(11).plus(READ_AHEAD_AGE / 2);
    let next = claim(&store, soon, 1).await;
    assert_eq!(next.len(), 1);
    assert_ne!(next[0].id, early.id, "the kept reader goes on past it");
    let after = at(11).plus(READ_AHEAD_AGE);
    let first = claim(&store, after, 1).await;
    assert_eq!(first.iter().map(|t| t.id).collect::<Vec<_>>(), [early.id]);
}

/// GIVEN the same read-ahead WHEN this process itself creates the task due earlier THEN its next
/// claim, within the age, is that task's.
#[tokio::test]
async fn an_entry_this_process_writes_behind_the_read_ahead_is_claimed_next() {
    let store = dynamo::fresh_store().await;
    for _ in 0..20 {
        create_in_shard(&store, 0, at(10)).await;
    }
    assert_eq!(claim(&store, at(11), 1).await.len(), 1);
    let early = create_in_shard(&store, 0, at(5)).await;
    let next = claim(&store, at(11).plus(READ_AHEAD_AGE / 2), 1).await;
    assert_eq!(next.iter().map(|t| t.id).collect::<Vec<_>>(), [early.id]);
}
