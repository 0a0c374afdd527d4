//! A proxy on 127.0.0.1 in front of DynamoDB Local that misbehaves as DynamoDB can:
//! - throttling: a fraction of calls is answered with `ProvisionedThroughputExceededException`
//!   instead of being forwarded, so they have no effect;
//! - lost answers: a fraction of calls is forwarded and applied, but the answer is replaced by
//!   `InternalServerError`, so the SDK retries a write that already landed.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, Method, Response, StatusCode, Uri};

use crate::proxy;

struct Shared {
    upstream: String,
    client: reqwest::Client,
    /// Out of 1000 calls, how many are throttled.
    per_mille: u64,
    /// Out of 1000 calls, how many are applied but answered with an error.
    lost_per_mille: u64,
    calls: AtomicU64,
    throttled: AtomicU64,
    lost: AtomicU64,
}

/// The running proxy; stops when dropped.
pub struct ThrottlingProxy {
    /// `http://127.0.0.1:<port>`
    pub endpoint: String,
    shared: Arc<Shared>,
    server: tokio::task::JoinHandle<()>,
}

impl ThrottlingProxy {
    /// Starts a proxy to `upstream` that throttles `per_mille` of every 1000 calls.
    pub async fn start(upstream: &str, per_mille: u64) -> Self {
        Self::start_with(upstream, per_mille, 0).await
    }

    /// Starts a proxy that throttles `per_mille` and loses the answer of `lost_per_mille` of
    /// every 1000 calls.
    pub async fn start_with(upstream: &str, per_mille: u64, lost_per_mille: u64) -> Self {
        let shared = Arc::new(Shared {
            upstream: upstream.trim_end_matches('/').to_owned(),
            client: reqwest::Client::new(),
            per_mille,
            lost_per_mille,
            calls: AtomicU64::new(0),
            throttled: AtomicU64::new(0),
            lost: AtomicU64::new(0),
        });
        let app = Router::new()
            .fallback(forward)
            .with_state(Arc::clone(&shared));
        let (endpoint, server) = crate::proxy::serve(app).await;
        Self {
            endpoint,
            shared,
            server,
        }
    }

    /// Calls seen and calls throttled so far.
    pub fn counts(&self) -> (u64, u64) {
        (
            self.shared.calls.load(Ordering::SeqCst),
            self.shared.throttled.load(Ordering::SeqCst),
        )
    }

    /// Calls applied whose answer was replaced by an error.
    pub fn lost(&self) -> u64 {
        self.shared.lost.load(Ordering::SeqCst)
    }
}

impl Drop for ThrottlingProxy {
    fn drop(&mut self) {
        self.server.abort();
    }
}

async fn forward(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response<Body> {
    let n = shared.calls.fetch_add(1, Ordering::SeqCst);
    // A fixed pattern (not a random one) keeps runs comparable: every call whose number
    // falls in the first `per_mille` of each thousand, spread by a stride.
    if (n * 617) % 1000 < shared.per_mille {
        shared.throttled.fetch_add(1, Ordering::SeqCst);
        return proxy::dynamodb_error(
            StatusCode::BAD_REQUEST,
            r#"{"__type":"com.amazonaws.dynamodb.v20120810#ProvisionedThroughputExceededException","message":"The level of configured provisioned throughput for the table was exceeded. (injected by the test proxy)"}"#,
        );
    }
    let lose = (n * 389) % 1000 < shared.lost_per_mille;
    match proxy::forward(
        &shared.client,
        &shared.upstream,
        method,
        &uri,
        &headers,
        body,
    )
    .await
    {
        Some(_) if lose => {
            shared.lost.fetch_add(1, Ordering::SeqCst);
            proxy::dynamodb_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                r#"{"__type":"com.amazonaws.dynamodb.v20120810#InternalServerError","message":"Internal server error (answer lost by the test proxy after the call was applied)"}"#,
            )
        }
        Some((status, answer_headers, bytes)) => proxy::respond(status, &answer_headers, bytes),
        None => proxy::bad_gateway(),
    }
}
