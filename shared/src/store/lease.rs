//! How long a claim's lease lasts: per task type, so a processor that dies is replaced once its
//! tasks' own timeouts (plus a grace) have passed, not at the end of its whole run.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use crate::clock::Timestamp;

/// The lease a claim gives each task, by its type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leases {
    default: Duration,
    by_type: Arc<HashMap<String, Duration>>,
}

impl Leases {
    /// Every task gets `duration`.
    pub fn fixed(duration: Duration) -> Self {
        Self {
            default: duration,
            by_type: Arc::default(),
        }
    }

    /// Tasks of the types in `by_type` get their own duration; every other type gets `default`.
    pub fn by_type(default: Duration, by_type: HashMap<String, Duration>) -> Self {
        Self {
            default,
            by_type: Arc::new(by_type),
        }
    }

    /// How long a claim of a task of `task_type` lasts.
    pub fn duration(&self, task_type: &str) -> Duration {
        self.by_type.get(task_type).copied().unwrap_or(self.default)
    }

    /// When a claim made at `now` of a task of `task_type` expires.
    pub fn until(&self, task_type: &str, now: Timestamp) -> Timestamp {
        now.plus(self.duration(task_type))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_type_gets_its_own_lease_and_others_the_default() {
        let now = Timestamp::MIN;
        let leases = Leases::by_type(
            Duration::from_secs(60),
            HashMap::from([("slow".to_owned(), Duration::from_secs(330))]),
        );
        assert_eq!(
            leases.until("slow", now),
            now.plus(Duration::from_secs(330))
        );
        assert_eq!(
            leases.until("other", now),
            now.plus(Duration::from_secs(60))
        );
        assert_eq!(
            Leases::fixed(Duration::from_secs(5)).until("slow", now),
            now.plus(Duration::from_secs(5))
        );
    }
}
