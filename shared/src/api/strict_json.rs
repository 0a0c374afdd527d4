//! JSON parsing that refuses duplicate object keys, at any depth.
//!
//! `serde_json::Value` keeps the last of two equal keys, so `{"delaySeconds":3600,
//! "delaySeconds":0}` would quietly mean "due now", and a payload with a repeated key would be
//! stored without one of its values. RFC 8259 leaves duplicates to the parser; refusing them is
//! the only reading that never loses what the client sent.

use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};

/// Why a body could not be read as strict JSON.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StrictJsonError {
    /// Not JSON at all: the parser's message.
    Syntax(String),
    /// An object repeats `key`; `within` names the top-level field it sits in, if any.
    DuplicateKey { key: String, within: Option<String> },
}

/// Parses `body` into a [`Value`], refusing any object that repeats a key.
pub fn parse(body: &[u8]) -> Result<Value, StrictJsonError> {
    let mut duplicate = None;
    let mut deserializer = serde_json::Deserializer::from_slice(body);
    let parsed = Seed {
        top: None,
        depth: 0,
        duplicate: &mut duplicate,
    }
    .deserialize(&mut deserializer)
    .and_then(|value| deserializer.end().map(|()| value));
    match (parsed, duplicate) {
        (_, Some(found)) => Err(found),
        (Ok(value), None) => Ok(value),
        (Err(err), None) => Err(StrictJsonError::Syntax(err.to_string())),
    }
}

/// Builds one value; `top` is the top-level field it sits under (for the error message).
struct Seed<'a> {
    top: Option<&'a str>,
    depth: usize,
    duplicate: &'a mut Option<StrictJsonError>,
}

impl<'de> DeserializeSeed<'de> for Seed<'_> {
    type Value = Value;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Seed<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        // JSON text never holds NaN or infinities, so this is always a number.
        Ok(Number::from_f64(v).map_or(Value::Null, Value::Number))
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }

    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element_seed(Seed {
            top: self.top,
            depth: self.depth + 1,
            duplicate: &mut *self.duplicate,
        })? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut object = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if object.contains_key(&key) {
                *self.duplicate = Some(StrictJsonError::DuplicateKey {
                    key,
                    within: self.top.map(str::to_owned),
                });
                return Err(de::Error::custom("duplicate key"));
            }
            let top = if self.depth == 0 {
                Some(key.as_str())
            } else {
                self.top
            };
            let value = map.next_value_seed(Seed {
                top,
                depth: self.depth + 1,
                duplicate: &mut *self.duplicate,
            })?;
            object.insert(key, value);
        }
        Ok(Value::Object(object))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_read_as_serde_json_reads_them() {
        let text = br#"{"a":[1,-2,3.5,"x",null,true],"b":{"c":{}},"d":18446744073709551615}"#;
        let expected: Value = serde_json::from_slice(text).unwrap();
        assert_eq!(parse(text).unwrap(), expected);
        assert_eq!(parse(b" 7 ").unwrap(), Value::from(7));
    }

    #[test]
    fn a_repeated_key_is_refused_wherever_it_is() {
        assert_eq!(
            parse(br#"{"delaySeconds":3600,"delaySeconds":null}"#),
            Err(StrictJsonError::DuplicateKey {
                key: "delaySeconds".into(),
                within: None
            })
        );
        assert_eq!(
            parse(br#"{"payload":[{"k":1,"k":2}]}"#),
            Err(StrictJsonError::DuplicateKey {
                key: "k".into(),
                within: Some("payload".into())
            })
        );
        // Equal keys in different objects are not duplicates.
        assert!(parse(br#"{"a":{"k":1},"b":{"k":1}}"#).is_ok());
    }

    #[test]
    fn syntax_errors_keep_the_parser_message() {
        let Err(StrictJsonError::Syntax(message)) = parse(b"{\"a\":1} x") else {
            panic!("trailing characters must be refused");
        };
        assert!(message.contains("trailing"), "{message}");
    }
}
