//! What many tests share: a fixed start instant, a configuration from pairs, a router's answer
//! as JSON, and a client of a running `tasker serve`.

use std::collections::HashMap;
use std::time::Duration;

use axum::body::Body;
use serde_json::Value;
use tasker::{Config, Timestamp};
use tower::ServiceExt;

/// The instant tests count from: fixed, so they never depend on the clock.
pub fn t0() -> Timestamp {
    "2030-01-01T00:00:00Z"
        .parse()
        .expect("a valid fixed timestamp")
}

/// `seconds` after [`t0`].
pub fn at(seconds: u64) -> Timestamp {
    t0().plus(Duration::from_secs(seconds))
}

/// The configuration the variables `vars` make (every other variable unset).
pub fn config(vars: &[(&str, &str)]) -> Config {
    let vars: HashMap<String, String> = vars
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    Config::from_lookup(|name| vars.get(name).cloned()).expect("a valid configuration")
}

/// Sends `request` through `app`; the status and the JSON body (`null` when not JSON).
pub async fn answer(app: &axum::Router, request: http::Request<Body>) -> (http::StatusCode, Value) {
    let response = app
        .clone()
        .oneshot(request)
        .await
        .expect("the router answers");
    let status = response.status();
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .expect("read the body");
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

/// A client of a running Tasker API, with its bearer token if it has one.
pub struct ApiClient {
    client: reqwest::Client,
    /// `http://127.0.0.1:<port>`
    pub base: String,
    token: Option<String>,
}

impl ApiClient {
    /// A client of the API at `base` that sends `token`.
    pub fn new(base: &str, token: &str) -> Self {
        Self {
            token: Some(token.to_owned()),
            ..Self::open(base)
        }
    }

    /// A client of the API at `base` that sends no token (`tasker serve` without one).
    pub fn open(base: &str) -> Self {
        Self {
            client: reqwest::Client::new(),
            base: base.to_owned(),
            token: None,
        }
    }

    /// `method path` with `body` as JSON, if any; the status and the JSON answer.
    pub async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
    ) -> (reqwest::StatusCode, Value) {
        let mut request = self
            .client
            .request(method.clone(), format!("{}{path}", self.base));
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        self.answer(request, &method, path).await
    }

    /// `method path` with `text` as the JSON body, sent as written (a `Value` would reformat
    /// its numbers); the status and the JSON answer.
    pub async fn send_text(
        &self,
        method: reqwest::Method,
        path: &str,
        text: &str,
    ) -> (reqwest::StatusCode, Value) {
        let mut request = self
            .client
            .request(method.clone(), format!("{}{path}", self.base))
            .header("content-type", "application/json")
            .body(text.to_owned());
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        self.answer(request, &method, path).await
    }

    async fn answer(
        &self,
        request: reqwest::RequestBuilder,
        method: &reqwest::Method,
        path: &str,
    ) -> (reqwest::StatusCode, Value) {
        let response = request
            .send()
            .await
            .unwrap_or_else(|err| panic!("{method} {path}: {err}"));
        let status = response.status();
        let text = response.text().await.expect("read the answer");
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }
}
