//! Deleting finished tasks.

use super::*;

/// GIVEN finished tasks of several ages and active tasks WHEN purging THEN only finished tasks
/// at or before the cutoff are deleted, and their references are free again.
pub async fn purge_deletes_only_old_finished_tasks<S: Store>(store: S) {
    let pending = create_at(&store, new_task("t"), t0()).await;
    let mut later = new_task("t");
    later.scheduled_at = Some(at(10_000));
    let future = create_at(&store, later, t0()).await;
    let mut with_ref = new_task("t");
    with_ref.reference_uid = Some("purged-ref".into());
    let old_cancelled = create_at(&store, with_ref.clone(), t0()).await;
    store
        .task_cancel(old_cancelled.id, at(1))
        .await
        .expect("cancel");
    let running = claim(&store, at(2), 1).await.remove(0);
    assert_eq!(running.id, pending.id);
    let to_finish = create_at(&store, new_task("t"), at(3)).await;
    let claimed = claim(&store, at(4), 1).await.remove(0);
    assert_eq!(claimed.id, to_finish.id);
    store
        .task_settle(&claimed, Settlement::Succeeded, at(100))
        .await
        .expect("settle");

    let reported = std::sync::atomic::AtomicU64::new(0);
    let deleted = store
        .task_purge_finished(at(50), &|chunk| {
            reported.fetch_add(chunk, std::sync::atomic::Ordering::Relaxed);
        })
        .await
        .expect("purge");
    assert_eq!(deleted, 1);
    assert_eq!(reported.into_inner(), 1, "progress reports every deletion");
    assert!(
        store
            .task_get(old_cancelled.id)
            .await
            .expect("get")
            .is_none()
    );
    for kept in [pending.id, future.id, to_finish.id] {
        assert!(store.task_get(kept).await.expect("get").is_some());
    }
    assert_eq!(
        store
            .task_purge_finished(at(100), &|_| ())
            .await
            .expect("purge"),
        1
    );
    assert_eq!(
        store
            .task_purge_finished(at(100), &|_| ())
            .await
            .expect("purge"),
        0
    );
    assert!(store.task_get(pending.id).await.expect("get").is_some());
    create_at(&store, with_ref, at(101)).await;
}

/// GIVEN tasks pending, scheduled later, running and finished, all in a claim's sight WHEN the
/// queue is swept THEN nothing is rescued and no task changes. (Tasks out of sight exist only
/// on DynamoDB, below a watermark: `tests/tests/sweep.rs` strands one there.)
pub async fn a_sweep_leaves_tasks_in_sight_alone<S: Store>(store: S) {
    let mut ids = Vec::new();
    for offset in [0, 3600] {
        let mut new = new_task("t");
        new.scheduled_at = Some(at(offset));
        ids.push(create_at(&store, new, t0()).await.id);
    }
    ids.push(create_at(&store, new_task("t"), t0()).await.id);
    let running = claim(&store, at(1), 2).await;
    store
        .task_settle(&running[0], Settlement::Succeeded, at(2))
        .await
        .expect("settle");
    let mut before = Vec::new();
    for &id in &ids {
        before.push(fetch(&store, id).await);
    }
    let swept = store.queue_sweep(at(900), 10_000).await.expect("sweep");
    assert_eq!(swept.rescued, 0, "{swept:?}");
    assert!(swept.complete);
    for task in before {
        assert_eq!(fetch(&store, task.id).await, task);
    }
}
