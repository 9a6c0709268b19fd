//! A delegation grant's budgets beyond its count of uses: the xybern SDK's
//! `budgets.max_amount` (`{CUR: n}`), `max_rows` and `max_recipients`. Each is a total
//! over every action allowed through the grant, and an action takes from it what its
//! metadata says:
//!
//! - `max_amount`: `metadata.amount` in `metadata.currency`, read as a session reads a
//!   spend (`session::spend_of`: an exact decimal, a currency code written as one, and a
//!   currency the budget names; with an amount, the currency is required);
//! - `max_rows`: `metadata.rows`, a non-negative integer;
//! - `max_recipients`: the distinct addresses under `metadata.recipients`, `to`, `cc`
//!   and `bcc` (in any case) together, or `metadata.recipients` as a count, whichever
//!   is more (see `recipients_of`).
//!
//! A quantity is read only when the grant limits it, and an action that does not state
//! it takes none of it: like a session's spend, the budget counts what actions declare.
//! A quantity that cannot be read is refused (it cannot be counted), and so is one past
//! what the grant has left. A re-delegation is carved out of what its parent has left.

use std::collections::BTreeMap;

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::action::ActionRequest;
use crate::session::{ChargeError, decimal_map, spend_of};

/// Limits on a grant's totals; absent or empty ones are unlimited. A grant's own
/// limits, or what it has left of them (`left`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GrantLimits {
    /// Per currency code, e.g. `{"USD": "500"}`; serialised as decimal strings.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty", with = "crate::session::decimal_limits")]
    pub max_amount: BTreeMap<String, Decimal>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_rows: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_recipients: Option<u64>,
}

/// Totals taken from a grant's limits: what its actions used, what it lent to
/// re-delegations, or what one action takes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Quantities {
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty", with = "decimal_map")]
    pub amount: BTreeMap<String, Decimal>,
    #[serde(default)]
    pub rows: u64,
    #[serde(default)]
    pub recipients: u64,
}

impl Quantities {
    pub fn is_zero(&self) -> bool {
        self.amount.values().all(Decimal::is_zero) && self.rows == 0 && self.recipients == 0
    }

    /// Add `other`. The sums saturate: an agent chooses the quantities, and a sum that
    /// overflowed would panic or read as little used; a saturated sum is past any limit.
    pub fn add(&mut self, other: &Quantities) {
        for (cur, n) in &other.amount {
            let total = self.amount.entry(cur.clone()).or_default();
            *total = total.saturating_add(*n);
        }
        self.rows = self.rows.saturating_add(other.rows);
        self.recipients = self.recipients.saturating_add(other.recipients);
    }
}

impl GrantLimits {
    /// Whether nothing beyond uses is limited.
    pub fn is_unlimited(&self) -> bool {
        self.max_amount.is_empty() && self.max_rows.is_none() && self.max_recipients.is_none()
    }

    /// What is left of these limits once `taken` is used (never below zero).
    pub fn left(&self, taken: &Quantities) -> GrantLimits {
        GrantLimits {
            max_amount: self
                .max_amount
                .iter()
                .map(|(cur, max)| (cur.clone(), (*max - taken.amount.get(cur).copied().unwrap_or_default()).max(Decimal::ZERO)))
                .collect(),
            max_rows: self.max_rows.map(|m| m.saturating_sub(taken.rows)),
            max_recipients: self.max_recipients.map(|m| m.saturating_sub(taken.recipients)),
        }
    }

    /// Why a re-delegation asking for `asked` cannot be carved out of these (what its
    /// parent has left): the field and the problem. A limit the child does not set is
    /// given all that is left (`inherit`), as its uses are.
    pub fn carve(&self, asked: &GrantLimits) -> Result<GrantLimits, ChargeError> {
        let mut out = asked.clone();
        for (cur, left) in &self.max_amount {
            match asked.max_amount.get(cur) {
                Some(n) if n > left => {
                    return Err(ChargeError { field: "budgets.max_amount", message: format!("{n} {cur} exceeds the {left} {cur} the parent grant has left") });
                }
                Some(_) => {}
                None => {
                    out.max_amount.insert(cur.clone(), *left);
                }
            }
        }
        if let Some(cur) = asked.max_amount.keys().find(|c| !self.max_amount.is_empty() && !self.max_amount.contains_key(*c)) {
            return Err(ChargeError { field: "budgets.max_amount", message: format!("`{cur}` is not a currency the parent grant may spend") });
        }
        out.max_rows = carve_count("budgets.max_rows", self.max_rows, asked.max_rows)?;
        out.max_recipients = carve_count("budgets.max_recipients", self.max_recipients, asked.max_recipients)?;
        Ok(out)
    }

    /// What a grant with these limits lends a re-delegation given `child` limits.
    pub fn lent_to(&self, child: &GrantLimits) -> Quantities {
        Quantities {
            amount: self.max_amount.keys().filter_map(|c| Some((c.clone(), *child.max_amount.get(c)?))).collect(),
            rows: self.max_rows.and(child.max_rows).unwrap_or(0),
            recipients: self.max_recipients.and(child.max_recipients).unwrap_or(0),
        }
    }
}

fn carve_count(field: &'static str, left: Option<u64>, asked: Option<u64>) -> Result<Option<u64>, ChargeError> {
    match (left, asked) {
        (Some(l), Some(a)) if a > l => Err(ChargeError { field, message: format!("{a} exceeds the {l} the parent grant has left") }),
        (Some(l), None) => Ok(Some(l)),
        (_, a) => Ok(a),
    }
}

/// What `request` takes from a grant that has `left`: only the quantities it limits.
pub fn charge_for(request: &ActionRequest, left: &GrantLimits) -> Result<Quantities, ChargeError> {
    let md = &request.metadata;
    let mut q = Quantities::default();
    if !left.max_amount.is_empty()
        && let Some((cur, n)) = spend_of(md, &left.max_amount, "the grant's `max_amount`")?
    {
        q.amount.insert(cur, n);
    }
    if left.max_rows.is_some() {
        q.rows = match md.get("rows") {
            None | Some(Value::Null) => 0,
            Some(v) => v.as_u64().ok_or_else(|| ChargeError { field: "metadata.rows", message: format!("`{v}` is not a non-negative integer") })?,
        };
    }
    if left.max_recipients.is_some() {
        q.recipients = recipients_of(md)?;
    }
    Ok(q)
}

/// The metadata keys whose addresses are an action's recipients (in any case):
/// `recipients` (or `recipient`), and the mail headers an agent may name them under
/// instead.
const RECIPIENT_KEYS: [(&str, &str); 5] = [
    ("recipients", "metadata.recipients"),
    ("recipient", "metadata.recipient"),
    ("to", "metadata.to"),
    ("cc", "metadata.cc"),
    ("bcc", "metadata.bcc"),
];

/// How many recipients an action names: the distinct addresses under every key of
/// `RECIPIENT_KEYS` together, or `recipients` as a count (a number, or digits alone),
/// whichever is more. Each value is
/// a list, an object or a text:
///
/// - a text is a list: every `local@domain` counts (`"Doe" <j@x.com>` is one), every
///   phone number and channel beside one outside its display name, and every part
///   without one, once or once per number or channel it names, and at least once per
///   15 digits ([`add_text_recipients`]);
/// - a list counts what each of its items names, lists in lists too;
/// - an object counts as [`add_object_recipients`] says, or as one recipient if it
///   names nothing.
///
/// Addresses compare trimmed and with ASCII letters in lower case, so one named twice
/// counts once. When in doubt this counts more, not fewer: a display name with a comma
/// in it (`"Doe, John" <j@x.com>`) counts twice.
fn recipients_of(md: &serde_json::Map<String, Value>) -> Result<u64, ChargeError> {
    let mut addresses = Recipients::new();
    let mut count = 0;
    for (key, value) in md {
        let Some(&(name, field)) = RECIPIENT_KEYS.iter().find(|(k, _)| key.eq_ignore_ascii_case(k)) else { continue };
        match value {
            Value::Null => {}
            Value::Array(list) => list.iter().for_each(|item| add_recipients(item, &mut addresses)),
            Value::Number(_) | Value::String(_) if name == "recipients" && count_of(value)?.is_some() => {
                count = count.max(count_of(value)?.unwrap_or_default());
            }
            Value::String(_) | Value::Object(_) => add_recipients(value, &mut addresses),
            other => {
                return Err(ChargeError { field, message: format!("`{other}` is neither a recipient, a list of them nor a non-negative count") });
            }
        }
    }
    Ok(count.max(addresses.len() as u64))
}

/// A count of recipients under `metadata.recipients`: a non-negative integer, or a
/// text of digits alone (around spaces). A text of digits written with separators
/// (`1,000`, `1 000`) is refused: read as recipients it would count a few, and the agent
/// declared many.
fn count_of(v: &Value) -> Result<Option<u64>, ChargeError> {
    const FIELD: &str = "metadata.recipients";
    match v {
        Value::Number(n) => Ok(n.as_u64()),
        Value::String(s) => {
            let t = s.trim();
            if !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()) {
                return t.parse().map(Some).map_err(|_| ChargeError { field: FIELD, message: format!("`{t}` is too large a count") });
            }
            if t.bytes().any(|b| b.is_ascii_digit()) && t.bytes().all(|b| b.is_ascii_digit() || matches!(b, b',' | b'.' | b' ' | b'_' | b'\'')) {
                return Err(ChargeError { field: FIELD, message: format!("`{t}` is neither recipients nor a count (write a count as digits alone)") });
            }
            Ok(None)
        }
        _ => Ok(None),
    }
}

/// Add the recipients `v` names (see [`recipients_of`]).
fn add_recipients(v: &Value, out: &mut Recipients) {
    match v {
        Value::String(text) => add_text_recipients(text, out),
        Value::Array(items) => items.iter().for_each(|item| add_recipients(item, out)),
        Value::Object(fields) => add_object_recipients(v, fields, out),
        other => {
            out.insert(other.to_string());
        }
    }
}

/// A recipient described by its fields (`{"email": …, "name": …}`), a map keyed by
/// address (`{"a@x.com": "Ann"}`), or a container of lists of them. It names the
/// addresses, numbers and channels of its keys, the addresses in its texts, the
/// recipients of a text that names several numbers or channels, and what its lists and
/// objects name, though only those that name an address, a number or a channel once it
/// names one itself (the `tags` or `address` of a person are not recipients); one
/// recipient if that is nothing. (A name such as `Lee, Ann` is not a list.)
fn add_object_recipients(v: &Value, fields: &serde_json::Map<String, Value>, out: &mut Recipients) {
    let mut own = Recipients::new();
    let (mut named, mut plain) = (Recipients::new(), Recipients::new());
    for (key, field) in fields {
        own.extend(key.split(is_separator).filter(|t| t.contains('@')).map(recipient_key));
        own.extend(numbers_and_channels(&without_addresses(key)));
        match field {
            Value::String(text) => {
                // Its addresses always; the rest only from a text that lists several.
                let mut listed = Recipients::new();
                add_text_recipients(text, &mut listed);
                if listed.len() > 1 && listed.iter().any(|r| names_someone(r)) {
                    own.extend(listed);
                } else {
                    own.extend(listed.into_iter().filter(|r| r.contains('@')));
                }
            }
            Value::Array(_) | Value::Object(_) => {
                let mut inner = Recipients::new();
                add_recipients(field, &mut inner);
                if inner.iter().any(|r| names_someone(r)) { named.extend(inner) } else { plain.extend(inner) }
            }
            _ => {}
        }
    }
    if !own.is_empty() || !named.is_empty() {
        out.extend(own);
        out.extend(named);
    } else if !plain.is_empty() {
        out.extend(plain);
    } else {
        out.insert(v.to_string());
    }
}

/// Whether a counted recipient is an address, a channel, or holds a phone number's
/// digits (or stands for digits counted past them), rather than a plain word.
fn names_someone(r: &str) -> bool {
    r.contains('@') || r.starts_with('#') || r.starts_with(DIGITS_MARK) || digit_count(r) >= 7
}

/// The recipients counted so far, by how they compare.
type Recipients = std::collections::BTreeSet<String>;

/// The recipients a text names. It is a list of pieces between list separators (`,`,
/// `;`, line breaks, and their full-width and other scripts' forms), each split further
/// at ` / `, ` & ` and ` | ` when it holds no address.
///
/// - Every `local@domain` counts.
/// - Beside an address, every phone number or channel counts ([`numbers_and_channels`]),
///   leaving out a display name: the words before a `<…@…>`, and those inside balanced
///   quotes or parentheses, unless the text's display names name several numbers or
///   channels between them.
/// - A part without an address counts once, or once per number or channel in it when
///   it names several (`+14155550000 +14155550001`, `#ops #eng`).
/// - Either way, at least once per 15 digits of numbers told apart or not (no phone
///   number is longer).
fn add_text_recipients(text: &str, out: &mut Recipients) {
    let mut in_display_names = Recipients::new();
    for piece in text.split(is_list_separator) {
        let addresses: Vec<&str> = piece.split(is_separator).filter(|w| w.contains('@')).collect();
        if addresses.is_empty() {
            for part in split_parts(piece) {
                if !part.trim().is_empty() {
                    let own = numbers_and_channels(part);
                    if own.len() > 1 {
                        out.extend(own.iter().cloned());
                    } else {
                        out.insert(recipient_key(part));
                    }
                    count_digits_past(part, own.len().max(1), out);
                }
            }
        } else {
            out.extend(addresses.iter().map(|a| recipient_key(a)));
            let (outside, inside) = display_name_split(piece);
            for part in split_parts(&without_addresses(&outside)) {
                let own = numbers_and_channels(part);
                let whole = own.is_empty() && digit_count(part) >= 7;
                out.extend(own.iter().cloned());
                if whole {
                    out.insert(recipient_key(part));
                }
                count_digits_past(part, own.len() + usize::from(whole), out);
            }
            in_display_names.extend(numbers_and_channels(&inside));
        }
    }
    if in_display_names.len() > 1 {
        out.extend(in_display_names);
    }
}

/// A piece split at ` / `, ` & ` and ` | `.
fn split_parts(piece: &str) -> impl Iterator<Item = &str> {
    piece.split(" / ").flat_map(|p| p.split(" & ")).flat_map(|p| p.split(" | "))
}

/// Marks the recipients [`count_digits_past`] adds, which name no one in particular.
const DIGITS_MARK: char = '\u{0}';

/// When `part` holds more digits than `counted` numbers can (15 each, the most a phone
/// number has), count one recipient for every 15 more. Each is a short key made from a
/// hash of the part, so a long part costs no more than its length.
fn count_digits_past(part: &str, counted: usize, out: &mut Recipients) {
    let at_least = digit_count(part).div_ceil(15);
    if at_least > counted {
        use std::hash::{Hash, Hasher};
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        recipient_key(part).hash(&mut hasher);
        let id = hasher.finish();
        out.extend((counted..at_least).map(|k| format!("{DIGITS_MARK}{id:016x}#{k}")));
    }
}

/// The digits in `s`, of any script.
fn digit_count(s: &str) -> usize {
    s.chars().filter(|c| c.is_numeric()).count()
}

/// `text` without its words that hold an `@`.
fn without_addresses(text: &str) -> String {
    text.split_whitespace().filter(|w| !w.contains('@')).collect::<Vec<_>>().join(" ")
}

/// The phone numbers and channels in `text`, each with the words after it up to the
/// next one. Words are split at spaces and at `/ | & ·` (`+14155550000/+14155550001`).
/// A word begins one when it is a channel (`#ops`), when it starts with `+` and a digit,
/// or, unless a number of fewer than seven digits is being written (`+1 (415) 555-0132`,
/// `+49 30 1234567`), when it starts with `(` and a digit or holds seven digits or more.
/// Words before the first belong to it. None when no word begins one.
fn numbers_and_channels(text: &str) -> Vec<String> {
    let starts = |w: &str, marks: &[char]| w.strip_prefix(marks).and_then(|r| r.chars().next()).is_some_and(char::is_numeric);
    let is_word_separator = |c: char| c.is_whitespace() || matches!(c, '/' | '|' | '&' | '\u{B7}' | '\u{FF0F}' | '\u{FF5C}');
    let mut found: Vec<(Vec<&str>, usize)> = Vec::new();
    let mut leading: Vec<&str> = Vec::new();
    for word in text.split(is_word_separator).filter(|w| !w.is_empty()) {
        let writing_short = found.last().is_some_and(|(_, d)| *d < 7);
        let begins = word.starts_with('#') && word.len() > 1
            || starts(word, &['+', '\u{FF0B}'])
            || !writing_short && (starts(word, &['(']) || digit_count(word) >= 7);
        match found.last_mut() {
            Some((words, d)) if !begins => {
                words.push(word);
                *d += digit_count(word);
            }
            _ if begins => {
                let mut words = std::mem::take(&mut leading);
                words.push(word);
                let d = words.iter().map(|w| digit_count(w)).sum();
                found.push((words, d));
            }
            _ => leading.push(word),
        }
    }
    found.into_iter().map(|(words, _)| recipient_key(&words.join(" "))).collect()
}

/// A piece split into what is outside a display name and what is inside one: the words
/// before a `<…@…>` and those inside balanced quotes or parentheses are inside. An
/// unbalanced quote or parenthesis hides nothing.
fn display_name_split(piece: &str) -> (String, String) {
    let (before_angle, rest) = match piece.find('<') {
        Some(at) if piece[at..].contains('@') => piece.split_at(at),
        _ => ("", piece),
    };
    let (mut outside, mut inside) = (String::new(), before_angle.to_owned());
    // The last of each closing mark: an opening one after it is unbalanced, found so
    // without a search (a text of many `(` stays linear).
    let (last_quote, last_paren) = (rest.rfind('"'), rest.rfind(')'));
    let mut chars = rest.char_indices().peekable();
    while let Some((at, c)) = chars.next() {
        let close = match c {
            '"' if last_quote.is_some_and(|l| l > at) => Some('"'),
            '(' if last_paren.is_some_and(|l| l > at) => Some(')'),
            _ => None,
        };
        match close.and_then(|close| rest[at + 1..].find(close).map(|len| at + 1 + len)) {
            Some(end) => {
                inside.push(' ');
                inside.push_str(&rest[at + 1..end]);
                outside.push(' ');
                while chars.peek().is_some_and(|&(i, _)| i <= end) {
                    chars.next();
                }
            }
            None => outside.push(c),
        }
    }
    (outside, inside)
}

/// Separators of a list of recipients: ASCII's, and the commas and semicolons of
/// full-width forms, CJK and Arabic.
fn is_list_separator(c: char) -> bool {
    matches!(c, ',' | ';' | '\n' | '\r' | '\u{060C}' | '\u{061B}' | '\u{3001}' | '\u{FE50}' | '\u{FE51}' | '\u{FE54}' | '\u{FF0C}' | '\u{FF1B}' | '\u{FF64}')
}

/// What may stand between addresses: spaces, list separators, the brackets and quotes of
/// display names, and `: / | & ·`.
fn is_separator(c: char) -> bool {
    c.is_whitespace()
        || is_list_separator(c)
        || matches!(c, '<' | '>' | '"' | '\'' | '(' | ')' | '[' | ']' | '{' | '}' | ':' | '/' | '|' | '&' | '\u{B7}' | '\u{FF0F}' | '\u{FF5C}')
}

/// How two spellings of one recipient compare: trimmed, ASCII letters in lower case.
fn recipient_key(s: &str) -> String {
    s.trim().to_ascii_lowercase()
}

/// The limit `charge` would pass, named with what is left, if any.
pub fn exceeded(left: &GrantLimits, charge: &Quantities) -> Option<String> {
    for (cur, n) in &charge.amount {
        if let Some(l) = left.max_amount.get(cur)
            && n > l
        {
            return Some(format!("`max_amount.{cur}`: {n} {cur} asked, {l} {cur} left"));
        }
    }
    if let Some(l) = left.max_rows
        && charge.rows > l
    {
        return Some(format!("`max_rows`: {} rows asked, {l} left", charge.rows));
    }
    if let Some(l) = left.max_recipients
        && charge.recipients > l
    {
        return Some(format!("`max_recipients`: {} recipients asked, {l} left", charge.recipients));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn request(metadata: Value) -> ActionRequest {
        ActionRequest { action_type: "pay".into(), metadata: metadata.as_object().cloned().unwrap_or_default(), ..ActionRequest::default() }
    }

    fn limits(v: Value) -> GrantLimits {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn only_the_quantities_a_grant_limits_are_read() {
        let odd = request(json!({ "amount": "lots", "rows": -1, "recipients": true }));
        assert_eq!(charge_for(&odd, &GrantLimits::default()).unwrap(), Quantities::default());
        let e = charge_for(&odd, &limits(json!({ "max_rows": 5 }))).unwrap_err();
        assert_eq!(e.field, "metadata.rows");
        let e = charge_for(&odd, &limits(json!({ "max_recipients": 5 }))).unwrap_err();
        assert_eq!(e.field, "metadata.recipients");
        let e = charge_for(&odd, &limits(json!({ "max_amount": { "USD": 5 } }))).unwrap_err();
        assert_eq!(e.field, "metadata.amount");
    }

    #[test]
    fn amounts_rows_and_recipients_are_read_and_checked() {
        let left = limits(json!({ "max_amount": { "USD": "100.50" }, "max_rows": 10, "max_recipients": 2 }));
        let q = charge_for(&request(json!({ "amount": "100.50", "currency": "USD", "rows": 10, "recipients": ["a@x", "b@x"] })), &left).unwrap();
        assert_eq!((q.amount["USD"], q.rows, q.recipients), (Decimal::new(10050, 2), 10, 2));
        assert_eq!(exceeded(&left, &q), None, "exactly what is left may be taken");
        let over = charge_for(&request(json!({ "amount": "100.51", "currency": "USD" })), &left).unwrap();
        assert!(exceeded(&left, &over).unwrap().contains("max_amount.USD"));
        let over = charge_for(&request(json!({ "recipients": 3 })), &left).unwrap();
        assert!(exceeded(&left, &over).unwrap().contains("max_recipients"));
        let over = charge_for(&request(json!({ "rows": 11 })), &left).unwrap();
        assert!(exceeded(&left, &over).unwrap().contains("max_rows"));
        // A currency the budget does not name, or none, cannot be counted.
        let e = charge_for(&request(json!({ "amount": 1, "currency": "EUR" })), &left).unwrap_err();
        assert!(e.message.contains("max_amount") && e.message.contains("USD"), "{}", e.message);
        assert_eq!(charge_for(&request(json!({ "amount": 1 })), &left).unwrap_err().field, "metadata.currency");
        // An action that states nothing takes nothing.
        assert!(charge_for(&request(json!({})), &left).unwrap().is_zero());
    }

    #[test]
    fn recipients_are_the_distinct_addresses_under_every_mail_key() {
        let left = limits(json!({ "max_recipients": 10 }));
        let count = |md: Value| charge_for(&request(md), &left).map(|q| q.recipients);
        assert_eq!(count(json!({ "to": "a@x.com, B@x.com", "cc": ["b@x.com", "c@x.com"], "bcc": "d@x.com; " })), Ok(4));
        assert_eq!(count(json!({ "recipients": ["a@x.com"], "to": " A@x.com" })), Ok(1), "one address named twice");
        assert_eq!(count(json!({ "recipients": 3, "to": ["a@x.com"] })), Ok(3), "a count, or the addresses, whichever is more");
        assert_eq!(count(json!({ "recipients": 1, "to": ["a@x.com", "b@x.com"] })), Ok(2));
        assert_eq!(count(json!({ "recipients": "250" })), Ok(250), "a count written as digits");
        assert_eq!(count(json!({ "recipients": " 1000000 " })), Ok(1_000_000), "digits alone are a count, however many");
        assert_eq!(count(json!({ "recipients": "+15551234567" })), Ok(1), "a phone number is a recipient");
        for declared in ["1,000", "1 000", "1.000"] {
            assert_eq!(count(json!({ "recipients": declared })).unwrap_err().field, "metadata.recipients", "{declared}");
        }
        assert_eq!(count(json!({ "recipients": "99999999999999999999999" })).unwrap_err().field, "metadata.recipients");
        // Pieces without `@` count beside the addresses in the same text.
        assert_eq!(count(json!({ "to": "a@x.com, +15551234567, +15557654321, all-staff" })), Ok(4));
        assert_eq!(count(json!({ "to": "a@x.com/b@x.com|c@x.com" })), Ok(3));
        assert_eq!(count(json!({ "to": [{ "phone": "+15551234567", "name": "A" }] })), Ok(1), "an object without an address is one recipient");
        // Keys in any case; addresses however they are separated or dressed.
        assert_eq!(count(json!({ "To": ["a@x.com", "b@x.com"], "CC": "c@x.com" })), Ok(3));
        assert_eq!(count(json!({ "recipient": "a@x.com, b@x.com", "Recipient": "c@x.com" })), Ok(3), "the singular too");
        assert_eq!(count(json!({ "recipient": 7 })).unwrap_err().field, "metadata.recipient", "a count only under `recipients`");
        assert_eq!(count(json!({ "to": "a@x.com b@x.com\nc@x.com" })), Ok(3));
        assert_eq!(count(json!({ "to": "\"Doe\" <j@x.com>, Ann <a@x.com>" })), Ok(2));
        assert_eq!(count(json!({ "to": "\"Doe, John\" <j@x.com>" })), Ok(2), "a comma in a name counts more, not fewer");
        assert_eq!(count(json!({ "to": [{ "email": "a@x.com", "name": "A" }, { "email": "b@x.com", "name": "A" }] })), Ok(2));
        assert_eq!(count(json!({ "to": { "email": "a@x.com" } })), Ok(1));
        // The Kelvin sign is not `k`: only ASCII letters are folded.
        assert_eq!(count(json!({ "to": "\u{212A}@x.com, k@x.com" })), Ok(2));
        // Without `@`: the pieces between separators (phone numbers, channels).
        assert_eq!(count(json!({ "to": "+15551234567, +15557654321" })), Ok(2));
        assert_eq!(count(json!({ "to": 5 })).unwrap_err().field, "metadata.to");
        assert_eq!(count(json!({ "Cc": true })).unwrap_err().field, "metadata.cc");
        assert_eq!(count(json!({ "recipients": -1 })).unwrap_err().field, "metadata.recipients");
        // Numbers and channels separated by spaces alone, beside an address or not.
        assert_eq!(count(json!({ "to": "+14155550000 +14155550001\t+14155550002" })), Ok(3));
        assert_eq!(count(json!({ "to": "4155550000 4155550001" })), Ok(2));
        assert_eq!(count(json!({ "to": "+1 415 555 0001" })), Ok(1), "a number written in groups is one");
        assert_eq!(count(json!({ "to": "+1 4155550001, +44 20 7183 8750" })), Ok(2));
        assert_eq!(count(json!({ "recipients": ["#ops #eng #sales"] })), Ok(3));
        assert_eq!(count(json!({ "to": "+14155550000 +14155550001 a@x.com" })), Ok(3));
        // Lists inside lists and objects; full-width and CJK separators.
        assert_eq!(count(json!({ "to": [["+14155550000", "+14155550001"], ["+14155550002"]] })), Ok(3));
        assert_eq!(count(json!({ "recipients": [["#general", "#random", "#eng"]] })), Ok(3));
        assert_eq!(count(json!({ "to": { "list": ["+14155550000", "+14155550001"], "name": "batch" } })), Ok(2));
        assert_eq!(count(json!({ "to": "u0@x.com\u{ff0c}u1@x.com\u{3001}u2@x.com&u3@x.com\u{b7}u4@x.com" })), Ok(5));
        assert_eq!(count(json!({ "to": "+14155550000\u{ff0c}+14155550001\u{3001}all-staff" })), Ok(3));
        // Numbers written in groups, one after another; words that join a list.
        assert_eq!(count(json!({ "to": "+44 20 7183 8750 +44 20 7183 8751 +44 20 7183 8752" })), Ok(3));
        assert_eq!(count(json!({ "to": "415 555 0132 / 415 555 0133 / 415 555 0134" })), Ok(3));
        assert_eq!(count(json!({ "to": "(415) 555-0132 (415) 555-0133" })), Ok(2));
        assert_eq!(count(json!({ "to": "U012ABC & U012ABD | U012ABE" })), Ok(3));
        // Single numbers in their usual forms are one.
        for one in ["+44 20 7183 8750", "(415) 555-0132", "+1 (415) 555-0132", "+44 (0)20 7183 8750", "+81 3-1234-5678", "030 12345678", "Mobile: +1 415 555 0132", "415/555-0132"] {
            assert_eq!(count(json!({ "to": one })), Ok(1), "{one}");
        }
        // A map keyed by address; texts in objects that name several.
        assert_eq!(count(json!({ "to": { "alice@x.com": "Alice", "bob@x.com": "Bob" } })), Ok(2));
        assert_eq!(count(json!({ "to": { "+14155550000": "Ann", "+14155550001": "Bob", "+14155550002": "Cy" } })), Ok(3));
        assert_eq!(count(json!({ "to": { "#ops": true, "#eng": true } })), Ok(2));
        assert_eq!(count(json!({ "to": { "sms": "+14155550000, +14155550001, +14155550002" } })), Ok(3));
        assert_eq!(count(json!({ "to": [{ "sms": "+14155550000 +14155550001", "name": "pair" }] })), Ok(2));
        assert_eq!(count(json!({ "to": { "email": "a@x.com", "name": "Ann Lee", "phone": "+1 415 555 0132" } })), Ok(1), "one recipient's fields");
        // Joined without spaces; a display name that hides nothing; long runs of
        // grouped digits; the full-width plus.
        for (joined, n) in [("+14155550000/+14155550001/+14155550002", 3), ("+14155550000|+14155550001", 2), ("415-555-0132/415-555-0133", 2), ("#ops|#eng|#sales", 3), ("#ops/#eng", 2)] {
            assert_eq!(count(json!({ "to": joined })), Ok(n), "{joined}");
        }
        assert_eq!(count(json!({ "to": "\"Ann <a@x.com> +14155550000 +14155550001 #ops #eng" })), Ok(5), "an unclosed quote hides nothing");
        assert_eq!(count(json!({ "to": "a@x.com ( +14155550000 +14155550001" })), Ok(3));
        // Pieces beside an address; numbers in display names across pieces; texts in
        // objects; what a person object's other fields hold.
        assert_eq!(count(json!({ "to": "a@x.com / 415 555 0132 / 415 555 0133" })), Ok(3));
        assert_eq!(count(json!({ "to": "a@x.com 415 555 0132 415 555 0133 415 555 0134 415 555 0135" })), Ok(4));
        assert_eq!(count(json!({ "to": "a@x.com (+14155550000), a@x.com (+14155550001), a@x.com (+14155550002)" })), Ok(4));
        assert_eq!(count(json!({ "to": { "sms": "415 555 0132, 415 555 0133, 415 555 0134" } })), Ok(3));
        assert_eq!(count(json!({ "to": { "numbers": "415 555 0132 415 555 0133 415 555 0134 415 555 0135" } })), Ok(3));
        assert_eq!(count(json!({ "to": { "email": "a@x.com", "tags": ["vip", "beta"] } })), Ok(1));
        assert_eq!(count(json!({ "to": { "email": "a@x.com", "address": { "city": "X", "zip": "94105" }, "prefs": { "sms": true } } })), Ok(1));
        assert_eq!(count(json!({ "to": { "list": ["ann", "bob"] } })), Ok(2), "a list of names is recipients when nothing else is");
        // A long run of digits costs its length, not its length squared.
        let digits = "1 ".repeat(500_000);
        assert_eq!(count(json!({ "recipients": [digits] })), Ok(33_334));
        let unbalanced = format!("a@x.com {}", "(".repeat(200_000));
        assert_eq!(count(json!({ "to": unbalanced })), Ok(1), "many unbalanced marks (linear: this would not end otherwise)");
        assert_eq!(count(json!({ "to": "a@x.com (+14155550000 +14155550001 +14155550002)" })), Ok(4), "a parenthesis naming several");
        assert_eq!(count(json!({ "to": "415 555 0132 415 555 0133 415 555 0134" })), Ok(2), "at least one per 15 digits");
        assert_eq!(count(json!({ "to": "\u{ff0b}44 20 7183 8750 \u{ff0b}44 20 7183 8751" })), Ok(2));
        // Usual single forms, alone or describing one person.
        for one in ["+49 30 1234567", "+44 20 71838750", "+33 1 23456789", "+1 415 5550132", "+7 495 1234567", "+44 7911 123456", "+86 138 0013 8000", "+49 (0)30 1234567", "tel:+14155550132", "(415) 555-0132 (work)"] {
            assert_eq!(count(json!({ "to": one })), Ok(1), "{one}");
            assert_eq!(count(json!({ "to": { "phone": one, "name": "Ann" } })), Ok(1), "{one} in an object");
        }
        for one in ["\"Smith & Sons\" <info@smith.com>", "\"Sales / Support\" <s@x.com>", "Marks & Spencer <cs@ms.com>", "Order #12345 <orders@x.com>", "ann@x.com (Ann Lee)"] {
            assert_eq!(count(json!({ "to": one })), Ok(1), "{one}");
        }
        for person in [json!({ "email": "ann@x.com", "name": "Lee, Ann" }), json!({ "email": "info@smith.com", "name": "Smith & Sons" }), json!({ "email": "ann@x.com", "name": "Ann Lee", "company": "Acme, Inc." })] {
            assert_eq!(count(json!({ "to": person.clone() })), Ok(1), "{person}");
        }
        // Words of a display name beside an address are not recipients.
        assert_eq!(count(json!({ "to": "\"Acme Support (Ticket #4521)\" <support@acme.com>" })), Ok(1));
        assert_eq!(count(json!({ "to": "Invoices (20261207) <billing@x.com>" })), Ok(1));
        assert_eq!(count(json!({ "subject": "hi" })), Ok(0));
    }

    #[test]
    fn what_is_left_never_goes_below_zero_and_sums_saturate() {
        let l = limits(json!({ "max_amount": { "USD": 10 }, "max_rows": 3 }));
        let mut used = Quantities { amount: [("USD".into(), Decimal::from(12))].into(), rows: 5, recipients: 0 };
        let left = l.left(&used);
        assert_eq!((left.max_amount["USD"], left.max_rows, left.max_recipients), (Decimal::ZERO, Some(0), None));
        used.add(&Quantities { amount: [("USD".into(), Decimal::MAX)].into(), rows: u64::MAX, recipients: 1 });
        assert_eq!((used.amount["USD"], used.rows, used.recipients), (Decimal::MAX, u64::MAX, 1));
    }

    #[test]
    fn a_re_delegation_is_carved_out_of_what_is_left() {
        let left = limits(json!({ "max_amount": { "USD": 100 }, "max_rows": 50 }));
        // Unset limits inherit what is left; set ones must fit in it.
        let child = left.carve(&limits(json!({ "max_amount": { "USD": 40 } }))).unwrap();
        assert_eq!((child.max_amount["USD"], child.max_rows, child.max_recipients), (Decimal::from(40), Some(50), None));
        assert_eq!(left.lent_to(&child), Quantities { amount: [("USD".into(), Decimal::from(40))].into(), rows: 50, recipients: 0 });
        assert_eq!(left.carve(&limits(json!({ "max_amount": { "USD": 101 } }))).unwrap_err().field, "budgets.max_amount");
        assert_eq!(left.carve(&limits(json!({ "max_amount": { "EUR": 1 } }))).unwrap_err().field, "budgets.max_amount");
        assert_eq!(left.carve(&limits(json!({ "max_rows": 51 }))).unwrap_err().field, "budgets.max_rows");
        // A limit the parent does not have may be set on the child, and lends nothing.
        let child = left.carve(&limits(json!({ "max_recipients": 3 }))).unwrap();
        assert_eq!(left.lent_to(&child).recipients, 0);
    }
}
