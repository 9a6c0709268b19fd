//! Policy packs: a named, semver-versioned set of policy definitions, written as JSON or
//! YAML, validated as a whole (every error, with the definition's index and field) and
//! deployed all or nothing. The server and `praetor policy validate` share this code, so
//! the offline check is the server's check.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::policy::{CompiledPolicySet, PolicyDef};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PolicyPack {
    pub name: String,
    pub version: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    pub policy_definitions: Vec<PolicyDef>,
}

/// One problem in a pack: where (`index` of the definition, or none for the pack's own
/// fields) and which field.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PackError {
    pub index: Option<usize>,
    pub field: String,
    pub message: String,
}

fn pack_err(index: Option<usize>, field: impl Into<String>, message: impl Into<String>) -> PackError {
    PackError { index, field: field.into(), message: message.into() }
}

/// Read a pack document: JSON when it parses as JSON, else YAML.
pub fn parse_document(bytes: &[u8]) -> Result<Value, PackError> {
    if let Ok(v) = serde_json::from_slice::<Value>(bytes) {
        return Ok(v);
    }
    let text = std::str::from_utf8(bytes).map_err(|_| pack_err(None, "", "the pack is neither JSON nor UTF-8 YAML"))?;
    let budget = Budget { values: std::cell::Cell::new(YAML_VALUES_MAX), bytes: std::cell::Cell::new(YAML_BYTES_MAX) };
    serde::de::DeserializeSeed::deserialize(Bounded(&budget), serde_yaml_ng::Deserializer::from_str(text))
        .map_err(|e| pack_err(None, "", format!("the pack is neither valid JSON nor valid YAML: {e}")))
}

/// The most values, and bytes of text, a YAML pack may hold once its aliases are
/// expanded. An alias is expanded each time it is used, so a document of a few kilobytes
/// (a list of 3,000 items, then a list of 3,000 aliases of it; or a long string and many
/// aliases of it) would otherwise expand to millions of values or gigabytes of text and
/// take the memory of the server that reads it. A pack at its limit of 1,000 definitions
/// holds some tens of thousands of values; its text is at most the request body (1 MiB).
const YAML_VALUES_MAX: usize = 250_000;
const YAML_BYTES_MAX: usize = 8 * 1024 * 1024;

/// What is left to spend while building a pack from YAML.
struct Budget {
    values: std::cell::Cell<usize>,
    bytes: std::cell::Cell<usize>,
}

/// Builds a JSON value from YAML, spending the budget on every value and every string
/// and key's bytes (those aliases expand to included), and giving up when it is spent.
struct Bounded<'b>(&'b Budget);

impl Bounded<'_> {
    fn take<E: serde::de::Error>(&self) -> Result<(), E> {
        spend(&self.0.values, 1).ok_or_else(|| E::custom(format!("the pack expands to more than {YAML_VALUES_MAX} values (aliases count each time they are used)")))
    }

    /// A value of text: one value, and its bytes.
    fn take_text<E: serde::de::Error>(&self, text: &str) -> Result<(), E> {
        self.take()?;
        spend(&self.0.bytes, text.len()).ok_or_else(|| E::custom(format!("the pack expands to more than {YAML_BYTES_MAX} bytes of text (aliases count each time they are used)")))
    }
}

/// Take `n` from `left`, if it holds that much.
fn spend(left: &std::cell::Cell<usize>, n: usize) -> Option<()> {
    left.set(left.get().checked_sub(n)?);
    Some(())
}

impl<'de> serde::de::DeserializeSeed<'de> for Bounded<'_> {
    type Value = Value;
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> serde::de::Visitor<'de> for Bounded<'_> {
    type Value = Value;
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a YAML value")
    }
    fn visit_bool<E: serde::de::Error>(self, b: bool) -> Result<Value, E> {
        self.take()?;
        Ok(Value::Bool(b))
    }
    fn visit_i64<E: serde::de::Error>(self, n: i64) -> Result<Value, E> {
        self.take()?;
        Ok(Value::from(n))
    }
    fn visit_u64<E: serde::de::Error>(self, n: u64) -> Result<Value, E> {
        self.take()?;
        Ok(Value::from(n))
    }
    fn visit_f64<E: serde::de::Error>(self, n: f64) -> Result<Value, E> {
        self.take()?;
        serde_json::Number::from_f64(n).map(Value::Number).ok_or_else(|| E::custom(format!("`{n}` is not a number JSON can hold")))
    }
    fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<Value, E> {
        self.take_text(s)?;
        Ok(Value::String(s.to_owned()))
    }
    fn visit_string<E: serde::de::Error>(self, s: String) -> Result<Value, E> {
        self.take_text(&s)?;
        Ok(Value::String(s))
    }
    fn visit_unit<E: serde::de::Error>(self) -> Result<Value, E> {
        self.take()?;
        Ok(Value::Null)
    }
    fn visit_none<E: serde::de::Error>(self) -> Result<Value, E> {
        self.visit_unit()
    }
    fn visit_some<D: serde::Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        self.take()?;
        let mut items = Vec::new();
        while let Some(item) = seq.next_element_seed(Bounded(self.0))? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        self.take()?;
        let mut out = serde_json::Map::new();
        while let Some(key) = map.next_key::<String>()? {
            self.take_text(&key)?;
            let value = map.next_value_seed(Bounded(self.0))?;
            out.insert(key, value);
        }
        Ok(Value::Object(out))
    }
}

const NAME_MAX: usize = 128;
const DEFINITIONS_MAX: usize = 1_000;

/// The content patterns a pack's definitions list, if more than a workspace may hold:
/// checked before the definitions are, since checking them compiles every pattern.
fn over_pattern_limit(list: &[Value]) -> Option<usize> {
    let defs: Vec<PolicyDef> = list.iter().filter_map(|d| serde_json::from_value(d.clone()).ok()).collect();
    Some(crate::policy::content_patterns_listed(&defs)).filter(|n| *n > crate::policy::MAX_CONTENT_PATTERNS_LISTED)
}

/// Validate a whole pack, reporting every error, not just the first. On success the
/// definitions compile together.
pub fn validate(doc: &Value) -> Result<PolicyPack, Vec<PackError>> {
    let mut errors = Vec::new();
    let Some(obj) = doc.as_object() else {
        return Err(vec![pack_err(None, "", "a pack is an object with `name`, `version` and `policy_definitions`")]);
    };
    for key in obj.keys() {
        if !["name", "version", "description", "policy_definitions"].contains(&key.as_str()) {
            errors.push(pack_err(None, key.clone(), "unknown field"));
        }
    }
    let name = match obj.get("name").and_then(Value::as_str) {
        Some(n) if !n.is_empty() && n.len() <= NAME_MAX && n.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b)) => n.to_owned(),
        _ => {
            errors.push(pack_err(None, "name", format!("required: 1-{NAME_MAX} characters of [A-Za-z0-9._-]")));
            String::new()
        }
    };
    let version = match obj.get("version").and_then(Value::as_str) {
        Some(v) => match semver::Version::parse(v) {
            Ok(_) => v.to_owned(),
            Err(e) => {
                errors.push(pack_err(None, "version", format!("`{v}` is not a semantic version: {e}")));
                String::new()
            }
        },
        None => {
            errors.push(pack_err(None, "version", "required (a semantic version such as `1.2.0`)"));
            String::new()
        }
    };
    let description = obj.get("description").and_then(Value::as_str).map(str::to_owned);
    if description.as_ref().is_some_and(|d| d.len() > crate::policy::MAX_DESCRIPTION_BYTES) {
        errors.push(pack_err(None, "description", format!("is longer than {} bytes", crate::policy::MAX_DESCRIPTION_BYTES)));
    }
    let mut defs = Vec::new();
    match obj.get("policy_definitions").and_then(Value::as_array) {
        None => errors.push(pack_err(None, "policy_definitions", "required: a list of policy definitions")),
        Some(list) if list.len() > DEFINITIONS_MAX => {
            errors.push(pack_err(None, "policy_definitions", format!("has {} definitions; the limit is {DEFINITIONS_MAX}", list.len())));
        }
        Some(list) => match over_pattern_limit(list) {
            Some(n) => {
                let max = crate::policy::MAX_CONTENT_PATTERNS_LISTED;
                errors.push(pack_err(None, "policy_definitions", format!("lists {n} content patterns; a workspace's limit is {max}")));
            }
            None => {
                let mut patterns = crate::policy::PatternCache::checking();
                for (i, item) in list.iter().enumerate() {
                    match serde_path_to_error::deserialize::<_, PolicyDef>(item.clone()) {
                        Err(e) => {
                            let path = e.path().to_string();
                            let field = if path == "." { String::new() } else { path };
                            errors.push(pack_err(Some(i), field, e.into_inner().to_string()));
                        }
                        Ok(mut def) => {
                            def.policy_id.clear();
                            def.pack = None;
                            // Governance rules are made through the rules API, not packs.
                            def.governance = None;
                            if def.name.trim().is_empty() {
                                errors.push(pack_err(Some(i), "name", "must not be empty"));
                            }
                            if let Err(e) = CompiledPolicySet::validate_with(&def, &mut patterns) {
                                errors.push(pack_err(Some(i), e.field, e.message));
                            }
                            defs.push(def);
                        }
                    }
                }
                let mut names: Vec<&str> = defs.iter().map(|d| d.name.as_str()).collect();
                names.sort_unstable();
                for w in names.windows(2) {
                    if w[0] == w[1] && !w[0].is_empty() {
                        errors.push(pack_err(None, "policy_definitions", format!("two definitions are named `{}`", w[0])));
                    }
                }
            }
        },
    }
    if errors.is_empty() {
        Ok(PolicyPack { name, version, description, policy_definitions: defs })
    } else {
        Err(errors)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn yaml_aliases_cannot_expand_a_small_pack_into_a_huge_value() {
        // 3,000 items, then 3,000 aliases of them: 9 million values from 15 KB.
        let n = 3_000;
        let items = vec!["0"; n].join(",");
        let aliases = vec!["*a"; n].join(",");
        let bomb = format!("name: p\nversion: 1.0.0\nx: &a [{items}]\ny: [{aliases}]\npolicy_definitions: []\n");
        assert!(bomb.len() < 20_000);
        let err = parse_document(bomb.as_bytes()).unwrap_err();
        assert!(err.message.contains("more than 250000 values"), "{}", err.message);
        // Aliases within the budget still read as YAML means them.
        // A long string, and many aliases of it: 500 MB from 100 KB.
        let long = "x".repeat(100_000);
        let aliases = vec!["*s"; 5_000].join(",");
        let bomb = format!("name: p\nversion: 1.0.0\nx: &s {long}\ny: [{aliases}]\npolicy_definitions: []\n");
        let err = parse_document(bomb.as_bytes()).unwrap_err();
        assert!(err.message.contains("bytes of text"), "{}", err.message);
        let fine = "name: p\nversion: 1.0.0\nx: &a [1, 2]\ny: [*a, *a]\npolicy_definitions: []\n";
        assert_eq!(parse_document(fine.as_bytes()).unwrap()["y"], json!([[1, 2], [1, 2]]));
        let yaml = "name: core\nversion: 1.0.0\ndescription: ~\npolicy_definitions:\n  - {name: ok, policy_type: action_type, action_types: [x], decision: block, priority: -3, enabled: true}\n";
        assert_eq!(parse_document(yaml.as_bytes()).unwrap(), json!({"name": "core", "version": "1.0.0", "description": null,
            "policy_definitions": [{"name": "ok", "policy_type": "action_type", "action_types": ["x"], "decision": "block", "priority": -3, "enabled": true}]}));
    }

    #[test]
    fn every_error_is_reported_with_its_index_and_field() {
        let doc = json!({
            "name": "core", "version": "1.1", "colour": "red",
            "policy_definitions": [
                {"name": "ok", "policy_type": "action_type", "action_types": ["x"], "decision": "block"},
                {"name": "bad regex", "policy_type": "content_pattern", "decision": "block", "conditions": {"patterns": ["(" ]}},
                {"name": "bad kind", "policy_type": "telepathy", "decision": "block"}
            ]
        });
        let errors = validate(&doc).unwrap_err();
        let at = |i: Option<usize>, f: &str| errors.iter().any(|e| e.index == i && e.field.starts_with(f));
        assert!(at(None, "version"), "{errors:?}");
        assert!(at(None, "colour"), "{errors:?}");
        assert!(at(Some(1), "conditions.patterns[0]"), "{errors:?}");
        assert!(at(Some(2), "policy_type"), "{errors:?}");
        assert_eq!(errors.len(), 4, "{errors:?}");
    }

    #[test]
    fn yaml_and_json_read_the_same() {
        let yaml = b"name: core\nversion: 1.0.0\npolicy_definitions:\n  - name: no deletes\n    policy_type: action_type\n    action_types: ['delete_*']\n    decision: block\n";
        let json_doc = br#"{"name":"core","version":"1.0.0","policy_definitions":[{"name":"no deletes","policy_type":"action_type","action_types":["delete_*"],"decision":"block"}]}"#;
        let a = validate(&parse_document(yaml).unwrap()).unwrap();
        let b = validate(&parse_document(json_doc).unwrap()).unwrap();
        assert_eq!(a, b);
        assert!(parse_document(b"{ not: [valid").is_err());
    }
}
