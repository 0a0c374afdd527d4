//! CloudWatch Embedded Metric Format: one JSON line per processor run that CloudWatch Logs turns
//! into metrics, without a PutMetricData call (and its permission) on the hot path.

use serde_json::{Map, Value, json};

use crate::clock::Timestamp;
use crate::store::Backlog;
use crate::tasker::RunSummary;

/// The CloudWatch namespace of Tasker's metrics.
pub const NAMESPACE: &str = "Tasker";
/// The one dimension, so alarms can select one deployment's metrics.
pub const DIMENSION: &str = "Service";

/// The EMF line for one run; the backlog metrics are left out when the backlog is unknown.
pub fn run_metrics(
    service: &str,
    summary: &RunSummary,
    backlog: Option<&Backlog>,
    at: Timestamp,
) -> String {
    let mut values: Vec<(&str, &str, Value)> = vec![
        ("Claimed", "Count", json!(summary.claimed)),
        ("Succeeded", "Count", json!(summary.succeeded)),
        ("Retried", "Count", json!(summary.retried)),
        ("Failed", "Count", json!(summary.failed)),
        ("Released", "Count", json!(summary.released)),
        ("StoreErrors", "Count", json!(summary.errors)),
        ("RunDuration", "Milliseconds", json!(summary.duration_ms)),
    ];
    if let Some(backlog) = backlog {
        let age = backlog
            .oldest_due_at
            .map_or(0, |oldest| at.since(oldest).as_secs());
        values.push(("QueueDepth", "Count", json!(backlog.due)));
        values.push(("OldestDueAge", "Seconds", json!(age)));
    }
    let definitions: Vec<Value> = values
        .iter()
        .map(|(name, unit, _)| json!({"Name": name, "Unit": unit}))
        .collect();
    let mut line = Map::new();
    line.insert(
        "_aws".into(),
        json!({
            "Timestamp": (at.0.unix_timestamp_nanos() / 1_000_000) as i64,
            "CloudWatchMetrics": [{
                "Namespace": NAMESPACE,
                "Dimensions": [[DIMENSION]],
                "Metrics": definitions,
            }],
        }),
    );
    line.insert(DIMENSION.into(), json!(service));
    for (name, _, value) in values {
        line.insert(name.into(), value);
    }
    Value::Object(line).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_metric_has_a_definition_and_a_value() {
        let at: Timestamp = "2030-01-01T00:10:00Z".parse().unwrap();
        let summary = RunSummary {
            claimed: 5,
            succeeded: 3,
            retried: 1,
            failed: 1,
            released: 0,
            errors: 0,
            duration_ms: 1234,
        };
        let backlog = Backlog {
            due: 7,
            oldest_due_at: Some("2030-01-01T00:00:00Z".parse().unwrap()),
        };
        let line: Value =
            serde_json::from_str(&run_metrics("svc", &summary, Some(&backlog), at)).unwrap();
        let metrics = line["_aws"]["CloudWatchMetrics"][0]["Metrics"]
            .as_array()
            .unwrap();
        assert_eq!(metrics.len(), 9);
        for metric in metrics {
            assert!(line.get(metric["Name"].as_str().unwrap()).is_some());
        }
        assert_eq!(line["OldestDueAge"], 600);
        assert_eq!(line["QueueDepth"], 7);
        assert_eq!(line["Service"], "svc");
    }
}
