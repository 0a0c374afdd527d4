//! Tasker at the Lambda edge: the one conversion of its errors to the runtime's `Diagnostic`,
//! so every function reports `errorType` and the whole error chain the same way; and what an
//! invocation's deadline means.

use lambda_runtime::Diagnostic;

/// 2001-09-09 in Unix milliseconds: any real invocation deadline is later. Some local
/// emulators send a duration instead (cargo lambda watch sends its `--timeout`, e.g. 60000):
/// a "deadline" before this is no deadline.
pub const PLAUSIBLE_DEADLINE_MS: u64 = 1_000_000_000_000;

use crate::report::Report;
use crate::tasker::TaskerError;

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
