//! Continuous dispatch: up to `concurrency` attempts in flight, and more claimed as slots free
//! up, so a slow task holds one slot and never the tasks behind it. One loop, a
//! [`Dispatcher`], serves a single run, a poll window and `tasker serve`'s whole life.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use futures::stream::FuturesUnordered;

use super::attempt::{Claimed, RunLimits};
use super::outcomes::{Outcome, RunSummary};
use super::refill::Refill;
use super::settling::{Settling, free_slots};
use super::{PollSettings, Tasker, TaskerError};
use crate::report::Report;
use crate::store::{Claim, Store, StoreError};
use crate::task::Task;

/// Claims in flight at most where slots are claimed for as outcomes are written: a claim for
/// the slots of outcomes written after an earlier claim started joins their commit instead of
/// waiting for that claim's answer.
const CLAIMS_IN_FLIGHT: usize = 4;

/// The longest a busy period goes unlogged.
const PERIOD_LOG_EVERY: Duration = Duration::from_secs(60);

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

/// What a claim brought back.
struct ClaimAnswer {
    /// When it started: the leases of what it claimed count from then.
    started: Instant,
    /// How many tasks it asked for.
    asked: usize,
    /// Its gate held a capped type back: tasks of that type may still be due.
    held_back: bool,
    /// When the tasks it held for their keys are due again.
    holds: Vec<Instant>,
    /// The tasks claimed, or why none were.
    result: Result<Vec<Task>, StoreError>,
}

type Claiming<'a> = Pin<Box<dyn Future<Output = ClaimAnswer> + Send + 'a>>;
type Attempt<'a> = Pin<Box<dyn Future<Output = (String, Outcome)> + Send + 'a>>;

impl<S: Store> Tasker<S> {
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
        Dispatcher::new(self, Span::UntilIdle, Some(deadline), interval)
            .run(std::future::pending())
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
        let span = Span::Until(Instant::now() + poll.window);
        let summary = Dispatcher::new(self, span, deadline, poll.interval)
            .run(std::future::pending())
            .await?;
        tracing::info!(
            claimed = summary.claimed,
            succeeded = summary.outcomes.succeeded,
            errors = summary.errors(),
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
        // Tasks other processes make due now wake the loop as this process's own do.
        self.store.queue_listen(Arc::clone(&self.due_now)).await;
        match Dispatcher::new(self, Span::UntilStopped, None, interval)
            .run(stop)
            .await
        {
            Ok(summary) => summary,
            // Not reached: this span never fails; counted rather than lost if it ever did.
            Err(err) => {
                tracing::error!(error = %Report(&err), "the processor loop failed");
                RunSummary {
                    failed_claims: 1,
                    ..RunSummary::default()
                }
            }
        }
    }

    /// Starts a claim of up to `want` tasks due now, through the gate of the paused types
    /// and of the capped types' room while `running` (by type) run.
    fn claim(&self, want: usize, running: HashMap<String, usize>) -> Claiming<'_> {
        Box::pin(async move {
            let started = Instant::now();
            let (held_back, holds, result) = match self.gate(&running).await {
                Ok(gate) => {
                    let (now, at) = (self.clock.now(), Instant::now());
                    let claim = Claim::due(now, want, &self.leases).through(&gate);
                    let result = self.store.task_claim(claim).await;
                    // A millisecond late rather than early: a look before the instant finds
                    // the task not yet due.
                    let holds = gate
                        .holds()
                        .into_iter()
                        .map(|until| at + until.since(now) + Duration::from_millis(1))
                        .collect();
                    // A capped type full before the claim, or one it turned a task of away.
                    (gate.any_full() || gate.turned_away(), holds, result)
                }
                Err(err) => (false, Vec::new(), Err(err)),
            };
            ClaimAnswer {
                started,
                asked: want,
                held_back,
                holds,
                result,
            }
        })
    }
}

/// One dispatch in progress: the loop's whole state.
struct Dispatcher<'a, S> {
    tasker: &'a Tasker<S>,
    span: Span,
    limits: RunLimits,
    started: Instant,
    /// Attempts in flight at most, and the most one claim asks for.
    slots: usize,
    batch: usize,
    /// When to claim next.
    refill: Refill,
    /// Attempts in flight, each answering its task's type and outcome.
    running: FuturesUnordered<Attempt<'a>>,
    /// Attempts in flight per type, for the types' concurrency caps.
    by_type: HashMap<String, usize>,
    /// Attempts among `running` whose outcome's first write is under way, where the store
    /// commits writes in order: their slots are claimed for meanwhile.
    settling: Option<Arc<Settling>>,
    /// The claims in flight, and how many tasks they asked for in all.
    claiming: FuturesUnordered<Claiming<'a>>,
    asked: usize,
    /// Claims in flight at most: one, or where slots are claimed for as outcomes are
    /// written (`settling`) and no type has a concurrency cap, [`CLAIMS_IN_FLIGHT`].
    claims_at_once: usize,
    /// Claims answered so far.
    claims: u64,
    stopped: bool,
    /// A task was given back unstarted for want of time: the run claims nothing more.
    out_of_time: bool,
    period: Period,
    total: RunSummary,
}

impl<'a, S: Store> Dispatcher<'a, S> {
    fn new(
        tasker: &'a Tasker<S>,
        span: Span,
        deadline: Option<Instant>,
        interval: Duration,
    ) -> Self {
        let started = Instant::now();
        let slots = tasker.settings.concurrency.max(1);
        let batch = tasker.settings.batch_size.max(1);
        let interval = interval.max(Duration::from_millis(10));
        Self {
            tasker,
            span,
            limits: RunLimits::new(started, deadline, &tasker.settings),
            started,
            slots,
            batch,
            refill: Refill::new(slots, batch, interval, span == Span::UntilIdle),
            running: FuturesUnordered::new(),
            by_type: HashMap::new(),
            settling: None,
            claiming: FuturesUnordered::new(),
            asked: 0,
            claims_at_once: 1,
            claims: 0,
            stopped: false,
            out_of_time: false,
            period: Period::default(),
            total: RunSummary::default(),
        }
    }

    /// Runs until the span ends (or `stop` completes), then waits for the attempts in
    /// flight, writes what the store keeps, and answers the run's counts.
    async fn run(
        mut self,
        stop: impl Future<Output = ()> + Send,
    ) -> Result<RunSummary, TaskerError> {
        if !self.limits.may_claim() {
            tracing::warn!("too little time left to start any task");
        }
        let mut stop = std::pin::pin!(stop);
        if self.tasker.store.queue_writes_in_order().await {
            self.settling = Some(Arc::default());
            if !self.tasker.any_type_capped() {
                self.claims_at_once = CLAIMS_IN_FLIGHT;
            }
        }
        loop {
            let now = Instant::now();
            let open = self.is_open(now);
            let settling = self.settling.as_ref().map_or(0, |s| s.count());
            let free = free_slots(self.slots, self.running.len(), settling, self.asked);
            let next_claim = self
                .refill
                .next_claim(now, free, self.running.len())
                .filter(|_| open && self.claiming.len() < self.claims_at_once);
            if next_claim.is_some_and(|at| at <= now) {
                self.start_claim(now, free.min(self.batch));
                continue;
            }
            if self.claiming.is_empty() && self.running.is_empty() {
                if self.refill.is_drained() || !open {
                    self.period.finish(&mut self.total);
                }
                if !open || (self.span == Span::UntilIdle && self.refill.found_nothing()) {
                    break;
                }
            }
            // Wake up to claim for free slots, or to notice that claims must stop.
            let timer = [next_claim, self.span.end(), self.limits.last_claim()]
                .into_iter()
                .flatten()
                .min()
                .filter(|_| open);
            tokio::select! {
                Some((task_type, outcome)) = self.running.next(), if !self.running.is_empty() => {
                    self.attempt_ended(&task_type, outcome);
                }
                Some(answer) = self.claiming.next(), if !self.claiming.is_empty() => {
                    self.claim_answered(answer)?;
                }
                () = sleep_until(timer), if timer.is_some() => {}
                () = self.tasker.due_now.notified(), if open && !self.refill.is_woken() => {
                    self.refill.woken();
                }
                () = self.tasker.due_later.noted(), if open => {
                    self.refill.held_until(self.tasker.due_later.take());
                }
                () = settling_began(self.settling.as_deref()), if open && self.claiming.len() < self.claims_at_once => {}
                () = &mut stop, if !self.stopped => self.stopped = true,
                else => break,
            }
        }
        self.period.finish(&mut self.total);
        let tasker = self.tasker;
        tasker.store.queue_flush(tasker.clock.now(), true).await;
        self.total.duration_ms = millis_since(self.started);
        Ok(self.total)
    }

    /// True while claims may be made at `now`.
    fn is_open(&self, now: Instant) -> bool {
        !self.stopped && !self.out_of_time && self.limits.may_claim() && self.span.claims_at(now)
    }

    /// Starts a claim of `want` tasks at `now`.
    fn start_claim(&mut self, now: Instant, want: usize) {
        self.claiming
            .push(self.tasker.claim(want, self.by_type.clone()));
        self.refill.claiming(now);
        self.asked += want;
    }

    /// An attempt of a task of `task_type` ended with `outcome`, freeing its slot.
    fn attempt_ended(&mut self, task_type: &str, outcome: Outcome) {
        self.period.summary.outcomes.count(outcome);
        if let Some(busy) = self.by_type.get_mut(task_type) {
            *busy = busy.saturating_sub(1);
        }
        // Under steady load the queue is never idle: log at least once a minute.
        if self
            .period
            .started
            .is_some_and(|at| at.elapsed() >= PERIOD_LOG_EVERY)
        {
            self.period.finish(&mut self.total);
        }
        self.out_of_time |= outcome == Outcome::ReleasedOutOfTime;
        self.refill.attempt_ended(Instant::now());
    }

    /// A claim answered: what it brought starts running. A failure of the first claim fails
    /// the run (nothing is done yet, so the invocation itself reports the outage), unless the
    /// run goes on until stopped; later ones are counted and logged.
    fn claim_answered(&mut self, answer: ClaimAnswer) -> Result<(), TaskerError> {
        self.asked -= answer.asked;
        self.claims += 1;
        let batch = match answer.result {
            Ok(batch) => {
                self.refill.claimed(answer.asked, Some(batch.len()));
                if !batch.is_empty() {
                    self.period.start();
                    self.period.summary.claimed += batch.len();
                }
                batch
            }
            Err(err) if self.claims == 1 && self.span != Span::UntilStopped => {
                return Err(err.into());
            }
            Err(err) => {
                self.period.summary.failed_claims += 1;
                self.refill.claimed(answer.asked, None);
                let wait_ms = u64::try_from(self.refill.retry_wait().as_millis()).unwrap_or(0);
                tracing::error!(error = %Report(&err), wait_ms, "claiming due tasks failed; trying again after a wait");
                Vec::new()
            }
        };
        if answer.held_back {
            // Not proof that nothing is due: look again once a slot of it frees.
            self.refill.held_back();
        }
        // Tasks held for their keys are due at known instants: look then, not a poll later.
        self.refill.held_until(answer.holds);
        for task in batch {
            let lease_ends = answer.started + self.tasker.leases.duration(&task.task_type);
            let task_type = task.task_type.clone();
            *self.by_type.entry(task_type.clone()).or_default() += 1;
            let attempt = self.tasker.run_one(
                Claimed { task, lease_ends },
                self.limits,
                self.settling.clone(),
            );
            self.running
                .push(Box::pin(async move { (task_type, attempt.await) }));
        }
        Ok(())
    }
}

/// Once an outcome's first write begins (never, where the store does not lend slots).
async fn settling_began(settling: Option<&Settling>) {
    match settling {
        Some(settling) => settling.began.notified().await,
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
#[derive(Default)]
struct Period {
    started: Option<Instant>,
    summary: RunSummary,
}

impl Period {
    fn start(&mut self) {
        self.started.get_or_insert_with(Instant::now);
    }

    /// Logs the period, if anything happened in it, and adds it to `total`.
    fn finish(&mut self, total: &mut RunSummary) {
        if self.summary == RunSummary::default() {
            return;
        }
        self.summary.duration_ms = self.started.map_or(0, millis_since);
        log(&self.summary);
        total.absorb(&self.summary);
        *self = Self::default();
    }
}

/// Logs a run: one line, at debug level when it claimed nothing.
fn log(summary: &RunSummary) {
    if summary.claimed == 0 {
        tracing::debug!(
            errors = summary.errors(),
            duration_ms = summary.duration_ms,
            "processor run found nothing due"
        );
        return;
    }
    let outcomes = &summary.outcomes;
    tracing::info!(
        claimed = summary.claimed,
        succeeded = outcomes.succeeded,
        retried = outcomes.retried,
        failed = outcomes.failed,
        released = outcomes.released,
        unrecorded = outcomes.unrecorded,
        errors = summary.errors(),
        duration_ms = summary.duration_ms,
        "processor run finished"
    );
}

/// Whole milliseconds since `started`.
fn millis_since(started: Instant) -> u64 {
    u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX)
}
