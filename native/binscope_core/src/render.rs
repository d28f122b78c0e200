//! Reports as JSON (the mix tasks' `--format json`). Elixir's JSON libraries are hex packages,
//! out of reach here; serde_json is not. The NIF turns terms into a [`Value`] (maps keep their
//! key order, pids and atoms become strings) and this renders it.

use serde::ser::{Serialize, SerializeMap, SerializeSeq, Serializer};

/// A JSON-shaped report value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    Bool(bool),
    Int(i64),
    /// Integers beyond i64 (byte counts never are, but the VM allows them): kept exact as text.
    BigInt(String),
    Float(f64),
    Str(String),
    List(Vec<Value>),
    /// Keys in the order given.
    Map(Vec<(String, Value)>),
}

impl Serialize for Value {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Value::Null => s.serialize_unit(),
            Value::Bool(b) => s.serialize_bool(*b),
            Value::Int(i) => s.serialize_i64(*i),
            Value::BigInt(t) => s.serialize_str(t),
            // JSON has no NaN or infinity.
            Value::Float(f) if !f.is_finite() => s.serialize_unit(),
            Value::Float(f) => s.serialize_f64(*f),
            Value::Str(t) => s.serialize_str(t),
            Value::List(items) => {
                let mut seq = s.serialize_seq(Some(items.len()))?;
                for i in items {
                    seq.serialize_element(i)?;
                }
                seq.end()
            }
            Value::Map(pairs) => {
                let mut map = s.serialize_map(Some(pairs.len()))?;
                for (k, v) in pairs {
                    map.serialize_entry(k, v)?;
                }
                map.end()
            }
        }
    }
}

/// Renders `v` as JSON text.
pub fn to_json(v: &Value, pretty: bool) -> String {
    let out = if pretty {
        serde_json::to_string_pretty(v)
    } else {
        serde_json::to_string(v)
    };
    // Serializing this tree cannot fail: keys are strings and non-finite floats became null.
    out.unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_nested_values_in_key_order() {
        let v = Value::Map(vec![
            ("z".into(), Value::Int(1)),
            (
                "a".into(),
                Value::List(vec![
                    Value::Str("x\"y".into()),
                    Value::Null,
                    Value::Bool(true),
                ]),
            ),
            ("f".into(), Value::Float(f64::NAN)),
            (
                "big".into(),
                Value::BigInt("123456789012345678901234567890".into()),
            ),
        ]);
        assert_eq!(
            to_json(&v, false),
            r#"{"z":1,"a":["x\"y",null,true],"f":null,"big":"123456789012345678901234567890"}"#
        );
        let back: serde_json::Value = serde_json::from_str(&to_json(&v, true)).unwrap();
        assert_eq!(back["z"], 1);
    }
}
