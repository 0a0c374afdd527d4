//! Schedules fired by processors, clock-driven (a `ManualClock`, no sleeping), on SQLite and on
//! DynamoDB Local: every tick becomes exactly one task, whatever races or crashes.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;
use tasker::store::ListPage;

use tasker::schedule::{Missed, ScheduleSpec, tick_task_id};
use tasker::store::ListFilter;
use tasker::{
    AnyStore, DynamoStore, ManualClock, ProcessorSettings, Registry, SqliteStore, Store, Tasker,
    Timestamp,
};
use tasker_tests::dynamo;

const REPORT: &str = "report";

fn registry() -> Registry {
    let mut registry = Registry::new();
    registry
        .register(REPORT, |_| async { Ok(()) })
        .expect("register");
    registry
}

fn instant(text: &str) -> Timestamp {
    text.parse().expect("an instant")
}

/// `count` handles on one empty store, each with its own connection or client (and so its
/// own cache of schedules): what separate processes would have.
async fn stores(backend: &str, count: usize) -> Vec<AnyStore> {
    match backend {
        "sqlite" => {
            let dir = tempfile::tempdir().expect("temp dir");
            let path = dir.path().join("tasks.db");
            let stores = (0..count)
                .map(|_| AnyStore::Sqlite(SqliteStore::open(&path).expect("open")))
                .collect();
            std::mem::forget(dir);
            stores
        }
        _ => {
            let first = dynamo::fresh_store().await;
            let table = first.table().to_owned();
            (0..count)
                .map(|_| {
                    AnyStore::DynamoDb(DynamoStore::new(
                        dynamo::client(),
                        table.clone(),
                        Duration::ZERO,
                    ))
                })
                .collect()
        }
    }
}

fn tasker(store: AnyStore, clock: &Arc<ManualClock>) -> Tasker<AnyStore> {
    Tasker::with_clock(
        store,
        registry(),
        ProcessorSettings::default(),
        Arc::clone(clock) as Arc<dyn tasker::Clock>,
    )
}

fn spec(name: &str, cron: &str, timezone: &str, missed: Missed) -> ScheduleSpec {
    ScheduleSpec {
        name: name.to_owned(),
        cron: cron.to_owned(),
        timezone: timezone.to_owned(),
        task_type: REPORT.to_owned(),
        payload: r#"{"report":"daily"}"#.to_owned(),
        max_attempts: Some(2),
        missed,
        paused: false,
    }
}

/// The ticks of `name`'s tasks, in order, read through the listing filter.
async fn ticks_of(store: &AnyStore, name: &str) -> Vec<Timestamp> {
    let filter = ListFilter {
        schedule: Some(name.to_owned()),
        ..ListFilter::default()
    };
    let mut ticks = Vec::new();
    let mut after = None;
    loop {
        let page = store
            .task_list(ListPage {
                filter: &filter,
                after: after.as_ref(),
                limit: 100,
                now: Timestamp::MAX,
            })
            .await
            .expect("list");
        for task in &page.tasks {
            assert_eq!(task.schedule_name.as_deref(), Some(name));
            ticks.push(task.schedule_tick.expect("a tick"));
        }
        match page.next {
            Some(next) => after = Some(next),
            None => break,
        }
    }
    ticks.sort();
    ticks
}

fn texts(ticks: &[Timestamp]) -> Vec<String> {
    ticks.iter().map(|t| t.to_text()).collect()
}

/// GIVEN `*/5 * * * *` WHEN a processor runs every minute for an hour THEN twelve tasks, one
/// per tick, each due at its tick and carrying the schedule's payload and attempts.
async fn every_five_minutes_across_an_hour(backend: &str) {
    let store = stores(backend, 1).await.remove(0);
    let clock = Arc::new(ManualClock::new(instant("2030-01-01T09:00:30Z")));
    let tasker = tasker(store.clone(), &clock);
    tasker
        .create_schedule(spec("five", "*/5 * * * *", "UTC", Missed::Latest))
        .await
        .expect("create");
    for _ in 0..60 {
        clock.advance(Duration::from_secs(60));
        tasker.fire_schedules().await.expect("fire");
    }
    let ticks = ticks_of(&store, "five").await;
    let expected: Vec<String> = (1..=12)
        .map(|i| {
            let minutes = i * 5;
            format!(
                "2030-01-01T{:02}:{:02}:00.000Z",
                9 + minutes / 60,
                minutes % 60
            )
        })
        .collect();
    assert_eq!(texts(&ticks), expected);
    let first = store
        .task_get(tick_task_id("five", ticks[0]))
        .await
        .expect("get")
        .expect("the first tick's task");
    assert_eq!(first.scheduled_at, ticks[0]);
    assert_eq!(first.payload, r#"{"report":"daily"}"#);
    assert_eq!(first.max_attempts, 2);
    let schedule = tasker.schedule("five").await.expect("schedule");
    assert_eq!(schedule.last_run_at, Some(instant("2030-01-01T10:00:00Z")));
    assert_eq!(schedule.next_run_at, Some(instant("2030-01-01T10:05:00Z")));
}

/// GIVEN `30 2 * * *` in New York WHEN a processor runs every 10 minutes across the
/// spring-forward and the fall-back days THEN no task on the day 02:30 does not exist, and
/// one on the day the clock repeats 01:00-02:00; `30 1 * * *` fires once on that day too.
async fn new_york_across_both_dst_changes(backend: &str) {
    let store = stores(backend, 1).await.remove(0);
    // 2030: clocks run forward on 10 March and back on 3 November. (The instants are in the
    // future: DynamoDB's create refuses a task stamped long before the write lands.)
    for (start, days) in [("2030-03-08T12:00:00Z", 4), ("2030-11-01T12:00:00Z", 4)] {
        let clock = Arc::new(ManualClock::new(instant(start)));
        let tasker = tasker(store.clone(), &clock);
        let suffix = &start[..7];
        for (name, cron) in [("half-two", "30 2 * * *"), ("half-one", "30 1 * * *")] {
            let name = format!("{name}-{suffix}");
            tasker
                .create_schedule(spec(&name, cron, "America/New_York", Missed::Skip))
                .await
                .expect("create");
        }
        for _ in 0..days * 24 * 6 {
            clock.advance(Duration::from_secs(600));
            tasker.fire_schedules().await.expect("fire");
        }
        for name in ["half-two", "half-one"] {
            tasker
                .delete_schedule(&format!("{name}-{suffix}"))
                .await
                .expect("delete");
        }
    }
    assert_eq!(
        texts(&ticks_of(&store, "half-two-2030-03").await),
        [
            "2030-03-09T07:30:00.000Z",
            "2030-03-11T06:30:00.000Z",
            "2030-03-12T06:30:00.000Z"
        ]
    );
    assert_eq!(
        texts(&ticks_of(&store, "half-two-2030-11").await),
        [
            "2030-11-02T06:30:00.000Z",
            "2030-11-03T07:30:00.000Z",
            "2030-11-04T07:30:00.000Z",
            "2030-11-05T07:30:00.000Z"
        ]
    );
    // 01:30 on 3 November happens twice (EDT, then EST): it fires at the first.
    assert_eq!(
        texts(&ticks_of(&store, "half-one-2030-11").await),
        [
            "2030-11-02T05:30:00.000Z",
            "2030-11-03T05:30:00.000Z",
            "2030-11-04T06:30:00.000Z",
            "2030-11-05T06:30:00.000Z"
        ]
    );
}

/// GIVEN hourly schedules with each policy WHEN no processor runs for three hours THEN
/// `latest` fires the most recent missed tick, `skip` none, `all` each one; every schedule
/// goes on from the next tick.
async fn three_hours_down_then_each_policy(backend: &str) {
    let store = stores(backend, 1).await.remove(0);
    let clock = Arc::new(ManualClock::new(instant("2030-01-01T08:30:00Z")));
    let tasker = tasker(store.clone(), &clock);
    for (name, missed) in [
        ("latest", Missed::Latest),
        ("skip", Missed::Skip),
        ("all", Missed::All),
    ] {
        tasker
            .create_schedule(spec(name, "0 * * * *", "UTC", missed))
            .await
            .expect("create");
    }
    // Down from 08:30 to 11:20: the 09:00, 10:00 and 11:00 ticks pass unseen.
    clock.advance(Duration::from_secs(170 * 60));
    let fired = tasker.fire_schedules().await.expect("fire");
    assert_eq!((fired.due, fired.created, fired.advanced), (3, 4, 3));
    assert_eq!(
        texts(&ticks_of(&store, "latest").await),
        ["2030-01-01T11:00:00.000Z"]
    );
    assert!(ticks_of(&store, "skip").await.is_empty());
    assert_eq!(
        texts(&ticks_of(&store, "all").await),
        [
            "2030-01-01T09:00:00.000Z",
            "2030-01-01T10:00:00.000Z",
            "2030-01-01T11:00:00.000Z"
        ]
    );
    // Back to normal: the 12:00 tick fires once for each, 30 s late (on time for `skip`).
    clock.advance(Duration::from_secs(40 * 60 + 30));
    tasker.fire_schedules().await.expect("fire");
    tasker.fire_schedules().await.expect("fire again");
    for name in ["latest", "skip", "all"] {
        let ticks = ticks_of(&store, name).await;
        assert_eq!(
            ticks.last().map(|t| t.to_text()),
            Some("2030-01-01T12:00:00.000Z".to_owned()),
            "{name}"
        );
        let schedule = tasker.schedule(name).await.expect("schedule");
        assert_eq!(schedule.next_run_at, Some(instant("2030-01-01T13:00:00Z")));
    }
    // `all` fires at most 100 missed ticks: the latest ones.
    tasker
        .create_schedule(spec("minutely", "* * * * *", "UTC", Missed::All))
        .await
        .expect("create");
    clock.advance(Duration::from_secs(180 * 60));
    tasker.fire_schedules().await.expect("fire");
    let ticks = ticks_of(&store, "minutely").await;
    assert_eq!(ticks.len(), 100);
    assert_eq!(ticks.last(), Some(&clock_now_minute(&clock)));
}

fn clock_now_minute(clock: &ManualClock) -> Timestamp {
    use tasker::Clock;
    let now = clock.now();
    now.minus(Duration::from_secs(
        u64::try_from(now.unix_seconds() % 60).unwrap_or(0),
    ))
}

/// GIVEN 50 schedules and 4 processors with their own store clients WHEN all four fire at
/// each of 30 ticks at once THEN every tick of every schedule has exactly one task.
async fn racing_processors_store_one_task_per_tick(backend: &str) {
    let stores = stores(backend, 4).await;
    let clock = Arc::new(ManualClock::new(instant("2030-01-01T00:00:30Z")));
    let taskers: Vec<Tasker<AnyStore>> = stores.iter().map(|s| tasker(s.clone(), &clock)).collect();
    let names: Vec<String> = (0..50).map(|i| format!("race-{i:02}")).collect();
    for name in &names {
        taskers[0]
            .create_schedule(spec(name, "* * * * *", "UTC", Missed::All))
            .await
            .expect("create");
    }
    let mut created = 0;
    let mut existing = 0;
    let mut lost = 0;
    for _ in 0..30 {
        clock.advance(Duration::from_secs(60));
        let fires = taskers.iter().map(|t| {
            let t = t.clone();
            tokio::spawn(async move { t.fire_schedules().await })
        });
        for fire in futures::future::join_all(fires).await {
            let summary = fire.expect("join").expect("fire");
            assert_eq!(summary.errors, 0, "{summary:?}");
            created += summary.created;
            existing += summary.existing;
            lost += summary.lost;
        }
    }
    assert_eq!(created, 50 * 30, "one task stored per tick");
    let expected: Vec<String> = (1..=30)
        .map(|m| format!("2030-01-01T00:{m:02}:00.000Z"))
        .collect();
    for name in &names {
        let ticks = ticks_of(&stores[1], name).await;
        assert_eq!(texts(&ticks), expected, "{name}");
    }
    // No other task either: every task in the table, listed (DynamoDB's counts of unfinished
    // tasks are bounded reads, not a walk), each with the id its tick derives. (One listing,
    // not a read per task: 1,500 reads took most of this test's minutes in CI.)
    let mut listed = 0;
    let mut after = None;
    loop {
        let page = stores[2]
            .task_list(ListPage {
                filter: &ListFilter::default(),
                after: after.as_ref(),
                limit: 100,
                now: Timestamp::MAX,
            })
            .await
            .expect("list");
        listed += page.tasks.len();
        for task in &page.tasks {
            let (Some(name), Some(tick)) = (&task.schedule_name, task.schedule_tick) else {
                panic!("a task of no schedule's tick: {task:?}");
            };
            assert_eq!(task.id, tick_task_id(name, tick), "{name} {tick}");
        }
        match page.next {
            Some(next) => after = Some(next),
            None => break,
        }
    }
    assert_eq!(listed, 50 * 30);
    eprintln!("{backend}: created {created}, found existing {existing}, lost advances {lost}");
}

/// GIVEN a processor that stored a tick's task and died before advancing the schedule WHEN
/// another processor runs THEN it finds the task (no duplicate), advances, and the next tick
/// fires normally (no gap).
async fn a_crash_between_the_two_writes(backend: &str) {
    let stores = stores(backend, 2).await;
    let clock = Arc::new(ManualClock::new(instant("2030-01-01T09:00:30Z")));
    let first = tasker(stores[0].clone(), &clock);
    let schedule = first
        .create_schedule(spec("crashy", "*/10 * * * *", "UTC", Missed::Latest))
        .await
        .expect("create");
    clock.advance(Duration::from_secs(10 * 60));
    use tasker::Clock;
    let now = clock.now();
    let tick = instant("2030-01-01T09:10:00Z");
    // The first write, then the crash: the schedule is never advanced by this processor.
    first
        .create_ticks(&schedule, &[tick], now)
        .await
        .expect("first write");
    drop(first);
    let second = tasker(stores[1].clone(), &clock);
    let fired = second.fire_schedules().await.expect("fire");
    assert_eq!((fired.created, fired.existing, fired.advanced), (0, 1, 1));
    clock.advance(Duration::from_secs(10 * 60));
    second.fire_schedules().await.expect("fire");
    assert_eq!(
        texts(&ticks_of(&stores[0], "crashy").await),
        ["2030-01-01T09:10:00.000Z", "2030-01-01T09:20:00.000Z"]
    );
    // A restart (a fresh process) at the same instant fires nothing new.
    let restarted = tasker(stores[0].clone(), &clock);
    let again = restarted.fire_schedules().await.expect("fire");
    assert_eq!((again.due, again.created), (0, 0));
}

/// GIVEN a paused schedule WHEN its ticks pass THEN nothing fires; resumed, it goes on from
/// the next tick; a trigger runs one tick now without moving it.
async fn pause_resume_and_trigger(backend: &str) {
    let store = stores(backend, 1).await.remove(0);
    let clock = Arc::new(ManualClock::new(instant("2030-01-01T09:00:30Z")));
    let tasker = tasker(store.clone(), &clock);
    tasker
        .create_schedule(spec("pausable", "* * * * *", "UTC", Missed::All))
        .await
        .expect("create");
    tasker.pause_schedule("pausable").await.expect("pause");
    clock.advance(Duration::from_secs(300));
    assert_eq!(tasker.fire_schedules().await.expect("fire").due, 0);
    let resumed = tasker.resume_schedule("pausable").await.expect("resume");
    assert_eq!(resumed.next_run_at, Some(instant("2030-01-01T09:06:00Z")));
    let triggered = tasker.trigger_schedule("pausable").await.expect("trigger");
    use tasker::Clock;
    assert_eq!(triggered.schedule_tick, Some(clock.now()));
    assert_eq!(
        tasker.schedule("pausable").await.expect("get").next_run_at,
        Some(instant("2030-01-01T09:06:00Z"))
    );
    clock.advance(Duration::from_secs(60));
    tasker.fire_schedules().await.expect("fire");
    let ticks: BTreeSet<String> = texts(&ticks_of(&store, "pausable").await)
        .into_iter()
        .collect();
    assert_eq!(
        ticks,
        BTreeSet::from([
            "2030-01-01T09:05:30.000Z".to_owned(),
            "2030-01-01T09:06:00.000Z".to_owned()
        ])
    );
}

/// GIVEN a pass that read a schedule WHEN the schedule is deleted and created again before the
/// pass advances it THEN the stale advance is refused (revisions are random per write), and
/// the new definition stands.
async fn a_stale_pass_cannot_overwrite_a_recreated_schedule(backend: &str) {
    use tasker::store::{Expect, ScheduleWrite};
    let store = stores(backend, 1).await.remove(0);
    let clock = Arc::new(ManualClock::new(instant("2030-01-01T09:00:30Z")));
    let tasker = tasker(store.clone(), &clock);
    let old = tasker
        .create_schedule(spec("reborn", "* * * * *", "UTC", Missed::Latest))
        .await
        .expect("create");
    tasker.delete_schedule("reborn").await.expect("delete");
    let new = tasker
        .create_schedule(spec("reborn", "0 * * * *", "UTC", Missed::Latest))
        .await
        .expect("create again");
    assert_ne!(old.revision, new.revision);
    let mut stale = old.clone();
    stale.last_run_at = Some(instant("2030-01-01T09:01:00Z"));
    stale.revision = tasker::schedule::fresh_revision();
    let written = store
        .schedule_put(&stale, Expect::Revision(old.revision))
        .await
        .expect("put");
    assert!(
        matches!(written, ScheduleWrite::Conflict(Some(_))),
        "{written:?}"
    );
    assert_eq!(
        tasker.schedule("reborn").await.expect("get").cron,
        "0 * * * *"
    );
}

/// GIVEN a schedule whose type one processor lacks WHEN it is due THEN that processor leaves it
/// due (and does not try again for a minute), and one that has the type fires it.
async fn a_processor_without_the_type_leaves_the_schedule_to_one_with_it(backend: &str) {
    let stores = stores(backend, 2).await;
    let clock = Arc::new(ManualClock::new(instant("2030-01-01T09:00:30Z")));
    let able = tasker(stores[0].clone(), &clock);
    let lacking = Tasker::with_clock(
        stores[1].clone(),
        Registry::new(),
        ProcessorSettings::default(),
        Arc::clone(&clock) as Arc<dyn tasker::Clock>,
    );
    able.create_schedule(spec("typed", "* * * * *", "UTC", Missed::Latest))
        .await
        .expect("create");
    clock.advance(Duration::from_secs(60));
    let first = lacking.fire_schedules().await.expect("fire");
    assert_eq!((first.due, first.errors, first.created), (1, 1, 0));
    let again = lacking.fire_schedules().await.expect("fire again");
    assert_eq!(again.due, 0, "held for a minute: {again:?}");
    let fired = able.fire_schedules().await.expect("fire");
    assert_eq!((fired.created, fired.advanced), (1, 1));
    assert_eq!(
        texts(&ticks_of(&stores[0], "typed").await),
        ["2030-01-01T09:01:00.000Z"]
    );
}

macro_rules! on_both_backends {
    ($($case:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $case() {
                    super::$case("sqlite").await;
                }
            )*
        }
        mod dynamodb {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $case() {
                    super::$case("dynamodb").await;
                }
            )*
        }
    };
}

on_both_backends!(
    every_five_minutes_across_an_hour,
    new_york_across_both_dst_changes,
    three_hours_down_then_each_policy,
    racing_processors_store_one_task_per_tick,
    a_crash_between_the_two_writes,
    pause_resume_and_trigger,
    a_stale_pass_cannot_overwrite_a_recreated_schedule,
    a_processor_without_the_type_leaves_the_schedule_to_one_with_it,
);

/// GIVEN 20 minutely schedules on DynamoDB Local behind the metering proxy WHEN one tick fires
/// and its tasks run THEN a tick costs its task's 4 write units plus 1 for the advance.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_tick_costs_its_task_plus_one_write_unit() {
    use tasker_tests::capacity::{CapacityProxy, WRITE_OPERATIONS};
    let proxy = CapacityProxy::start(&dynamo::endpoint()).await;
    let store = AnyStore::DynamoDb(dynamo::fresh_store_at(&proxy.endpoint).await);
    let clock = Arc::new(ManualClock::new(instant("2030-01-01T09:00:30Z")));
    let tasker = tasker(store.clone(), &clock);
    const SCHEDULES: usize = 20;
    for i in 0..SCHEDULES {
        tasker
            .create_schedule(spec(
                &format!("metered-{i}"),
                "* * * * *",
                "UTC",
                Missed::Latest,
            ))
            .await
            .expect("create");
    }
    // The first pass reads every schedule (the process's list); it is not per tick.
    clock.advance(Duration::from_secs(1));
    tasker.fire_schedules().await.expect("nothing due yet");
    proxy.take();
    clock.advance(Duration::from_secs(60));
    let fired = tasker.fire_schedules().await.expect("fire");
    assert_eq!(fired.created, SCHEDULES);
    let firing = proxy.take();
    let summary = tasker.process_queue(None).await.expect("run");
    assert_eq!(summary.outcomes.succeeded, SCHEDULES);
    let running = proxy.take();
    let writes = |ledger: &std::collections::BTreeMap<String, tasker_tests::capacity::Consumed>| {
        ledger
            .iter()
            .filter(|(op, _)| WRITE_OPERATIONS.contains(&op.as_str()))
            .map(|(_, c)| c.units())
            .sum::<f64>()
    };
    let reads = |ledger: &std::collections::BTreeMap<String, tasker_tests::capacity::Consumed>| {
        ledger
            .iter()
            .filter(|(op, _)| !WRITE_OPERATIONS.contains(&op.as_str()))
            .map(|(_, c)| c.units())
            .sum::<f64>()
    };
    // Running: the claim and the success, 1 each per tick; and per run, not per tick, the
    // write of its counts of finished tasks at its end, and if it lasted a second, one more
    // and its published look at the due queue (docs/dynamodb.md#counts-and-stats).
    let per_run = writes(&running) - 2.0 * SCHEDULES as f64;
    assert!(
        (1.0..=3.0).contains(&per_run),
        "{per_run} per run: {running:?}"
    );
    let per_tick = (writes(&firing) + writes(&running) - per_run) / SCHEDULES as f64;
    let task_create = firing.get("PutItem").map_or(0.0, |c| c.units());
    eprintln!(
        "per tick: {per_tick:.2} write units (firing {:.2}, running {:.2}); reads: firing {:.2}, running {:.2}; {firing:?}",
        writes(&firing) / SCHEDULES as f64,
        writes(&running) / SCHEDULES as f64,
        reads(&firing) / SCHEDULES as f64,
        reads(&running) / SCHEDULES as f64,
    );
    // Firing: the task's PutItem (1 + its due-queue entry 1) and the schedule's PutItem (1,
    // and no index write: its key never changes).
    assert_eq!(task_create / SCHEDULES as f64, 3.0, "{firing:?}");
    assert_eq!(per_tick, 5.0);
}
