//! The texts of a request's metadata that content and PII policies read, with the
//! path each is found at: string values and object keys at any depth, and for PII,
//! numbers as the digits they are written with.
//!
//! Keys are read because a key is as much the sender's text as a value (`{"bob@x.io":
//! true}`).

use std::ops::Range;

use serde_json::Value;

use crate::fold::{self, Folded};

#[derive(Debug, Clone, Copy)]
pub(crate) enum Seg<'v> {
    Key(&'v str),
    Index(usize),
    /// An object key named by its position in key order (`<key 2>`): the path of the
    /// key's own text, or of what is below a key whose text must not be shown.
    KeyAt(usize),
}

/// One piece of metadata text. Keys and values borrow from the metadata; a number's
/// digits are written into a buffer the walk reuses.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Piece<'v, 'd> {
    /// A string value.
    Value(&'v str),
    /// An object key (its path ends with `Seg::KeyAt`).
    Key(&'v str),
    /// A number's digits, or an array of numbers as one number written in groups.
    Number(&'d str),
}

/// Call `f` for every piece of text in `md`, at any depth, with its path: string
/// values and object keys, and, with `numbers`, numbers as their decimal digits
/// (`number_text`) and arrays of numbers as one text (`grouped_digits`).
///
/// `f` answers whether the text it was given must not be shown: a key so answered is
/// named by its position (`Seg::KeyAt`) in the paths below it too.
pub(crate) fn walk<'v>(md: &'v serde_json::Map<String, Value>, numbers: bool, f: &mut impl FnMut(&[Seg<'v>], Piece<'v, '_>) -> bool) {
    struct Walk<'f, F> {
        numbers: bool,
        f: &'f mut F,
        /// Reused for the digits of numbers.
        digits: String,
    }
    impl<'v, F: FnMut(&[Seg<'v>], Piece<'v, '_>) -> bool> Walk<'_, F> {
        fn object(&mut self, m: &'v serde_json::Map<String, Value>, path: &mut Vec<Seg<'v>>) {
            for (i, (k, x)) in m.iter().enumerate() {
                path.push(Seg::KeyAt(i));
                let hide = (self.f)(path, Piece::Key(k));
                path.pop();
                path.push(if hide { Seg::KeyAt(i) } else { Seg::Key(k) });
                self.value(x, path);
                path.pop();
            }
        }

        fn value(&mut self, v: &'v Value, path: &mut Vec<Seg<'v>>) {
            match v {
                Value::String(s) => {
                    (self.f)(path, Piece::Value(s));
                }
                Value::Number(n) if self.numbers && number_text(n, &mut self.digits) => {
                    (self.f)(path, Piece::Number(&self.digits));
                }
                Value::Array(items) => {
                    if self.numbers && grouped_digits(items, &mut self.digits) {
                        (self.f)(path, Piece::Number(&self.digits));
                    }
                    for (i, x) in items.iter().enumerate() {
                        path.push(Seg::Index(i));
                        self.value(x, path);
                        path.pop();
                    }
                }
                Value::Object(m) => self.object(m, path),
                _ => {}
            }
        }
    }
    let mut walk = Walk { numbers, f, digits: String::new() };
    walk.object(md, &mut Vec::new());
}

/// The keys and string values of a request's metadata, in walk order, each with its
/// path and its folded form: what content patterns read. Built once per request, so
/// each pattern reads a list rather than walking the tree and folding again.
#[derive(Debug)]
pub(crate) struct PatternTexts<'v> {
    texts: Vec<PatternText<'v>>,
    /// The paths of all texts, end to end; each text names its range.
    segs: Vec<Seg<'v>>,
    /// Every text and every folded form, one after another with `\n` between them: one
    /// haystack that tells a pattern matching none of them with one search
    /// (`PatternBank::is_match_in_none`).
    pub(crate) joined: String,
}

#[derive(Debug)]
struct PatternText<'v> {
    text: &'v str,
    folded: Option<Folded>,
    path: Range<usize>,
}

impl<'v> PatternTexts<'v> {
    pub(crate) fn new(md: &'v serde_json::Map<String, Value>) -> PatternTexts<'v> {
        // Sized for typical metadata, so that listing it rarely reallocates.
        let mut out = PatternTexts { texts: Vec::with_capacity(16), segs: Vec::with_capacity(32), joined: String::with_capacity(256) };
        walk(md, false, &mut |path, piece| {
            let text = match piece {
                Piece::Key(t) | Piece::Value(t) => t,
                Piece::Number(_) => return false,
            };
            let start = out.segs.len();
            out.segs.extend_from_slice(path);
            let folded = fold::fold(text);
            for t in std::iter::once(text).chain(folded.as_ref().map(|f| f.text.as_str())) {
                out.joined.push_str(t);
                out.joined.push('\n');
            }
            out.texts.push(PatternText { text, folded, path: start..out.segs.len() });
            false
        });
        out
    }

    /// The path of the first text (in walk order) that `matches`, as sent or folded.
    pub(crate) fn first_match(&self, matches: impl Fn(&str) -> bool) -> Option<String> {
        let t = self.texts.iter().find(|t| matches(t.text) || t.folded.as_ref().is_some_and(|f| matches(&f.text)))?;
        Some(path_text(self.segs.get(t.path.clone()).unwrap_or_default()))
    }
}

/// Write the decimal digits of a whole number into `out` (replacing it): an integer,
/// or a float with no fraction (`4111111111111111.0` and `4.111111111111111e15` are the
/// same number as the integer). A float with a fraction is an amount or a measure, not
/// an identifier, and is not read: false.
fn number_text(n: &serde_json::Number, out: &mut String) -> bool {
    use std::fmt::Write as _;
    out.clear();
    let written = if let Some(u) = n.as_u64() {
        write!(out, "{u}")
    } else if let Some(i) = n.as_i64() {
        write!(out, "{i}")
    } else {
        match n.as_f64() {
            // Beyond 1e300 the digits are only the float's approximation; no identifier
            // is that long anyway.
            Some(f) if f.fract() == 0.0 && f.abs() < 1e300 => write!(out, "{f:.0}"),
            _ => return false,
        }
    };
    written.is_ok()
}

/// An array of at least two whole numbers or digit strings (`[4111, 1111, 1111, 1111]`)
/// is also read as one number written in groups separated by spaces, as a card number
/// is (`4111 1111 1111 1111`), into `out`. Anything else in the array: false.
fn grouped_digits(items: &[Value], out: &mut String) -> bool {
    if items.len() < 2 {
        return false;
    }
    let mut text = String::new();
    let mut part = String::new();
    for (i, x) in items.iter().enumerate() {
        let group = match x {
            Value::Number(n) if number_text(n, &mut part) => part.as_str(),
            Value::String(s) if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) => s.as_str(),
            _ => return false,
        };
        if i > 0 {
            text.push(' ');
        }
        text.push_str(group);
    }
    *out = text;
    true
}

/// The key a value is under (`ssn` for `metadata.ssn` and `metadata.ssn[1]`), unless it
/// is one whose text must not be shown.
pub(crate) fn last_key<'v>(path: &[Seg<'v>]) -> Option<&'v str> {
    path.iter().rev().find_map(|seg| match seg {
        Seg::Key(k) => Some(Some(*k)),
        Seg::KeyAt(_) => Some(None),
        Seg::Index(_) => None,
    })?
}

/// `metadata.to`, `metadata.items[2].note`, `metadata.<key 0>`.
pub(crate) fn path_text(path: &[Seg<'_>]) -> String {
    let mut s = String::from("metadata");
    for seg in path {
        match seg {
            Seg::Key(k) => {
                s.push('.');
                s.push_str(k);
            }
            Seg::Index(i) => {
                s.push('[');
                s.push_str(&i.to_string());
                s.push(']');
            }
            Seg::KeyAt(i) => {
                s.push_str(".<key ");
                s.push_str(&i.to_string());
                s.push('>');
            }
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::content_pattern::BankBuilder;
    use serde_json::json;

    fn map(v: Value) -> serde_json::Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => panic!("not an object"),
        }
    }

    #[test]
    fn lists_keys_and_string_values_with_their_paths() {
        let md = map(json!({"to": "bob", "items": [{"note": "x"}, 7], "ｎａｍｅ": true}));
        let texts = PatternTexts::new(&md);
        assert_eq!(texts.first_match(|t| t == "x").as_deref(), Some("metadata.items[0].note"));
        assert_eq!(texts.first_match(|t| t == "note").as_deref(), Some("metadata.items[0].<key 0>"));
        // The folded form of a key is read too; its path names the key's position.
        assert_eq!(texts.first_match(|t| t == "name").as_deref(), Some("metadata.<key 2>"));
        // Numbers are not texts for patterns.
        assert_eq!(texts.first_match(|t| t == "7"), None);
        assert_eq!(texts.joined, "items\nnote\nx\nto\nbob\nｎａｍｅ\nname\n");
    }

    /// Patterns with every kind of assertion the joined haystack could judge
    /// differently, and some that match across the separator.
    const PATTERNS: &[&str] = &[
        r"\bab\b", r"\Bb", r"\b{start}a", r"a\b{end}", r"\<a", r"b\>", r"(?m)^a", r"(?m)b$", r"^a", r"b$",
        r"\Aa", r"b\z", r"a\sb", r"[^x]{3}", r"(?i)AB", r"a.b", r"(?s)a.b", r"é", r"\d-\d", r"^$", r"x*",
    ];

    proptest::proptest! {
        /// `is_match_in_none` never says "none" when one text, or its folded form,
        /// matches on its own.
        #[test]
        fn the_joined_haystack_never_hides_a_match(
            entries in proptest::collection::vec(("[ab é\n-1\u{200b}]{0,4}", "[ab é\n-1\u{ff41}]{0,4}"), 0..4),
        ) {
            let md: serde_json::Map<String, Value> = entries.into_iter().map(|(k, v)| (k, Value::String(v))).collect();
            let texts = PatternTexts::new(&md);
            let mut builder = BankBuilder::default();
            let slots: Vec<_> = PATTERNS.iter().map(|p| builder.add(p, false)).collect();
            let bank = match builder.build(&mut Default::default()) { Ok(b) => b, Err(e) => panic!("{e}") };
            for (p, slot) in PATTERNS.iter().zip(slots) {
                let one = texts.first_match(|t| bank.is_match(slot, t));
                proptest::prop_assert!(
                    one.is_none() || !bank.is_match_in_none(slot, &texts.joined),
                    "pattern {p} matches {one:?} but the joined haystack says none: {:?}", texts.joined
                );
            }
        }
    }
}
