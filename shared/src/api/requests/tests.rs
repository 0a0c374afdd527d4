//! The request parsers against bodies and queries, good and bad.

use super::*;

fn now() -> Timestamp {
    "2026-11-27T12:00:00Z".parse().unwrap()
}

#[test]
fn json_payloads_are_stored_as_compact_text() {
    let new = parse_create(
        br#"{"type":"t","payload":{"a": [1, 2]},"delaySeconds":60,"maxAttempts":5}"#,
        now(),
    )
    .unwrap();
    assert_eq!(new.payload, r#"{"a":[1,2]}"#);
    assert_eq!(new.max_attempts, Some(5));
    assert_eq!(
        new.scheduled_at.unwrap().to_text(),
        "2026-11-27T12:01:00.000Z"
    );
    let text = parse_create(br#"{"type":"t","payload":"raw text"}"#, now()).unwrap();
    assert_eq!(text.payload, "raw text");
}

#[test]
fn every_rejection_has_a_code_and_names_the_field() {
    let cases: &[(&[u8], &str, &str)] = &[
        (b"{", "invalid_json", "JSON"),
        (b"[1]", "invalid_body", "object"),
        (br#"{"payload":1}"#, "missing_field", "`type`"),
        (br#"{"type":"t"}"#, "missing_field", "`payload`"),
        (br#"{"type":12,"payload":1}"#, "invalid_field", "`type`"),
        (
            br#"{"type":"t","payload":1,"scheduledAt":"tomorrow"}"#,
            "invalid_field",
            "`scheduledAt`",
        ),
        (
            br#"{"type":"t","payload":1,"delaySeconds":-1}"#,
            "invalid_field",
            "`delaySeconds`",
        ),
        (
            br#"{"type":"t","payload":1,"delaySeconds":1,"scheduledAt":"2026-01-01T00:00:00Z"}"#,
            "invalid_field",
            "`delaySeconds`",
        ),
        (
            br#"{"type":"t","payload":1,"maxAttempts":0}"#,
            "invalid_field",
            "`maxAttempts`",
        ),
        (
            br#"{"type":"t","payload":1,"maxAttempts":1e300}"#,
            "invalid_field",
            "`maxAttempts`",
        ),
        (
            br#"{"type":"t","payload":1,"extra":1}"#,
            "unknown_field",
            "`extra`",
        ),
    ];
    for (body, code, field) in cases {
        let err = parse_create(body, now()).unwrap_err();
        assert_eq!(err.code, *code, "{}", String::from_utf8_lossy(body));
        assert!(err.message.contains(field), "{}", err.message);
    }
}

#[test]
fn null_is_refused_and_a_repeated_field_never_wins() {
    for field in [
        "delaySeconds",
        "maxAttempts",
        "scheduledAt",
        "referenceUid",
        "idempotencyKey",
        "payload",
        "type",
    ] {
        let body = match field {
            "type" => r#"{"payload":1,"type":null}"#.to_owned(),
            "payload" => r#"{"type":"t","payload":null}"#.to_owned(),
            _ => format!(r#"{{"type":"t","payload":1,"{field}":null}}"#),
        };
        let err = parse_create(body.as_bytes(), now()).unwrap_err();
        assert_eq!(err.code, "invalid_field", "{body}");
        assert!(
            err.message.contains(&format!("`{field}`")),
            "{}",
            err.message
        );
        assert!(err.message.contains("null"), "{}", err.message);
    }
    let err = parse_create(
        br#"{"type":"t","payload":1,"delaySeconds":3600,"delaySeconds":null}"#,
        now(),
    )
    .unwrap_err();
    assert_eq!(err.code, "duplicate_field");
    assert!(err.message.contains("`delaySeconds`"), "{}", err.message);
    let err = parse_create(br#"{"type":"t","payload":{"a":1,"a":2}}"#, now()).unwrap_err();
    assert_eq!(err.code, "duplicate_field");
    assert!(err.message.contains("inside `payload`"), "{}", err.message);
}

#[test]
fn integral_floats_count_as_whole_numbers() {
    let new = parse_create(
        br#"{"type":"t","payload":1,"delaySeconds":3600.0,"maxAttempts":2.0}"#,
        now(),
    )
    .unwrap();
    assert_eq!(new.max_attempts, Some(2));
    assert_eq!(
        new.scheduled_at.unwrap().to_text(),
        "2026-11-27T13:00:00.000Z"
    );
    for (field, value) in [
        ("maxAttempts", "-1"),
        ("maxAttempts", "51"),
        ("maxAttempts", "0"),
        ("maxAttempts", "2.5"),
        ("maxAttempts", "\"2\""),
    ] {
        let body = format!(r#"{{"type":"t","payload":1,"{field}":{value}}}"#);
        let err = parse_create(body.as_bytes(), now()).unwrap_err();
        assert!(
            err.message.ends_with("must be a whole number from 1 to 50"),
            "{body}: {}",
            err.message
        );
    }
    let err = parse_create(br#"{"type":"t","payload":1,"delaySeconds":0.5}"#, now()).unwrap_err();
    assert!(
        err.message.contains("from 0 to 31622400"),
        "{}",
        err.message
    );
}

#[test]
fn a_timestamp_out_of_range_says_the_range() {
    let err = parse_create(
        br#"{"type":"t","payload":1,"scheduledAt":"1969-12-31T23:59:59Z"}"#,
        now(),
    )
    .unwrap_err();
    assert!(
        err.message.contains("in the year 1970 or later"),
        "{}",
        err.message
    );
    let err = parse_create(
        br#"{"type":"t","payload":1,"scheduledAt":"31/12/2026"}"#,
        now(),
    )
    .unwrap_err();
    assert!(err.message.contains("RFC 3339"), "{}", err.message);
}

#[test]
fn oversize_payload_is_413() {
    let body = format!(
        r#"{{"type":"t","payload":"{}"}}"#,
        "x".repeat(256 * 1024 + 1)
    );
    let err = parse_create(body.as_bytes(), now()).unwrap_err();
    assert_eq!(err.status, axum::http::StatusCode::PAYLOAD_TOO_LARGE);
}

#[test]
fn list_queries_are_strict() {
    let parsed = parse_list_query(Some("status=failed&type=sendWebhook&limit=5")).unwrap();
    assert_eq!(parsed.filter.status, Some(crate::task::TaskStatus::Failed));
    assert_eq!(parsed.filter.task_type.as_deref(), Some("sendWebhook"));
    assert_eq!(parsed.limit, 5);
    assert_eq!(parse_list_query(None).unwrap().limit, DEFAULT_LIST_LIMIT);
    let code = |query: &str| parse_list_query(Some(query)).unwrap_err().code;
    assert_eq!(code("state=failed"), "unknown_parameter");
    assert_eq!(code("status=broken"), "invalid_parameter");
    assert_eq!(code("status=failed&status=pending"), "invalid_parameter");
    assert_eq!(code("limit=0"), "invalid_parameter");
    assert_eq!(code("limit=101"), "invalid_parameter");
    assert_eq!(code("limit=ten"), "invalid_parameter");
    assert_eq!(code("type="), "invalid_parameter");
    assert_eq!(code("cursor=nope"), "invalid_cursor");
    assert_eq!(code("cursor=2026-11-27T20:00:00Z%23x"), "invalid_cursor");
}
