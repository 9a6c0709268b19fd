//! A strict reader for `conditions` objects: unknown keys are errors naming the field
//! (`conditions.paterns`), wrong types are errors naming the field, and `null` counts as
//! absent (so a form that sends every key with `null` still validates).

use serde_json::{Map, Value};

use super::PolicyError;

/// One JSON object being read, with its dot path for error messages.
pub(crate) struct Obj<'a> {
    map: Option<&'a Map<String, Value>>,
    path: String,
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

pub(crate) fn json_type(v: &Value) -> &'static str {
    type_name(v)
}

impl<'a> Obj<'a> {
    /// Read `v` (at `path`) as an object whose keys are all in `allowed`. `null` is an
    /// empty object.
    pub(crate) fn new(v: &'a Value, path: impl Into<String>, allowed: &[&str]) -> Result<Obj<'a>, PolicyError> {
        let path = path.into();
        let map = match v {
            Value::Null => None,
            Value::Object(m) => Some(m),
            other => {
                return Err(PolicyError::new(
                    path,
                    format!("expected an object, found {}", type_name(other)),
                ));
            }
        };
        if let Some(m) = map {
            for key in m.keys() {
                if !allowed.contains(&key.as_str()) {
                    let expected = if allowed.is_empty() {
                        "this policy type takes no conditions".to_owned()
                    } else {
                        let list: Vec<String> = allowed.iter().map(|k| format!("`{k}`")).collect();
                        format!("expected one of {}", list.join(", "))
                    };
                    return Err(PolicyError::new(
                        format!("{path}.{key}"),
                        format!("unknown field; {expected}"),
                    ));
                }
            }
        }
        Ok(Obj { map, path })
    }

    pub(crate) fn field(&self, key: &str) -> String {
        format!("{}.{key}", self.path)
    }

    pub(crate) fn err(&self, key: &str, message: impl Into<String>) -> PolicyError {
        PolicyError::new(self.field(key), message)
    }

    /// The value at `key`, `None` when absent or `null`.
    pub(crate) fn get(&self, key: &str) -> Option<&'a Value> {
        self.map.and_then(|m| m.get(key)).filter(|v| !v.is_null())
    }

    pub(crate) fn has(&self, key: &str) -> bool {
        self.get(key).is_some()
    }

    fn wrong(&self, key: &str, want: &str, v: &Value) -> PolicyError {
        self.err(key, format!("expected {want}, found {}", type_name(v)))
    }

    pub(crate) fn bool(&self, key: &str) -> Result<Option<bool>, PolicyError> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(v) => Err(self.wrong(key, "a boolean", v)),
        }
    }

    pub(crate) fn str(&self, key: &str) -> Result<Option<&'a str>, PolicyError> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(v) => Err(self.wrong(key, "a string", v)),
        }
    }

    /// A non-negative integer within `min..=max`.
    pub(crate) fn uint(&self, key: &str, min: u64, max: u64) -> Result<Option<u64>, PolicyError> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => match v.as_u64() {
                Some(n) if (min..=max).contains(&n) => Ok(Some(n)),
                _ => Err(self.err(key, format!("expected an integer {min}-{max}, found `{v}`"))),
            },
        }
    }

    pub(crate) fn array(&self, key: &str) -> Result<Option<&'a Vec<Value>>, PolicyError> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Array(a)) => Ok(Some(a)),
            Some(v) => Err(self.wrong(key, "an array", v)),
        }
    }

    /// An array of strings; errors name the element (`conditions.patterns[2]`).
    pub(crate) fn str_list(&self, key: &str) -> Result<Option<Vec<&'a str>>, PolicyError> {
        let Some(items) = self.array(key)? else { return Ok(None) };
        let mut out = Vec::with_capacity(items.len());
        for (i, v) in items.iter().enumerate() {
            match v {
                Value::String(s) => out.push(s.as_str()),
                other => {
                    return Err(PolicyError::new(
                        format!("{}[{i}]", self.field(key)),
                        format!("expected a string, found {}", type_name(other)),
                    ));
                }
            }
        }
        Ok(Some(out))
    }

    /// A required, non-empty array of strings.
    pub(crate) fn required_str_list(&self, key: &str) -> Result<Vec<&'a str>, PolicyError> {
        match self.str_list(key)? {
            None => Err(self.err(key, "required")),
            Some(v) if v.is_empty() => Err(self.err(key, "must not be empty")),
            Some(v) => Ok(v),
        }
    }

    /// The object at `key`, read with its own allowed keys.
    pub(crate) fn object(&self, key: &str, allowed: &[&str]) -> Result<Option<Obj<'a>>, PolicyError> {
        match self.get(key) {
            None => Ok(None),
            Some(v @ Value::Object(_)) => Obj::new(v, self.field(key), allowed).map(Some),
            Some(v) => Err(self.wrong(key, "an object", v)),
        }
    }
}

/// Which parts of a request a content or PII policy reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Fields {
    pub content: bool,
    pub metadata: bool,
}

/// `fields`: a non-empty list of `content` / `metadata`; absent means both.
pub(crate) fn fields(obj: &Obj<'_>) -> Result<Fields, PolicyError> {
    let Some(list) = obj.str_list("fields")? else {
        return Ok(Fields {
            content: true,
            metadata: true,
        });
    };
    if list.is_empty() {
        return Err(obj.err("fields", "must not be empty"));
    }
    let mut f = Fields {
        content: false,
        metadata: false,
    };
    for (i, name) in list.iter().enumerate() {
        match *name {
            "content" => f.content = true,
            "metadata" => f.metadata = true,
            other => {
                return Err(PolicyError::new(
                    format!("{}[{i}]", obj.field("fields")),
                    format!("unknown field `{other}`; expected `content` or `metadata`"),
                ));
            }
        }
    }
    Ok(f)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn unknown_key_is_named() {
        let v = json!({"paterns": ["x"]});
        let err = Obj::new(&v, "conditions", &["patterns", "fields"]).err().unwrap();
        assert_eq!(err.field, "conditions.paterns");
        assert!(err.message.contains("`patterns`"), "{}", err.message);
    }

    #[test]
    fn null_is_absent() {
        let v = json!({"patterns": null});
        let o = Obj::new(&v, "conditions", &["patterns"]).unwrap();
        assert!(!o.has("patterns"));
        let n = Value::Null;
        assert!(Obj::new(&n, "conditions", &[]).is_ok());
        assert!(Obj::new(&json!([]), "conditions", &[]).is_err());
    }

    #[test]
    fn typed_getters_name_fields() {
        let v = json!({"a": "x", "b": [1], "c": 5, "d": true});
        let o = Obj::new(&v, "conditions", &["a", "b", "c", "d"]).unwrap();
        assert_eq!(o.bool("a").unwrap_err().field, "conditions.a");
        assert_eq!(o.str_list("b").unwrap_err().field, "conditions.b[0]");
        assert_eq!(o.uint("c", 0, 4).unwrap_err().field, "conditions.c");
        assert_eq!(o.uint("c", 0, 5).unwrap(), Some(5));
        assert_eq!(o.bool("d").unwrap(), Some(true));
        assert_eq!(o.required_str_list("zz").unwrap_err().message, "required");
    }

    #[test]
    fn fields_list() {
        let v = json!({"fields": ["metadata"]});
        let o = Obj::new(&v, "conditions", &["fields"]).unwrap();
        assert_eq!(
            fields(&o).unwrap(),
            Fields {
                content: false,
                metadata: true
            }
        );
        let v = json!({"fields": ["body"]});
        let o = Obj::new(&v, "conditions", &["fields"]).unwrap();
        assert_eq!(fields(&o).unwrap_err().field, "conditions.fields[0]");
        let v = json!({"fields": []});
        let o = Obj::new(&v, "conditions", &["fields"]).unwrap();
        assert!(fields(&o).is_err());
    }
}
