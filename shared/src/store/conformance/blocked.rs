//! Blocked work leaves the scan path: what is due but cannot be claimed (a task under a long
//! lease, a paused type's backlog, a type at its cap) does not make later claims read more.
//! Bounded by the store's own counters ([`Store::queue_reads`]), never by time: a claim of ten
//! tasks behind the blocked work and four hundred finished ones reads about what the same claim
//! read before any of it existed.
//!
//! The instants stay within a minute of the first claim: a DynamoDB process falls back to its
//! watermark every minute (and re-reads from there), which is not what these cases measure.

use std::collections::BTreeMap;

use super::*;
use crate::store::{ClaimGate, QueueReads};

/// Tasks of the blocked type ahead of the others.
const AHEAD: u64 = 300;
/// Tasks that run and finish behind the blocked work.
const BEHIND: usize = 400;
/// Tasks held under a long lease (DynamoDB's queue has four shards: most hold one).
const HELD: usize = 8;
/// Tasks a claim wants.
const BATCH: usize = 10;

fn ms(millis: u64) -> Timestamp {
    t0().plus(Duration::from_millis(millis))
}

/// Creates `count` tasks of `task_type` at `at`.
async fn create_many_at<S: Store>(store: &S, task_type: &str, count: usize, at: Timestamp) {
    for _ in 0..count {
        create_at(store, new_task(task_type), at).await;
    }
}

/// One claim of up to [`BATCH`] tasks at `now` through `gate`, each settled as succeeded; the
/// tasks and what the claim read.
async fn claim_and_settle<S: Store>(
    store: &S,
    now: Timestamp,
    gate: &ClaimGate,
) -> (Vec<Task>, QueueReads) {
    let before = store.queue_reads().await;
    let leases = Leases::fixed(Duration::from_secs(60));
    let claimed = store
        .task_claim(Claim::due(now, BATCH, &leases).through(gate))
        .await
        .expect("claim");
    let after = store.queue_reads().await;
    for task in &claimed {
        store
            .task_settle(task, Settlement::Succeeded, now)
            .await
            .expect("settle");
    }
    let read = QueueReads {
        entries: after.entries - before.entries,
        items: after.items - before.items,
    };
    (claimed, read)
}

/// GIVEN a claim of [`BATCH`] tasks measured on the empty queue, WHEN `block` puts its blocked
/// work ahead and [`BEHIND`] tasks run and finish behind it THEN a claim of [`BATCH`] new
/// tasks through `gate` reads about as much as the first.
async fn claims_behind<S: Store>(store: S, gate: ClaimGate, block: impl AsyncFnOnce(&S)) {
    create_many_at(&store, "fast", BATCH, ms(0)).await;
    let (first, base) = claim_and_settle(&store, ms(1_000), &gate).await;
    assert_eq!(first.len(), BATCH, "the first claim takes every fast task");

    block(&store).await;
    create_many_at(&store, "fast", BEHIND, ms(4_000)).await;
    let mut done = 0;
    for round in 0..BEHIND / BATCH + 5 {
        let now = ms(5_000 + 500 * round as u64);
        let (claimed, _) = claim_and_settle(&store, now, &gate).await;
        done += claimed
            .iter()
            .filter(|task| task.task_type == "fast")
            .count();
    }
    assert_eq!(
        done, BEHIND,
        "every fast task behind the blocked work is claimed"
    );

    create_many_at(&store, "fast", BATCH, ms(40_000)).await;
    let (last, read) = claim_and_settle(&store, ms(41_000), &gate).await;
    assert_eq!(
        last.len(),
        BATCH,
        "the last claim takes every new fast task"
    );
    assert!(
        last.iter().all(|task| task.task_type == "fast"),
        "the blocked work stays blocked"
    );
    assert!(
        read.entries <= 2 * base.entries + 40 && read.items <= 2 * base.items + 10,
        "a claim behind blocked work read {read:?}; the same claim on an empty queue {base:?}"
    );
}

/// GIVEN [`HELD`] tasks running under an hour's lease WHEN tasks behind them run THEN a later
/// claim does not read more for them.
pub async fn a_long_lease_ahead_does_not_slow_claims<S: Store>(store: S) {
    claims_behind(store, ClaimGate::default(), async |store: &S| {
        create_many_at(store, "slow", HELD, ms(2_000)).await;
        let hour = Leases::fixed(Duration::from_secs(3_600));
        let held = store
            .task_claim(Claim::due(ms(3_000), HELD, &hour))
            .await
            .expect("claim the slow tasks");
        assert_eq!(
            held.len(),
            HELD,
            "the slow tasks run under their long lease"
        );
    })
    .await;
}

/// GIVEN a paused type with [`AHEAD`] due tasks WHEN tasks behind them run THEN a later claim
/// does not read more for them.
pub async fn a_paused_backlog_ahead_does_not_slow_claims<S: Store>(store: S) {
    let paused = PausedTypes::from([("slow".to_owned(), ms(2_000))]);
    claims_behind(
        store,
        ClaimGate::new(paused, BTreeMap::new()),
        async |store: &S| {
            store
                .type_set_paused("slow", true, ms(2_000))
                .await
                .expect("pause");
            create_many_at(store, "slow", AHEAD as usize, ms(2_000)).await;
        },
    )
    .await;
}

/// GIVEN a type at its cap with [`AHEAD`] due tasks WHEN tasks behind them run THEN a later
/// claim does not read more for them.
pub async fn a_capped_backlog_ahead_does_not_slow_claims<S: Store>(store: S) {
    let full = BTreeMap::from([("slow".to_owned(), 0)]);
    claims_behind(
        store,
        ClaimGate::new(PausedTypes::new(), full),
        async |store: &S| {
            create_many_at(store, "slow", AHEAD as usize, ms(2_000)).await;
        },
    )
    .await;
}
