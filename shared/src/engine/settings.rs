//! How a process runs the queue: a run's limits and poll mode's window.

use std::time::Duration;

/// How a processor run behaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcessorSettings {
    /// The most tasks one claim asks for (a claim asks for at most the free slots).
    pub batch_size: usize,
    /// Handlers running at once.
    pub concurrency: usize,
    /// Longest a run may last when the caller gives no deadline (`tasker serve`, `tasker process`).
    pub max_run: Duration,
    /// No task starts when less than this remains before the deadline.
    pub time_margin: Duration,
    /// How long a claim outlives its task type's timeout, so a slow outcome write is not
    /// mistaken for a crash; after it a crashed processor's tasks are due again.
    pub lease_grace: Duration,
}

impl Default for ProcessorSettings {
    fn default() -> Self {
        Self {
            batch_size: 100,
            concurrency: 16,
            max_run: Duration::from_secs(300),
            time_margin: Duration::from_secs(10),
            lease_grace: Duration::from_secs(30),
        }
    }
}

/// Poll mode: one invocation keeps running the queue every `interval` until `window` has
/// passed, so a task starts within about `interval` of becoming due instead of waiting for the
/// next scheduled invocation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PollSettings {
    /// How long an invocation keeps polling; zero runs the queue once (poll mode off).
    pub window: Duration,
    /// Time between the starts of two runs.
    pub interval: Duration,
}

impl Default for PollSettings {
    fn default() -> Self {
        Self {
            window: Duration::ZERO,
            interval: Duration::from_secs(1),
        }
    }
}
