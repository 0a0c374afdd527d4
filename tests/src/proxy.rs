//! The plumbing the test proxies share: serving a router on a free loopback port, and
//! forwarding one request to the upstream DynamoDB Local.

use axum::Router;
use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, Method, Response, StatusCode, Uri};

/// Serves `app` on a free 127.0.0.1 port: the endpoint and the server task.
pub async fn serve(app: Router) -> (String, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind proxy");
    let endpoint = format!("http://{}", listener.local_addr().expect("proxy address"));
    let server = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (endpoint, server)
}

/// The upstream's answer, or `None` when it could not be reached.
pub async fn forward(
    client: &reqwest::Client,
    upstream: &str,
    method: Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: Bytes,
) -> Option<(StatusCode, HeaderMap, Bytes)> {
    let url = format!(
        "{}{}",
        upstream.trim_end_matches('/'),
        uri.path_and_query().map_or("/", |p| p.as_str())
    );
    let mut request = client.request(method, url).body(body);
    for (name, value) in headers {
        if name != "host" && name != "content-length" {
            request = request.header(name, value);
        }
    }
    let answer = request.send().await.ok()?;
    let status = answer.status();
    let answer_headers = answer.headers().clone();
    let bytes = answer.bytes().await.unwrap_or_default();
    Some((status, answer_headers, bytes))
}

/// A response with `status`, the upstream's `headers` (less the framing ones) and `body`.
pub fn respond(status: StatusCode, headers: &HeaderMap, body: Bytes) -> Response<Body> {
    let mut response = Response::builder().status(status);
    for (name, value) in headers {
        if name != "content-length" && name != "transfer-encoding" {
            response = response.header(name, value);
        }
    }
    response.body(Body::from(body)).unwrap_or_default()
}

/// A DynamoDB-style JSON error answer.
pub fn dynamodb_error(status: StatusCode, body: &'static str) -> Response<Body> {
    Response::builder()
        .status(status)
        .header("content-type", "application/x-amz-json-1.0")
        .body(Body::from(body))
        .unwrap_or_default()
}

/// The answer when the upstream could not be reached.
pub fn bad_gateway() -> Response<Body> {
    Response::builder()
        .status(StatusCode::BAD_GATEWAY)
        .body(Body::empty())
        .unwrap_or_default()
}
