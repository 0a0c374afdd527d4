//! `TASKER_DISPATCH` and `TASKER_QUEUE_URL`: how due tasks reach the code that runs them.

use std::str::FromStr;

use super::{ConfigError, Get};

/// How due tasks reach a worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Dispatch {
    /// The processor claims due tasks from the store (every minute, or polling within a window).
    #[default]
    Poll,
    /// Tasks due within 15 minutes ride an SQS queue to the workers; the processor only moves
    /// the rest onto it as they fall due.
    Sqs,
}

impl Dispatch {
    /// The name `TASKER_DISPATCH` takes.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Poll => "poll",
            Self::Sqs => "sqs",
        }
    }
}

impl FromStr for Dispatch {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "poll" => Ok(Self::Poll),
            "sqs" => Ok(Self::Sqs),
            other => Err(format!("expected poll or sqs, got {other:?}")),
        }
    }
}

/// `TASKER_DISPATCH` and `TASKER_QUEUE_URL`, checked together: SQS mode needs the queue and a
/// binary built with it.
pub(super) fn dispatch(get: &Get<'_>) -> Result<(Dispatch, Option<String>), ConfigError> {
    let dispatch = super::parse(get, "TASKER_DISPATCH", Dispatch::Poll, str::parse)?;
    let queue_url = get("TASKER_QUEUE_URL");
    if dispatch == Dispatch::Sqs {
        if !cfg!(feature = "sqs") {
            return Err(ConfigError {
                name: "TASKER_DISPATCH",
                reason: "this binary is built without SQS (cargo feature `sqs`)".into(),
            });
        }
        if queue_url.is_none() {
            return Err(ConfigError {
                name: "TASKER_QUEUE_URL",
                reason: "is required when TASKER_DISPATCH=sqs".into(),
            });
        }
    }
    Ok((dispatch, queue_url))
}
