//! The sample Lambda events in `events/`, as the real runtimes would deliver them.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use lambda_runtime::{Context, LambdaEvent};

/// The placeholder task id in the API Gateway sample events.
pub const PLACEHOLDER_ID: &str = "01JD0000000000000000000000";

/// The text of `events/<name>`.
pub fn text(name: &str) -> String {
    let path = crate::workspace_root().join("events").join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|err| panic!("read {}: {err}", path.display()))
}

/// An API Gateway event as the request `lambda_http` hands to the router, with the placeholder
/// id replaced by `id` when given.
pub fn http_request(name: &str, id: Option<&str>) -> lambda_http::Request {
    let mut json = text(name);
    if let Some(id) = id {
        json = json.replace(PLACEHOLDER_ID, id);
    }
    lambda_http::request::from_str(&json)
        .unwrap_or_else(|err| panic!("events/{name} is not an API Gateway event: {err}"))
}

/// A scheduled event with a context whose deadline is `remaining` from now.
pub fn scheduled(name: &str, remaining: Duration) -> LambdaEvent<serde_json::Value> {
    let payload: serde_json::Value = serde_json::from_str(&text(name))
        .unwrap_or_else(|err| panic!("events/{name} is not JSON: {err}"));
    let mut context = Context::default();
    let deadline = SystemTime::now() + remaining;
    context.deadline = deadline
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or_default();
    context.request_id = format!("test-{name}");
    LambdaEvent::new(payload, context)
}

/// The API Gateway event `events/<name>` (its placeholder id replaced by `id`) through the
/// router `app`, as `lambda_http` hands it over: the status and the JSON body.
pub async fn send(
    app: &axum::Router,
    name: &str,
    id: Option<&str>,
) -> (http::StatusCode, serde_json::Value) {
    let (parts, body) = http_request(name, id).into_parts();
    let request = http::Request::from_parts(parts, axum::body::Body::from(body.to_vec()));
    crate::fixtures::answer(app, request).await
}

/// The sample SQS event with one record per body in `bodies` (each a copy of the sample's
/// record with its own message id), and a context whose deadline is `remaining` from now.
pub fn sqs(
    bodies: &[String],
    remaining: Duration,
) -> LambdaEvent<aws_lambda_events::event::sqs::SqsEvent> {
    let sample: serde_json::Value = serde_json::from_str(&text("sqs-worker.json"))
        .unwrap_or_else(|err| panic!("events/sqs-worker.json is not JSON: {err}"));
    let records: Vec<serde_json::Value> = bodies
        .iter()
        .enumerate()
        .map(|(i, body)| {
            let mut record = sample["Records"][0].clone();
            record["messageId"] = format!("message-{i}").into();
            record["body"] = body.clone().into();
            record
        })
        .collect();
    let payload = serde_json::from_value(serde_json::json!({ "Records": records }))
        .unwrap_or_else(|err| panic!("events/sqs-worker.json is not an SQS event: {err}"));
    let LambdaEvent { context, .. } = scheduled("scheduled-processor.json", remaining);
    LambdaEvent::new(payload, context)
}
