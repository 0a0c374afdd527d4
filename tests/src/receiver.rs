//! A webhook receiver on 127.0.0.1 that records every request and answers the status code
//! named in its path: `/status/500/...` answers 500, anything else 200. `/delay/1500/...`
//! answers after 1.5 s (the request is recorded when it arrives, and again when answered). A query sets `Retry-After`:
//! `?retry-after=5` as written, `?retry-after-in=3` as the HTTP date 3 s from the answer.
//! Answers other than 2xx carry the body `answered <status> to <path>`.

use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::header::RETRY_AFTER;
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};

/// One request the receiver saw.
#[derive(Debug, Clone)]
pub struct Received {
    /// Request path.
    pub path: String,
    /// Request headers.
    pub headers: HeaderMap,
    /// Raw body.
    pub body: Bytes,
    /// When it arrived.
    pub at: SystemTime,
    /// When its answer was ready (after any `/delay/`); none while it waits.
    pub answered: Option<SystemTime>,
}

/// The running receiver; stops when dropped.
pub struct Receiver {
    /// `http://127.0.0.1:<port>`
    pub base: String,
    seen: Arc<Mutex<Vec<Received>>>,
    server: tokio::task::JoinHandle<()>,
}

impl Receiver {
    /// Starts a receiver on a free loopback port.
    pub async fn start() -> Self {
        let seen: Arc<Mutex<Vec<Received>>> = Arc::default();
        let app = Router::new().fallback(record).with_state(Arc::clone(&seen));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the receiver");
        let base = format!(
            "http://{}",
            listener.local_addr().expect("receiver address")
        );
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self { base, seen, server }
    }

    /// Every request so far.
    pub fn all(&self) -> Vec<Received> {
        self.seen.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// How many requests each path has had so far.
    pub fn count_by_path(&self) -> std::collections::HashMap<String, usize> {
        let mut by_path = std::collections::HashMap::new();
        for request in self.seen.lock().unwrap_or_else(|p| p.into_inner()).iter() {
            *by_path.entry(request.path.clone()).or_default() += 1;
        }
        by_path
    }

    /// Every request to `path` so far.
    pub fn requests_to(&self, path: &str) -> Vec<Received> {
        self.seen
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter(|r| r.path == path)
            .cloned()
            .collect()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.server.abort();
    }
}

async fn record(
    State(seen): State<Arc<Mutex<Vec<Received>>>>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = uri.path().to_owned();
    let status = path
        .strip_prefix("/status/")
        .and_then(|rest| rest.split('/').next())
        .and_then(|code| code.parse::<u16>().ok())
        .and_then(|code| StatusCode::from_u16(code).ok())
        .unwrap_or(StatusCode::OK);
    let delay = path
        .strip_prefix("/delay/")
        .and_then(|rest| rest.split('/').next())
        .and_then(|ms| ms.parse::<u64>().ok());
    let index = {
        let mut seen = seen.lock().unwrap_or_else(|p| p.into_inner());
        seen.push(Received {
            path,
            headers,
            body,
            at: SystemTime::now(),
            answered: None,
        });
        seen.len() - 1
    };
    if let Some(ms) = delay {
        tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
    }
    if let Some(request) = seen
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .get_mut(index)
    {
        request.answered = Some(SystemTime::now());
    }
    let mut answer = if status.is_success() {
        status.into_response()
    } else {
        (status, format!("answered {status} to {}", uri.path())).into_response()
    };
    if let Some(value) = retry_after(uri.query().unwrap_or_default()) {
        answer.headers_mut().insert(RETRY_AFTER, value);
    }
    answer
}

/// The `Retry-After` a query asks for, if any.
fn retry_after(query: &str) -> Option<HeaderValue> {
    query.split('&').find_map(|pair| {
        let (name, value) = pair.split_once('=')?;
        let text = match name {
            "retry-after" => value.to_owned(),
            "retry-after-in" => httpdate::fmt_http_date(
                SystemTime::now() + std::time::Duration::from_secs(value.parse().ok()?),
            ),
            _ => return None,
        };
        HeaderValue::try_from(text).ok()
    })
}
