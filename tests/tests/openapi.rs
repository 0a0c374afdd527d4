//! `openapi.yaml` documents every served route, and every documented route is served.

use std::collections::BTreeSet;

use axum::body::Body;
use http::{Method, Request, StatusCode};
use serde_json::Value;
use tasker::api;
use tasker::{AuthMode, SqliteStore};
use tasker_tests::fixtures::answer;
use tasker_tests::http::router;

const METHODS: [&str; 5] = ["GET", "POST", "PUT", "PATCH", "DELETE"];

fn documented() -> BTreeSet<(String, String)> {
    let path = tasker_tests::workspace_root().join("openapi.yaml");
    let text = std::fs::read_to_string(path).expect("read openapi.yaml");
    let spec: Value = serde_yaml_ng::from_str(&text).expect("openapi.yaml is YAML");
    assert_eq!(spec["openapi"], "3.1.0");
    let mut routes = BTreeSet::new();
    for (path, item) in spec["paths"].as_object().expect("paths") {
        for method in METHODS {
            if item.get(method.to_lowercase()).is_some() {
                routes.insert((method.to_owned(), path.clone()));
            }
        }
    }
    routes
}

#[test]
fn the_route_table_and_the_spec_agree() {
    let served: BTreeSet<(String, String)> = api::ROUTES
        .iter()
        .map(|(method, path)| ((*method).to_owned(), (*path).to_owned()))
        .collect();
    assert_eq!(served, documented());
}

#[tokio::test]
async fn every_documented_route_is_served_and_no_other_method_is() {
    let app = router(SqliteStore::in_memory().expect("sqlite"), AuthMode::Open);
    let documented = documented();
    let paths: BTreeSet<String> = documented.iter().map(|(_, path)| path.clone()).collect();
    for path in paths {
        let concrete = path.replace("{id}", "01JD0000000000000000000000");
        for method in METHODS {
            let request = Request::builder()
                .method(Method::from_bytes(method.as_bytes()).expect("method"))
                .uri(&concrete)
                .header("content-type", "application/json")
                .body(Body::from("{}"))
                .expect("request");
            let (status, json) = answer(&app, request).await;
            let unrouted = status == StatusCode::METHOD_NOT_ALLOWED
                || json["error"]["code"] == "route_not_found";
            let expected = documented.contains(&(method.to_owned(), path.clone()));
            assert_eq!(!unrouted, expected, "{method} {path}: {status} {json}");
        }
    }
}

#[tokio::test]
async fn a_served_task_has_exactly_the_documented_fields() {
    let path = tasker_tests::workspace_root().join("openapi.yaml");
    let spec: Value =
        serde_yaml_ng::from_str(&std::fs::read_to_string(path).expect("read")).expect("YAML");
    let task_schema = &spec["components"]["schemas"]["Task"];
    let required: BTreeSet<String> = task_schema["required"]
        .as_array()
        .expect("required")
        .iter()
        .map(|v| v.as_str().expect("name").to_owned())
        .collect();
    let properties: BTreeSet<String> = task_schema["properties"]
        .as_object()
        .expect("properties")
        .keys()
        .cloned()
        .collect();
    assert_eq!(required, properties);

    let app = router(SqliteStore::in_memory().expect("sqlite"), AuthMode::Open);
    let request = Request::builder()
        .method(Method::POST)
        .uri("/tasks")
        .header("content-type", "application/json")
        .body(Body::from(r#"{"type":"sendWebhook","payload":{}}"#))
        .expect("request");
    let (status, task) = answer(&app, request).await;
    assert_eq!(status, StatusCode::CREATED);
    let served: BTreeSet<String> = task.as_object().expect("object").keys().cloned().collect();
    assert_eq!(served, required);
}

#[test]
fn the_documented_task_types_are_the_registered_ones() {
    let path = tasker_tests::workspace_root().join("openapi.yaml");
    let spec: Value =
        serde_yaml_ng::from_str(&std::fs::read_to_string(path).expect("read")).expect("YAML");
    let documented: BTreeSet<String> =
        spec["components"]["schemas"]["NewTask"]["properties"]["type"]["enum"]
            .as_array()
            .expect("NewTask.type lists the registered types")
            .iter()
            .map(|v| v.as_str().expect("a type name").to_owned())
            .collect();
    let config = tasker_tests::fixtures::config(&[]);
    let registry = tasker::compose::builtin_types(&config).expect("the built-in registry");
    let registered: BTreeSet<String> = registry.types().map(str::to_owned).collect();
    assert_eq!(
        documented, registered,
        "openapi.yaml's NewTask.type enum must list exactly the types `tasker` registers"
    );
    let for_schedules: BTreeSet<String> =
        spec["components"]["schemas"]["NewSchedule"]["properties"]["type"]["enum"]
            .as_array()
            .expect("NewSchedule.type lists the registered types")
            .iter()
            .map(|v| v.as_str().expect("a type name").to_owned())
            .collect();
    assert_eq!(
        for_schedules, registered,
        "NewSchedule.type as NewTask.type"
    );
}
