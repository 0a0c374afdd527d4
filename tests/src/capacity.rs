//! A proxy on 127.0.0.1 in front of DynamoDB Local that asks for `ReturnConsumedCapacity =
//! INDEXES` on every call and adds up what DynamoDB reports, per operation: how the write
//! units per task are measured. It also counts conditional-check failures, which AWS bills as
//! writes but does not report.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, Method, Response, Uri};
use serde_json::Value;

use crate::proxy;

/// The DynamoDB operations that consume write units.
pub const WRITE_OPERATIONS: [&str; 5] = [
    "PutItem",
    "UpdateItem",
    "DeleteItem",
    "BatchWriteItem",
    "TransactWriteItems",
];

/// What one kind of call consumed.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Consumed {
    /// Calls made.
    pub calls: u64,
    /// Capacity units on the table.
    pub table_units: f64,
    /// Capacity units on all global secondary indexes.
    pub index_units: f64,
    /// Calls refused by their condition expression.
    pub condition_failures: u64,
    /// Calls whose answer reported the capacity it consumed.
    pub reported: u64,
}

/// Read units of the `operations` in `ledger`, for a bound on them. Fails the test unless at
/// least one such call was recorded and every one reported its capacity: a bound on units
/// that were never reported would hold whatever the code read.
pub fn measured_reads(ledger: &BTreeMap<String, Consumed>, operations: &[&str]) -> f64 {
    let calls: Vec<&Consumed> = operations.iter().filter_map(|op| ledger.get(*op)).collect();
    let made: u64 = calls.iter().map(|c| c.calls).sum();
    let reported: u64 = calls.iter().map(|c| c.reported).sum();
    assert!(
        made > 0,
        "no {operations:?} call went through the proxy: {ledger:?}"
    );
    assert_eq!(
        reported, made,
        "only {reported} of {made} {operations:?} calls reported their capacity"
    );
    calls.iter().map(|c| c.units()).sum()
}

/// Every read operation DynamoDB has, as the proxy names them.
pub const READ_OPERATIONS: &[&str] = &[
    "GetItem",
    "BatchGetItem",
    "Query",
    "Scan",
    "TransactGetItems",
];

impl Consumed {
    /// Table plus index units.
    pub fn units(&self) -> f64 {
        self.table_units + self.index_units
    }
}

type Ledger = Arc<Mutex<BTreeMap<String, Consumed>>>;

struct Shared {
    upstream: String,
    client: reqwest::Client,
    ledger: Ledger,
}

/// The running proxy; stops when dropped.
pub struct CapacityProxy {
    /// `http://127.0.0.1:<port>`
    pub endpoint: String,
    ledger: Ledger,
    server: tokio::task::JoinHandle<()>,
}

impl CapacityProxy {
    /// Starts a proxy to `upstream`.
    pub async fn start(upstream: &str) -> Self {
        let ledger: Ledger = Arc::default();
        let shared = Arc::new(Shared {
            upstream: upstream.trim_end_matches('/').to_owned(),
            client: reqwest::Client::new(),
            ledger: Arc::clone(&ledger),
        });
        let app = Router::new().fallback(forward).with_state(shared);
        let (endpoint, server) = crate::proxy::serve(app).await;
        Self {
            endpoint,
            ledger,
            server,
        }
    }

    /// Consumption per operation (`PutItem`, `Query`, …) since the last reset.
    pub fn take(&self) -> BTreeMap<String, Consumed> {
        std::mem::take(&mut *self.ledger.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

impl Drop for CapacityProxy {
    fn drop(&mut self) {
        self.server.abort();
    }
}

/// Adds up `ConsumedCapacity` (an object, or a list of them for batch calls).
fn add_consumed(entry: &mut Consumed, consumed: &Value) {
    match consumed {
        Value::Array(items) => items.iter().for_each(|item| add_consumed(entry, item)),
        Value::Object(_) => {
            let table = consumed["Table"]["CapacityUnits"]
                .as_f64()
                .or_else(|| consumed["CapacityUnits"].as_f64())
                .unwrap_or_default();
            let indexes: f64 = consumed["GlobalSecondaryIndexes"]
                .as_object()
                .map(|all| {
                    all.values()
                        .filter_map(|i| i["CapacityUnits"].as_f64())
                        .sum()
                })
                .unwrap_or_default();
            // Without a table breakdown, CapacityUnits is the total including indexes.
            let table = if consumed["Table"].is_object() {
                table
            } else {
                table - indexes
            };
            entry.table_units += table;
            entry.index_units += indexes;
        }
        _ => {}
    }
}

async fn forward(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response<Body> {
    let operation = headers
        .get("x-amz-target")
        .and_then(|t| t.to_str().ok())
        .and_then(|t| t.rsplit('.').next())
        .unwrap_or("unknown")
        .to_owned();
    // Ask for the breakdown on every call that accepts it.
    let body = match serde_json::from_slice::<Value>(&body) {
        Ok(Value::Object(mut request))
            if !matches!(
                operation.as_str(),
                "CreateTable" | "UpdateTimeToLive" | "DescribeTable"
            ) =>
        {
            request.insert("ReturnConsumedCapacity".into(), "INDEXES".into());
            Bytes::from(Value::Object(request).to_string())
        }
        _ => body,
    };
    let Some((status, answer_headers, bytes)) = proxy::forward(
        &shared.client,
        &shared.upstream,
        method,
        &uri,
        &headers,
        body,
    )
    .await
    else {
        return proxy::bad_gateway();
    };
    if let Ok(parsed) = serde_json::from_slice::<Value>(&bytes) {
        let mut ledger = shared.ledger.lock().unwrap_or_else(|p| p.into_inner());
        let entry = ledger.entry(operation).or_default();
        entry.calls += 1;
        if parsed["__type"]
            .as_str()
            .is_some_and(|t| t.ends_with("ConditionalCheckFailedException"))
        {
            entry.condition_failures += 1;
        }
        if !parsed["ConsumedCapacity"].is_null() {
            entry.reported += 1;
        }
        add_consumed(entry, &parsed["ConsumedCapacity"]);
    }
    proxy::respond(status, &answer_headers, bytes)
}
