//! Parsing request bodies by hand, so every rejection names its field and carries a code.

use std::time::Duration;

use serde_json::{Map, Value};

use super::error::ApiError;
use super::payload_text::{payload_text, raw_items, raw_members};
use super::strict_json::{self, StrictJsonError};
use crate::clock::Timestamp;
use crate::engine::MAX_LIST_LIMIT;
use crate::store::{InvalidCursor, ListFilter, ListKey};
use crate::task::{
    MAX_ATTEMPTS_LIMIT, MAX_REFERENCE_UID_CHARS, MAX_TYPE_CHARS, NewTask, ValidationError,
};

/// Longest accepted `delaySeconds`: one year.
pub const MAX_DELAY_SECONDS: u64 = 366 * 24 * 3600;

const CREATE_FIELDS: &[&str] = &[
    "idempotencyKey",
    "type",
    "payload",
    "scheduledAt",
    "delaySeconds",
    "maxAttempts",
    "referenceUid",
    "concurrencyKey",
    "rateKey",
];
const CANCEL_FIELDS: &[&str] = &["referenceUid", "type"];

/// A body of `POST /tasks/cancel`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CancelByReference {
    /// The reference whose pending tasks are cancelled.
    pub reference_uid: String,
    /// Only tasks of this type, when given.
    pub task_type: Option<String>,
}

/// Parses a JSON object body with only `allowed` fields; a key given twice is refused.
pub(super) fn object(body: &[u8], allowed: &[&str]) -> Result<Map<String, Value>, ApiError> {
    let value = strict_json::parse(body).map_err(|err| match err {
        StrictJsonError::Syntax(err) => {
            ApiError::bad_request("invalid_json", format!("the body is not valid JSON: {err}"))
        }
        StrictJsonError::DuplicateKey { key, within } => {
            let place =
                within.map_or_else(String::new, |top| format!(" inside `{}`", truncate(&top)));
            ApiError::bad_request(
                "duplicate_field",
                format!(
                    "`{}` is given more than once{place}; give each field once",
                    truncate(&key)
                ),
            )
        }
    })?;
    fields(value, allowed)
}

/// The value as an object with only `allowed` fields.
fn fields(value: Value, allowed: &[&str]) -> Result<Map<String, Value>, ApiError> {
    let Value::Object(map) = value else {
        return Err(ApiError::bad_request(
            "invalid_body",
            "the body must be a JSON object",
        ));
    };
    if let Some(unknown) = map.keys().find(|key| !allowed.contains(&key.as_str())) {
        return Err(ApiError::bad_request(
            "unknown_field",
            format!(
                "unknown field `{}`; expected one of {}",
                truncate(unknown),
                allowed.join(", ")
            ),
        ));
    }
    Ok(map)
}

fn truncate(text: &str) -> String {
    text.chars().take(64).collect()
}

pub(super) fn invalid(field: &'static str, reason: impl Into<String>) -> ApiError {
    ValidationError::Invalid {
        field,
        reason: reason.into(),
    }
    .into()
}

/// `null` is refused wherever a value is given: a field is either left out or means what it says.
const NULL_REFUSED: &str = "must not be null; leave the field out instead";

pub(super) fn required_string(
    map: &Map<String, Value>,
    field: &'static str,
) -> Result<String, ApiError> {
    match map.get(field) {
        None => Err(ValidationError::Missing(field).into()),
        Some(Value::Null) => Err(invalid(field, "must be a string, not null")),
        Some(Value::String(text)) => Ok(text.clone()),
        Some(_) => Err(invalid(field, "must be a string")),
    }
}

pub(super) fn optional_string(
    map: &Map<String, Value>,
    field: &'static str,
) -> Result<Option<String>, ApiError> {
    match map.get(field) {
        None => Ok(None),
        Some(Value::Null) => Err(invalid(field, NULL_REFUSED)),
        Some(Value::String(text)) => Ok(Some(text.clone())),
        Some(_) => Err(invalid(field, "must be a string")),
    }
}

/// A whole number from `min` to `max`. An integral float (`60.0`) counts, as in JSON Schema:
/// many JSON encoders write every number as a float.
pub(super) fn optional_integer(
    map: &Map<String, Value>,
    field: &'static str,
    (min, max): (u64, u64),
) -> Result<Option<u64>, ApiError> {
    let rule = || invalid(field, format!("must be a whole number from {min} to {max}"));
    match map.get(field) {
        None => Ok(None),
        Some(Value::Null) => Err(invalid(field, NULL_REFUSED)),
        Some(Value::Number(number)) => {
            let whole = number.as_u64().or_else(|| {
                number
                    .as_f64()
                    .filter(|f| f.fract() == 0.0 && (0.0..=max as f64).contains(f))
                    .map(|f| f as u64)
            });
            whole
                .filter(|n| (min..=max).contains(n))
                .map(Some)
                .ok_or_else(rule)
        }
        Some(_) => Err(rule()),
    }
}

/// Parses `POST /tasks`. The payload is kept verbatim when it is a JSON string, and stored as
/// the JSON text sent otherwise, without its whitespace ([`payload_text`]).
pub fn parse_create(body: &[u8], now: Timestamp) -> Result<NewTask, ApiError> {
    let map = object(body, CREATE_FIELDS)?;
    let raw = raw_members(body);
    create_from(map, raw.get("payload").map(|raw| raw.get()), now)
}

/// Most creates in one `POST /tasks/batch`.
pub const MAX_BATCH: usize = 100;

/// Parses `POST /tasks/batch`: `{"tasks": [create, ...]}` with 1 to [`MAX_BATCH`] items; each
/// item is validated on its own, so one bad item does not reject the others.
pub fn parse_batch(
    body: &[u8],
    now: Timestamp,
) -> Result<Vec<Result<NewTask, ApiError>>, ApiError> {
    let mut map = object(body, &["tasks"])?;
    let raw = raw_members(body)
        .get("tasks")
        .map(|tasks| raw_items(tasks))
        .unwrap_or_default();
    let Some(Value::Array(items)) = map.remove("tasks") else {
        return Err(invalid("tasks", "must be an array of create requests"));
    };
    if items.is_empty() || items.len() > MAX_BATCH {
        return Err(invalid(
            "tasks",
            format!(
                "must hold 1 to {MAX_BATCH} create requests, got {}",
                items.len()
            ),
        ));
    }
    Ok(items
        .into_iter()
        .enumerate()
        .map(|(i, item)| {
            let members = raw.get(i).map(|item| raw_members(item.get().as_bytes()));
            let payload = members
                .as_ref()
                .and_then(|m| m.get("payload"))
                .map(|p| p.get());
            fields(item, CREATE_FIELDS).and_then(|map| create_from(map, payload, now))
        })
        .collect())
}

/// A create from its fields; `raw_payload` is the payload's JSON text as sent.
fn create_from(
    map: Map<String, Value>,
    raw_payload: Option<&str>,
    now: Timestamp,
) -> Result<NewTask, ApiError> {
    let task_type = required_string(&map, "type")?;
    let payload = stored_payload(&map, raw_payload)?.ok_or(ValidationError::Missing("payload"))?;
    let scheduled_at = optional_string(&map, "scheduledAt")?
        .map(|text| {
            text.parse::<Timestamp>()
                .map_err(|err| invalid("scheduledAt", format!("must be {}", err.rule())))
        })
        .transpose()?;
    let delay = optional_integer(&map, "delaySeconds", (0, MAX_DELAY_SECONDS))?;
    let scheduled_at = match (scheduled_at, delay) {
        (Some(_), Some(_)) => {
            return Err(invalid(
                "delaySeconds",
                "cannot be combined with `scheduledAt`; give one of them",
            ));
        }
        (Some(at), None) => Some(at),
        (None, Some(seconds)) => Some(now.plus(Duration::from_secs(seconds))),
        (None, None) => None,
    };
    let max_attempts = optional_integer(&map, "maxAttempts", (1, u64::from(MAX_ATTEMPTS_LIMIT)))?
        .map(|n| u32::try_from(n).map_err(|_| invalid("maxAttempts", "is too large")))
        .transpose()?;
    let new = NewTask {
        task_type,
        payload,
        scheduled_at,
        max_attempts,
        reference_uid: optional_string(&map, "referenceUid")?,
        idempotency_key: optional_string(&map, "idempotencyKey")?,
        concurrency_key: optional_string(&map, "concurrencyKey")?,
        rate_key: optional_string(&map, "rateKey")?,
    };
    new.validate()?;
    Ok(new)
}

/// The stored text of the `payload` field (`None` when it is left out), from its JSON text as
/// sent (`raw`, which the body's parse always finds for a field it has).
pub(super) fn stored_payload(
    map: &Map<String, Value>,
    raw: Option<&str>,
) -> Result<Option<String>, ApiError> {
    let Some(value) = map.get("payload") else {
        return Ok(None);
    };
    let text = match raw {
        Some(raw) => payload_text(raw),
        None => payload_text(&value.to_string()),
    };
    text.map(Some)
        .ok_or_else(|| invalid("payload", "must be a JSON value other than null"))
}

/// Parses `POST /tasks/cancel`.
pub fn parse_cancel_by_reference(body: &[u8]) -> Result<CancelByReference, ApiError> {
    let map = object(body, CANCEL_FIELDS)?;
    let reference_uid = required_string(&map, "referenceUid")?;
    crate::task::validate_reference_uid(&reference_uid)?;
    let task_type = optional_string(&map, "type")?;
    if let Some(task_type) = &task_type {
        crate::task::validate_type(task_type)?;
    }
    Ok(CancelByReference {
        reference_uid,
        task_type,
    })
}

/// Page size of `GET /tasks` when the query gives none.
pub const DEFAULT_LIST_LIMIT: usize = 20;
const LIST_PARAMETERS: &[&str] = &[
    "status",
    "type",
    "referenceUid",
    "schedule",
    "limit",
    "cursor",
];

/// The query of `GET /tasks`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListQuery {
    /// Which tasks.
    pub filter: ListFilter,
    /// Page size, 1 to [`MAX_LIST_LIMIT`].
    pub limit: usize,
    /// Where the page starts (`nextCursor` of the previous page).
    pub cursor: Option<ListKey>,
}

fn invalid_parameter(name: &str, reason: &str) -> ApiError {
    ApiError::bad_request(
        "invalid_parameter",
        format!("query parameter `{name}` {reason}"),
    )
}

/// At most `max` characters and no U+0000 (no stored value holds one), or the parameter
/// `name` is refused.
fn capped(name: &str, value: String, max: usize) -> Result<String, ApiError> {
    if value.chars().count() > max {
        return Err(invalid_parameter(
            name,
            &format!("is longer than {max} characters"),
        ));
    }
    if value.contains('\0') {
        return Err(invalid_parameter(
            name,
            "must not contain the character U+0000",
        ));
    }
    Ok(value)
}

/// Sets the known parameter `name` of `GET /tasks` to `value` (not empty, not seen before).
fn set_list_parameter(parsed: &mut ListQuery, name: &str, value: String) -> Result<(), ApiError> {
    match name {
        "status" => {
            let status = value.parse().map_err(|_| {
                invalid_parameter(
                    "status",
                    "must be one of pending, running, succeeded, failed, cancelled",
                )
            })?;
            parsed.filter.status = Some(status);
        }
        "type" => parsed.filter.task_type = Some(capped(name, value, MAX_TYPE_CHARS)?),
        "referenceUid" => {
            parsed.filter.reference_uid = Some(capped(name, value, MAX_REFERENCE_UID_CHARS)?);
        }
        "schedule" => {
            parsed.filter.schedule = Some(capped(name, value, crate::schedule::MAX_NAME_CHARS)?);
        }
        "limit" => {
            parsed.limit = value
                .parse()
                .ok()
                .filter(|limit| (1..=MAX_LIST_LIMIT).contains(limit))
                .ok_or_else(|| {
                    invalid_parameter(
                        "limit",
                        &format!("must be an integer from 1 to {MAX_LIST_LIMIT}"),
                    )
                })?;
        }
        _ => {
            let cursor = value.parse().map_err(|err: InvalidCursor| {
                ApiError::bad_request("invalid_cursor", err.to_string())
            })?;
            parsed.cursor = Some(cursor);
        }
    }
    Ok(())
}

/// Parses the query string of `GET /tasks`: unknown, repeated or empty parameters are refused,
/// so a typo never silently widens a listing.
pub fn parse_list_query(query: Option<&str>) -> Result<ListQuery, ApiError> {
    let mut parsed = ListQuery {
        limit: DEFAULT_LIST_LIMIT,
        ..ListQuery::default()
    };
    let mut seen: Vec<String> = Vec::new();
    for (name, value) in url::form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
        if !LIST_PARAMETERS.contains(&name.as_ref()) {
            return Err(ApiError::bad_request(
                "unknown_parameter",
                format!(
                    "unknown query parameter `{}`; expected one of {}",
                    truncate(&name),
                    LIST_PARAMETERS.join(", ")
                ),
            ));
        }
        if seen.iter().any(|earlier| earlier == &name) {
            return Err(invalid_parameter(&name, "is given more than once"));
        }
        seen.push(name.to_string());
        if value.is_empty() {
            return Err(invalid_parameter(&name, "is empty"));
        }
        set_list_parameter(&mut parsed, &name, value.into_owned())?;
    }
    Ok(parsed)
}

#[cfg(test)]
mod tests;
