//! Schedules: conditional writes, the due ones, and the tasks their ticks create.

use super::*;
use crate::schedule::{Missed, Schedule, tick_task_id};
use crate::store::{Expect, ScheduleWrite};

fn schedule(name: &str, next: Option<Timestamp>) -> Schedule {
    Schedule {
        name: name.to_owned(),
        cron: "* * * * *".to_owned(),
        timezone: "UTC".to_owned(),
        task_type: "report".to_owned(),
        payload: r#"{"n":1}"#.to_owned(),
        max_attempts: None,
        missed: Missed::Latest,
        paused: false,
        next_run_at: next,
        last_run_at: None,
        created_at: t0(),
        updated_at: t0(),
        revision: 1,
    }
}

async fn put<S: Store>(store: &S, schedule: &Schedule, expect: Expect) -> ScheduleWrite {
    store
        .schedule_put(schedule, expect)
        .await
        .expect("put a schedule")
}

/// GIVEN no schedule WHEN one is created twice THEN the second create finds the first.
pub async fn schedules_are_created_once_and_read_back<S: Store>(store: S) {
    let first = schedule("nightly", Some(at(60)));
    assert_eq!(
        put(&store, &first, Expect::Absent).await,
        ScheduleWrite::Written
    );
    let mut other = schedule("nightly", Some(at(120)));
    other.payload = "other".to_owned();
    assert_eq!(
        put(&store, &other, Expect::Absent).await,
        ScheduleWrite::Conflict(Some(Box::new(first.clone())))
    );
    let got = store.schedule_get("nightly").await.expect("get");
    assert_eq!(got, Some(first.clone()));
    assert_eq!(got.map(|s| s.revision), Some(1));
    assert_eq!(store.schedule_get("missing").await.expect("get"), None);
    put(&store, &schedule("alpha", None), Expect::Absent).await;
    let names: Vec<String> = store
        .schedule_list()
        .await
        .expect("list")
        .into_iter()
        .map(|s| s.name)
        .collect();
    assert_eq!(names, ["alpha", "nightly"]);
}

/// GIVEN a schedule WHEN it is written at a stale revision THEN nothing is written and the
/// current one is returned; at its revision, the write lands.
pub async fn a_schedule_write_is_conditioned_on_its_revision<S: Store>(store: S) {
    let first = schedule("hourly", Some(at(60)));
    put(&store, &first, Expect::Absent).await;
    let mut advanced = first.clone();
    advanced.next_run_at = Some(at(120));
    advanced.last_run_at = Some(at(60));
    advanced.revision = 2;
    assert_eq!(
        put(&store, &advanced, Expect::Revision(1)).await,
        ScheduleWrite::Written
    );
    let mut stale = first.clone();
    stale.next_run_at = Some(at(999));
    stale.revision = 2;
    assert_eq!(
        put(&store, &stale, Expect::Revision(1)).await,
        ScheduleWrite::Conflict(Some(Box::new(advanced.clone())))
    );
    let got = store
        .schedule_get("hourly")
        .await
        .expect("get")
        .expect("kept");
    assert_eq!((got.next_run_at, got.revision), (Some(at(120)), 2));
    assert_eq!(
        put(&store, &schedule("gone", None), Expect::Revision(1)).await,
        ScheduleWrite::Conflict(None)
    );
}

/// GIVEN a schedule WHEN it is deleted THEN it is gone, and a second delete says so.
pub async fn a_deleted_schedule_is_gone<S: Store>(store: S) {
    put(&store, &schedule("old", Some(at(60))), Expect::Absent).await;
    assert!(store.schedule_delete("old").await.expect("delete"));
    assert!(!store.schedule_delete("old").await.expect("delete again"));
    assert_eq!(store.schedule_get("old").await.expect("get"), None);
    assert!(store.schedule_list().await.expect("list").is_empty());
    assert!(
        store
            .schedule_list_due(at(100), 10)
            .await
            .expect("due")
            .is_empty()
    );
}

/// GIVEN running, paused and later schedules WHEN the due ones are asked for THEN only running
/// ones whose tick came are returned, earliest first, at most `limit`.
pub async fn due_schedules_are_the_running_ones_whose_tick_came<S: Store>(store: S) {
    put(&store, &schedule("b-late", Some(at(10))), Expect::Absent).await;
    put(&store, &schedule("a-early", Some(at(5))), Expect::Absent).await;
    let mut paused = schedule("paused", Some(at(1)));
    paused.paused = true;
    put(&store, &paused, Expect::Absent).await;
    put(&store, &schedule("future", Some(at(100))), Expect::Absent).await;
    put(&store, &schedule("never", None), Expect::Absent).await;
    let names = |due: Vec<Schedule>| due.into_iter().map(|s| s.name).collect::<Vec<_>>();
    let due = store.schedule_list_due(at(20), 10).await.expect("due");
    assert_eq!(names(due), ["a-early", "b-late"]);
    let due = store.schedule_list_due(at(20), 1).await.expect("due");
    assert_eq!(names(due), ["a-early"]);
    assert!(
        store
            .schedule_list_due(at(4), 10)
            .await
            .expect("due")
            .is_empty()
    );
    // Advanced past the instant asked about: no longer due.
    let mut advanced = schedule("a-early", Some(at(65)));
    advanced.revision = 2;
    put(&store, &advanced, Expect::Revision(1)).await;
    let due = store.schedule_list_due(at(20), 10).await.expect("due");
    assert_eq!(names(due), ["b-late"]);
}

/// GIVEN a tick's task (its id derived from the tick) WHEN it is created again THEN the first
/// is returned, one task is stored, and listings find it by its schedule.
pub async fn a_tick_task_stored_twice_is_stored_once_and_listed_by_schedule<S: Store>(store: S) {
    let tick = at(60);
    let mut task = Task::from_new(new_task("report"), at(61));
    task.id = tick_task_id("nightly", tick);
    task.scheduled_at = tick;
    task.schedule_name = Some("nightly".to_owned());
    task.schedule_tick = Some(tick);
    assert_eq!(
        store.task_create(task.clone()).await.expect("create"),
        Created::New(task.clone())
    );
    let mut again = task.clone();
    again.created_at = at(62);
    again.updated_at = at(62);
    assert_eq!(
        store.task_create(again).await.expect("create again"),
        Created::Existing(task.clone())
    );
    create_at(&store, new_task("report"), at(63)).await;
    let filter = ListFilter {
        schedule: Some("nightly".to_owned()),
        ..ListFilter::default()
    };
    let page = store
        .task_list(ListPage {
            filter: &filter,
            after: None,
            limit: 10,
            now: at(100),
        })
        .await
        .expect("list");
    assert_eq!(page.tasks, vec![task]);
    assert_eq!(
        store
            .task_count_by_status(at(100))
            .await
            .expect("counts")
            .pending,
        2
    );
}
