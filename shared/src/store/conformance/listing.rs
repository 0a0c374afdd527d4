//! Listings, counts per status and the backlog.

use super::*;

/// Every page of a listing from the start, checking each page's size; the ids in order.
async fn walk<S: Store>(store: &S, filter: &ListFilter, limit: usize) -> Vec<TaskId> {
    let mut listed = Vec::new();
    let mut after = None;
    for _ in 0..1000 {
        let page = store
            .task_list(ListPage {
                filter,
                after: after.clone().as_ref(),
                limit,
                now: at(40),
            })
            .await
            .expect("list a page");
        assert!(page.tasks.len() <= limit, "a page holds at most the limit");
        listed.extend(ids(&page.tasks));
        match page.next {
            Some(next) => {
                assert!(
                    after.as_ref().is_none_or(|after| &next < after),
                    "pages advance"
                );
                after = Some(next);
            }
            None => return listed,
        }
    }
    panic!("the listing did not end");
}

/// The tasks with `ids` as stored now, newest first: the order every listing must give, from
/// the documented rule (docs/api.md) rather than the backends' own listing key: by the
/// scheduled instant (the creation, if later) while pending, running or succeeded, by the
/// finish once failed or cancelled; then by id, both descending.
async fn newest_first<S: Store>(store: &S, filter: &ListFilter, all: &[TaskId]) -> Vec<TaskId> {
    let mut tasks = Vec::new();
    for &id in all {
        let task = fetch(store, id).await;
        if filter.matches(&task) {
            let instant = match task.status {
                TaskStatus::Failed | TaskStatus::Cancelled => {
                    task.finished_at.expect("a finished task has its finish")
                }
                _ => task.scheduled_at.max(task.created_at),
            };
            tasks.push((instant, id.to_string(), id));
        }
    }
    tasks.sort_by(|a, b| (&b.0, &b.1).cmp(&(&a.0, &a.1)));
    tasks.into_iter().map(|(_, _, id)| id).collect()
}

/// 24 tasks of two types, groups of four sharing a due instant, some sharing a reference: 6
/// claimed at t=10 (2 succeed, 2 fail, 2 stay running), then 3 more cancelled. Their ids.
async fn tasks_in_every_status<S: Store>(store: &S) -> Vec<TaskId> {
    let mut all = Vec::new();
    for i in 0..24u64 {
        let mut new = new_task(if i % 3 == 0 { "email" } else { "webhook" });
        // Groups of four share a due instant, so order among them falls to the id.
        new.scheduled_at = Some(at(i / 4));
        new.max_attempts = Some(1);
        if i % 5 == 0 {
            new.reference_uid = Some(format!("booking-{}", i % 4));
        }
        all.push(create_at(store, new, t0()).await.id);
    }
    // 6 claimed at t=10: 2 succeed, 2 fail, 2 stay running; 3 more cancelled.
    let claimed = claim(store, at(10), 6).await;
    assert_eq!(claimed.len(), 6);
    for (i, task) in claimed.iter().enumerate().take(4) {
        let outcome = if i < 2 {
            Settlement::Succeeded
        } else {
            Settlement::Failed {
                error: "boom".into(),
            }
        };
        store
            .task_settle(task, outcome, at(20 + i as u64))
            .await
            .expect("settle");
    }
    let mut cancelled = 0;
    for &id in &all {
        if cancelled < 3 && fetch(store, id).await.status == TaskStatus::Pending {
            store.task_cancel(id, at(30)).await.expect("cancel");
            cancelled += 1;
        }
    }
    all
}

/// GIVEN tasks in every status, of two types, some sharing a reference and many sharing an
/// instant WHEN listed with each filter and page size THEN pages hold at most the limit and
/// together list every match exactly once, newest first (queue instant, then id).
pub async fn listings_are_newest_first_and_pages_cover_every_match<S: Store>(store: S) {
    let all = tasks_in_every_status(&store).await;
    let mut filters = vec![ListFilter::default()];
    for status in TaskStatus::ALL {
        filters.push(ListFilter {
            status: Some(status),
            ..ListFilter::default()
        });
    }
    filters.push(ListFilter {
        task_type: Some("email".into()),
        ..ListFilter::default()
    });
    filters.push(ListFilter {
        status: Some(TaskStatus::Pending),
        task_type: Some("webhook".into()),
        ..ListFilter::default()
    });
    filters.push(ListFilter {
        reference_uid: Some("booking-0".into()),
        ..ListFilter::default()
    });
    filters.push(ListFilter {
        reference_uid: Some("booking-0".into()),
        status: Some(TaskStatus::Pending),
        task_type: Some("webhook".into()),
        ..ListFilter::default()
    });
    for filter in &filters {
        let expected = newest_first(&store, filter, &all).await;
        for limit in [1, 5, 100] {
            assert_eq!(
                walk(&store, filter, limit).await,
                expected,
                "filter {filter:?}, limit {limit}"
            );
        }
    }
    let none = ListFilter {
        reference_uid: Some("no-such-reference".into()),
        ..ListFilter::default()
    };
    assert!(walk(&store, &none, 10).await.is_empty());
}

/// GIVEN tasks in every status WHEN counted THEN each status has its own count.
pub async fn counts_are_per_status<S: Store>(store: S) {
    assert_eq!(
        store.task_count_by_status(t0()).await.expect("counts"),
        StatusCounts::default()
    );
    for i in 0..7 {
        let mut new = new_task("t");
        new.max_attempts = Some(1);
        create_at(&store, new, at(i)).await;
    }
    let claimed = claim(&store, at(10), 4).await;
    store
        .task_settle(&claimed[0], Settlement::Succeeded, at(11))
        .await
        .expect("settle");
    store
        .task_settle(
            &claimed[1],
            Settlement::Failed { error: "no".into() },
            at(11),
        )
        .await
        .expect("settle");
    let pending = claim(&store, at(10), 1).await;
    store
        .task_settle(&pending[0], Settlement::Released, at(11))
        .await
        .expect("release");
    let victim = pending[0].id;
    store.task_cancel(victim, at(12)).await.expect("cancel");
    let counts = store.task_count_by_status(at(12)).await.expect("counts");
    assert_eq!(
        counts,
        StatusCounts {
            pending: 2,
            running: 2,
            succeeded: 1,
            failed: 1,
            cancelled: 1,
        }
    );
    assert_eq!(counts.total(), 7);
}

/// GIVEN due, future, running and finished tasks WHEN the backlog is read THEN it counts the due
/// ones and names the oldest instant among them.
pub async fn backlog_counts_what_is_due_and_its_oldest_instant<S: Store>(store: S) {
    assert_eq!(
        store.queue_backlog(t0()).await.expect("backlog"),
        Backlog::default()
    );
    for offset in [0, 5, 10] {
        let mut new = new_task("t");
        new.scheduled_at = Some(at(offset));
        create_at(&store, new, t0()).await;
    }
    let mut later = new_task("t");
    later.scheduled_at = Some(at(1000));
    create_at(&store, later, t0()).await;
    let running = claim(&store, at(20), 1).await;
    assert_eq!(running.len(), 1);

    let backlog = store.queue_backlog(at(20)).await.expect("backlog");
    assert_eq!(backlog.due, 2);
    assert_eq!(backlog.oldest_due_at, Some(at(5)));
}
