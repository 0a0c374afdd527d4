//! One home for the loops a process runs, as Oban's plugins and River's maintenance services
//! are: which services each dispatch mode runs ([`services`]), each on the one periodic
//! helper ([`every`]), for a process that runs until stopped ([`serve`]: `tasker serve`) or
//! for one invocation ([`invoke`]: the processor Lambda, `tasker process`, `tasker move`).
//! SQS mode's workers read the queue with [`receive`].

mod periodic;
#[cfg(feature = "sqs")]
pub mod receive;

pub use periodic::{Cadence, Stop, Stopper, every, stop_signal};

use std::future::Future;
use std::pin::Pin;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::config::Dispatch;
use crate::engine::{FireSummary, MoveSummary, PollSettings, RunSummary, Tasker, TaskerError};
use crate::report::Report;
use crate::store::Store;

/// What a process runs beside serving requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Service {
    /// Claims due tasks and runs their attempts, continuously (poll mode).
    Dispatch,
    /// Sends a message for each task falling due within SQS's longest delay (SQS mode).
    Move,
    /// Sends again what this process's sends could not, once their wait is over (SQS mode).
    Resend,
    /// Fires the due schedules' ticks.
    Schedules,
    /// Writes what the store keeps for a while (DynamoDB's counts of finished tasks, a
    /// processor's look at the due queue).
    Counts,
    /// Deletes finished tasks past the retention and sweeps below the due queue's watermarks.
    Cleanup,
}

/// How often `tasker serve` runs the mover in SQS mode (as the template schedules the
/// processor).
pub const MOVE_EVERY: Duration = Duration::from_secs(60);
/// How often `tasker serve` looks for failed sends to try again (each waits its own backoff).
pub const RESEND_EVERY: Duration = Duration::from_secs(1);
/// How often `tasker serve` cleans up (the first time at start).
pub const CLEANUP_EVERY: Duration = Duration::from_secs(24 * 3600);
/// How often the store is offered to write what it keeps; it writes only when it is time.
pub const COUNTS_EVERY: Duration = Duration::from_secs(1);
/// How long before an invocation's deadline schedules stop firing.
pub const FIRE_MARGIN: Duration = Duration::from_secs(10);

/// The services each dispatch mode runs, its main one first: poll mode claims and runs due
/// tasks; SQS mode moves them onto the queue, and the workers run them.
pub fn services(dispatch: Dispatch) -> &'static [Service] {
    match dispatch {
        Dispatch::Poll => &[
            Service::Dispatch,
            Service::Schedules,
            Service::Counts,
            Service::Cleanup,
        ],
        Dispatch::Sqs => &[
            Service::Move,
            Service::Resend,
            Service::Schedules,
            Service::Counts,
            Service::Cleanup,
        ],
    }
}

impl Service {
    /// How often it runs in a process that runs until stopped; `None` for the dispatch loop,
    /// which runs all along.
    pub fn cadence(self) -> Option<Cadence> {
        match self {
            Self::Dispatch => None,
            Self::Move => Some(Cadence::Every(MOVE_EVERY)),
            Self::Resend => Some(Cadence::Every(RESEND_EVERY)),
            Self::Schedules => Some(Cadence::WholeSeconds),
            Self::Counts => Some(Cadence::Every(COUNTS_EVERY)),
            Self::Cleanup => Some(Cadence::Every(CLEANUP_EVERY)),
        }
    }
}

/// The dispatch mode `tasker` runs in: SQS mode when it sends to a queue.
pub fn mode_of<S>(tasker: &Tasker<S>) -> Dispatch {
    if tasker.pushes() {
        Dispatch::Sqs
    } else {
        Dispatch::Poll
    }
}

/// What a long-running process does besides its own work.
#[derive(Debug, Clone, Copy)]
pub struct ServeSettings {
    /// How often the dispatch loop looks for due tasks it was not told of.
    pub interval: Duration,
    /// What a cleanup does.
    pub cleanup: CleanupSettings,
}

/// What a cleanup does.
#[derive(Debug, Clone, Copy)]
pub struct CleanupSettings {
    /// Finished tasks older than this are deleted.
    pub age: Duration,
    /// Entries the sweep reads at most.
    pub sweep_entries: u64,
}

type Running<'a> = Pin<Box<dyn Future<Output = ()> + Send + 'a>>;

/// Runs every service of `tasker`'s dispatch mode until `stop`: the dispatch loop (or the
/// mover every minute), schedules every second, the store's counts every second, and cleanup
/// at start and then daily. Returns once each has finished what it held (attempts in flight
/// recorded, counts written).
pub async fn serve<S: Store>(tasker: &Tasker<S>, settings: ServeSettings, stop: Stop) {
    let running: Vec<Running<'_>> = services(mode_of(tasker))
        .iter()
        .map(|service| run_until(tasker, *service, settings, stop.clone()))
        .collect();
    futures::future::join_all(running).await;
}

/// One service of a long-running process, until `stop`.
fn run_until<S: Store>(
    tasker: &Tasker<S>,
    service: Service,
    settings: ServeSettings,
    stop: Stop,
) -> Running<'_> {
    let Some(cadence) = service.cadence() else {
        return Box::pin(async move {
            tasker.serve_queue(settings.interval, stop.wait()).await;
        });
    };
    Box::pin(async move {
        every(cadence, stop.wait(), || {
            pass(tasker, service, settings.cleanup)
        })
        .await;
        if service == Service::Counts {
            // What is left, before the process goes.
            tasker.store().queue_flush(tasker.now(), true).await;
        }
    })
}

/// One pass of a periodic service; its failure is logged, and the next pass tries again.
async fn pass<S: Store>(tasker: &Tasker<S>, service: Service, cleanup: CleanupSettings) {
    let failed = match service {
        Service::Dispatch => None,
        Service::Move => tasker.move_due().await.err(),
        Service::Resend => {
            tasker.resend().await;
            None
        }
        Service::Schedules => tasker.fire_schedules().await.err(),
        Service::Counts => {
            tasker.store().queue_flush(tasker.now(), false).await;
            None
        }
        Service::Cleanup => tasker
            .cleanup(cleanup.age, cleanup.sweep_entries)
            .await
            .err(),
    };
    if let Some(err) = failed {
        tracing::error!(service = ?service, error = %Report(&err), "a service's pass failed; it runs again on its cadence");
    }
}

/// How long one invocation runs.
#[derive(Debug, Clone, Copy, Default)]
pub struct Invocation {
    /// When it must be done (a Lambda invocation's deadline); `None`: bounded by
    /// `TASKER_MAX_RUN` (a run) or the poll window.
    pub deadline: Option<Instant>,
    /// Poll mode's window: zero runs the queue once.
    pub poll: PollSettings,
}

/// What one invocation did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct InvocationSummary {
    /// The dispatch's counts (none in SQS mode: the workers run the tasks).
    pub run: RunSummary,
    /// The mover's counts, in SQS mode.
    pub moved: Option<MoveSummary>,
    /// The schedules' ticks fired.
    pub fired: FireSummary,
}

/// One invocation of `dispatch` mode's main service: the due schedules fire first (so their
/// tasks due now run in it), then poll mode runs the queue (once, or through its window),
/// SQS mode moves tasks onto the queue once; schedules and the store's counts go on beside it
/// until it ends, schedules stopping [`FIRE_MARGIN`] before the deadline. Fails only when
/// the main service fails at its first step (the invocation then reports the outage).
pub async fn invoke<S: Store>(
    tasker: &Tasker<S>,
    dispatch: Dispatch,
    invocation: Invocation,
) -> Result<InvocationSummary, TaskerError> {
    let mut summary = InvocationSummary {
        fired: fire(tasker).await,
        ..InvocationSummary::default()
    };
    if dispatch == Dispatch::Sqs {
        summary.moved = Some(tasker.move_due().await?);
        return Ok(summary);
    }
    let (stopper, stop) = stop_signal();
    let dispatching = async {
        let run = tasker
            .poll_queue(invocation.deadline, invocation.poll)
            .await;
        stopper.stop();
        run
    };
    let fire_end = invocation.deadline.map(|deadline| {
        deadline
            .checked_sub(FIRE_MARGIN)
            .unwrap_or_else(Instant::now)
    });
    let firing = every(
        Cadence::WholeSeconds,
        until_either(stop.wait(), fire_end),
        || async {
            fire(tasker).await;
        },
    );
    let counting = every(Cadence::Every(COUNTS_EVERY), stop.wait(), || {
        tasker.store().queue_flush(tasker.now(), false)
    });
    let (run, (), ()) = tokio::join!(dispatching, firing, counting);
    summary.run = run?;
    Ok(summary)
}

/// Fires the due schedules once; a failure is logged (they stay due for the next pass).
async fn fire<S: Store>(tasker: &Tasker<S>) -> FireSummary {
    tasker.fire_schedules().await.unwrap_or_else(|err| {
        tracing::warn!(error = %Report(&err), "could not fire the due schedules");
        FireSummary::default()
    })
}

/// Completes with `stop`, or at `end` if that comes first.
async fn until_either(stop: impl Future<Output = ()>, end: Option<Instant>) {
    let end = async {
        match end {
            Some(end) => tokio::time::sleep_until(end.into()).await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        () = stop => {}
        () = end => {}
    }
}
