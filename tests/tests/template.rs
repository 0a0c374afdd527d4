//! `template.yaml` defines the same table as the code, and wires every function as documented.

use serde_json::{Value, json};
use tasker::store::dynamodb::schema::TableSchema;
use tasker_tests::template::{granted_actions, resource, template};

#[test]
fn the_table_in_the_template_matches_the_code() {
    let template = template();
    let table = &resource(&template, "TasksTable")["Properties"];
    let code = serde_json::to_value(TableSchema::tasks()).expect("schema JSON");

    assert_eq!(table["AttributeDefinitions"], code["AttributeDefinitions"]);
    assert_eq!(table["KeySchema"], code["KeySchema"]);
    assert_eq!(table["BillingMode"], "PAY_PER_REQUEST");
    let template_indexes: Vec<Value> = table["GlobalSecondaryIndexes"]
        .as_array()
        .expect("GlobalSecondaryIndexes")
        .iter()
        .map(|index| {
            json!({
                "IndexName": index["IndexName"],
                "KeySchema": index["KeySchema"],
                "ProjectionType": index["Projection"]["ProjectionType"],
            })
        })
        .collect();
    assert_eq!(
        Value::Array(template_indexes),
        code["GlobalSecondaryIndexes"]
    );
    assert_eq!(
        table["TimeToLiveSpecification"],
        json!({"AttributeName": code["TimeToLiveAttribute"], "Enabled": true})
    );
}

#[test]
fn every_function_is_a_cargo_lambda_arm64_binary_with_a_schedule_or_api() {
    let template = template();
    assert_eq!(
        template["Globals"]["Function"]["Runtime"],
        "provided.al2023"
    );
    assert_eq!(
        template["Globals"]["Function"]["Architectures"],
        json!(["arm64"])
    );
    for (resource_name, binary) in [
        ("EnqueueFunction", "enqueue"),
        ("ProcessorFunction", "processor"),
        ("CleanupFunction", "cleanup"),
        ("WorkerFunction", "worker"),
    ] {
        let function = resource(&template, resource_name);
        assert_eq!(function["Metadata"]["BuildMethod"], "rust-cargolambda");
        assert_eq!(function["Metadata"]["BuildProperties"]["Binary"], binary);
        // Built from its own package, so with its own features only.
        assert_eq!(
            function["Properties"]["CodeUri"],
            format!("functions/{binary}")
        );
    }
    let schedule = |name: &str, event: &str| {
        resource(&template, name)["Properties"]["Events"][event]["Properties"]["Schedule"].clone()
    };
    assert_eq!(
        schedule("ProcessorFunction", "EveryMinute"),
        "rate(1 minute)"
    );
    assert!(
        schedule("CleanupFunction", "Nightly")
            .as_str()
            .unwrap_or_default()
            .starts_with("cron(")
    );

    let routes: Vec<String> = resource(&template, "EnqueueFunction")["Properties"]["Events"]
        .as_object()
        .expect("enqueue events")
        .values()
        .map(|event| {
            format!(
                "{} {}",
                event["Properties"]["Method"].as_str().unwrap_or_default(),
                event["Properties"]["Path"].as_str().unwrap_or_default()
            )
        })
        .collect();
    // Every route the router serves (but /healthz, routed without auth below) is an event of
    // the function and a path of the HTTP API, where its `security` is set.
    let paths = &resource(&template, "TaskerApi")["Properties"]["DefinitionBody"]["paths"];
    for (method, path) in tasker::api::ROUTES {
        if *path != tasker::api::HEALTH_PATH {
            assert!(
                !paths[*path][method.to_lowercase()]["security"].is_null(),
                "{method} {path} is not in TaskerApi's DefinitionBody with its security"
            );
        }
    }
    for route in tasker::api::ROUTES
        .iter()
        .map(|(method, path)| format!("{method} {path}"))
    {
        assert!(routes.contains(&route), "{route} is not routed: {routes:?}");
    }
}

#[test]
fn each_function_gets_only_the_dynamodb_actions_it_uses() {
    let template = template();
    let actions = |name: &str| granted_actions(&template, name);
    let pairs = |list: &[(&str, &str)]| -> Vec<(String, String)> {
        let mut v: Vec<_> = list
            .iter()
            .map(|(t, a)| {
                let action = if a.contains(':') {
                    (*a).to_owned()
                } else {
                    format!("dynamodb:{a}")
                };
                ((*t).to_owned(), action)
            })
            .collect();
        v.sort();
        v
    };
    // What each handler calls: see the modules of shared/src/store/dynamodb/.
    assert_eq!(
        actions("EnqueueFunction"),
        pairs(&[
            ("table", "PutItem"),
            ("table", "GetItem"),
            ("table", "BatchGetItem"),
            ("table", "UpdateItem"),
            (
                "table keys [String(\"ref#*\"), String(\"idem#*\"), String(\"sched#*\")]",
                "DeleteItem",
            ),
            ("reference-index", "Query"),
            ("queue-index", "Query"),
            ("if UsesSqs: TaskQueue", "sqs:SendMessage"),
        ])
    );
    assert_eq!(
        actions("ProcessorFunction"),
        pairs(&[
            ("table", "PutItem"),
            // A limited key's item, read consistently (keys/rate.rs, keys/slots.rs).
            ("table", "GetItem"),
            ("table", "UpdateItem"),
            ("table", "BatchGetItem"),
            ("queue-index", "Query"),
            ("if UsesSqs: TaskQueue", "sqs:SendMessage"),
            ("if UsesSqs: TaskQueue", "sqs:GetQueueAttributes"),
        ])
    );
    // The worker: claims by id and outcomes; its retries' messages; and the event source
    // mapping's receive, delete and visibility rights on its own queue, nothing wider.
    assert_eq!(
        actions("WorkerFunction"),
        pairs(&[
            ("table", "GetItem"),
            ("table", "BatchGetItem"),
            ("table", "UpdateItem"),
            ("TaskQueue", "sqs:SendMessage"),
            ("TaskQueue", "sqs:ReceiveMessage"),
            ("TaskQueue", "sqs:DeleteMessage"),
            ("TaskQueue", "sqs:ChangeMessageVisibility"),
            ("TaskQueue", "sqs:GetQueueAttributes"),
        ])
    );
    assert_eq!(
        actions("CleanupFunction"),
        pairs(&[
            ("table", "DeleteItem"),
            ("table", "BatchGetItem"),
            ("table", "UpdateItem"),
            ("queue-index", "Query")
        ])
    );
}

#[test]
fn alarms_watch_metrics_the_functions_emit() {
    let template = template();
    let summary = tasker::RunSummary::default();
    let backlog = tasker::store::Backlog::default();
    let at = tasker_tests::fixtures::t0();
    let lines = [
        tasker::metrics::run_metrics("svc", &summary, Some(&backlog), at),
        tasker::metrics::cleanup_metrics("svc", &tasker::CleanupSummary::default(), at),
    ];
    let emitted = |metric: &str| {
        lines.iter().any(|line| {
            let emf: Value = serde_json::from_str(line).expect("EMF");
            emf.get(metric).is_some()
        })
    };
    let mut alarms = 0;
    for (name, resource) in template["Resources"].as_object().expect("resources") {
        if resource["Type"] != "AWS::CloudWatch::Alarm" {
            continue;
        }
        alarms += 1;
        let properties = &resource["Properties"];
        assert!(
            properties["AlarmActions"]["Fn::If"].is_array(),
            "{name} notifies the topic parameter"
        );
        if properties["Namespace"] == tasker::metrics::NAMESPACE {
            let metric = properties["MetricName"].as_str().expect("metric name");
            assert!(
                emitted(metric),
                "{name} watches {metric}, which is never emitted"
            );
            assert_eq!(
                properties["Dimensions"][0]["Name"],
                tasker::metrics::DIMENSION
            );
        }
    }
    assert_eq!(
        alarms, 7,
        "processor, cleanup and worker errors, failed tasks, oldest due age, rescued tasks, \
         dead letters"
    );
    let env = &template["Globals"]["Function"]["Environment"]["Variables"];
    assert_eq!(env["TASKER_SERVICE"], json!({"Ref": "AWS::StackName"}));
}

#[test]
fn sqs_mode_deploys_its_queue_worker_and_mapping_only_when_chosen() {
    let template = template();
    assert_eq!(
        template["Parameters"]["Dispatch"]["AllowedValues"],
        json!(["poll", "sqs"])
    );
    assert_eq!(template["Parameters"]["Dispatch"]["Default"], "poll");
    for name in [
        "TaskQueue",
        "DeadLetterQueue",
        "WorkerFunction",
        "WorkerEventSource",
        "WorkerLogGroup",
        "WorkerErrorsAlarm",
        "DeadLetterAlarm",
    ] {
        assert_eq!(resource(&template, name)["Condition"], "UsesSqs", "{name}");
    }
    let queue = &resource(&template, "TaskQueue")["Properties"];
    assert_eq!(
        queue["RedrivePolicy"]["deadLetterTargetArn"],
        json!({"Fn::GetAtt": ["DeadLetterQueue", "Arn"]})
    );
    // The queue's visibility and the worker's timeout: see the test below.
    let worker = &resource(&template, "WorkerFunction")["Properties"];
    let mapping = &resource(&template, "WorkerEventSource")["Properties"];
    assert_eq!(
        mapping["FunctionResponseTypes"],
        json!(["ReportBatchItemFailures"])
    );
    assert_eq!(mapping["BatchSize"], json!({"Ref": "WorkerBatchSize"}));
    assert_eq!(
        mapping["ScalingConfig"]["MaximumConcurrency"],
        json!({"Ref": "WorkerMaxConcurrency"})
    );
    // No SAM SQS event: it would attach a managed policy with rights on every queue.
    assert!(worker.get("Events").is_none());
    // The functions that read TASKER_DISPATCH get it; cleanup, built without SQS, does not.
    for name in ["EnqueueFunction", "ProcessorFunction", "WorkerFunction"] {
        let env = &resource(&template, name)["Properties"]["Environment"]["Variables"];
        assert_eq!(env["TASKER_DISPATCH"], json!({"Ref": "Dispatch"}), "{name}");
        assert!(env.get("TASKER_QUEUE_URL").is_some(), "{name}");
    }
    let cleanup = &resource(&template, "CleanupFunction")["Properties"]["Environment"]["Variables"];
    assert!(cleanup.get("TASKER_DISPATCH").is_none());
    assert!(
        template["Globals"]["Function"]["Environment"]["Variables"]
            .get("TASKER_DISPATCH")
            .is_none()
    );
}

/// GIVEN each HandlerTimeout the template allows WHEN a claim lasts it plus the default lease
/// grace THEN the processor and the worker functions outlast the claim, and the queue's
/// visibility (six times the worker's timeout) outlasts it too, so a message redelivered after
/// a crash finds its task's claim ended (the visibility used to be a fixed 360 s whatever the
/// timeout).
#[test]
fn every_handler_timeout_fits_the_functions_and_the_queue() {
    let template = template();
    let grace = tasker::ProcessorSettings::default().lease_grace.as_secs();
    let processor = &resource(&template, "ProcessorFunction")["Properties"];
    let processor_timeout = processor["Timeout"].as_u64().expect("processor timeout");
    let allowed = template["Parameters"]["HandlerTimeout"]["AllowedValues"]
        .as_array()
        .expect("allowed values");
    assert!(allowed.contains(&json!("30")), "the default timeout");
    for value in allowed {
        let value = value.as_str().expect("text");
        // The value reaches the functions as `<value>s`, which the configuration reads.
        let config =
            tasker_tests::fixtures::config(&[("TASKER_HANDLER_TIMEOUT", &format!("{value}s"))]);
        let timeout = config.task_defaults.timeout.as_secs();
        assert_eq!(timeout.to_string(), value);
        let lease = timeout + grace;
        let row = &template["Mappings"]["Timeouts"][value];
        let worker = row["WorkerTimeout"].as_u64().expect("worker timeout");
        let visibility = row["QueueVisibility"].as_u64().expect("visibility");
        assert!(
            lease <= processor_timeout,
            "{value}: the processor's {processor_timeout} s"
        );
        assert!(
            lease <= worker && worker <= 900,
            "{value}: the worker's {worker} s"
        );
        assert_eq!(visibility, 6 * worker, "{value}");
        assert!(lease < visibility, "{value}");
    }
    let queue = &resource(&template, "TaskQueue")["Properties"];
    let mapped =
        |name: &str| json!({"Fn::FindInMap": ["Timeouts", {"Ref": "HandlerTimeout"}, name]});
    assert_eq!(queue["VisibilityTimeout"], mapped("QueueVisibility"));
    let worker = &resource(&template, "WorkerFunction")["Properties"];
    assert_eq!(worker["Timeout"], mapped("WorkerTimeout"));
    for function in [processor, worker] {
        assert_eq!(
            function["Environment"]["Variables"]["TASKER_HANDLER_TIMEOUT"],
            json!({"Fn::Sub": "${HandlerTimeout}s"})
        );
    }
}
