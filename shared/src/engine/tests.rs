//! The processor run, clock-driven where it can be and with real time for the deadline.

mod clock_driven {
    //! Clock-driven: time is a `ManualClock`, so schedules, backoff and leases are checked
    //! without sleeping.

    use std::sync::Arc;
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::time::{Duration, Instant};

    use super::super::*;
    use crate::clock::ManualClock;
    use crate::handlers::{TaskError, TypeSettings};
    use crate::retry::RetryPolicy;
    use crate::store::{Claim, SqliteStore};
    use crate::task::{NewTask, TaskId, TaskStatus};

    fn start() -> Timestamp {
        "2030-01-01T00:00:00Z"
            .parse()
            .unwrap_or_else(|_| Timestamp::now_utc())
    }

    fn tasker(registry: Registry) -> (Tasker<SqliteStore>, Arc<ManualClock>) {
        let clock = Arc::new(ManualClock::new(start()));
        let store = SqliteStore::in_memory().expect("sqlite");
        let settings = ProcessorSettings {
            time_margin: Duration::from_millis(100),
            ..ProcessorSettings::default()
        };
        let tasker = Tasker::with_clock(store, registry, settings, clock.clone());
        (tasker, clock)
    }

    fn counting(
        task_type: &str,
        settings: TypeSettings,
        fail: Option<TaskError>,
    ) -> (Registry, Arc<AtomicU32>) {
        let runs = Arc::new(AtomicU32::new(0));
        let counter = Arc::clone(&runs);
        let mut registry = Registry::new();
        registry
            .register_with(task_type, settings, move |_| {
                counter.fetch_add(1, Ordering::SeqCst);
                let fail = fail.clone();
                async move { fail.map_or(Ok(()), Err) }
            })
            .expect("register");
        (registry, runs)
    }

    async fn run(tasker: &Tasker<SqliteStore>) -> RunSummary {
        tasker.process_queue(None).await.expect("run")
    }

    async fn create(tasker: &Tasker<SqliteStore>, new: NewTask) -> TaskId {
        tasker.create(new).await.expect("create").into_task().id
    }

    #[tokio::test]
    async fn a_scheduled_task_waits_for_its_time() {
        let (registry, runs) = counting("t", TypeSettings::default(), None);
        let (tasker, clock) = tasker(registry);
        let mut new = NewTask::new("t", "{}");
        new.scheduled_at = Some(start().plus(Duration::from_secs(60)));
        let id = create(&tasker, new).await;

        assert_eq!(run(&tasker).await.claimed, 0);
        clock.advance(Duration::from_millis(59_999));
        assert_eq!(run(&tasker).await.claimed, 0);
        clock.advance(Duration::from_millis(1));
        assert_eq!(run(&tasker).await.outcomes.succeeded, 1);
        assert_eq!(runs.load(Ordering::SeqCst), 1);
        let task = tasker.get(id).await.expect("get");
        assert_eq!(task.status, TaskStatus::Succeeded);
    }

    #[tokio::test]
    async fn failures_back_off_by_the_policy_then_fail() {
        let settings = TypeSettings {
            max_attempts: 4,
            retry: RetryPolicy {
                initial_interval_ms: 10_000,
                factor: 3.0,
                max_interval_ms: 60_000,
                min_interval_ms: 0,
            },
            ..TypeSettings::default()
        };
        let failure = Some(TaskError::Retryable("HTTP 503".into()));
        let (registry, runs) = counting("t", settings, failure);
        let (tasker, clock) = tasker(registry);
        // The jitter draw pinned to one half: each wait is half its ceiling.
        let tasker = tasker.with_jitter(|| 0.5);
        let id = create(&tasker, NewTask::new("t", "{}")).await;

        // Ceilings 10 s, 30 s, then capped at 60 s: waits of 5 s, 15 s, 30 s.
        for expected_wait in [5, 15, 30] {
            assert_eq!(run(&tasker).await.outcomes.retried, 1);
            let task = tasker.get(id).await.expect("get");
            let now = clock.now();
            assert_eq!(
                task.scheduled_at,
                now.plus(Duration::from_secs(expected_wait))
            );
            assert_eq!(task.last_error.as_deref(), Some("HTTP 503"));
            assert_eq!(run(&tasker).await.claimed, 0, "not again before its time");
            clock.advance(Duration::from_millis(expected_wait * 1000 - 1));
            assert_eq!(run(&tasker).await.claimed, 0, "not 1 ms early either");
            clock.advance(Duration::from_millis(1));
        }

        // Attempt 4 is the last.
        assert_eq!(run(&tasker).await.outcomes.failed, 1);
        let task = tasker.get(id).await.expect("get");
        assert_eq!((task.status, task.attempts), (TaskStatus::Failed, 4));
        assert_eq!(runs.load(Ordering::SeqCst), 4);
        clock.advance(Duration::from_secs(3600));
        assert_eq!(run(&tasker).await.claimed, 0);
    }

    #[tokio::test]
    async fn full_jitter_of_zero_still_waits_for_the_next_run() {
        let failure = Some(TaskError::Retryable("boom".into()));
        let (registry, runs) = counting("t", TypeSettings::default(), failure);
        let (tasker, clock) = tasker(registry);
        let tasker = tasker.with_jitter(|| 0.0);
        let id = create(&tasker, NewTask::new("t", "{}")).await;
        assert_eq!(run(&tasker).await.outcomes.retried, 1);
        assert_eq!(runs.load(Ordering::SeqCst), 1, "not rerun within the run");
        let task = tasker.get(id).await.expect("get");
        assert_eq!(
            task.scheduled_at,
            clock.now().plus(Duration::from_millis(1))
        );
    }

    /// A failure that names its own wait (a receiver's `Retry-After`) is retried after the
    /// longer of that wait and the backoff, at most a day later; the last attempt still fails.
    #[tokio::test]
    async fn a_named_wait_is_kept_when_longer_than_the_backoff() {
        let settings = TypeSettings {
            max_attempts: 4,
            retry: RetryPolicy {
                initial_interval_ms: 20_000,
                factor: 1.0,
                max_interval_ms: 20_000,
                min_interval_ms: 0,
            },
            ..TypeSettings::default()
        };
        // Taken from the end: 90 s, 5 s, a week, then 1 s for the last attempt.
        let waits = Arc::new(std::sync::Mutex::new(vec![
            Duration::from_secs(1),
            Duration::from_secs(7 * 24 * 3600),
            Duration::from_secs(5),
            Duration::from_secs(90),
        ]));
        let mut registry = Registry::new();
        registry
            .register_with("t", settings, move |_| {
                let after = waits
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .pop()
                    .unwrap_or_default();
                async move {
                    Err(TaskError::RetryAfter {
                        error: "HTTP 429".into(),
                        after,
                    })
                }
            })
            .expect("register");
        let (tasker, clock) = tasker(registry);
        // Backoff pinned to 10 s (half the 20 s ceiling).
        let tasker = tasker.with_jitter(|| 0.5);
        let id = create(&tasker, NewTask::new("t", "{}")).await;
        // Asked 90 s: 90 s. Asked 5 s: the 10 s backoff. Asked a week: a day.
        for expected in [90, 10, 24 * 3600] {
            assert_eq!(run(&tasker).await.outcomes.retried, 1);
            let task = tasker.get(id).await.expect("get");
            assert_eq!(
                task.scheduled_at,
                clock.now().plus(Duration::from_secs(expected))
            );
            assert_eq!(task.last_error.as_deref(), Some("HTTP 429"));
            clock.advance(Duration::from_millis(expected * 1000 - 1));
            assert_eq!(run(&tasker).await.claimed, 0, "not 1 ms early");
            clock.advance(Duration::from_millis(1));
        }
        assert_eq!(
            run(&tasker).await.outcomes.failed,
            1,
            "the last attempt fails"
        );
        let task = tasker.get(id).await.expect("get");
        assert_eq!((task.status, task.attempts), (TaskStatus::Failed, 4));
    }

    #[tokio::test]
    async fn a_permanent_error_fails_at_once() {
        let failure = Some(TaskError::Permanent("bad payload".into()));
        let (registry, _) = counting("t", TypeSettings::default(), failure);
        let (tasker, _) = tasker(registry);
        let id = create(&tasker, NewTask::new("t", "{}")).await;
        assert_eq!(run(&tasker).await.outcomes.failed, 1);
        let task = tasker.get(id).await.expect("get");
        assert_eq!((task.status, task.attempts), (TaskStatus::Failed, 1));
    }

    #[tokio::test]
    async fn an_expired_lease_is_recovered_by_a_later_run() {
        let (registry, runs) = counting("t", TypeSettings::default(), None);
        let (tasker, clock) = tasker(registry);
        let id = create(&tasker, NewTask::new("t", "{}")).await;
        // A processor claims it and dies.
        let now = clock.now();
        let claimed = tasker
            .store()
            .task_claim(Claim::due(now, 10, &Leases::fixed(Duration::from_secs(60))))
            .await
            .expect("claim");
        assert_eq!(claimed.len(), 1);

        assert_eq!(
            run(&tasker).await.claimed,
            0,
            "leased to the dead processor"
        );
        clock.advance(Duration::from_secs(60));
        assert_eq!(run(&tasker).await.outcomes.succeeded, 1);
        let task = tasker.get(id).await.expect("get");
        assert_eq!((task.status, task.attempts), (TaskStatus::Succeeded, 2));
        assert_eq!(runs.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_type_without_handler_fails_its_attempts_without_looping() {
        let (registry, _) = counting("known", TypeSettings::default(), None);
        let (tasker, clock) = tasker(registry);
        let orphan = Task::from_new(NewTask::new("retired.type", "{}"), clock.now());
        tasker
            .store()
            .task_create(orphan.clone())
            .await
            .expect("create");

        let summary = run(&tasker).await;
        assert_eq!(
            (summary.claimed, summary.outcomes.retried),
            (1, 1),
            "one attempt per run, no tight loop"
        );
        for _ in 0..2 {
            clock.advance(Duration::from_secs(3600));
            run(&tasker).await;
        }
        let task = tasker.get(orphan.id).await.expect("get");
        assert_eq!(task.status, TaskStatus::Failed);
        let error = task.last_error.unwrap_or_default();
        assert!(error.contains("no handler is registered"), "{error}");
    }

    #[tokio::test]
    async fn a_panic_or_a_timeout_fails_only_its_own_attempt() {
        let mut registry = Registry::new();
        registry
            .register("ok", |_| async { Ok(()) })
            .expect("register");
        registry
            .register("panics", |_| async { panic!("handler bug") })
            .expect("register");
        let slow = TypeSettings {
            timeout: Duration::from_millis(50),
            ..TypeSettings::default()
        };
        registry
            .register_with("slow", slow, |_| async {
                tokio::time::sleep(Duration::from_secs(30)).await;
                Ok(())
            })
            .expect("register");
        let (tasker, _) = tasker(registry);
        let mut ids = Vec::new();
        for task_type in ["ok", "panics", "slow"] {
            ids.push(create(&tasker, NewTask::new(task_type, "{}")).await);
        }
        let summary = run(&tasker).await;
        assert_eq!(
            (
                summary.claimed,
                summary.outcomes.succeeded,
                summary.outcomes.retried
            ),
            (3, 1, 2)
        );
        let panicked = tasker.get(ids[1]).await.expect("get");
        let error = panicked.last_error.unwrap_or_default();
        assert!(error.contains("handler panicked: handler bug"), "{error}");
        let timed_out = tasker.get(ids[2]).await.expect("get");
        let error = timed_out.last_error.unwrap_or_default();
        assert!(error.contains("timed out after 50ms"), "{error}");
    }

    #[tokio::test]
    async fn a_run_without_time_left_claims_nothing() {
        let (registry, runs) = counting("t", TypeSettings::default(), None);
        let (tasker, _) = tasker(registry);
        create(&tasker, NewTask::new("t", "{}")).await;
        let summary = tasker
            .process_queue(Some(Instant::now()))
            .await
            .expect("run");
        assert_eq!(summary.claimed, 0);
        assert_eq!(runs.load(Ordering::SeqCst), 0);
    }
}

mod deadline {
    //! The deadline with real time: tasks that cannot start in time are left unstarted.

    use std::sync::Arc;
    use std::sync::atomic::{AtomicU32, Ordering};

    use std::time::{Duration, Instant};

    use super::super::*;
    use crate::store::SqliteStore;
    use crate::task::{NewTask, TaskStatus};

    // Three deadlines in one scenario, each with its own run over the same tasks: longer than
    // most functions, and clearer whole.
    #[tokio::test]
    async fn tasks_that_cannot_start_before_the_deadline_are_left_unstarted() {
        let runs = Arc::new(AtomicU32::new(0));
        let counter = Arc::clone(&runs);
        let mut registry = Registry::new();
        registry
            .register("slow", move |_| {
                counter.fetch_add(1, Ordering::SeqCst);
                async {
                    tokio::time::sleep(Duration::from_millis(300)).await;
                    Ok(())
                }
            })
            .expect("register");
        let settings = ProcessorSettings {
            concurrency: 1,
            ..ProcessorSettings::default()
        };
        let tasker = Tasker::new(
            SqliteStore::in_memory().expect("sqlite"),
            registry,
            settings,
        );
        let mut ids = Vec::new();
        for _ in 0..6 {
            let created = tasker
                .create(NewTask::new("slow", "{}"))
                .await
                .expect("create");
            ids.push(created.into_task().id);
        }
        // A 2 s invocation: the margins shrink to a quarter of it (0.5 s), so tasks run one
        // after another until an attempt and its outcome no longer fit (1 s); the rest are
        // not claimed, or given back if a claim ends too late.
        let deadline = Instant::now() + Duration::from_secs(2);
        let summary = tasker.process_queue(Some(deadline)).await.expect("run");
        assert_eq!(
            summary.claimed,
            summary.outcomes.succeeded + summary.outcomes.released,
            "{summary:?}"
        );
        assert!(
            summary.outcomes.succeeded >= 2,
            "short invocations still run tasks: {summary:?}"
        );
        assert!(
            summary.outcomes.succeeded < 6,
            "the deadline stops claims: {summary:?}"
        );
        assert_eq!(
            runs.load(Ordering::SeqCst) as usize,
            summary.outcomes.succeeded
        );
        for id in ids {
            let task = tasker.get(id).await.expect("get");
            match task.status {
                TaskStatus::Succeeded => assert_eq!(task.attempts, 1),
                TaskStatus::Pending => assert_eq!(task.attempts, 0, "released uncounted"),
                other => panic!("unexpected status {other}"),
            }
        }
    }
}
