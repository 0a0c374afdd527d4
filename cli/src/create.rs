//! `tasker create`: enqueue one task from a shell, with the API's rules for every field.

use std::path::Path;
use std::time::Duration;

use tasker::api::strict_json::{self, StrictJsonError};
use tasker::store::Created;
use tasker::{NewTask, Store, Tasker, Timestamp};

use crate::CliError;
use crate::operator::print_task;

/// What `tasker create` was given.
pub struct CreateArgs {
    pub task_type: String,
    pub payload: String,
    pub delay: Option<Duration>,
    pub at: Option<Timestamp>,
    pub max_attempts: Option<u32>,
    pub reference: Option<String>,
    pub idempotency_key: Option<String>,
    pub json: bool,
}

/// Creates the task and prints it; an idempotent repeat prints the first task and says so.
pub async fn create(tasker: &Tasker<Store>, args: CreateArgs) -> Result<(), CliError> {
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
    };
    match tasker.create(new).await? {
        Created::New(task) => print_task(&task, args.json),
        Created::Existing(task) => {
            eprintln!(
                "an earlier create with this idempotency key made task {}",
                task.id
            );
            print_task(&task, args.json)
        }
    }
}

/// The payload as the API stores it: a JSON string's text as is, other JSON as compact text.
/// `@path` reads the file, `@-` standard input.
fn payload_text(given: &str) -> Result<String, CliError> {
    let text = match given.strip_prefix('@') {
        Some("-") => std::io::read_to_string(std::io::stdin())
            .map_err(|err| CliError::Usage(format!("--payload @-: cannot read stdin: {err}")))?,
        Some(path) => std::fs::read_to_string(Path::new(path))
            .map_err(|err| CliError::Usage(format!("--payload @{path}: {err}")))?,
        None => given.to_owned(),
    };
    let value = strict_json::parse(text.as_bytes()).map_err(|err| {
        CliError::Usage(match err {
            StrictJsonError::Syntax(err) => format!(
                "--payload is not JSON ({err}); to send text, quote it as a JSON string: '\"text\"'"
            ),
            StrictJsonError::DuplicateKey { key, .. } => {
                format!("--payload gives the key `{key}` more than once")
            }
        })
    })?;
    Ok(match value {
        serde_json::Value::String(text) => text,
        serde_json::Value::Null => {
            return Err(CliError::Usage(
                "--payload must be a JSON value other than null".to_owned(),
            ));
        }
        other => other.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::payload_text;

    #[test]
    fn payloads_are_stored_as_the_api_stores_them() {
        assert_eq!(payload_text(r#"{"a": [1, 2]}"#).unwrap(), r#"{"a":[1,2]}"#);
        assert_eq!(payload_text(r#""raw text""#).unwrap(), "raw text");
        assert!(payload_text("raw text").is_err());
        assert!(payload_text("null").is_err());
        assert!(payload_text(r#"{"a":1,"a":2}"#).is_err());
        assert!(payload_text("@/no/such/file").is_err());
    }
}
