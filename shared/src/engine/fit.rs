//! Whether every task type's claims fit where its attempts run. A claim lasts its type's
//! timeout plus the lease grace; a home that gives an attempt less than that (a Lambda function
//! whose timeout is shorter, an SQS queue whose visibility ends first) can never run the type
//! as configured, so it is refused where that is known instead of failing task by task.

use std::time::Duration;

use super::Tasker;

/// A task type's claims last longer than a home allows.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "task type {task_type:?} holds each claim {lease} s (its timeout, {timeout} s, plus \
     TASKER_LEASE_GRACE, {grace} s), but {limit}: lower the type's timeout \
     (TASKER_HANDLER_TIMEOUT for the built-in types) or TASKER_LEASE_GRACE, or {remedy}"
)]
pub struct LeaseTooLong {
    pub task_type: String,
    pub timeout: u64,
    pub grace: u64,
    pub lease: u64,
    /// What the home allows, in words with its number.
    pub limit: String,
    /// The other way out, in words.
    pub remedy: String,
}

impl<S> Tasker<S> {
    /// The registered type whose claims last longest, its timeout and its lease.
    pub fn longest_lease(&self) -> Option<(String, Duration, Duration)> {
        let grace = self.settings.lease_grace;
        self.registry
            .types()
            .filter_map(|name| {
                let timeout = self.registry.settings(name)?.timeout;
                Some((name.to_owned(), timeout, timeout.saturating_add(grace)))
            })
            .max_by(|a, b| a.2.cmp(&b.2).then_with(|| b.0.cmp(&a.0)))
    }

    /// Refuses when a type's claims last longer than `allowed` (`strictly`: as long counts
    /// too); `limit` and `remedy` say what allows it and how else to fix it.
    pub fn check_leases_fit(
        &self,
        allowed: Duration,
        strictly: bool,
        limit: impl FnOnce() -> String,
        remedy: &str,
    ) -> Result<(), LeaseTooLong> {
        let Some((task_type, timeout, lease)) = self.longest_lease() else {
            return Ok(());
        };
        let fits = if strictly {
            lease < allowed
        } else {
            lease <= allowed
        };
        if fits {
            return Ok(());
        }
        Err(LeaseTooLong {
            task_type,
            timeout: timeout.as_secs(),
            grace: self.settings.lease_grace.as_secs(),
            lease: lease.as_secs(),
            limit: limit(),
            remedy: remedy.to_owned(),
        })
    }
}
