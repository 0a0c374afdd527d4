//! Putting failed and cancelled tasks back in the queue.

use super::*;

/// GIVEN a failed and a cancelled task WHEN retried THEN each is pending, due now, with a fresh
/// attempt budget and its history kept; other statuses and unknown ids are refused.
pub async fn retry_puts_failed_and_cancelled_tasks_back<S: Store>(store: S) {
    let mut new = new_task("t");
    new.max_attempts = Some(1);
    let failing = create_at(&store, new, t0()).await;
    let running = claim(&store, at(1), 1).await.remove(0);
    let error = Settlement::Failed {
        error: "boom".into(),
    };
    store
        .task_settle(&running, error, at(2))
        .await
        .expect("settle");

    let retried = store.task_retry(failing.id, at(10)).await.expect("retry");
    assert_eq!(retried.status, TaskStatus::Pending);
    assert_eq!(retried.attempts, 0);
    assert_eq!(retried.scheduled_at, at(10));
    assert_eq!(retried.finished_at, None);
    assert_eq!(retried.last_error.as_deref(), Some("boom"));
    assert_eq!(retried.last_failed_attempt_at, Some(at(2)));
    assert_eq!(fetch(&store, failing.id).await, retried);
    assert!(claim(&store, at(9), 10).await.is_empty());
    assert_eq!(ids(&claim(&store, at(10), 10).await), vec![failing.id]);
    assert!(matches!(
        store.task_retry(failing.id, at(11)).await,
        Err(StoreError::Conflict {
            status: TaskStatus::Running,
            ..
        })
    ));

    let cancelled = create_at(&store, new_task("t"), t0()).await;
    store
        .task_cancel(cancelled.id, at(3))
        .await
        .expect("cancel");
    assert_eq!(
        store
            .task_retry(cancelled.id, at(12))
            .await
            .expect("retry")
            .status,
        TaskStatus::Pending
    );
    assert!(matches!(
        store.task_retry(cancelled.id, at(13)).await,
        Err(StoreError::Conflict {
            status: TaskStatus::Pending,
            ..
        })
    ));
    let missing = TaskId::new(at(777).0);
    assert!(
        matches!(store.task_retry(missing, at(13)).await, Err(StoreError::NotFound(id)) if id == missing)
    );
}

/// GIVEN a task that failed at t=101 WHEN a host whose clock says t=50 retries it THEN it is due
/// just after its failure, and the next claim runs it.
pub async fn a_retry_stamped_before_the_failure_still_runs<S: Store>(store: S) {
    let mut new = new_task("t");
    new.max_attempts = Some(1);
    let task = create_at(&store, new, at(100)).await;
    let claimed = claim(&store, at(100), 10).await;
    assert_eq!(ids(&claimed), vec![task.id]);
    let failed = Settlement::Failed { error: "no".into() };
    store
        .task_settle(&claimed[0], failed, at(101))
        .await
        .expect("settle");
    let retried = store.task_retry(task.id, at(50)).await.expect("retry");
    assert_eq!(retried.status, TaskStatus::Pending);
    assert!(retried.scheduled_at > at(101), "{retried:?}");
    assert!(claim(&store, at(101), 10).await.is_empty());
    assert_eq!(ids(&claim(&store, at(102), 10).await), vec![task.id]);
}

/// GIVEN a task scheduled an hour ahead, cancelled WHEN retried now THEN it runs now (its queue
/// entry moves to an earlier instant).
pub async fn a_cancelled_later_task_retried_now_runs_now<S: Store>(store: S) {
    let mut new = new_task("t");
    new.scheduled_at = Some(at(3600));
    let task = create_at(&store, new, at(0)).await;
    assert!(claim(&store, at(10), 10).await.is_empty());
    store.task_cancel(task.id, at(20)).await.expect("cancel");
    store.task_retry(task.id, at(30)).await.expect("retry");
    assert_eq!(ids(&claim(&store, at(31), 10).await), vec![task.id]);
}

/// GIVEN a cancelled task whose reference another pending task now holds WHEN it is retried
/// THEN it is refused naming the holder; once the holder is gone the retry takes the reference.
pub async fn retry_respects_an_active_reference<S: Store>(store: S) {
    let mut new = new_task("email");
    new.reference_uid = Some("booking-retry".into());
    let first = create_at(&store, new.clone(), t0()).await;
    store.task_cancel(first.id, at(1)).await.expect("cancel");
    let second = create_at(&store, new.clone(), at(2)).await;

    let refused = store.task_retry(first.id, at(3)).await;
    assert!(
        matches!(refused, Err(StoreError::Duplicate { existing }) if existing == second.id),
        "{refused:?}"
    );
    assert_eq!(fetch(&store, first.id).await.status, TaskStatus::Cancelled);

    store.task_cancel(second.id, at(4)).await.expect("cancel");
    store.task_retry(first.id, at(5)).await.expect("retry");
    let again = store.task_create(Task::from_new(new, at(6))).await;
    assert!(
        matches!(again, Err(StoreError::Duplicate { existing }) if existing == first.id),
        "{again:?}"
    );
}

/// GIVEN two cancelled tasks with the same reference WHEN both are retried at the same moment
/// THEN exactly one becomes pending; the other is refused naming it.
pub async fn concurrent_retries_of_one_reference_make_one_active<S: Store>(store: S) {
    for round in 0..5u64 {
        let mut new = new_task("email");
        new.reference_uid = Some(format!("booking-retry-race-{round}"));
        let first = create_at(&store, new.clone(), t0()).await;
        store.task_cancel(first.id, at(1)).await.expect("cancel");
        let second = create_at(&store, new, at(2)).await;
        store.task_cancel(second.id, at(3)).await.expect("cancel");

        let retries: Vec<_> = [first.id, second.id]
            .into_iter()
            .map(|id| {
                let store = store.clone();
                tokio::spawn(async move { store.task_retry(id, at(10)).await })
            })
            .collect();
        let mut active = Vec::new();
        let mut refused = 0;
        for retry in retries {
            match retry.await.expect("retry task") {
                Ok(task) => active.push(task.id),
                Err(StoreError::Duplicate { .. } | StoreError::Unavailable { .. }) => refused += 1,
                Err(other) => panic!("unexpected error: {other}"),
            }
        }
        assert_eq!(active.len(), 1, "round {round}: exactly one retry wins");
        assert_eq!(refused, 1);
        let pending: Vec<TaskId> = [first.id, second.id]
            .into_iter()
            .filter(|id| active.contains(id))
            .collect();
        assert_eq!(pending.len(), 1);
        let mut statuses = Vec::new();
        for id in [first.id, second.id] {
            statuses.push(fetch(&store, id).await.status);
        }
        let pending_now = statuses
            .iter()
            .filter(|s| **s == TaskStatus::Pending)
            .count();
        assert_eq!(pending_now, 1, "round {round}: {statuses:?}");
    }
}
