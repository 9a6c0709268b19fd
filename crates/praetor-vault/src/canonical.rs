//! Canonical JSON, the byte encoding of every vault leaf.
//!
//! The rules are those of `xybern-wire.md` §7.3, i.e. exactly what Python produces with
//! `json.dumps(v, sort_keys=True, separators=(",", ":"), ensure_ascii=False)`:
//!
//! - object keys sorted by Unicode code point at every depth (for UTF-8 strings, byte
//!   order is code point order);
//! - no whitespace; `,` between items, `:` between key and value;
//! - strings as raw UTF-8; only `"`, `\` and control characters below U+0020 are
//!   escaped: `\b \t \n \f \r` in short form, the others as `\u00xx` with lowercase hex;
//!   `/`, DEL (U+007F), U+2028 and U+2029 are written raw;
//! - `true`, `false`, `null`; integers in plain decimal (i64 or u64 range);
//! - **no floats**: any number that is not an integer is an error naming its JSON path.
//!
//! This module does not rely on `serde_json`'s map ordering (a dependency could turn on
//! `preserve_order`); it sorts and escapes on its own.

use serde::Serialize;
use serde_json::Value;

use crate::error::VaultError;

/// Encodes `v` as canonical JSON (see the module documentation).
///
/// # Errors
/// [`VaultError::FloatNotAllowed`] when a number is not an i64/u64 integer.
pub fn canonical_json(v: &Value) -> Result<Vec<u8>, VaultError> {
    encode(v, MAX_DEPTH)
}

/// `v` encoded, nesting at most `room` levels of arrays and objects.
fn encode(v: &Value, room: usize) -> Result<Vec<u8>, VaultError> {
    let mut out = Vec::with_capacity(256);
    write_value(v, &mut out, room).map_err(unencodable)?;
    Ok(out)
}

/// The deepest nesting of arrays and objects a writer gives a leaf. A JSON parser stops
/// at some depth (serde_json at 128 levels): a leaf deeper than its verifier reads could
/// be sealed but never verified, and would fail every audit from its entry on. Callers
/// that seal what a request sent keep requests well under this. It is a rule for
/// writers only: a checker reads any leaf its parser can (earlier versions wrote leaves
/// up to 127 levels deep, and they stay verifiable).
pub const MAX_DEPTH: usize = 100;

/// Serialises `t` with serde and encodes the result as canonical JSON.
///
/// # Errors
/// [`VaultError::InvalidJson`] when serde cannot represent `t` as JSON,
/// [`VaultError::FloatNotAllowed`] when it holds a float.
pub fn to_canonical_json<T: Serialize + ?Sized>(t: &T) -> Result<Vec<u8>, VaultError> {
    let v = serde_json::to_value(t).map_err(|e| VaultError::InvalidJson {
        reason: e.to_string(),
    })?;
    canonical_json(&v)
}

/// The canonical encoding of a JSON object with one integer field still to fill in:
/// a vault entry's `seq`, known only when the entry is appended. Encoding the rest
/// beforehand keeps that work off the store's single writer thread;
/// `fill(n)` gives exactly the bytes `canonical_json` gives for the object with the
/// field set to `n`.
#[derive(Debug, Clone)]
pub struct CanonicalWithSlot {
    /// `{`, the entries sorting before the slot, and the slot's key and `:`.
    before: Vec<u8>,
    /// The entries sorting after the slot, each preceded by `,`, and `}`.
    after: Vec<u8>,
}

impl CanonicalWithSlot {
    /// Encodes `object` with an integer field `slot` to be filled in later. A field of
    /// that name already in `object` is left out (the filled-in value replaces it).
    ///
    /// # Errors
    /// [`VaultError::FloatNotAllowed`] when a value holds a float,
    /// [`VaultError::TooDeep`] when it nests deeper than [`MAX_DEPTH`].
    pub fn new(object: &serde_json::Map<String, Value>, slot: &str) -> Result<CanonicalWithSlot, VaultError> {
        let mut entries: Vec<(&String, &Value)> = object.iter().filter(|(k, _)| k.as_str() != slot).collect();
        if !entries.is_sorted_by(|a, b| a.0.as_bytes() <= b.0.as_bytes()) {
            entries.sort_unstable_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
        }
        let split = entries.partition_point(|(k, _)| k.as_bytes() < slot.as_bytes());
        let mut before = Vec::with_capacity(512);
        before.push(b'{');
        for (k, v) in &entries[..split] {
            write_entry(k, v, &mut before, MAX_DEPTH - 1).map_err(unencodable)?;
            before.push(b',');
        }
        write_string(slot, &mut before);
        before.push(b':');
        let mut after = Vec::with_capacity(256);
        for (k, v) in &entries[split..] {
            after.push(b',');
            write_entry(k, v, &mut after, MAX_DEPTH - 1).map_err(unencodable)?;
        }
        after.push(b'}');
        Ok(CanonicalWithSlot { before, after })
    }

    /// The object's canonical bytes with the slot set to `value`.
    #[must_use]
    pub fn fill(&self, value: u64) -> Vec<u8> {
        let digits = value.to_string();
        let mut out = Vec::with_capacity(self.before.len() + digits.len() + self.after.len());
        out.extend_from_slice(&self.before);
        out.extend_from_slice(digits.as_bytes());
        out.extend_from_slice(&self.after);
        out
    }
}

/// One step of the JSON path to what cannot be encoded. The path is built only when
/// such a value is found, from the inside out, so encoding pays nothing for it otherwise.
enum Step<'a> {
    Key(&'a str),
    Index(usize),
}

/// What cannot be encoded, and the steps from it up to the value being encoded,
/// innermost first.
struct Unencodable<'a> {
    too_deep: bool,
    steps: Vec<Step<'a>>,
}

impl<'a> Unencodable<'a> {
    fn at(mut self, step: Step<'a>) -> Self {
        self.steps.push(step);
        self
    }
}

/// `$`, then `.key` for plain identifiers, `["key"]` for other keys and `[i]` for array
/// items, so the path is unambiguous.
fn unencodable(bad: Unencodable<'_>) -> VaultError {
    let mut path = String::from("$");
    for step in bad.steps.iter().rev() {
        match step {
            Step::Index(i) => path.push_str(&format!("[{i}]")),
            Step::Key(key) if !key.is_empty() && key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-') => {
                path.push('.');
                path.push_str(key);
            }
            Step::Key(key) => {
                let mut quoted = Vec::with_capacity(key.len() + 2);
                write_string(key, &mut quoted);
                path.push('[');
                path.push_str(&String::from_utf8_lossy(&quoted));
                path.push(']');
            }
        }
    }
    if bad.too_deep { VaultError::TooDeep { path, max: MAX_DEPTH } } else { VaultError::FloatNotAllowed { path } }
}

/// `"key":value`, as inside a canonical object, with `room` levels of nesting left.
fn write_entry<'a>(key: &'a str, value: &'a Value, out: &mut Vec<u8>, room: usize) -> Result<(), Unencodable<'a>> {
    write_string(key, out);
    out.push(b':');
    write_value(value, out, room).map_err(|bad| bad.at(Step::Key(key)))
}

/// Checks that `bytes` is JSON already in canonical form: parsing it and encoding it
/// again gives the same bytes. Duplicate keys, whitespace, unsorted keys, escaped
/// non-ASCII and floats all fail.
///
/// # Errors
/// [`VaultError::InvalidJson`], [`VaultError::FloatNotAllowed`] or
/// [`VaultError::NonCanonicalLeaf`].
pub fn check_canonical(bytes: &[u8]) -> Result<(), VaultError> {
    parse_canonical(bytes).map(drop)
}

/// [`check_canonical`], and the value it parsed, for a caller that reads fields of it.
///
/// # Errors
/// As [`check_canonical`].
pub fn parse_canonical(bytes: &[u8]) -> Result<Value, VaultError> {
    let v: Value = serde_json::from_slice(bytes).map_err(|e| VaultError::InvalidJson {
        reason: e.to_string(),
    })?;
    // Re-encoded with no limit of depth: the writers' limit (`MAX_DEPTH`) is not a
    // rule of the form, and what the parser read is checked whole.
    let again = encode(&v, usize::MAX)?;
    if again.as_slice() == bytes {
        Ok(v)
    } else {
        Err(VaultError::NonCanonicalLeaf)
    }
}

/// `v`, with `room` levels of arrays and objects left to nest.
fn write_value<'a>(v: &'a Value, out: &mut Vec<u8>, room: usize) -> Result<(), Unencodable<'a>> {
    use std::io::Write as _;
    if matches!(v, Value::Array(_) | Value::Object(_)) && room == 0 {
        return Err(Unencodable { too_deep: true, steps: Vec::new() });
    }
    match v {
        Value::Null => out.extend_from_slice(b"null"),
        Value::Bool(true) => out.extend_from_slice(b"true"),
        Value::Bool(false) => out.extend_from_slice(b"false"),
        // Writing to a Vec cannot fail.
        Value::Number(n) => {
            let _ = match (n.as_i64(), n.as_u64()) {
                (Some(i), _) => write!(out, "{i}"),
                (None, Some(u)) => write!(out, "{u}"),
                (None, None) => return Err(Unencodable { too_deep: false, steps: Vec::new() }),
            };
        }
        Value::String(s) => write_string(s, out),
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_value(item, out, room - 1).map_err(|bad| bad.at(Step::Index(i)))?;
            }
            out.push(b']');
        }
        Value::Object(map) => {
            out.push(b'{');
            // serde_json's map is usually sorted already (a `BTreeMap`); sort only a
            // map that is not (a dependency may turn on `preserve_order`). UTF-8 byte
            // order equals Unicode code point order.
            if map.keys().is_sorted_by(|a, b| a.as_bytes() <= b.as_bytes()) {
                for (i, (k, item)) in map.iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    write_entry(k, item, out, room - 1)?;
                }
            } else {
                let mut entries: Vec<(&String, &Value)> = map.iter().collect();
                entries.sort_unstable_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
                for (i, (k, item)) in entries.into_iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    write_entry(k, item, out, room - 1)?;
                }
            }
            out.push(b'}');
        }
    }
    Ok(())
}

/// The bytes a JSON string escapes: the quote, the backslash and the control characters.
/// A table, so that the common byte costs one lookup (strings are most of a leaf's bytes).
static ESCAPED: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 0x20 {
        table[b] = true;
        b += 1;
    }
    table[b'"' as usize] = true;
    table[b'\\' as usize] = true;
    table
};

/// Writes `s` as a JSON string with Python's `ensure_ascii=False` escaping.
fn write_string(s: &str, out: &mut Vec<u8>) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let bytes = s.as_bytes();
    out.reserve(bytes.len() + 2);
    out.push(b'"');
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        if !ESCAPED[usize::from(b)] {
            continue;
        }
        // Multi-byte UTF-8 sequences only contain bytes >= 0x80, so slicing at an
        // ASCII byte never splits a character.
        out.extend_from_slice(&bytes[start..i]);
        match b {
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            0x08 => out.extend_from_slice(b"\\b"),
            0x09 => out.extend_from_slice(b"\\t"),
            0x0a => out.extend_from_slice(b"\\n"),
            0x0c => out.extend_from_slice(b"\\f"),
            0x0d => out.extend_from_slice(b"\\r"),
            _ => {
                out.extend_from_slice(b"\\u00");
                out.push(HEX[usize::from(b >> 4)]);
                out.push(HEX[usize::from(b & 0x0f)]);
            }
        }
        start = i + 1;
    }
    out.extend_from_slice(&bytes[start..]);
    out.push(b'"');
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    fn canon(v: &Value) -> String {
        String::from_utf8(canonical_json(v).unwrap()).unwrap()
    }

    /// `levels` objects, one inside the other, around `1`.
    fn nested(levels: usize) -> Value {
        (0..levels).fold(json!(1), |inner, _| json!({ "k": inner }))
    }

    #[test]
    fn every_leaf_written_can_be_read_again() {
        // A leaf the writer accepts, the checker (and every verifier) parses: once the
        // writer sealed leaves nested 128 deep, which serde_json then refused to read.
        for levels in [1, 64, MAX_DEPTH - 1, MAX_DEPTH] {
            let bytes = canonical_json(&nested(levels)).unwrap();
            assert!(check_canonical(&bytes).is_ok(), "{levels} levels");
            let with_slot = CanonicalWithSlot::new(nested(levels).as_object().unwrap(), "seq").unwrap().fill(7);
            assert!(check_canonical(&with_slot).is_ok(), "{levels} levels, with a slot");
        }
        for levels in [MAX_DEPTH + 1, 127, 500] {
            assert!(matches!(canonical_json(&nested(levels)), Err(VaultError::TooDeep { max: MAX_DEPTH, .. })), "{levels} levels");
            let refused = CanonicalWithSlot::new(nested(levels).as_object().unwrap(), "seq");
            assert!(matches!(refused, Err(VaultError::TooDeep { .. })), "{levels} levels, with a slot");
        }
        // A leaf an earlier version wrote deeper than writers now may is still read.
        let old = nested(126);
        let mut written = String::new();
        for _ in 0..126 {
            written.push_str("{\"k\":");
        }
        written.push('1');
        written.push_str(&"}".repeat(126));
        assert_eq!(parse_canonical(written.as_bytes()).unwrap(), old, "126 levels, as the parser reads them");
        let deep_array = (0..=MAX_DEPTH).fold(json!(1), |inner, _| json!([inner]));
        let err = canonical_json(&json!({ "entry": { "metadata": deep_array } })).unwrap_err().to_string();
        assert!(err.contains("$.entry.metadata[0][0]"), "the path names where: {err}");
    }

    #[test]
    fn sorts_keys_at_every_depth_and_drops_whitespace() {
        let v = json!({"b": 1, "a": {"z": [3, {"y": null, "x": true}], "m": false}, "A": -5});
        assert_eq!(
            canon(&v),
            r#"{"A":-5,"a":{"m":false,"z":[3,{"x":true,"y":null}]},"b":1}"#
        );
    }

    #[test]
    fn sorts_by_code_point_not_utf16() {
        // U+FF5E (3 bytes) sorts before U+1F600 (4 bytes, a surrogate pair in UTF-16:
        // Python compares code points, so the emoji comes last).
        let v = json!({"\u{1F600}": 1, "\u{FF5E}": 2, "z": 3, "é": 4});
        assert_eq!(
            canon(&v),
            "{\"z\":3,\"é\":4,\"\u{FF5E}\":2,\"\u{1F600}\":1}"
        );
    }

    #[test]
    fn escapes_exactly_like_python() {
        let s = "quote\" backslash\\ slash/ nl\n cr\r tab\t bs\u{8} ff\u{c} nul\u{0} \
                 us\u{1f} del\u{7f} ls\u{2028} ps\u{2029} emoji😀 é";
        let got = canon(&json!(s));
        // json.dumps(s, ensure_ascii=False)
        let want = "\"quote\\\" backslash\\\\ slash/ nl\\n cr\\r tab\\t bs\\b ff\\f nul\\u0000 \
                    us\\u001f del\u{7f} ls\u{2028} ps\u{2029} emoji😀 é\"";
        assert_eq!(got, want);
    }

    #[test]
    fn control_chars_use_lowercase_hex() {
        assert_eq!(canon(&json!("\u{1b}\u{0b}")), "\"\\u001b\\u000b\"");
    }

    #[test]
    fn integers_plain_at_extremes() {
        let v = json!([i64::MIN, i64::MAX, u64::MAX, 0, -0]);
        assert_eq!(
            canon(&v),
            "[-9223372036854775808,9223372036854775807,18446744073709551615,0,0]"
        );
    }

    #[test]
    fn floats_are_rejected_with_their_path() {
        let v = json!({"order": {"items": [{"qty": 1}, {"price": 2.5}]}});
        let err = canonical_json(&v).unwrap_err();
        assert_eq!(
            err,
            VaultError::FloatNotAllowed {
                path: "$.order.items[1].price".into()
            }
        );
        assert!(err.to_string().contains("`$.order.items[1].price`"));
        let v = json!({"a b": 1.0});
        assert_eq!(
            canonical_json(&v).unwrap_err(),
            VaultError::FloatNotAllowed {
                path: "$[\"a b\"]".into()
            }
        );
        assert!(canonical_json(&json!(1e300)).is_err());
    }

    #[test]
    fn keys_are_escaped_too() {
        let v = json!({"a\"b": 1, "new\nline": 2});
        assert_eq!(canon(&v), r#"{"a\"b":1,"new\nline":2}"#);
    }

    #[test]
    fn empty_containers() {
        assert_eq!(
            canon(&json!({"a": {}, "b": [], "c": ""})),
            r#"{"a":{},"b":[],"c":""}"#
        );
    }

    #[test]
    fn check_canonical_accepts_and_rejects() {
        assert!(check_canonical(br#"{"a":1,"b":"\u001f/"}"#).is_ok());
        assert_eq!(
            check_canonical(br#"{"b":1,"a":2}"#),
            Err(VaultError::NonCanonicalLeaf)
        );
        assert_eq!(
            check_canonical(br#"{"a": 1}"#),
            Err(VaultError::NonCanonicalLeaf)
        );
        assert_eq!(
            check_canonical(br#"{"a":1,"a":1}"#),
            Err(VaultError::NonCanonicalLeaf)
        );
        assert_eq!(
            check_canonical(br#"["\u00e9"]"#),
            Err(VaultError::NonCanonicalLeaf)
        );
        assert_eq!(
            check_canonical(br#"["\/"]"#),
            Err(VaultError::NonCanonicalLeaf)
        );
        assert!(matches!(
            check_canonical(b"[1.0]"),
            Err(VaultError::FloatNotAllowed { .. })
        ));
        assert!(matches!(
            check_canonical(b"{"),
            Err(VaultError::InvalidJson { .. })
        ));
    }

    /// `CanonicalWithSlot::new(m, "seq").fill(n)` against `canonical_json` of `m` with
    /// `seq: n`, with the slot sorting first, last, between others, alone, and replacing
    /// a `seq` already there.
    #[test]
    fn a_filled_slot_gives_the_canonical_bytes_of_the_whole_object() {
        let objects = [
            json!({}),
            json!({"a": 1}),
            json!({"z": "é\n", "zz": [1, {"b": null}]}),
            json!({"kind": "decision", "time": "t", "policies": [{"x": 1}], "session_id": null, "shadow": [], "seq": 99}),
            json!({"se": 1, "seq0": 2, "sep": 3, "seR": 4, "\u{1F600}": true}),
        ];
        for object in objects {
            let Value::Object(m) = &object else { unreachable!() };
            let slot = CanonicalWithSlot::new(m, "seq").unwrap();
            for n in [0_u64, 7, 1_000_000, u64::MAX] {
                let mut whole = m.clone();
                whole.insert("seq".into(), json!(n));
                assert_eq!(
                    String::from_utf8(slot.fill(n)).unwrap(),
                    canon(&Value::Object(whole)),
                    "{object} with seq {n}"
                );
            }
        }
    }

    #[test]
    fn a_slotted_object_with_a_float_names_its_path() {
        let Value::Object(m) = json!({"a": {"b": 1.5}}) else { unreachable!() };
        assert!(matches!(
            CanonicalWithSlot::new(&m, "seq"),
            Err(VaultError::FloatNotAllowed { path }) if path == "$.a.b"
        ));
    }

    #[test]
    fn serde_structs() {
        #[derive(Serialize)]
        struct R {
            z: u32,
            a: &'static str,
        }
        assert_eq!(
            to_canonical_json(&R { z: 1, a: "x" }).unwrap(),
            br#"{"a":"x","z":1}"#.to_vec()
        );
    }
}
