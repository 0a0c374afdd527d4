//! Cancelling pending tasks, one by id or all of a reference.

use super::*;

/// Cancel: pending → cancelled; cancelled, running and missing tasks are refused.
pub async fn cancel_follows_the_status_rules<S: Store>(store: S) {
    let pending = create_at(&store, new_task("t"), t0()).await;
    let cancelled = store.task_cancel(pending.id, at(5)).await.expect("cancel");
    assert_eq!(cancelled.status, TaskStatus::Cancelled);
    assert_eq!(cancelled.finished_at, Some(at(5)));
    assert_eq!(fetch(&store, pending.id).await, cancelled);
    assert!(matches!(
        store.task_cancel(pending.id, at(6)).await,
        Err(StoreError::Conflict {
            status: TaskStatus::Cancelled,
            ..
        })
    ));
    assert!(
        claim(&store, at(100), 10).await.is_empty(),
        "cancelled tasks never run"
    );

    let running = create_at(&store, new_task("t"), t0()).await;
    claim(&store, at(1), 1).await;
    assert!(matches!(
        store.task_cancel(running.id, at(6)).await,
        Err(StoreError::Conflict {
            status: TaskStatus::Running,
            ..
        })
    ));
    let missing = TaskId::new(at(999).0);
    assert!(matches!(
        store.task_cancel(missing, at(6)).await,
        Err(StoreError::NotFound(id)) if id == missing
    ));
}

/// GIVEN tasks sharing a reference in several states WHEN cancelled by reference THEN only the
/// pending ones (of the given type) are cancelled.
pub async fn cancel_by_reference_cancels_pending_only<S: Store>(store: S) {
    let with_ref = |task_type: &str, reference: &str| {
        let mut new = new_task(task_type);
        new.reference_uid = Some(reference.into());
        new
    };
    let email = create_at(&store, with_ref("email", "booking-1"), t0()).await;
    let mut later = with_ref("webhook", "booking-1");
    later.scheduled_at = Some(at(500));
    let webhook = create_at(&store, later, t0()).await;
    let other = create_at(&store, with_ref("email", "booking-2"), t0()).await;
    // The email task is running, so it cannot be cancelled.
    let running = claim(&store, at(1), 10).await;
    assert_eq!(running.len(), 2);

    let none = store
        .task_cancel_by_reference("booking-1", Some("email"), at(2))
        .await
        .expect("cancel");
    assert!(none.is_empty());
    let cancelled = store
        .task_cancel_by_reference("booking-1", None, at(2))
        .await
        .expect("cancel");
    assert_eq!(cancelled, vec![webhook.id]);
    assert_eq!(
        fetch(&store, webhook.id).await.status,
        TaskStatus::Cancelled
    );
    assert_eq!(fetch(&store, email.id).await.status, TaskStatus::Running);
    assert_eq!(fetch(&store, other.id).await.status, TaskStatus::Running);
    assert!(
        store
            .task_cancel_by_reference("no-such-ref", None, at(2))
            .await
            .expect("cancel")
            .is_empty()
    );
}
