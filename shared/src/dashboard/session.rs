//! Who may use the dashboard: a session cookie, signed with the API token, after the token is
//! typed once; a CSRF token in a cookie that every form repeats; and nobody at all when the
//! API's authentication is not configured (or is IAM, which a browser cannot sign).
//!
//! Cookies are parsed by hand: two names, no attributes to read back, where a cookie crate
//! would add a dependency for a dozen lines.

use axum::http::header::{COOKIE, SET_COOKIE};
use axum::http::{HeaderMap, HeaderValue};
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

use crate::api::auth::AuthMode;

/// The session cookie's name.
pub const SESSION_COOKIE: &str = "tasker_session";
/// The CSRF cookie's name; forms carry the same value in their `csrf` field.
pub const CSRF_COOKIE: &str = "tasker_csrf";
/// How long a session lasts.
pub const SESSION_SECONDS: u64 = 12 * 3600;

/// What a request may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Everything (a valid session, or a server without a token on loopback).
    Granted,
    /// Nothing until the token is typed on the login page.
    LogIn,
    /// Nothing at all: authentication is not configured, or is IAM.
    Refused,
}

/// The value of the cookie `name` in the request, if any.
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value)
}

/// True when the request came over HTTPS (directly or, as API Gateway says, before a proxy):
/// cookies then carry `Secure`.
pub fn over_https(headers: &HeaderMap) -> bool {
    headers
        .get("x-forwarded-proto")
        .and_then(|value| value.to_str().ok())
        .is_some_and(|proto| proto.eq_ignore_ascii_case("https"))
}

/// A `Set-Cookie` value for the dashboard's path; `max_age` 0 deletes the cookie.
pub fn set_cookie(name: &str, value: &str, max_age: u64, secure: bool) -> HeaderValue {
    let secure = if secure { "; Secure" } else { "" };
    let text = format!(
        "{name}={value}; Path={}; Max-Age={max_age}; HttpOnly; SameSite=Strict{secure}",
        super::PREFIX
    );
    HeaderValue::from_str(&text).unwrap_or_else(|_| HeaderValue::from_static("invalid=1"))
}

/// Now, in Unix seconds: what sessions are dated with.
pub fn now_seconds() -> u64 {
    u64::try_from(crate::clock::Timestamp::now_utc().unix_seconds()).unwrap_or(0)
}

/// The signature of a session issued at `issued` (Unix seconds), keyed by the token.
fn signature(token: &str, issued: u64) -> String {
    // HMAC takes keys of any length; the error branch cannot happen.
    let Ok(mut mac) = <Hmac<Sha256> as KeyInit>::new_from_slice(token.as_bytes()) else {
        return String::new();
    };
    mac.update(format!("tasker-dashboard-session:{issued}").as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

/// A new session's cookie value, issued at `now` (Unix seconds).
pub fn new_session(token: &str, now: u64) -> String {
    format!("{now}.{}", signature(token, now))
}

/// True when `value` is a session this token signed, issued in the last
/// [`SESSION_SECONDS`] as of `now`. A changed token ends every session.
pub fn valid_session(token: &str, value: &str, now: u64) -> bool {
    let Some((issued, signed)) = value.split_once('.') else {
        return false;
    };
    let Ok(issued) = issued.parse::<u64>() else {
        return false;
    };
    // A minute of slack: the next request may reach a machine whose clock is a bit behind.
    let fresh = issued <= now + 60 && now.saturating_sub(issued) < SESSION_SECONDS;
    let expected = signature(token, issued);
    let matches: bool = expected.as_bytes().ct_eq(signed.as_bytes()).into();
    fresh && matches
}

/// What `auth` lets a request with `headers` do at `now` (Unix seconds).
pub fn access(auth: &AuthMode, headers: &HeaderMap, now: u64) -> Access {
    match auth {
        AuthMode::Open => Access::Granted,
        AuthMode::Deny(_) | AuthMode::Iam => Access::Refused,
        AuthMode::Token(token) => match cookie(headers, SESSION_COOKIE) {
            Some(value) if valid_session(token, value, now) => Access::Granted,
            _ => Access::LogIn,
        },
    }
}

/// The request's CSRF token, or a new one to set (`true`): random, 128 bits.
pub fn csrf_token(headers: &HeaderMap) -> (String, bool) {
    match cookie(headers, CSRF_COOKIE).filter(|value| value.len() == 32) {
        Some(value) => (value.to_owned(), false),
        None => (hex::encode(rand::random::<[u8; 16]>()), true),
    }
}

/// True when a form's `csrf` field repeats the request's CSRF cookie. A page on another site
/// can neither read the cookie nor (`SameSite=Strict`) have it sent with its POST.
pub fn csrf_matches(headers: &HeaderMap, field: &str) -> bool {
    match cookie(headers, CSRF_COOKIE) {
        Some(value) if value.len() == 32 => value.as_bytes().ct_eq(field.as_bytes()).into(),
        _ => false,
    }
}

/// Adds the CSRF cookie to `headers` when the token is new.
pub fn remember_csrf(headers: &mut HeaderMap, token: &str, new: bool, secure: bool) {
    if new {
        headers.append(
            SET_COOKIE,
            set_cookie(CSRF_COOKIE, token, SESSION_SECONDS, secure),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_holds_for_its_token_and_its_hours_only() {
        let value = new_session("s3cret", 1_000);
        assert!(valid_session("s3cret", &value, 1_000 + 60));
        assert!(!valid_session("other", &value, 1_060), "another token");
        assert!(
            !valid_session("s3cret", &value, 1_000 + SESSION_SECONDS),
            "expired"
        );
        assert!(
            valid_session("s3cret", &value, 990),
            "a clock a little behind"
        );
        assert!(
            !valid_session("s3cret", &value, 900),
            "issued in the future"
        );
        let forged = value.replacen("1000.", "1001.", 1);
        assert!(!valid_session("s3cret", &forged, 1_060), "re-dated");
        assert!(!valid_session("s3cret", "garbage", 1_060));
    }

    #[test]
    fn cookies_are_found_by_name_among_others() {
        let mut headers = HeaderMap::new();
        headers.insert(COOKIE, HeaderValue::from_static("a=1; tasker_csrf=x; b=2"));
        assert_eq!(cookie(&headers, "tasker_csrf"), Some("x"));
        assert_eq!(cookie(&headers, "c"), None);
    }
}
