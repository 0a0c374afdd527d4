//! A task's payload on its page: pretty-printed while small and shallow, otherwise the stored
//! text cut short, with a link to the whole of it as plain text. A 250 KB payload nested 124
//! deep pretty-printed to 31.7 MB of page (1.24 s); a page now stays under about 64 KB.

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::header::{CONTENT_DISPOSITION, CONTENT_TYPE};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use super::{Page, Shared};
use crate::store::Store;
use crate::task::TaskId;

/// The most of a payload a page shows, in bytes of the stored text.
pub const SHOWN_BYTES: usize = 16 * 1024;
/// The most a pretty-printed payload may take on a page; past it the stored text is shown.
const PRETTY_BYTES: usize = 64 * 1024;
/// The deepest nesting pretty-printed (each level indents every line below it).
const PRETTY_DEPTH: usize = 16;

/// What a page shows of `payload`, and whether that is all of it.
pub fn shown(payload: &str) -> (String, bool) {
    if payload.len() <= SHOWN_BYTES {
        let pretty = serde_json::from_str::<serde_json::Value>(payload)
            .ok()
            .filter(|value| depth(value) <= PRETTY_DEPTH)
            .and_then(|value| serde_json::to_string_pretty(&value).ok())
            .filter(|pretty| pretty.len() <= PRETTY_BYTES);
        return (pretty.unwrap_or_else(|| payload.to_owned()), true);
    }
    let mut end = SHOWN_BYTES;
    while !payload.is_char_boundary(end) {
        end -= 1;
    }
    (payload[..end].to_owned(), false)
}

/// How deep `value` nests (a scalar: 0).
fn depth(value: &serde_json::Value) -> usize {
    match value {
        serde_json::Value::Array(items) => 1 + items.iter().map(depth).max().unwrap_or(0),
        serde_json::Value::Object(fields) => 1 + fields.values().map(depth).max().unwrap_or(0),
        _ => 0,
    }
}

/// `/ui/tasks/{id}/payload`: the stored payload as plain text, for a session.
pub async fn raw<S: Store>(
    State(dashboard): Shared<S>,
    headers: HeaderMap,
    id: Result<Path<String>, PathRejection>,
) -> Response {
    if let Err(answer) = Page::open(&dashboard, &headers) {
        return *answer;
    }
    let Some(id) = id.ok().and_then(|Path(id)| id.parse::<TaskId>().ok()) else {
        return (StatusCode::NOT_FOUND, "That is not a task id.").into_response();
    };
    match dashboard.tasker.get(id).await {
        Ok(task) => {
            let mut response = task.payload.into_response();
            let headers = response.headers_mut();
            headers.insert(
                CONTENT_TYPE,
                HeaderValue::from_static("text/plain; charset=utf-8"),
            );
            headers.insert(CONTENT_DISPOSITION, HeaderValue::from_static("inline"));
            response
        }
        Err(err) => {
            let err = crate::api::error::ApiError::from(err);
            (err.status, err.message).into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_small_payload_is_pretty_and_a_large_or_deep_one_is_cut_or_kept_compact() {
        let (small, whole) = shown(r#"{"a":[1,2]}"#);
        assert!(whole && small.contains('\n'), "{small}");
        let deep = format!("{}1{}", "[".repeat(100), "]".repeat(100));
        let (shown_deep, whole) = shown(&deep);
        assert!(whole);
        assert_eq!(shown_deep, deep, "too deep to indent: shown as stored");
        let large = format!("\"{}é\"", "x".repeat(SHOWN_BYTES));
        let (cut, whole) = shown(&large);
        assert!(!whole);
        assert!(cut.len() <= SHOWN_BYTES);
    }
}
