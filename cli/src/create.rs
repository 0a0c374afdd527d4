//! `tasker create`: enqueue one task from a shell, with the API's rules for every field.

use std::path::Path;
use std::time::Duration;

use clap::Args;
use tasker::api::payload_text;
use tasker::api::requests::MAX_DELAY_SECONDS;
use tasker::api::strict_json::{self, StrictJsonError};
use tasker::clock::InvalidTimestamp;
use tasker::store::Created;
use tasker::{AnyStore, NewTask, Tasker, Timestamp};

use crate::operator::print_task;
use crate::{CliError, OutputArgs, StoreArgs};

/// `tasker create`'s arguments.
#[derive(Args)]
pub struct CreateArgs {
    /// A registered task type, e.g. sendWebhook.
    #[arg(long = "type")]
    task_type: String,
    /// The payload as JSON (a JSON string is stored as its text), or @FILE, or @- for stdin.
    #[arg(long)]
    payload: String,
    /// Due after this long (humantime: 90s, 15m, 2h); not with --at.
    #[arg(long, value_parser = parse_delay, conflicts_with = "at")]
    delay: Option<Duration>,
    /// Due at this RFC 3339 instant, e.g. 2026-12-01T09:00:00Z.
    #[arg(long, value_parser = parse_at)]
    at: Option<Timestamp>,
    /// Attempts allowed, 1 to 50 (default from the task type).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=50))]
    max_attempts: Option<u32>,
    /// referenceUid: at most one pending or running task per reference and type.
    #[arg(long)]
    reference: Option<String>,
    /// A repeated create with this key returns the first task.
    #[arg(long)]
    idempotency_key: Option<String>,
    /// concurrencyKey: tasks sharing it run at most its limit at once (TASKER_KEY_LIMITS).
    #[arg(long)]
    concurrency_key: Option<String>,
    /// rateKey: tasks sharing it start at most at its rate (TASKER_KEY_LIMITS).
    #[arg(long)]
    rate_key: Option<String>,
    #[command(flatten)]
    output: OutputArgs,
    #[command(flatten)]
    pub store: StoreArgs,
}

fn parse_delay(text: &str) -> Result<Duration, String> {
    let delay =
        humantime::parse_duration(text).map_err(|err| format!("{err} (e.g. 90s, 15m, 2h)"))?;
    if delay > Duration::from_secs(MAX_DELAY_SECONDS) {
        return Err("must be at most a year (366 days)".to_owned());
    }
    Ok(delay)
}

fn parse_at(text: &str) -> Result<Timestamp, String> {
    text.parse()
        .map_err(|err: InvalidTimestamp| format!("must be {}", err.rule()))
}

/// Creates the task and prints it; an idempotent repeat prints the first task and says so.
pub async fn create(tasker: &Tasker<AnyStore>, args: CreateArgs) -> Result<(), CliError> {
    let new = NewTask {
        task_type: args.task_type,
        payload: payload_text(&args.payload)?,
        scheduled_at: match (args.at, args.delay) {
            (Some(at), _) => Some(at),
            (None, Some(delay)) => Some(tasker.now().plus(delay)),
            (None, None) => None,
        },
        max_attempts: args.max_attempts,
        reference_uid: args.reference,
        idempotency_key: args.idempotency_key,
        concurrency_key: args.concurrency_key,
        rate_key: args.rate_key,
    };
    match tasker.create(new).await? {
        Created::New(task) => print_task(&task, args.output.json),
        Created::Existing(task) => {
            eprintln!(
                "an earlier create with this idempotency key made task {}",
                task.id
            );
            print_task(&task, args.output.json)
        }
    }
}

/// The payload as the API stores it ([`payload_text::payload_text`]: the JSON text as given,
/// without its whitespace). `@path` reads the file, `@-` standard input.
pub(crate) fn payload_text(given: &str) -> Result<String, CliError> {
    let text = match given.strip_prefix('@') {
        Some("-") => std::io::read_to_string(std::io::stdin())
            .map_err(|err| CliError::Usage(format!("--payload @-: cannot read stdin: {err}")))?,
        Some(path) => std::fs::read_to_string(Path::new(path))
            .map_err(|err| CliError::Usage(format!("--payload @{path}: {err}")))?,
        None => given.to_owned(),
    };
    strict_json::parse(text.as_bytes()).map_err(|err| {
        CliError::Usage(match err {
            StrictJsonError::Syntax(err) => format!(
                "--payload is not JSON ({err}); to send text, quote it as a JSON string: '\"text\"'"
            ),
            StrictJsonError::DuplicateKey { key, .. } => {
                format!("--payload gives the key `{key}` more than once")
            }
        })
    })?;
    payload_text::payload_text(&text)
        .ok_or_else(|| CliError::Usage("--payload must be a JSON value other than null".to_owned()))
}

#[cfg(test)]
mod tests {
    use super::payload_text;

    #[test]
    fn payloads_are_stored_as_the_api_stores_them() {
        assert_eq!(payload_text(r#"{"a": [1, 2]}"#).unwrap(), r#"{"a":[1,2]}"#);
        assert_eq!(
            payload_text(r#"{"n": 123456789012345678901234567890, "f": 1.10}"#).unwrap(),
            r#"{"n":123456789012345678901234567890,"f":1.10}"#
        );
        assert_eq!(payload_text(r#""raw text""#).unwrap(), "raw text");
        assert!(payload_text("raw text").is_err());
        assert!(payload_text("null").is_err());
        assert!(payload_text(r#"{"a":1,"a":2}"#).is_err());
        assert!(payload_text("@/no/such/file").is_err());
    }
}
