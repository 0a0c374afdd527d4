//! A payload as it is stored: a JSON string's text as is; any other value exactly as the
//! client wrote it, tokens byte for byte (numbers of any size and precision, key order,
//! escapes), with only the whitespace between tokens left out. Going through a parsed value
//! would round `123456789012345678901234567890` to `1.2345678901234568e29` and rewrite
//! `"\u00e9"` as `"é"`.

use std::collections::HashMap;

use serde_json::value::RawValue;

/// The stored text of the payload whose JSON text (a whole, valid JSON value, whitespace
/// around it allowed) is `json`; `None` for `null`, which is no payload, or text that is not
/// JSON.
pub fn payload_text(json: &str) -> Option<String> {
    let json = json.trim_matches(is_json_whitespace);
    match json.as_bytes().first()? {
        b'"' => serde_json::from_str::<String>(json).ok(),
        _ if json == "null" => None,
        _ => serde_json::from_str::<&RawValue>(json)
            .ok()
            .map(|raw| compact(raw.get())),
    }
}

fn is_json_whitespace(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\n' | '\r')
}

/// Valid JSON text without the whitespace between its tokens; every token as written.
fn compact(json: &str) -> String {
    let mut out = String::with_capacity(json.len());
    let (mut in_string, mut escaped) = (false, false);
    for c in json.chars() {
        if in_string {
            out.push(c);
            match c {
                _ if escaped => escaped = false,
                '\\' => escaped = true,
                '"' => in_string = false,
                _ => {}
            }
        } else if !is_json_whitespace(c) {
            in_string = c == '"';
            out.push(c);
        }
    }
    out
}

/// The raw JSON text of each member of the object `json`; empty when it is not an object.
pub fn raw_members(json: &[u8]) -> HashMap<String, &RawValue> {
    serde_json::from_slice(json).unwrap_or_default()
}

/// The raw JSON text of each item of the array `json`; empty when it is not an array.
pub fn raw_items(json: &RawValue) -> Vec<&RawValue> {
    serde_json::from_str(json.get()).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_kept_as_written_and_only_whitespace_goes() {
        let sent = "{ \"n\" : 123456789012345678901234567890, \"f\": 1.10, \"e\": 1E3,\n\
                    \"z\": -0, \"s\": \"\\u00e9 \\/ \\\" a b\", \"k\": {\"y\": 1, \"x\": [ 2 , 3 ]} }";
        assert_eq!(
            payload_text(sent).as_deref(),
            Some(
                "{\"n\":123456789012345678901234567890,\"f\":1.10,\"e\":1E3,\"z\":-0,\
                 \"s\":\"\\u00e9 \\/ \\\" a b\",\"k\":{\"y\":1,\"x\":[2,3]}}"
            )
        );
        assert_eq!(payload_text(" 1e400 ").as_deref(), Some("1e400"));
        assert_eq!(payload_text("\"raw \\u00e9\"").as_deref(), Some("raw é"));
        assert_eq!(payload_text("null"), None);
        assert_eq!(payload_text("{"), None);
        assert_eq!(payload_text(""), None);
    }

    #[test]
    fn members_and_items_come_back_raw() {
        let body = br#"{"tasks":[{"payload":1.50},{"payload":{"b":1,"a":2}}, 7],"x":null}"#;
        let members = raw_members(body);
        let items = raw_items(members["tasks"]);
        assert_eq!(items.len(), 3);
        assert_eq!(
            raw_members(items[0].get().as_bytes())["payload"].get(),
            "1.50"
        );
        assert_eq!(
            raw_members(items[1].get().as_bytes())["payload"].get(),
            r#"{"b":1,"a":2}"#
        );
        assert!(raw_members(items[2].get().as_bytes()).is_empty());
        assert!(raw_members(b"[1]").is_empty());
    }
}
