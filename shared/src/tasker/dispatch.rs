//! Continuous dispatch: up to `concurrency` attempts in flight, and more claimed as slots free
//! up, so a slow task holds one slot and never the tasks behind it. One loop serves a single
//! run, a poll window and `tasker serve`'s whole life.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::time::{Duration, Instant};

use futures::StreamExt;
use futures::stream::FuturesUnordered;

use super::attempt::{Claimed, Outcome, RunLimits};
use super::refill::Refill;
use super::{PollSettings, RunSummary, Tasker, TaskerError};
use crate::report::Report;
use crate::store::{FlowControl, StoreError, TaskQueue};
use crate::task::Task;

/// The longest a busy period goes unlogged.
const PERIOD_LOG_EVERY: Duration = Duration::from_secs(60);
/// How often the loop offers the store to write what it keeps for a while (see
/// [`TaskQueue::flush`]), beside claims and attempts, never in their way.
const FLUSH_CHECK_EVERY: Duration = Duration::from_secs(1);

/// How long a dispatch goes on claiming.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Span {
    /// Until a claim finds nothing due while nothing runs: one run.
    UntilIdle,
    /// Until this instant: a poll window.
    Until(Instant),
    /// Until the stop signal: `tasker serve`.
    UntilStopped,
}

impl Span {
    /// True while this span still claims at `now`.
    fn claims_at(self, now: Instant) -> bool {
        self.end().is_none_or(|end| now < end)
    }

    /// When it stops claiming on its own, if ever.
    fn end(self) -> Option<Instant> {
        match self {
            Self::Until(end) => Some(end),
            Self::UntilIdle | Self::UntilStopped => None,
        }
    }
}

/// A claim in flight: when it started (its leases count from then) and its answer.
/// And whether its gate held a capped type back: tasks of it may still be due.
type Claiming<'a> = Pin<Box<dyn Future<Output = ClaimAnswer> + Send + 'a>>;
type ClaimAnswer = (Instant, usize, bool, Result<Vec<Task>, StoreError>);

impl<S: TaskQueue + FlowControl> Tasker<S> {
    /// One run: keeps up to `concurrency` attempts in flight, claiming due tasks (including
    /// tasks that fall due during the run) as slots free up, until a claim finds nothing due
    /// while nothing runs, or `deadline` (capped at `max_run` from now) leaves less than the
    /// time margin. Fails only when its first claim fails.
    pub async fn process_queue(
        &self,
        deadline: Option<Instant>,
    ) -> Result<RunSummary, TaskerError> {
        let cap = Instant::now() + self.settings.max_run;
        let deadline = deadline.map_or(cap, |d| d.min(cap));
        let interval = PollSettings::default().interval;
        self.dispatch(
            Span::UntilIdle,
            Some(deadline),
            interval,
            std::future::pending(),
        )
        .await
    }

    /// Poll mode: dispatches for `poll.window` (or until `deadline` leaves less than the time
    /// margin), looking for newly due tasks every `poll.interval` while slots are free; then
    /// waits for the attempts in flight. A zero window is one [`Tasker::process_queue`]. Only a
    /// failure of the first claim fails the call; later ones are counted as errors and
    /// polling goes on, since the store may recover within the window.
    pub async fn poll_queue(
        &self,
        deadline: Option<Instant>,
        poll: PollSettings,
    ) -> Result<RunSummary, TaskerError> {
        if poll.window.is_zero() {
            return self.process_queue(deadline).await;
        }
        let window_end = Instant::now() + poll.window;
        let summary = self
            .dispatch(
                Span::Until(window_end),
                deadline,
                poll.interval,
                std::future::pending(),
            )
            .await?;
        tracing::info!(
            claimed = summary.claimed,
            succeeded = summary.succeeded,
            errors = summary.errors,
            duration_ms = summary.duration_ms,
            "poll window finished"
        );
        Ok(summary)
    }

    /// `tasker serve`: dispatches until `stop` completes, then waits for the attempts in
    /// flight. A task created through this Tasker due now is claimed at once when a slot is
    /// free; others are looked for every `interval`. Store failures are logged and counted,
    /// never fatal: the loop goes on when the store recovers.
    pub async fn serve_queue(
        &self,
        interval: Duration,
        stop: impl Future<Output = ()> + Send,
    ) -> RunSummary {
        match self
            .dispatch(Span::UntilStopped, None, interval, stop)
            .await
        {
            Ok(summary) => summary,
            // Not reached: this span never fails; counted rather than lost if it ever did.
            Err(err) => {
                tracing::error!(error = %Report(&err), "the processor loop failed");
                RunSummary {
                    errors: 1,
                    ..RunSummary::default()
                }
            }
        }
    }

    async fn dispatch(
        &self,
        span: Span,
        deadline: Option<Instant>,
        interval: Duration,
        stop: impl Future<Output = ()> + Send,
    ) -> Result<RunSummary, TaskerError> {
        let started = Instant::now();
        let limits = RunLimits::new(started, deadline, &self.settings);
        let interval = interval.max(Duration::from_millis(10));
        let slots = self.settings.concurrency.max(1);
        let batch = self.settings.batch_size.max(1);
        let mut refill = Refill::new(slots, batch, interval, span == Span::UntilIdle);
        let mut running = FuturesUnordered::new();
        // Attempts in flight per type, for the types' concurrency caps.
        let mut by_type: HashMap<String, usize> = HashMap::new();
        let mut claiming: Option<Claiming<'_>> = None;
        let mut asked = 0;
        let mut stopped = false;
        // A task was given back unstarted: the run has no time for more.
        let mut out_of_time = false;
        let mut claims = 0_u64;
        let mut total = RunSummary::default();
        let mut period = Period::new();
        let mut flushing: Option<Pin<Box<dyn Future<Output = ()> + Send + '_>>> = None;
        let mut flush_checked = started;
        if !limits.may_claim() {
            tracing::warn!("too little time left to start any task");
        }
        let stop = std::pin::pin!(stop);
        let mut stop = stop;
        loop {
            let now = Instant::now();
            if flushing.is_none() && now.duration_since(flush_checked) >= FLUSH_CHECK_EVERY {
                flush_checked = now;
                flushing = Some(Box::pin(self.store.flush(self.clock.now(), false)));
            }
            let open = !stopped && !out_of_time && limits.may_claim() && span.claims_at(now);
            let free = slots.saturating_sub(running.len() + asked);
            let next_claim = refill
                .next_claim(now, free, running.len())
                .filter(|_| open && claiming.is_none());
            if next_claim.is_some_and(|at| at <= now) {
                let want = free.min(batch);
                claiming = Some(self.claim(want, by_type.clone()));
                refill.claiming(now);
                asked = want;
                continue;
            }
            if claiming.is_none() && running.is_empty() {
                let idle = refill.is_drained() || !open;
                if idle {
                    period.finish(&mut total);
                }
                if !open || (span == Span::UntilIdle && refill.found_nothing()) {
                    break;
                }
            }
            // Wake up to claim for free slots, or to notice that claims must stop.
            let timer = [next_claim, span.end(), limits.last_claim()]
                .into_iter()
                .flatten()
                .min()
                .filter(|_| open);
            tokio::select! {
                Some((task_type, outcome)) = running.next(), if !running.is_empty() => {
                    period.summary.count(outcome);
                    if let Some(busy) = by_type.get_mut(&task_type) {
                        *busy = busy.saturating_sub(1);
                    }
                    // Under steady load the queue is never idle: log at least once a minute.
                    if period.started.is_some_and(|at| at.elapsed() >= PERIOD_LOG_EVERY) {
                        period.finish(&mut total);
                    }
                    out_of_time |= outcome == Outcome::ReleasedOutOfTime;
                    refill.attempt_ended(Instant::now());
                }
                (claim_started, want, held, result) = poll_claim(&mut claiming), if claiming.is_some() => {
                    claiming = None;
                    asked = 0;
                    claims += 1;
                    // Nothing done yet: a failure fails the run, so the invocation itself
                    // reports the outage.
                    let fatal = claims == 1 && span != Span::UntilStopped;
                    let batch = taken(result, want, fatal, &mut refill, &mut period)?;
                    if held {
                        // Not proof that nothing is due: look again once a slot of it frees.
                        refill.held_back();
                    }
                    for task in batch {
                        let lease_ends = claim_started + self.leases.duration(&task.task_type);
                        let task_type = task.task_type.clone();
                        *by_type.entry(task_type.clone()).or_default() += 1;
                        let attempt = self.run_one(Claimed { task, lease_ends }, limits);
                        running.push(async move { (task_type, attempt.await) });
                    }
                }
                () = async { if let Some(flush) = flushing.as_mut() { flush.await } }, if flushing.is_some() => {
                    flushing = None;
                }
                () = sleep_until(timer), if timer.is_some() => {}
                // With every slot busy on long tasks nothing else wakes the loop.
                () = sleep_until(Some(flush_checked + FLUSH_CHECK_EVERY)), if flushing.is_none() => {}
                () = self.due_now.notified(), if open && !refill.is_woken() => refill.woken(),
                () = &mut stop, if !stopped => stopped = true,
                else => break,
            }
        }
        period.finish(&mut total);
        // A write begun is finished (it holds what it writes), then everything is written.
        if let Some(flush) = flushing.take() {
            flush.await;
        }
        self.store.flush(self.clock.now(), true).await;
        total.duration_ms = millis_since(started);
        Ok(total)
    }

    /// Starts a claim of up to `want` tasks due now, through the gate of the paused types
    /// and of the capped types' room while `running` (by type) run.
    fn claim(&self, want: usize, running: HashMap<String, usize>) -> Claiming<'_> {
        Box::pin(async move {
            let started = Instant::now();
            let (held, result) = match self.gate(&running).await {
                Ok(gate) => {
                    let now = self.clock.now();
                    let result = self
                        .store
                        .claim_gated(now, now, want, &self.leases, &gate)
                        .await;
                    // A capped type full before the claim, or one it turned a task of away.
                    (gate.any_full() || gate.turned_away(), result)
                }
                Err(err) => (false, Err(err)),
            };
            (started, want, held, result)
        })
    }
}

/// The tasks a claim that asked for `want` brought, noted in `refill` and `period`; a failure
/// is counted and leaves nothing to run, unless it is `fatal`.
fn taken(
    result: Result<Vec<Task>, StoreError>,
    want: usize,
    fatal: bool,
    refill: &mut Refill,
    period: &mut Period,
) -> Result<Vec<Task>, TaskerError> {
    match result {
        Ok(batch) => {
            refill.claimed(want, Some(batch.len()));
            if !batch.is_empty() {
                period.start();
                period.summary.claimed += batch.len();
            }
            Ok(batch)
        }
        Err(err) if fatal => Err(err.into()),
        Err(err) => {
            tracing::error!(error = %Report(&err), "claiming due tasks failed; trying again after the interval");
            period.summary.errors += 1;
            refill.claimed(want, None);
            Ok(Vec::new())
        }
    }
}

async fn poll_claim(claiming: &mut Option<Claiming<'_>>) -> ClaimAnswer {
    match claiming.as_mut() {
        Some(claim) => claim.await,
        None => std::future::pending().await,
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}

/// A busy period: from the first task claimed after the queue was idle until it is idle
/// again (or a minute has passed). Each is logged as one processor run, so `tasker serve`
/// logs as it did per run.
struct Period {
    started: Option<Instant>,
    summary: RunSummary,
}

impl Period {
    fn new() -> Self {
        Self {
            started: None,
            summary: RunSummary::default(),
        }
    }

    fn start(&mut self) {
        self.started.get_or_insert_with(Instant::now);
    }

    /// Logs the period, if anything happened in it, and adds it to `total`.
    fn finish(&mut self, total: &mut RunSummary) {
        if self.summary == RunSummary::default() {
            return;
        }
        self.summary.duration_ms = self.started.map_or(0, millis_since);
        self.summary.log();
        total.absorb(&self.summary);
        *self = Self::new();
    }
}

impl RunSummary {
    /// Counts one task's outcome.
    fn count(&mut self, outcome: Outcome) {
        match outcome {
            Outcome::Succeeded => self.succeeded += 1,
            Outcome::Retried => self.retried += 1,
            Outcome::Failed => self.failed += 1,
            Outcome::Released | Outcome::ReleasedOutOfTime => self.released += 1,
            Outcome::Unrecorded => self.errors += 1,
        }
    }

    /// Logs the run: one line, at debug level when it claimed nothing.
    fn log(&self) {
        if self.claimed == 0 {
            tracing::debug!(
                errors = self.errors,
                duration_ms = self.duration_ms,
                "processor run found nothing due"
            );
            return;
        }
        tracing::info!(
            claimed = self.claimed,
            succeeded = self.succeeded,
            retried = self.retried,
            failed = self.failed,
            released = self.released,
            errors = self.errors,
            duration_ms = self.duration_ms,
            "processor run finished"
        );
    }
}

/// Whole milliseconds since `started`.
fn millis_since(started: Instant) -> u64 {
    u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX)
}
