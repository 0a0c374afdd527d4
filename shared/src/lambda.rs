//! Tasker at the Lambda edge: a function's cold start, the one conversion of its errors to the
//! runtime's `Diagnostic` (so every function reports `errorType` and the whole error chain the
//! same way), and what an invocation's deadline means.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime};

use lambda_runtime::{Context, Diagnostic};

use crate::engine::TaskerError;
use crate::report::Report;

/// A function's cold start: the default subscriber (JSON logs when Lambda asks for them), the
/// configuration, and Tasker over the configured store (and SQS mode's queue) with `types`.
#[cfg(any(feature = "sqlite", feature = "dynamodb", feature = "postgres"))]
pub async fn cold_start(
    types: crate::compose::TaskTypes,
) -> Result<(crate::Config, crate::Tasker<crate::AnyStore>), crate::StartupError> {
    lambda_runtime::tracing::init_default_subscriber();
    let config = crate::Config::from_env()?;
    let tasker = crate::compose::build_tasker(&config, types).await?;
    Ok((config, tasker))
}

/// 2001-09-09 in Unix milliseconds: any real invocation deadline is later. Some local
/// emulators send a duration instead (cargo lambda watch sends its `--timeout`, e.g. 60000):
/// a "deadline" before this is no deadline.
pub const PLAUSIBLE_DEADLINE_MS: u64 = 1_000_000_000_000;

/// The invocation's deadline by this process's monotonic clock, `reserve` early (time kept
/// back to answer Lambda); `None` when the event's deadline is not a Unix time (a local
/// emulator's): the work is then bounded by its own limits (`TASKER_MAX_RUN`, the poll window,
/// each attempt's timeout).
pub fn deadline(context: &Context, reserve: Duration) -> Option<Instant> {
    (context.deadline >= PLAUSIBLE_DEADLINE_MS)
        .then(|| Instant::now() + remaining(context, reserve))
}

/// Time left before the invocation's deadline, less `reserve`; zero once past it.
pub fn remaining(context: &Context, reserve: Duration) -> Duration {
    context
        .deadline()
        .duration_since(SystemTime::now())
        .unwrap_or_default()
        .saturating_sub(reserve)
}

/// Refuses an invocation of a function whose Timeout is shorter than a task type's claims
/// last (its timeout plus the lease grace): no attempt of that type could finish here. The
/// time left at the invocation's start is the function's Timeout, less what the runtime took
/// to hand it over (rounded up to whole seconds); no check without a real deadline.
pub fn check_leases_fit<S>(
    tasker: &crate::Tasker<S>,
    context: &Context,
) -> Result<(), TaskerError> {
    if context.deadline < PLAUSIBLE_DEADLINE_MS {
        return Ok(());
    }
    let seconds = remaining(context, Duration::ZERO)
        .as_millis()
        .div_ceil(1000);
    let allowed = Duration::from_secs(u64::try_from(seconds).unwrap_or(u64::MAX));
    tasker.check_leases_fit(
        allowed,
        false,
        || format!("this Lambda function's Timeout gives an invocation {seconds} s"),
        "raise the function's Timeout",
    )?;
    Ok(())
}

/// [`check_leases_fit`] until one invocation passes it: a function's first invocation has its
/// whole Timeout ahead of it, and the configuration does not change while it lives.
#[derive(Debug, Default)]
pub struct FitCheck(AtomicBool);

impl FitCheck {
    /// Checks the invocation with `context`, unless an earlier one passed.
    pub fn check<S>(
        &self,
        tasker: &crate::Tasker<S>,
        context: &Context,
    ) -> Result<(), TaskerError> {
        if self.0.load(Ordering::Relaxed) {
            return Ok(());
        }
        check_leases_fit(tasker, context)?;
        self.0.store(true, Ordering::Relaxed);
        Ok(())
    }
}

impl From<TaskerError> for Diagnostic {
    fn from(err: TaskerError) -> Self {
        Diagnostic {
            error_type: err.error_type().into(),
            error_message: Report(&err).to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::StoreError;

    #[test]
    fn a_deadline_that_is_no_unix_time_is_no_deadline() {
        let mut context = Context::default();
        context.deadline = 60_000;
        assert_eq!(deadline(&context, Duration::ZERO), None);
        let in_a_minute = SystemTime::now() + Duration::from_secs(60);
        context.deadline = in_a_minute
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or_default();
        let left = deadline(&context, Duration::from_secs(10))
            .expect("a deadline")
            .saturating_duration_since(Instant::now());
        assert!(
            left > Duration::from_secs(45) && left <= Duration::from_secs(50),
            "{left:?}"
        );
    }

    #[test]
    fn a_store_outage_is_reported_with_its_type_and_cause() {
        let cause = std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out");
        let err = TaskerError::Store(StoreError::unavailable_from("DynamoDB Query", cause));
        let diagnostic = Diagnostic::from(err);
        assert_eq!(diagnostic.error_type, "StoreUnavailable");
        assert_eq!(
            diagnostic.error_message,
            "store unavailable: DynamoDB Query: connect timed out"
        );
    }
}
