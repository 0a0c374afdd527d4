//! SQS mode's calls: claims by id, and what the mover sends messages for.

use super::*;

fn lease() -> Leases {
    Leases::fixed(Duration::from_secs(60))
}

/// GIVEN a due task WHEN a message's claim names it twice THEN the first claims it (the
/// stored task is exactly what the claim transition defines) and the second finds it running.
pub async fn a_claim_by_id_claims_a_due_task_once<S: Store>(store: S) {
    let task = create_at(&store, new_task("t"), t0()).await;
    let first = store
        .task_claim_by_id(ClaimById::due(task.id, at(1), &lease()))
        .await
        .expect("claim by id");
    let ClaimedById::Claimed(running) = first else {
        panic!("expected a claim, got {first:?}");
    };
    assert_eq!(running.status, TaskStatus::Running);
    assert_eq!(running.attempts, 1);
    assert_eq!(running.lease_expires_at, Some(at(61)));
    assert_eq!(fetch(&store, task.id).await, running);
    let second = store
        .task_claim_by_id(ClaimById::due(task.id, at(2), &lease()))
        .await
        .expect("second claim");
    assert_eq!(second, ClaimedById::NotDue(running.clone()));
    // A poll-mode claim does not take it either: one claim rule, whichever way it is found.
    assert!(claim(&store, at(3), 10).await.is_empty());
    store
        .task_settle(&running, Settlement::Succeeded, at(4))
        .await
        .expect("settle");
    let after = store
        .task_claim_by_id(ClaimById::due(task.id, at(5), &lease()))
        .await
        .expect("claim a finished task");
    assert!(matches!(after, ClaimedById::NotDue(t) if t.status == TaskStatus::Succeeded));
}

/// GIVEN a task scheduled later, a cancelled one and an unknown id WHEN a message names them
/// THEN none is claimed and nothing changes.
pub async fn a_claim_by_id_refuses_what_is_not_due<S: Store>(store: S) {
    let mut later = new_task("t");
    later.scheduled_at = Some(at(600));
    let later = create_at(&store, later, t0()).await;
    let cancelled = create_at(&store, new_task("t"), t0()).await;
    let cancelled = store
        .task_cancel(cancelled.id, at(1))
        .await
        .expect("cancel");
    for task in [&later, &cancelled] {
        let found = store
            .task_claim_by_id(ClaimById::due(task.id, at(2), &lease()))
            .await
            .expect("claim by id");
        assert_eq!(found, ClaimedById::NotDue(task.clone()));
        assert_eq!(&fetch(&store, task.id).await, task);
    }
    let unknown = TaskId::new(at(999).0);
    let found = store
        .task_claim_by_id(ClaimById::due(unknown, at(2), &lease()))
        .await
        .expect("claim an unknown id");
    assert_eq!(found, ClaimedById::Missing);
}

/// GIVEN running tasks whose leases expired, one with attempts left and one on its final
/// attempt WHEN a message names each THEN the first is claimed again and the second fails.
pub async fn a_claim_by_id_takes_over_an_expired_lease<S: Store>(store: S) {
    let mut last = new_task("t");
    last.max_attempts = Some(1);
    let last = create_at(&store, last, t0()).await;
    let again = create_at(&store, new_task("t"), t0()).await;
    assert_eq!(claim(&store, at(1), 10).await.len(), 2);
    let retaken = store
        .task_claim_by_id(ClaimById::due(again.id, at(120), &lease()))
        .await
        .expect("claim after the lease");
    assert!(matches!(&retaken, ClaimedById::Claimed(t) if t.attempts == 2));
    let expired = store
        .task_claim_by_id(ClaimById::due(last.id, at(120), &lease()))
        .await
        .expect("claim an expired final attempt");
    let ClaimedById::NotDue(failed) = expired else {
        panic!("expected the final attempt to fail, got {expired:?}");
    };
    assert_eq!(failed.status, TaskStatus::Failed);
    assert_eq!(fetch(&store, last.id).await, failed);
}

/// GIVEN pending tasks inside and beyond the horizon, a running task under a live lease, one
/// whose lease expired and a finished one WHEN the mover asks what to deliver THEN it gets the
/// pending ones up to the horizon and the expired lease, earliest due first.
pub async fn deliverable_tasks_are_due_by_the_horizon<S: Store>(store: S) {
    let leased = create_at(&store, new_task("t"), t0()).await;
    let expired = create_at(&store, new_task("t"), t0()).await;
    let _ = claim(&store, at(1), 10).await;
    // `leased` gets a fresh lease at 100; `expired` keeps the one from 1 (expiring at 61).
    store
        .task_claim_by_id(ClaimById::due(leased.id, at(100), &lease()))
        .await
        .expect("take over a lease");
    let mut soon = new_task("t");
    soon.scheduled_at = Some(at(300));
    let soon = create_at(&store, soon, at(100)).await;
    let mut beyond = new_task("t");
    beyond.scheduled_at = Some(at(2000));
    create_at(&store, beyond, at(100)).await;
    let done = create_at(&store, new_task("t"), at(100)).await;
    let done = store.task_cancel(done.id, at(101)).await.expect("cancel");
    assert_eq!(done.status, TaskStatus::Cancelled);

    let found = store
        .task_list_deliverable(Deliverable {
            horizon: at(1000),
            now: at(120),
            limit: 100,
            gate: &OPEN_GATE,
        })
        .await
        .expect("deliverable");
    assert_eq!(ids(&found), vec![expired.id, soon.id]);
    assert_eq!(found[0].status, TaskStatus::Running);
    let limited = store
        .task_list_deliverable(Deliverable {
            horizon: at(1000),
            now: at(120),
            limit: 1,
            gate: &OPEN_GATE,
        })
        .await
        .expect("deliverable, limited");
    assert_eq!(limited.len(), 1);
}

/// GIVEN a running final attempt whose lease expired WHEN the mover asks what to deliver THEN
/// the task is failed on the way and not returned.
pub async fn deliverable_fails_an_expired_final_attempt<S: Store>(store: S) {
    let mut last = new_task("t");
    last.max_attempts = Some(1);
    let last = create_at(&store, last, t0()).await;
    assert_eq!(claim(&store, at(1), 10).await.len(), 1);
    let found = store
        .task_list_deliverable(Deliverable {
            horizon: at(1000),
            now: at(120),
            limit: 100,
            gate: &OPEN_GATE,
        })
        .await
        .expect("deliverable");
    assert!(found.is_empty());
    assert_eq!(fetch(&store, last.id).await.status, TaskStatus::Failed);
}
