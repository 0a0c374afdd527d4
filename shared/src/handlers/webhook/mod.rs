//! `sendWebhook`: POST a JSON body to a URL, signed with HMAC-SHA256 when a secret is set.
//! Its settings are here in every build; the sender only with the `webhook` feature.

use std::time::Duration;

#[cfg(feature = "webhook")]
mod addresses;
#[cfg(feature = "webhook")]
mod answer;
#[cfg(feature = "webhook")]
pub mod breaker;
mod check;
#[cfg(feature = "webhook")]
mod send;

pub use check::{REFUSED_HEADERS, check_payload, target_host};

#[cfg(feature = "webhook")]
pub use send::{WebhookSender, is_public, sign};

/// The task type this handler is registered under.
pub const TASK_TYPE: &str = "sendWebhook";
/// Header carrying the task id.
pub const TASK_ID_HEADER: &str = "x-tasker-task-id";
/// Header carrying `sha256=<hex HMAC-SHA256 of the raw body>`.
pub const SIGNATURE_HEADER: &str = "x-tasker-signature";

/// Settings of the webhook sender.
#[derive(Debug, Clone)]
pub struct WebhookSettings {
    /// Signs each body when set.
    pub secret: Option<String>,
    /// Whole-request timeout.
    pub timeout: Duration,
    /// Allows loopback, private and link-local targets (for local development and tests).
    pub allow_private: bool,
    /// A circuit breaker per host, open this long once most of its last attempts failed
    /// (`TASKER_WEBHOOK_BREAKER`); none by default.
    pub breaker: Option<Duration>,
}

impl Default for WebhookSettings {
    fn default() -> Self {
        Self {
            secret: None,
            timeout: Duration::from_secs(10),
            allow_private: false,
            breaker: None,
        }
    }
}
