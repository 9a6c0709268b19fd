//! Sealing changes to what decides (policy created, agent registered, key created…)
//! alongside the change itself, in one transaction.

use serde_json::{Map, Value, json};

use praetor_store::SealRequest;

use crate::clock::iso;

/// A vault entry for a lifecycle event. `actor` is the key id that made the change.
pub fn event(workspace_id: &str, kind: &str, actor: Option<&str>, at_ms: i64, fields: Value) -> SealRequest {
    let mut body = match floats_as_strings(fields) {
        Value::Object(extra) => extra,
        _ => Map::new(),
    };
    // The event's own fields are set last: a payload can never relabel an entry.
    body.insert("kind".into(), json!(kind));
    body.insert("time".into(), json!(iso(at_ms)));
    body.insert("workspace_id".into(), json!(workspace_id));
    body.insert("actor".into(), json!(actor));
    SealRequest { workspace_id: workspace_id.to_owned(), body }
}

/// The vault's canonical encoding has no floats (their text differs between
/// languages). User-supplied JSON sealed in an event (a policy's `value: 12.5`) keeps
/// its number as the decimal string serde_json prints for it.
pub fn floats_as_strings(v: Value) -> Value {
    match v {
        Value::Number(n) if n.is_f64() => Value::String(n.to_string()),
        Value::Array(items) => Value::Array(items.into_iter().map(floats_as_strings).collect()),
        Value::Object(m) => Value::Object(m.into_iter().map(|(k, v)| (k, floats_as_strings(v))).collect()),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floats_become_strings_and_integers_stay() {
        let v = floats_as_strings(json!({"a": 12.5, "b": [1, 0.1], "c": {"d": -3}}));
        assert_eq!(v, json!({"a": "12.5", "b": [1, "0.1"], "c": {"d": -3}}));
        assert!(praetor_vault::canonical_json(&v).is_ok());
    }
}
