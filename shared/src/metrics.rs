//! CloudWatch Embedded Metric Format: one JSON line per processor or cleanup run that
//! CloudWatch Logs turns into metrics, without a PutMetricData call (and its permission) on the
//! hot path.

use serde_json::{Map, Value, json};

use crate::clock::Timestamp;
use crate::engine::{CleanupSummary, RunSummary};
use crate::store::Backlog;

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
        ("Succeeded", "Count", json!(summary.outcomes.succeeded)),
        ("Retried", "Count", json!(summary.outcomes.retried)),
        ("Failed", "Count", json!(summary.outcomes.failed)),
        ("Released", "Count", json!(summary.outcomes.released)),
        ("HeldByCircuit", "Count", json!(summary.outcomes.held)),
        ("StoreErrors", "Count", json!(summary.errors())),
        ("RunDuration", "Milliseconds", json!(summary.duration_ms)),
    ];
    if let Some(backlog) = backlog {
        let age = backlog
            .oldest_due_at
            .map_or(0, |oldest| at.since(oldest).as_secs());
        values.push(("QueueDepth", "Count", json!(backlog.due)));
        values.push(("OldestDueAge", "Seconds", json!(age)));
    }
    emf_line(service, values, at)
}

/// The EMF line for one cleanup run: its deletes, the entries its sweep read and the tasks it
/// rescued (more than none means the queue index lagged beyond the due queue's margin).
pub fn cleanup_metrics(service: &str, summary: &CleanupSummary, at: Timestamp) -> String {
    let values = vec![
        ("Deleted", "Count", json!(summary.deleted)),
        ("SweptEntries", "Count", json!(summary.swept)),
        ("Rescued", "Count", json!(summary.rescued)),
    ];
    emf_line(service, values, at)
}

/// One line that declares `values` as metrics of the namespace, with their values.
fn emf_line(service: &str, values: Vec<(&str, &str, Value)>, at: Timestamp) -> String {
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
            outcomes: crate::engine::Outcomes {
                succeeded: 3,
                retried: 1,
                failed: 1,
                ..Default::default()
            },
            failed_claims: 0,
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
        assert_eq!(metrics.len(), 10);
        for metric in metrics {
            assert!(line.get(metric["Name"].as_str().unwrap()).is_some());
        }
        assert_eq!(line["OldestDueAge"], 600);
        assert_eq!(line["QueueDepth"], 7);
        assert_eq!(line["Service"], "svc");
    }

    #[test]
    fn a_cleanup_line_counts_deletes_sweeps_and_rescues() {
        let at: Timestamp = "2030-01-01T00:10:00Z".parse().unwrap();
        let summary = CleanupSummary {
            deleted: 4,
            swept: 120,
            rescued: 1,
            sweep_complete: true,
        };
        let line: Value = serde_json::from_str(&cleanup_metrics("svc", &summary, at)).unwrap();
        let names: Vec<&str> = line["_aws"]["CloudWatchMetrics"][0]["Metrics"]
            .as_array()
            .unwrap()
            .iter()
            .map(|metric| metric["Name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["Deleted", "SweptEntries", "Rescued"]);
        assert_eq!(
            (line["Deleted"].clone(), line["Rescued"].clone()),
            (json!(4), json!(1))
        );
    }
}
