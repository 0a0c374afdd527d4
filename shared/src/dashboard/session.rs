//! Who may use the dashboard: a session cookie, signed with the API token, after the token is
//! typed once; a CSRF token every form repeats, derived from the session (or, before a login,
//! from a random nonce cookie) under a key only the server holds; and nobody at all when the
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
/// The nonce cookie a page without a session binds its CSRF token to (the login page, and
/// every page of a server without a token).
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

/// The key CSRF tokens are derived under: the API token where there is one (every process
/// and Lambda container of a deployment then agrees), else a random key of this process.
pub fn csrf_key(auth: &AuthMode) -> Vec<u8> {
    match auth {
        AuthMode::Token(token) => token.as_bytes().to_vec(),
        _ => rand::random::<[u8; 32]>().to_vec(),
    }
}

/// A request's CSRF token, and the nonce cookie to set when the token is bound to a new one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Csrf {
    pub token: String,
    pub new_nonce: Option<String>,
}

/// The HMAC under `key` of what a token is bound to, as 32 hex characters.
fn csrf_mac(key: &[u8], binding: &str) -> String {
    // HMAC takes keys of any length; the error branch cannot happen.
    let Ok(mut mac) = <Hmac<Sha256> as KeyInit>::new_from_slice(key) else {
        return String::new();
    };
    mac.update(format!("tasker-dashboard-csrf:{binding}").as_bytes());
    hex::encode(&mac.finalize().into_bytes()[..16])
}

/// The CSRF token of a request with `headers` at `now`: bound to its session when it has a
/// valid one, else to its nonce cookie (a new nonce when it has none). A cookie planted by a
/// sibling site is worth nothing: the token that goes with it needs the key.
pub fn csrf(key: &[u8], auth: &AuthMode, headers: &HeaderMap, now: u64) -> Csrf {
    if let (AuthMode::Token(token), Some(session)) = (auth, cookie(headers, SESSION_COOKIE)) {
        if valid_session(token, session, now) {
            return Csrf {
                token: csrf_mac(key, &format!("session:{session}")),
                new_nonce: None,
            };
        }
    }
    let nonce = cookie(headers, CSRF_COOKIE)
        .filter(|value| value.len() == 32 && value.bytes().all(|b| b.is_ascii_hexdigit()));
    match nonce {
        Some(nonce) => Csrf {
            token: csrf_mac(key, &format!("nonce:{nonce}")),
            new_nonce: None,
        },
        None => {
            let nonce = hex::encode(rand::random::<[u8; 16]>());
            Csrf {
                token: csrf_mac(key, &format!("nonce:{nonce}")),
                new_nonce: Some(nonce),
            }
        }
    }
}

/// True when a form's `csrf` field is the token of the request it came with. A page on another
/// site can neither read the token nor (`SameSite=Strict`) have the cookies sent with its POST.
pub fn csrf_matches(
    key: &[u8],
    auth: &AuthMode,
    headers: &HeaderMap,
    now: u64,
    field: &str,
) -> bool {
    let expected = csrf(key, auth, headers, now);
    expected.new_nonce.is_none() && bool::from(expected.token.as_bytes().ct_eq(field.as_bytes()))
}

/// Adds the nonce cookie to `headers` when the page's CSRF token is bound to a new one.
pub fn remember_csrf(headers: &mut HeaderMap, csrf: &Csrf, secure: bool) {
    if let Some(nonce) = &csrf.new_nonce {
        headers.append(
            SET_COOKIE,
            set_cookie(CSRF_COOKIE, nonce, SESSION_SECONDS, secure),
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

    fn with_cookies(text: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(COOKIE, HeaderValue::from_str(text).expect("a header"));
        headers
    }

    #[test]
    fn a_csrf_token_is_bound_to_its_session_and_needs_the_key() {
        let auth = AuthMode::Token("s3cret".to_owned());
        let key = csrf_key(&auth);
        let session = new_session("s3cret", 1_000);
        let signed_in = with_cookies(&format!("tasker_session={session}"));
        let token = csrf(&key, &auth, &signed_in, 1_000).token;
        assert!(csrf_matches(&key, &auth, &signed_in, 1_000, &token));
        // Another session (a minute later) has another token.
        let later = with_cookies(&format!("tasker_session={}", new_session("s3cret", 1_060)));
        assert!(!csrf_matches(&key, &auth, &later, 1_060, &token));
        // A planted nonce cookie with a field of the planter's choosing: refused (it used to be
        // accepted whenever the field repeated the cookie).
        let planted = "0123456789abcdef0123456789abcdef";
        let tossed = with_cookies(&format!("tasker_csrf={planted}; tasker_session={session}"));
        assert!(!csrf_matches(&key, &auth, &tossed, 1_000, planted));
        let no_session = with_cookies(&format!("tasker_csrf={planted}"));
        assert!(!csrf_matches(&key, &auth, &no_session, 1_000, planted));
        // Before a login the token goes with the nonce, under the key.
        let before = csrf(&key, &auth, &no_session, 1_000);
        assert_eq!(before.new_nonce, None);
        assert!(csrf_matches(&key, &auth, &no_session, 1_000, &before.token));
        let other_key = csrf_key(&AuthMode::Token("other".to_owned()));
        assert!(!csrf_matches(
            &other_key,
            &auth,
            &no_session,
            1_000,
            &before.token
        ));
        // Without any cookie there is nothing to match.
        let fresh = csrf(&key, &auth, &HeaderMap::new(), 1_000);
        assert!(fresh.new_nonce.is_some());
        assert!(!csrf_matches(
            &key,
            &auth,
            &HeaderMap::new(),
            1_000,
            &fresh.token
        ));
    }

    #[test]
    fn cookies_are_found_by_name_among_others() {
        let mut headers = HeaderMap::new();
        headers.insert(COOKIE, HeaderValue::from_static("a=1; tasker_csrf=x; b=2"));
        assert_eq!(cookie(&headers, "tasker_csrf"), Some("x"));
        assert_eq!(cookie(&headers, "c"), None);
    }
}
