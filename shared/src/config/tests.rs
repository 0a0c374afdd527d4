//! The configuration read from variables: defaults, bounds, and the messages that name them.

use std::collections::HashMap;

use super::*;

fn config(vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
    let map: HashMap<String, String> = vars
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    Config::from_lookup(|name| map.get(name).cloned())
}

#[test]
fn defaults_match_the_readme() {
    let config = config(&[]).unwrap();
    assert_eq!(config.store, StoreKind::Sqlite);
    assert_eq!(config.processor.batch_size, 100);
    assert_eq!(config.processor.concurrency, 16);
    assert_eq!(config.retention, Duration::from_secs(24 * 3600));
    assert_eq!(config.webhook.timeout, Duration::from_secs(10));
    assert_eq!(config.local_auth(), AuthMode::Open);
    assert!(matches!(config.lambda_auth(), AuthMode::Deny(_)));
    assert_eq!(config.poll, PollSettings::default());
    assert_eq!(config.cleanup_age(), Duration::from_secs(24 * 3600));
    let graced = self::config(&[
        ("TASKER_RETENTION", "7days"),
        ("TASKER_CLEANUP_GRACE", "2days"),
    ])
    .unwrap();
    assert_eq!(graced.cleanup_age(), Duration::from_secs(9 * 86_400));
    assert_eq!(config.poll.window, Duration::ZERO);
    assert_eq!(config.sweep_entries, 100_000);
}

#[test]
fn poll_settings_take_seconds_or_durations() {
    let poll = config(&[
        ("TASKER_POLL_WINDOW", "55"),
        ("TASKER_POLL_INTERVAL", "0.5"),
    ])
    .unwrap()
    .poll;
    assert_eq!(poll.window, Duration::from_secs(55));
    assert_eq!(poll.interval, Duration::from_millis(500));
    let poll = config(&[("TASKER_POLL_INTERVAL", "250ms")]).unwrap().poll;
    assert_eq!(poll.interval, Duration::from_millis(250));
}

#[test]
fn a_bad_value_names_its_variable() {
    for (name, value) in [
        ("TASKER_BATCH_SIZE", "0"),
        ("TASKER_CONCURRENCY", "lots"),
        ("TASKER_RETENTION", "forever"),
        ("TASKER_STORE", "mysql"),
        ("TASKER_AUTH", "none"),
        ("TASKER_WEBHOOK_ALLOW_PRIVATE", "maybe"),
        ("TASKER_RETRY_FACTOR", "0.5"),
        ("TASKER_RETRY_INITIAL", "soon"),
        ("TASKER_POLL_WINDOW", "-1"),
        ("TASKER_POLL_WINDOW", "3600"),
        ("TASKER_POLL_INTERVAL", "0"),
        ("TASKER_POLL_INTERVAL", "often"),
        ("TASKER_CLEANUP_GRACE", "later"),
        ("TASKER_SWEEP_ENTRIES", "all"),
    ] {
        let err = config(&[(name, value)]).unwrap_err();
        assert_eq!(err.name, name);
    }
    if cfg!(feature = "dynamodb") {
        let err = config(&[("TASKER_STORE", "dynamodb")]).unwrap_err();
        assert_eq!(err.name, "TASKER_TABLE");
    }
}

#[test]
fn an_initial_retry_longer_than_the_maximum_names_both_variables() {
    let err = config(&[("TASKER_RETRY_INITIAL", "2h"), ("TASKER_RETRY_MAX", "1h")]).unwrap_err();
    assert_eq!(err.name, "TASKER_RETRY_INITIAL");
    assert_eq!(
        err.to_string(),
        "TASKER_RETRY_INITIAL: 2h must not exceed TASKER_RETRY_MAX (1h)"
    );
}

#[test]
fn the_token_can_come_from_a_file_and_fails_closed() {
    let dir = std::env::temp_dir().join(format!("tasker-token-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("token");
    std::fs::write(&file, "s3cret-from-file\n").unwrap();
    let path = file.display().to_string();
    let from_file = config(&[("TASKER_API_TOKEN_FILE", path.as_str())]).unwrap();
    assert_eq!(from_file.api_token.as_deref(), Some("s3cret-from-file"));
    assert_eq!(
        from_file.local_auth(),
        AuthMode::Token("s3cret-from-file".into())
    );

    let empty = dir.join("empty");
    std::fs::write(&empty, "\n").unwrap();
    let missing = dir.join("missing").display().to_string();
    let empty = empty.display().to_string();
    for vars in [
        vec![("TASKER_API_TOKEN_FILE", missing.as_str())],
        vec![("TASKER_API_TOKEN_FILE", empty.as_str())],
        vec![
            ("TASKER_API_TOKEN_FILE", path.as_str()),
            ("TASKER_API_TOKEN", "t"),
        ],
    ] {
        let err = config(&vars).unwrap_err();
        assert_eq!(err.name, "TASKER_API_TOKEN_FILE", "{vars:?}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_blank_token_stops_the_start_up_instead_of_opening_the_api() {
    for (name, value) in [
        ("TASKER_API_TOKEN", ""),
        ("TASKER_API_TOKEN", "   "),
        ("TASKER_API_TOKEN_FILE", " "),
    ] {
        let err = config(&[(name, value)]).unwrap_err();
        assert_eq!(err.name, name);
        assert!(err.to_string().contains("blank"), "{err}");
    }
    assert_eq!(config(&[]).unwrap().local_auth(), AuthMode::Open);
}

#[test]
fn lambda_auth_prefers_iam_then_token() {
    let iam = config(&[("TASKER_AUTH", "iam")]).unwrap();
    assert_eq!(iam.lambda_auth(), AuthMode::Iam);
    let token = config(&[("TASKER_API_TOKEN", "s3cret")]).unwrap();
    assert_eq!(token.lambda_auth(), AuthMode::Token("s3cret".into()));
}

#[test]
fn postgres_needs_its_database_url_and_a_bounded_pool() {
    // Built without the backend, the store's own variable is the one at fault.
    let built = cfg!(feature = "postgres");
    let err = config(&[("TASKER_STORE", "postgres")]).unwrap_err();
    let expected = if built {
        "TASKER_DATABASE_URL"
    } else {
        "TASKER_STORE"
    };
    assert_eq!(err.name, expected, "{err}");
    let url = ("TASKER_DATABASE_URL", "postgres://app@127.0.0.1:5432/app");
    match config(&[("TASKER_STORE", "postgres"), url]) {
        Ok(config) if built => {
            assert_eq!(config.store, StoreKind::Postgres);
            assert_eq!(config.database_pool, 10);
        }
        Err(err) if !built => assert_eq!(err.name, "TASKER_STORE", "{err}"),
        other => panic!("{other:?}"),
    }
    if built {
        let sqs = [
            ("TASKER_STORE", "postgres"),
            url,
            ("TASKER_DISPATCH", "sqs"),
            ("TASKER_QUEUE_URL", "http://127.0.0.1:1/q"),
        ];
        // PostgreSQL keeps the tasks; SQS delivers them.
        assert_eq!(config(&sqs).map(|c| c.dispatch).ok(), Some(Dispatch::Sqs));
    }
    let err = config(&[url, ("TASKER_DATABASE_POOL", "0")]).unwrap_err();
    assert_eq!(err.name, "TASKER_DATABASE_POOL", "{err}");
    let err = config(&[url, ("TASKER_DATABASE_MIGRATE", "later")]).unwrap_err();
    assert_eq!(err.name, "TASKER_DATABASE_MIGRATE", "{err}");
    let err = config(&[("TASKER_STORE", "mysql")]).unwrap_err();
    assert!(err.reason.contains("sqlite, dynamodb or postgres"), "{err}");
}

#[test]
fn key_limits_run_on_dynamodb_in_both_modes() {
    let dynamodb = [("TASKER_STORE", "dynamodb"), ("TASKER_TABLE", "t")];
    let with = |rules: &'static str, extra: &[(&'static str, &'static str)]| {
        let mut vars = dynamodb.to_vec();
        vars.push(("TASKER_KEY_LIMITS", rules));
        vars.extend_from_slice(extra);
        config(&vars)
    };
    let rate = r#"[{"keyPrefix": "h", "rate": "5/s"}]"#;
    assert!(with(rate, &[]).is_ok(), "rates run on DynamoDB");
    let concurrency = r#"[{"keyPrefix": "h", "concurrency": 2}]"#;
    assert!(with(concurrency, &[]).is_ok(), "and concurrency limits");
    let sqs = [
        ("TASKER_DISPATCH", "sqs"),
        ("TASKER_QUEUE_URL", "http://127.0.0.1:1/000000000000/q"),
    ];
    assert!(with(concurrency, &sqs).is_ok(), "in SQS mode too");
    let bad = config(&[("TASKER_KEY_LIMITS", "[{}]")]).unwrap_err();
    assert!(bad.to_string().contains("rule 0"), "{bad}");
}
