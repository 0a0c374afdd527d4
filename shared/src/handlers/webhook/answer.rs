//! What a receiver's answer other than 2xx makes of the attempt: `410 Gone` fails the task,
//! `429` and `503` with `Retry-After` wait as long as the receiver asks, anything else is
//! retried after the backoff. The error names the status and the body's first bytes.

use std::time::{Duration, SystemTime};

use reqwest::StatusCode;
use reqwest::header::RETRY_AFTER;

use crate::handlers::TaskError;

/// Bytes of the answer's body kept in the task's `lastError`.
const BODY_BYTES: usize = 256;

/// The failure a non-2xx `response` makes; reads at most [`BODY_BYTES`] of its body.
pub(super) async fn failure(mut response: reqwest::Response) -> TaskError {
    let status = response.status();
    // An HTTP date is wall-clock time, so it is measured against the system's clock (the
    // attempt's own clock only differs from it in tests).
    let wait = matches!(
        status,
        StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE
    )
    .then(|| response.headers().get(RETRY_AFTER))
    .flatten()
    .and_then(|value| value.to_str().ok())
    .and_then(|value| retry_after(value, SystemTime::now()));
    let body = first_bytes(&mut response).await;
    let mut error = format!("webhook answered HTTP {status}");
    if let Some(wait) = wait {
        // Whole seconds, rounded up: a date's wait has the sub-second part of "now".
        let seconds = wait
            .as_secs()
            .saturating_add(u64::from(wait.subsec_nanos() > 0));
        error.push_str(&format!(
            " (Retry-After: {})",
            humantime::format_duration(Duration::from_secs(seconds))
        ));
    }
    if !body.is_empty() {
        error.push_str(": ");
        error.push_str(&body);
    }
    match (status, wait) {
        (StatusCode::GONE, _) => TaskError::Permanent(error),
        (_, Some(after)) => TaskError::RetryAfter { error, after },
        (_, None) => TaskError::Retryable(error),
    }
}

/// The wait a `Retry-After` value asks for at `now`: whole seconds, or an HTTP date (one in
/// the past asks for none). None for anything else, so the backoff applies.
pub(super) fn retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        // More digits than a u64 holds is still "a very long time": the cap applies later.
        return Some(Duration::from_secs(value.parse().unwrap_or(u64::MAX)));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now).unwrap_or_default())
}

/// The body's first [`BODY_BYTES`] bytes as text, `…` when there was more (invalid UTF-8,
/// control characters and the invisible ones that reorder or hide text replaced by U+FFFD,
/// whitespace runs made one space); empty when it cannot be read.
async fn first_bytes(response: &mut reqwest::Response) -> String {
    let mut bytes = Vec::new();
    // One byte past the limit tells a body that ends there from one that goes on.
    while bytes.len() <= BODY_BYTES {
        match response.chunk().await {
            Ok(Some(chunk)) => bytes.extend_from_slice(&chunk),
            Ok(None) | Err(_) => break,
        }
    }
    let cut = bytes.len() > BODY_BYTES;
    bytes.truncate(BODY_BYTES);
    if cut && let Err(err) = std::str::from_utf8(&bytes) {
        // A character split by the cut is dropped, not shown as invalid.
        if err.error_len().is_none() {
            bytes.truncate(err.valid_up_to());
        }
    }
    let text = String::from_utf8_lossy(&bytes);
    let mut shown: String = text
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .chars()
        .map(|c| {
            if shown_as_is(c) {
                c
            } else {
                char::REPLACEMENT_CHARACTER
            }
        })
        .collect();
    if cut {
        shown.push('…');
    }
    shown
}

/// False for control characters and for the invisible ones that reorder or hide what an
/// operator reads (bidirectional controls, zero-width characters, the byte order mark).
fn shown_as_is(c: char) -> bool {
    !(c.is_control()
        || matches!(c, '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2060}'..='\u{2069}' | '\u{FEFF}'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> SystemTime {
        httpdate::parse_http_date(text).expect("an HTTP date")
    }

    #[test]
    fn seconds_and_dates_are_understood() {
        let now = at("Sun, 06 Dec 2026 20:00:00 GMT");
        assert_eq!(retry_after("5", now), Some(Duration::from_secs(5)));
        assert_eq!(retry_after(" 120 ", now), Some(Duration::from_secs(120)));
        assert_eq!(retry_after("0", now), Some(Duration::ZERO));
        assert_eq!(
            retry_after("99999999999999999999999", now),
            Some(Duration::from_secs(u64::MAX))
        );
        assert_eq!(
            retry_after("Sun, 06 Dec 2026 20:01:30 GMT", now),
            Some(Duration::from_secs(90))
        );
        // The obsolete forms HTTP still asks receivers to accept.
        assert_eq!(
            retry_after("Sunday, 06-Dec-26 20:00:10 GMT", now),
            Some(Duration::from_secs(10))
        );
        assert_eq!(
            retry_after("Sun, 06 Dec 2026 19:00:00 GMT", now),
            Some(Duration::ZERO),
            "a date in the past asks for no wait"
        );
    }

    fn answer(status: u16, retry_after: Option<&str>, body: &str) -> reqwest::Response {
        let mut builder = http::Response::builder().status(status);
        if let Some(value) = retry_after {
            builder = builder.header(RETRY_AFTER, value);
        }
        reqwest::Response::from(builder.body(body.to_owned()).expect("a response"))
    }

    #[tokio::test]
    async fn the_status_decides_and_the_error_names_it() {
        assert_eq!(
            failure(answer(410, Some("5"), "no such hook")).await,
            TaskError::Permanent("webhook answered HTTP 410 Gone: no such hook".into())
        );
        assert_eq!(
            failure(answer(429, Some("3"), "slow\n\n  down")).await,
            TaskError::RetryAfter {
                error: "webhook answered HTTP 429 Too Many Requests (Retry-After: 3s): slow down"
                    .into(),
                after: Duration::from_secs(3),
            }
        );
        assert_eq!(
            failure(answer(503, None, "")).await,
            TaskError::Retryable("webhook answered HTTP 503 Service Unavailable".into())
        );
        assert_eq!(
            failure(answer(500, Some("60"), "oops")).await,
            TaskError::Retryable("webhook answered HTTP 500 Internal Server Error: oops".into()),
            "Retry-After only counts with 429 and 503"
        );
    }

    #[tokio::test]
    async fn only_the_first_bytes_of_the_body_are_kept() {
        let long = format!("{}\u{7}{}", "a".repeat(100), "b".repeat(10_000));
        let TaskError::Retryable(error) = failure(answer(502, None, &long)).await else {
            panic!("a retryable failure");
        };
        let shown = error
            .strip_prefix("webhook answered HTTP 502 Bad Gateway: ")
            .expect("the status first");
        let expected = format!("{}\u{FFFD}{}…", "a".repeat(100), "b".repeat(155));
        assert_eq!(shown, expected);

        // Exactly 256 bytes: all of it, no mark; a character the cut splits is dropped.
        let whole = "c".repeat(BODY_BYTES);
        let TaskError::Retryable(error) = failure(answer(502, None, &whole)).await else {
            panic!("a retryable failure");
        };
        assert!(error.ends_with(&format!(": {whole}")), "{error}");
        let split = format!("{}é and more", "d".repeat(BODY_BYTES - 1));
        let TaskError::Retryable(error) = failure(answer(502, None, &split)).await else {
            panic!("a retryable failure");
        };
        assert!(
            error.ends_with(&format!(": {}…", "d".repeat(BODY_BYTES - 1))),
            "{error}"
        );
    }

    #[tokio::test]
    async fn invisible_characters_that_reorder_text_are_replaced() {
        let TaskError::Retryable(error) =
            failure(answer(500, None, "a\u{202E}b\u{200B}c\u{FEFF}d é")).await
        else {
            panic!("a retryable failure");
        };
        assert!(
            error.ends_with(": a\u{FFFD}b\u{FFFD}c\u{FFFD}d é"),
            "{error}"
        );
    }

    #[test]
    fn anything_else_leaves_the_backoff() {
        let now = at("Sun, 06 Dec 2026 20:00:00 GMT");
        for value in ["", "-5", "5.5", "soon", "2026-12-06T20:00:00Z", "5 s"] {
            assert_eq!(retry_after(value, now), None, "{value:?}");
        }
    }
}
