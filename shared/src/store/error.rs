//! What can go wrong in a store call, with the backend's own error kept as the source.

use std::sync::Arc;

use crate::task::{TaskId, TaskStatus};

/// The backend's error behind a store failure (an SDK or SQLite error), kept whole so logs
/// and callers see its chain. Shared, so that [`StoreError`] stays `Clone`: a SQLite group
/// commit answers every waiting writer with the same failure.
pub type Cause = Arc<dyn std::error::Error + Send + Sync + 'static>;

/// What went wrong in a store call.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// No task has that id.
    #[error("task {0} not found")]
    NotFound(TaskId),
    /// The task's status does not allow the change.
    #[error("task {id} is {status}")]
    Conflict {
        /// The task.
        id: TaskId,
        /// Its current status.
        status: TaskStatus,
    },
    /// A pending or running task with the same `(referenceUid, type)` exists.
    #[error("task {existing} with the same referenceUid and type is still pending or running")]
    Duplicate {
        /// The task that is still pending or running.
        existing: TaskId,
    },
    /// The processor's claim on the task expired and another attempt took over.
    #[error("lease on task {0} was lost to a newer attempt")]
    LeaseLost(TaskId),
    /// A passing failure (throttling, timeout, network): the same call may succeed later.
    #[error("store unavailable: {context}")]
    Unavailable {
        /// What the store was doing.
        context: String,
        /// The backend's error, when there is one.
        #[source]
        cause: Option<Cause>,
    },
    /// A failure that repeating will not fix (bad configuration, missing table, corrupt item).
    #[error("store error: {context}")]
    Backend {
        /// What the store was doing.
        context: String,
        /// The backend's error, when there is one.
        #[source]
        cause: Option<Cause>,
    },
}

impl StoreError {
    /// A passing failure with no backend error behind it.
    pub fn unavailable(context: impl Into<String>) -> Self {
        Self::Unavailable {
            context: context.into(),
            cause: None,
        }
    }

    /// A lasting failure with no backend error behind it.
    pub fn backend(context: impl Into<String>) -> Self {
        Self::Backend {
            context: context.into(),
            cause: None,
        }
    }

    /// A passing failure caused by the backend's `cause`.
    pub fn unavailable_from(
        context: impl Into<String>,
        cause: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        Self::Unavailable {
            context: context.into(),
            cause: Some(Arc::new(cause)),
        }
    }

    /// A lasting failure caused by the backend's `cause`.
    pub fn backend_from(
        context: impl Into<String>,
        cause: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        Self::Backend {
            context: context.into(),
            cause: Some(Arc::new(cause)),
        }
    }

    /// True when repeating the same call later may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::Unavailable { .. })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::Report;

    #[test]
    fn the_cause_is_kept_as_the_source_and_shown_in_the_report() {
        let io = std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out");
        let err = StoreError::unavailable_from("DynamoDB GetItem", io);
        assert_eq!(err.to_string(), "store unavailable: DynamoDB GetItem");
        let source = std::error::Error::source(&err).expect("a source");
        assert_eq!(source.to_string(), "connect timed out");
        assert_eq!(
            Report(&err).to_string(),
            "store unavailable: DynamoDB GetItem: connect timed out"
        );
        assert!(err.is_retryable());
        assert!(!StoreError::backend("corrupt item").is_retryable());
    }
}
