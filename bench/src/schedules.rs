//! Schedules in poll mode: fire lag (tick instant → the tick's task created) while one
//! invocation polls the queue and fires the due schedules every second, as the processor
//! Lambda and `tasker serve` do; and, on DynamoDB through the metering proxy, the capacity
//! units of a tick from firing to its task's success.

use std::time::Duration;
use tasker::store::ListPage;

use indicatif::ProgressBar;
use tasker::runtime::{self, Invocation};
use tasker::schedule::{Missed, ScheduleSpec};
use tasker::store::ListFilter;
use tasker::{AnyStore, Dispatch, PollSettings, ProcessorSettings, Store, Tasker, Timestamp};
use tasker_tests::capacity::CapacityProxy;

use crate::phases::{self, percentiles};
use crate::results::{FireLag, sums};

/// `schedules` schedules firing every second for `seconds`, on `store` (whose capacity
/// `proxy` meters, on DynamoDB).
pub async fn fire_lag(
    store: AnyStore,
    proxy: Option<&CapacityProxy>,
    schedules: usize,
    seconds: u64,
) -> FireLag {
    let tasker = Tasker::new(
        store.clone(),
        phases::noop_registry(ProgressBar::hidden()),
        ProcessorSettings::default(),
    );
    let names: Vec<String> = (0..schedules).map(|i| format!("lag-{i:03}")).collect();
    for name in &names {
        tasker
            .create_schedule(ScheduleSpec {
                name: name.clone(),
                cron: "* * * * * *".to_owned(),
                timezone: "UTC".to_owned(),
                task_type: "noop".to_owned(),
                payload: "{}".to_owned(),
                max_attempts: None,
                missed: Missed::Skip,
                paused: false,
            })
            .await
            .expect("create a schedule");
    }
    // The first pass reads the schedules into the process's list: not a tick's cost.
    tasker.fire_schedules().await.expect("first pass");
    if let Some(proxy) = proxy {
        proxy.take();
    }
    let window = Duration::from_secs(seconds);
    let poll = PollSettings {
        window,
        interval: Duration::from_secs(1),
    };
    // A processor's poll window: schedules fire every second beside the dispatch.
    let invocation = Invocation {
        deadline: None,
        poll,
    };
    runtime::invoke(&tasker, Dispatch::Poll, invocation)
        .await
        .expect("poll window");
    // Let the last ticks' tasks finish, so each tick's units include its run.
    tasker.process_queue(None).await.expect("a last run");
    let consumed = proxy.map(CapacityProxy::take);
    for name in &names {
        tasker.pause_schedule(name).await.expect("pause");
    }
    let mut lags = Vec::new();
    for name in &names {
        let filter = ListFilter {
            schedule: Some(name.clone()),
            ..ListFilter::default()
        };
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
                .expect("list a schedule's tasks");
            for task in &page.tasks {
                let tick = task.schedule_tick.expect("a tick");
                lags.push(task.created_at.since(tick).as_secs_f64() * 1000.0);
            }
            match page.next {
                Some(next) => after = Some(next),
                None => break,
            }
        }
    }
    let ticks = lags.len();
    let (p50_ms, p99_ms, max_ms) = percentiles(lags);
    let per_tick = |units: f64| units / ticks.max(1) as f64;
    let sums = consumed.as_ref().map(sums);
    FireLag {
        schedules,
        seconds,
        ticks,
        p50_ms,
        p99_ms,
        max_ms,
        write_units_per_tick: sums.as_ref().map(|s| per_tick(s.write_units)),
        read_units_per_tick: sums.as_ref().map(|s| per_tick(s.read_units)),
    }
}
