//! An application's own task type, run by Tasker without forking it: `notifyChat` posts a
//! message to the team's chat through an incoming-webhook URL (`CHAT_WEBHOOK_URL`). The
//! application registers it beside the built-in `sendWebhook` in [`task_types`], and its
//! binaries pass that to the same entry points the shipped binaries use:
//!
//! - `custom-tasker` is `tasker` (serve, process, the operator commands) with these types;
//! - `custom-processor` and `custom-enqueue` are the processor and enqueue Lambdas with them.

use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use tasker::handlers::TypeSettings;
use tasker::{Config, Registry, RegistryError, TaskContext, TaskError, compose};

/// The task type.
pub const TASK_TYPE: &str = "notifyChat";
/// The variable holding the chat's incoming-webhook URL.
pub const CHAT_URL_VAR: &str = "CHAT_WEBHOOK_URL";

/// What a `notifyChat` task carries.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ChatMessage {
    channel: String,
    text: String,
}

/// The application's task types: the built-in ones, and `notifyChat` posting to the URL in
/// [`CHAT_URL_VAR`]. A missing or bad URL stops the binary at start, naming the variable.
pub fn task_types(config: &Config) -> Result<Registry, RegistryError> {
    let url = std::env::var(CHAT_URL_VAR).unwrap_or_default();
    with_chat_url(config, &url)
}

/// [`task_types`] with the chat's URL given.
pub fn with_chat_url(config: &Config, url: &str) -> Result<Registry, RegistryError> {
    let invalid = |reason: String| {
        RegistryError::InvalidSettings(TASK_TYPE.to_owned(), format!("{CHAT_URL_VAR}: {reason}"))
    };
    let url = url::Url::parse(url.trim()).map_err(|err| invalid(format!("not a URL: {err}")))?;
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .map_err(|err| invalid(format!("cannot build the HTTP client: {err}")))?;
    let chat = Arc::new(Chat { client, url });
    let mut registry = compose::builtin_types(config)?;
    // Its own settings: a chat message is worth five tries, each of at most 15 s.
    let settings = TypeSettings {
        max_attempts: 5,
        timeout: Duration::from_secs(15),
        ..config.task_defaults
    };
    registry.register_with(TASK_TYPE, settings, move |ctx| {
        let chat = Arc::clone(&chat);
        async move { chat.post(&ctx).await }
    })?;
    Ok(registry)
}

/// The chat's incoming webhook.
struct Chat {
    client: reqwest::Client,
    url: url::Url,
}

impl Chat {
    /// Posts the task's message: a payload that is not one fails for good, and so does a 4xx
    /// answer but 429; anything else that is not a success is tried again.
    async fn post(&self, ctx: &TaskContext) -> Result<(), TaskError> {
        let message: ChatMessage = serde_json::from_str(&ctx.payload).map_err(|err| {
            TaskError::Permanent(format!(
                "payload is not {{\"channel\": string, \"text\": string}}: {err}"
            ))
        })?;
        let body = serde_json::json!({
            "channel": message.channel,
            "text": message.text,
            "taskId": ctx.id.to_string(),
        });
        let response = self
            .client
            .post(self.url.clone())
            .json(&body)
            .send()
            .await
            .map_err(|err| TaskError::Retryable(format!("the chat did not answer: {err}")))?;
        let status = response.status();
        match status.as_u16() {
            200..=299 => Ok(()),
            429 => Err(TaskError::Retryable(
                "the chat is rate limiting: 429".to_owned(),
            )),
            400..=499 => Err(TaskError::Permanent(format!(
                "the chat refused the message: {status}"
            ))),
            _ => Err(TaskError::Retryable(format!("the chat failed: {status}"))),
        }
    }
}
