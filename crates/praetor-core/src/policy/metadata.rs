//! `metadata` policies: a boolean rule over the request's metadata.
//!
//! Conditions: `{ "rule": Expr }`, where `Expr` is one of
//! ```json
//! { "field": "payment.amount", "op": ">", "value": 10000 }
//! { "all": [Expr, ...] }     // true when every one is true
//! { "any": [Expr, ...] }     // true when one is true
//! { "not": Expr }
//! ```
//! `field` is a dot path into the metadata; a segment that is a number indexes an array
//! (`items.0.sku`). Operators: `== != > >= < <= in not_in contains exists`.
//!
//! Semantics, in full:
//! - **Numbers are exact decimals** (`rust_decimal`): a JSON number (parsed from its
//!   text, so `0.1` is exactly 0.1) or a numeric string (`"12.50"`, `"-3"`; digits with
//!   an optional sign and fraction, nothing else) is a number. `>`, `>=`, `<`, `<=`
//!   need numbers on both sides: the rule's `value` is checked when the policy is
//!   saved; a non-numeric field value at run time is an **evaluation error**, and the
//!   policy fails closed when its decision is `block` or `escalate`.
//! - `==` / `!=` compare as numbers when one side is a JSON number and the other is a
//!   number or numeric string (`10 == "10.0"`); otherwise they compare JSON values
//!   exactly (`"007" != "7"`, `true != "true"`).
//! - `in` / `not_in` take a list `value` and use `==` against each element.
//! - `contains`: on a string field, `value` must be a string and is a substring test; on
//!   an array field, true when an element `==` `value`; on any other type, an
//!   evaluation error.
//! - `exists`: true when the path resolves (a `null` value exists). `"value": false`
//!   inverts it. `value` is optional (default `true`).
//! - **A missing field makes every comparison false**, including `!=` and `not_in`.
//!   Use `exists` (or `not` + `exists`) to test presence. `not` of a comparison on a
//!   missing field is therefore true.
//! - `all` / `any` evaluate left to right and stop at the first false / true; an
//!   evaluation error in a branch that is reached is an error of the whole rule.
//! - Depth is limited to 16 levels and 256 comparisons per rule.

use std::cmp::Ordering;
use std::str::FromStr;

use rust_decimal::Decimal;
use serde_json::{Map, Number, Value};

use super::conditions::{Obj, json_type};
use super::{Hit, PolicyDef, PolicyError};
use crate::engine::EvalCtx;

const MAX_DEPTH: usize = 16;
const MAX_NODES: usize = 256;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Eq,
    Ne,
    Gt,
    Ge,
    Lt,
    Le,
    In,
    NotIn,
    Contains,
    Exists,
}

impl Op {
    fn parse(s: &str) -> Option<Op> {
        Some(match s {
            "==" => Op::Eq,
            "!=" => Op::Ne,
            ">" => Op::Gt,
            ">=" => Op::Ge,
            "<" => Op::Lt,
            "<=" => Op::Le,
            "in" => Op::In,
            "not_in" => Op::NotIn,
            "contains" => Op::Contains,
            "exists" => Op::Exists,
            _ => return None,
        })
    }

    fn as_str(self) -> &'static str {
        match self {
            Op::Eq => "==",
            Op::Ne => "!=",
            Op::Gt => ">",
            Op::Ge => ">=",
            Op::Lt => "<",
            Op::Le => "<=",
            Op::In => "in",
            Op::NotIn => "not_in",
            Op::Contains => "contains",
            Op::Exists => "exists",
        }
    }
}

#[derive(Debug)]
struct Cmp {
    field: String,
    path: Vec<String>,
    op: Op,
    value: Value,
    /// The value as a number, for the ordering operators.
    number: Option<Decimal>,
}

#[derive(Debug)]
enum Expr {
    Cmp(Cmp),
    All(Vec<Expr>),
    Any(Vec<Expr>),
    Not(Box<Expr>),
}

#[derive(Debug)]
pub(crate) struct Rule {
    expr: Expr,
    /// The rule as text, for reasons (computed once).
    text: String,
}

pub(crate) fn compile(def: &PolicyDef) -> Result<Rule, PolicyError> {
    let c = Obj::new(&def.conditions, "conditions", &["rule"])?;
    let rule = c.get("rule").ok_or_else(|| c.err("rule", "required"))?;
    let mut nodes = 0usize;
    let expr = parse(rule, "conditions.rule".to_owned(), 0, &mut nodes)?;
    let text = describe(&expr);
    Ok(Rule { expr, text })
}

fn parse(v: &Value, path: String, depth: usize, nodes: &mut usize) -> Result<Expr, PolicyError> {
    if depth >= MAX_DEPTH {
        return Err(PolicyError::new(
            path,
            format!("rule nested deeper than {MAX_DEPTH} levels"),
        ));
    }
    *nodes += 1;
    if *nodes > MAX_NODES {
        return Err(PolicyError::new(path, format!("rule has more than {MAX_NODES} nodes")));
    }
    let Value::Object(m) = v else {
        return Err(PolicyError::new(
            path,
            format!("expected an object, found {}", json_type(v)),
        ));
    };
    if m.contains_key("all") || m.contains_key("any") || m.contains_key("not") {
        let key = ["all", "any", "not"]
            .into_iter()
            .find(|k| m.contains_key(*k))
            .unwrap_or("all");
        if let Some(extra) = m.keys().find(|k| k.as_str() != key) {
            return Err(PolicyError::new(
                format!("{path}.{extra}"),
                format!("unexpected field; a `{key}` rule has no other fields"),
            ));
        }
        return match key {
            "all" => Ok(Expr::All(parse_list(m, "all", &path, depth, nodes)?)),
            "any" => Ok(Expr::Any(parse_list(m, "any", &path, depth, nodes)?)),
            _ => {
                let inner = m.get("not").unwrap_or(&Value::Null);
                Ok(Expr::Not(Box::new(parse(
                    inner,
                    format!("{path}.not"),
                    depth + 1,
                    nodes,
                )?)))
            }
        };
    }
    let o = Obj::new(v, path.clone(), &["field", "op", "value"])?;
    let field = o
        .str("field")?
        .ok_or_else(|| PolicyError::new(format!("{path}.field"), "required (or use `all`, `any`, `not`)"))?;
    let segs: Vec<String> = field.split('.').map(str::to_owned).collect();
    if field.is_empty() || segs.iter().any(String::is_empty) {
        return Err(o.err("field", format!("invalid path `{field}`")));
    }
    let op_s = o.str("op")?.ok_or_else(|| o.err("op", "required"))?;
    let op = Op::parse(op_s).ok_or_else(|| {
        o.err(
            "op",
            format!("unknown operator `{op_s}`; expected one of == != > >= < <= in not_in contains exists"),
        )
    })?;
    let raw = v.get("value");
    let value = match (op, raw) {
        (Op::Exists, None) => Value::Bool(true),
        (Op::Exists, Some(Value::Bool(b))) => Value::Bool(*b),
        (Op::Exists, Some(other)) => {
            return Err(o.err(
                "value",
                format!("expected a boolean for `exists`, found {}", json_type(other)),
            ));
        }
        (_, None) => return Err(o.err("value", "required")),
        (Op::In | Op::NotIn, Some(a @ Value::Array(_))) => a.clone(),
        (Op::In | Op::NotIn, Some(other)) => {
            return Err(o.err(
                "value",
                format!("expected an array for `{op_s}`, found {}", json_type(other)),
            ));
        }
        (_, Some(x)) => x.clone(),
    };
    let number = as_number(&value);
    if matches!(op, Op::Gt | Op::Ge | Op::Lt | Op::Le) && number.is_none() {
        return Err(o.err(
            "value",
            format!("expected a number or numeric string for `{op_s}`, found `{value}`"),
        ));
    }
    Ok(Expr::Cmp(Cmp {
        field: field.to_owned(),
        path: segs,
        op,
        value,
        number,
    }))
}

fn parse_list(
    m: &Map<String, Value>,
    key: &str,
    path: &str,
    depth: usize,
    nodes: &mut usize,
) -> Result<Vec<Expr>, PolicyError> {
    let p = format!("{path}.{key}");
    let Some(Value::Array(items)) = m.get(key) else {
        return Err(PolicyError::new(p, "expected an array of rules"));
    };
    let mut out = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        out.push(parse(item, format!("{p}[{i}]"), depth + 1, nodes)?);
    }
    Ok(out)
}

/// Refuses, when a policy is written, an empty `all` or `any` in a metadata rule
/// (`rule` at `path`) or in the metadata leaves of a composite's tree (`when` at
/// `path`): `all: []` would match every action, `any: []` none, and neither is what its
/// writer meant. Policies stored before this check still load (an empty `all` is true,
/// an empty `any` false).
pub(crate) fn refuse_empty_lists(rule: &Value, path: &str, in_composite: bool) -> Result<(), PolicyError> {
    let Value::Object(m) = rule else { return Ok(()) };
    for (key, inner) in m {
        let here = format!("{path}.{key}");
        match (key.as_str(), inner) {
            ("all" | "any", Value::Array(items)) => {
                if items.is_empty() {
                    let means = if key == "all" { "every action" } else { "no action" };
                    return Err(PolicyError::new(here, format!("`{key}` takes a non-empty list of rules (an empty one matches {means})")));
                }
                for (i, item) in items.iter().enumerate() {
                    refuse_empty_lists(item, &format!("{here}[{i}]"), in_composite)?;
                }
            }
            ("not", inner) => refuse_empty_lists(inner, &here, in_composite)?,
            // In a composite, only its `metadata` leaves hold metadata rules.
            ("metadata", inner) if in_composite => refuse_empty_lists(inner, &here, false)?,
            _ => {}
        }
    }
    Ok(())
}

fn describe(e: &Expr) -> String {
    let join = |name: &str, xs: &[Expr]| format!("{name}({})", xs.iter().map(describe).collect::<Vec<_>>().join(", "));
    match e {
        Expr::Cmp(c) if c.op == Op::Exists => {
            if c.value == Value::Bool(false) {
                format!("not exists {}", c.field)
            } else {
                format!("exists {}", c.field)
            }
        }
        Expr::Cmp(c) => format!("{} {} {}", c.field, c.op.as_str(), c.value),
        Expr::All(xs) => join("all", xs),
        Expr::Any(xs) => join("any", xs),
        Expr::Not(x) => format!("not({})", describe(x)),
    }
}

impl Rule {
    pub(crate) fn eval(&self, cx: &EvalCtx<'_>) -> Result<Option<Hit>, String> {
        if eval(&self.expr, &cx.input.request.metadata)? {
            Ok(Some(Hit::new(format!("metadata rule matched: {}", self.text))))
        } else {
            Ok(None)
        }
    }
}

fn eval(e: &Expr, md: &Map<String, Value>) -> Result<bool, String> {
    match e {
        Expr::All(xs) => {
            for x in xs {
                if !eval(x, md)? {
                    return Ok(false);
                }
            }
            Ok(true)
        }
        Expr::Any(xs) => {
            for x in xs {
                if eval(x, md)? {
                    return Ok(true);
                }
            }
            Ok(false)
        }
        Expr::Not(x) => Ok(!eval(x, md)?),
        Expr::Cmp(c) => compare(c, md),
    }
}

fn resolve<'v>(md: &'v Map<String, Value>, path: &[String]) -> Option<&'v Value> {
    let (first, rest) = path.split_first()?;
    let mut cur = md.get(first)?;
    for seg in rest {
        cur = match cur {
            Value::Object(m) => m.get(seg)?,
            Value::Array(a) => a.get(seg.parse::<usize>().ok()?)?,
            _ => return None,
        };
    }
    Some(cur)
}

fn compare(c: &Cmp, md: &Map<String, Value>) -> Result<bool, String> {
    let found = resolve(md, &c.path);
    if c.op == Op::Exists {
        return Ok(found.is_some() == (c.value == Value::Bool(true)));
    }
    let Some(actual) = found else { return Ok(false) };
    let ordering = |want: fn(Ordering) -> bool| -> Result<bool, String> {
        let a = as_number(actual).ok_or_else(|| {
            if too_precise(actual) {
                return format!(
                    "field `{}` has more digits than a decimal holds exactly (28 decimal places, 96 bits), for `{}`",
                    c.field,
                    c.op.as_str()
                );
            }
            if beyond_decimal(actual) {
                return format!("field `{}` is a number beyond what a decimal holds ({BEYOND}), for `{}`", c.field, c.op.as_str());
            }
            format!(
                "field `{}` is {}, not a number, for `{}`",
                c.field,
                describe_type(actual),
                c.op.as_str()
            )
        })?;
        let b = c
            .number
            .ok_or_else(|| format!("rule value for `{}` is not a number", c.field))?;
        Ok(want(a.cmp(&b)))
    };
    match c.op {
        Op::Eq => Ok(loose_eq(actual, &c.value)),
        Op::Ne => Ok(!loose_eq(actual, &c.value)),
        Op::Gt => ordering(Ordering::is_gt),
        Op::Ge => ordering(Ordering::is_ge),
        Op::Lt => ordering(Ordering::is_lt),
        Op::Le => ordering(Ordering::is_le),
        Op::In | Op::NotIn => {
            let Value::Array(list) = &c.value else {
                return Err("`in` needs a list".to_owned());
            };
            let inside = list.iter().any(|x| loose_eq(actual, x));
            Ok(inside == (c.op == Op::In))
        }
        Op::Contains => match (actual, &c.value) {
            (Value::String(s), Value::String(sub)) => Ok(s.contains(sub.as_str())),
            (Value::String(_), other) => Err(format!(
                "`contains` on string field `{}` needs a string value, found {}",
                c.field,
                json_type(other)
            )),
            (Value::Array(items), v) => Ok(items.iter().any(|x| loose_eq(x, v))),
            (other, _) => Err(format!(
                "field `{}` is {}, `contains` needs a string or an array",
                c.field,
                describe_type(other)
            )),
        },
        Op::Exists => Ok(true),
    }
}

/// `a string`, `an object`… for error messages (never the value: it may be sensitive).
fn describe_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn loose_eq(a: &Value, b: &Value) -> bool {
    if (a.is_number() || b.is_number())
        && let (Some(x), Some(y)) = (as_number(a), as_number(b))
    {
        return x == y;
    }
    a == b
}

/// A JSON number, or a string of the form `-?[0-9]+(\.[0-9]+)?`, as an exact decimal.
pub(crate) fn as_number(v: &Value) -> Option<Decimal> {
    match v {
        Value::Number(n) => number_to_decimal(n),
        Value::String(s) if is_numeric_str(s) => exact_decimal(s),
        _ => None,
    }
}

/// A numeric string (`-?[0-9]+(\.[0-9]+)?`) as a decimal, only if a decimal holds it
/// exactly: past 28 decimal places, or past the 96 bits of a decimal's digits, it would
/// be rounded, and could be rounded into compliance (`10000.000…0001` compared as
/// `10000`). Zeros that carry nothing (leading, trailing) do not count.
fn exact_decimal(s: &str) -> Option<Decimal> {
    let parsed = Decimal::from_str(s).ok();
    // The digits as written, without the zeros that carry nothing, against those of
    // the value parsed: they differ when parsing rounded.
    let (negative, digits) = match s.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, s),
    };
    let (whole, frac) = digits.split_once('.').unwrap_or((digits, ""));
    let (whole, frac) = (whole.trim_start_matches('0'), frac.trim_end_matches('0'));
    if whole.is_empty() && frac.is_empty() {
        return Some(Decimal::ZERO);
    }
    if whole.len() + frac.len() <= 28 && parsed.is_some() {
        return parsed; // 28 digits always fit in 96 bits: nothing was rounded
    }
    let sign = if negative { "-" } else { "" };
    let whole = if whole.is_empty() { "0" } else { whole };
    let written = if frac.is_empty() { format!("{sign}{whole}") } else { format!("{sign}{whole}.{frac}") };
    // Trailing zeros past 28 places fail the parse and carry nothing: parse without them.
    let value = match parsed {
        Some(d) => d,
        None => Decimal::from_str(&written).ok()?,
    };
    (value.normalize().to_string() == written).then_some(value)
}

/// How far a decimal reaches, for messages about numbers beyond it.
pub(crate) const BEYOND: &str = "at most 79,228,162,514,264,337,593,543,950,335 either side of zero";

/// Whether `v` is a JSON number no decimal holds: every number within a decimal's range
/// reads as one (`number_to_decimal`), so one that does not is beyond it.
pub(crate) fn beyond_decimal(v: &Value) -> bool {
    matches!(v, Value::Number(_))
}

/// Whether `v` is a numeric string too precise to compare exactly (see `exact_decimal`).
pub(crate) fn too_precise(v: &Value) -> bool {
    matches!(v, Value::String(s) if is_numeric_str(s) && exact_decimal(s).is_none())
}

fn number_to_decimal(n: &Number) -> Option<Decimal> {
    if let Some(i) = n.as_i64() {
        return Some(Decimal::from(i));
    }
    if let Some(u) = n.as_u64() {
        return Some(Decimal::from(u));
    }
    // serde_json keeps the shortest text that round-trips the float: parse that text,
    // not the binary value, so `0.1` is exactly one tenth.
    let text = n.to_string();
    Decimal::from_str(&text)
        .or_else(|_| Decimal::from_scientific(&text))
        .ok()
}

fn is_numeric_str(s: &str) -> bool {
    let body = s.strip_prefix('-').unwrap_or(s);
    let (int, frac) = match body.split_once('.') {
        Some((i, f)) => (i, Some(f)),
        None => (body, None),
    };
    !int.is_empty()
        && int.bytes().all(|b| b.is_ascii_digit())
        && frac.is_none_or(|f| !f.is_empty() && f.bytes().all(|b| b.is_ascii_digit()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Verdict;
    use crate::engine::tests::Fx;
    use crate::policy::tests::err_of;
    use serde_json::json;

    fn rule(r: Value) -> Rule {
        compile(&crate::policy::tests::def(
            "p",
            json!({"name": "m", "policy_type": "metadata", "decision": "block", "conditions": {"rule": r}}),
        ))
        .unwrap()
    }

    fn ev(r: Value, md: Value) -> Result<bool, String> {
        let Value::Object(m) = md else {
            panic!("metadata must be an object")
        };
        eval(&rule(r).expr, &m)
    }

    #[test]
    fn numeric_comparisons_are_exact() {
        let r = json!({"field": "payment.amount", "op": ">", "value": 10000});
        assert_eq!(ev(r.clone(), json!({"payment": {"amount": 10000.01}})), Ok(true));
        assert_eq!(ev(r.clone(), json!({"payment": {"amount": 10000}})), Ok(false));
        assert_eq!(ev(r.clone(), json!({"payment": {"amount": "10000.5"}})), Ok(true));
        assert_eq!(ev(r, json!({"payment": {"amount": -1}})), Ok(false));
        // 0.1 + 0.2 style: exact decimal text, no float noise
        assert_eq!(
            ev(json!({"field": "x", "op": "==", "value": 0.3}), json!({"x": "0.30"})),
            Ok(true)
        );
        assert_eq!(
            ev(json!({"field": "x", "op": "<=", "value": "0.1"}), json!({"x": 0.1})),
            Ok(true)
        );
        assert_eq!(
            ev(
                json!({"field": "x", "op": ">=", "value": 18446744073709551615u64}),
                json!({"x": 18446744073709551615u64})
            ),
            Ok(true)
        );
    }

    #[test]
    fn numbers_too_precise_to_hold_are_not_rounded_into_compliance() {
        let r = json!({"field": "amount", "op": ">", "value": 10000});
        let err = ev(r.clone(), json!({"amount": "10000.0000000000000000000000000001"})).unwrap_err();
        assert!(err.contains("more digits than a decimal holds"), "{err}");
        assert!(ev(r.clone(), json!({"amount": "1234567890123456789012345678.91"})).is_err(), "30 digits, past 96 bits");
        assert_eq!(ev(r.clone(), json!({"amount": "1234567890123456789012345678.9"})), Ok(true), "29 digits within 96 bits");
        assert_eq!(ev(r.clone(), json!({"amount": "79228162514264337593543950335"})), Ok(true), "the largest decimal holds");
        assert!(ev(r.clone(), json!({"amount": "79228162514264337593543950336"})).is_err(), "one more does not");
        // Zeros that carry nothing are not digits a decimal must hold.
        assert_eq!(ev(r.clone(), json!({"amount": "0000010000.000000000000000000000000000000001"})).map_err(|_| ()), Err(()));
        assert_eq!(ev(r.clone(), json!({"amount": "000010000.5000000000000000000000000000000000"})), Ok(true));
        assert_eq!(ev(r.clone(), json!({"amount": "10001.00000000000000000000000000000000000"})), Ok(true));
        assert_eq!(ev(r, json!({"amount": "-0.0000000000000000000000000001"})), Ok(false), "28 places hold");
        // A blocking policy whose field cannot be compared fails closed.
        let p = json!({"name": "big", "policy_type": "metadata", "decision": "block",
                       "conditions": {"rule": {"field": "amount", "op": ">", "value": 10000}}});
        let d = Fx::new(vec![p]).metadata(json!({"amount": "10000.0000000000000000000000000001"})).decide("pay");
        assert_eq!(d.verdict, Verdict::Block);
    }

    #[test]
    fn equality() {
        assert_eq!(
            ev(json!({"field": "n", "op": "==", "value": 10}), json!({"n": "10.0"})),
            Ok(true)
        );
        assert_eq!(
            ev(json!({"field": "s", "op": "==", "value": "007"}), json!({"s": "7"})),
            Ok(false)
        );
        assert_eq!(
            ev(json!({"field": "b", "op": "==", "value": true}), json!({"b": true})),
            Ok(true)
        );
        assert_eq!(
            ev(json!({"field": "b", "op": "==", "value": true}), json!({"b": "true"})),
            Ok(false)
        );
        assert_eq!(
            ev(json!({"field": "c", "op": "!=", "value": "US"}), json!({"c": "FR"})),
            Ok(true)
        );
        assert_eq!(
            ev(
                json!({"field": "o", "op": "==", "value": {"a": 1}}),
                json!({"o": {"a": 1}})
            ),
            Ok(true)
        );
    }

    #[test]
    fn missing_field_is_false_for_every_comparison() {
        for op in ["==", "!=", ">", "<", "contains"] {
            assert_eq!(
                ev(json!({"field": "nope", "op": op, "value": 1}), json!({})),
                Ok(false),
                "{op}"
            );
        }
        assert_eq!(
            ev(json!({"field": "nope", "op": "not_in", "value": [1]}), json!({})),
            Ok(false)
        );
        assert_eq!(
            ev(json!({"field": "a.b", "op": "==", "value": 1}), json!({"a": 5})),
            Ok(false)
        );
        assert_eq!(
            ev(json!({"not": {"field": "nope", "op": "==", "value": 1}}), json!({})),
            Ok(true)
        );
    }

    #[test]
    fn exists() {
        assert_eq!(ev(json!({"field": "a", "op": "exists"}), json!({"a": null})), Ok(true));
        assert_eq!(ev(json!({"field": "a", "op": "exists"}), json!({})), Ok(false));
        assert_eq!(
            ev(json!({"field": "a", "op": "exists", "value": false}), json!({})),
            Ok(true)
        );
    }

    #[test]
    fn in_contains_and_arrays() {
        assert_eq!(
            ev(
                json!({"field": "c", "op": "in", "value": ["KP", "IR"]}),
                json!({"c": "IR"})
            ),
            Ok(true)
        );
        assert_eq!(
            ev(
                json!({"field": "c", "op": "not_in", "value": ["KP", "IR"]}),
                json!({"c": "FR"})
            ),
            Ok(true)
        );
        assert_eq!(
            ev(json!({"field": "n", "op": "in", "value": [1, 2]}), json!({"n": "2"})),
            Ok(true)
        );
        assert_eq!(
            ev(
                json!({"field": "to", "op": "contains", "value": "@corp"}),
                json!({"to": "a@corp.com"})
            ),
            Ok(true)
        );
        assert_eq!(
            ev(
                json!({"field": "tags", "op": "contains", "value": "pii"}),
                json!({"tags": ["x", "pii"]})
            ),
            Ok(true)
        );
        assert_eq!(
            ev(
                json!({"field": "items.1.sku", "op": "==", "value": "B"}),
                json!({"items": [{"sku": "A"}, {"sku": "B"}]})
            ),
            Ok(true)
        );
    }

    #[test]
    fn combinators() {
        let r = json!({"all": [
            {"field": "amount", "op": ">", "value": 100},
            {"any": [{"field": "currency", "op": "==", "value": "USD"}, {"not": {"field": "verified", "op": "==", "value": true}}]}
        ]});
        assert_eq!(
            ev(r.clone(), json!({"amount": 500, "currency": "EUR", "verified": true})),
            Ok(false)
        );
        assert_eq!(
            ev(r.clone(), json!({"amount": 500, "currency": "EUR", "verified": false})),
            Ok(true)
        );
        assert_eq!(ev(r, json!({"amount": 5, "currency": "USD"})), Ok(false));
        assert_eq!(ev(json!({"all": []}), json!({})), Ok(true));
        assert_eq!(ev(json!({"any": []}), json!({})), Ok(false));
    }

    #[test]
    fn type_errors() {
        let e = ev(
            json!({"field": "amount", "op": ">", "value": 5}),
            json!({"amount": "lots"}),
        )
        .unwrap_err();
        assert_eq!(e, "field `amount` is a string, not a number, for `>`");
        assert!(!e.contains("lots"), "never echo the value");
        // A JSON number no decimal holds is named as such, not as "a number, not a number".
        let e = ev(json!({"field": "amount", "op": ">", "value": 5}), json!({"amount": 1e32})).unwrap_err();
        assert_eq!(e, format!("field `amount` is a number beyond what a decimal holds ({BEYOND}), for `>`"));
        assert!(
            ev(
                json!({"field": "amount", "op": ">", "value": 5}),
                json!({"amount": null})
            )
            .is_err()
        );
        assert!(ev(json!({"field": "n", "op": "contains", "value": "x"}), json!({"n": 5})).is_err());
        assert!(ev(json!({"field": "s", "op": "contains", "value": 5}), json!({"s": "5"})).is_err());
        // Short-circuit: a branch never reached cannot fail.
        let r = json!({"any": [{"field": "ok", "op": "==", "value": 1}, {"field": "bad", "op": ">", "value": 1}]});
        assert_eq!(ev(r, json!({"ok": 1, "bad": "x"})), Ok(true));
    }

    #[test]
    fn numeric_strings_are_strict() {
        for s in ["1", "-1", "1.5", "0.000", "123456789012345678"] {
            assert!(is_numeric_str(s), "{s}");
        }
        for s in ["", "-", "1.", ".5", "1e3", " 1", "1_000", "+1", "0x10", "NaN"] {
            assert!(!is_numeric_str(s), "{s}");
        }
    }

    #[test]
    fn reason_describes_the_rule() {
        let p = json!({"name": "Big payments", "policy_type": "metadata", "decision": "escalate",
                       "conditions": {"rule": {"all": [{"field": "amount", "op": ">=", "value": 10000},
                                                       {"field": "currency", "op": "in", "value": ["USD", "EUR"]}]}}});
        let d = Fx::new(vec![p])
            .metadata(json!({"amount": "25000", "currency": "USD"}))
            .decide("pay");
        assert_eq!(d.verdict, Verdict::Escalate);
        assert_eq!(
            d.triggered[0].reason,
            "metadata rule matched: all(amount >= 10000, currency in [\"USD\",\"EUR\"])"
        );
    }

    #[test]
    fn validation() {
        let base =
            |r: Value| json!({"name": "m", "policy_type": "metadata", "decision": "block", "conditions": {"rule": r}});
        assert_eq!(
            err_of(json!({"name": "m", "policy_type": "metadata", "decision": "block"})).field,
            "conditions.rule"
        );
        assert_eq!(
            err_of(base(json!({"field": "a", "op": "~", "value": 1}))).field,
            "conditions.rule.op"
        );
        assert_eq!(
            err_of(base(json!({"field": "a", "op": ">", "value": "big"}))).field,
            "conditions.rule.value"
        );
        assert_eq!(
            err_of(base(json!({"field": "a", "op": "in", "value": 1}))).field,
            "conditions.rule.value"
        );
        assert_eq!(
            err_of(base(json!({"field": "a", "op": "=="}))).field,
            "conditions.rule.value"
        );
        assert_eq!(
            err_of(base(json!({"field": "a..b", "op": "==", "value": 1}))).field,
            "conditions.rule.field"
        );
        assert_eq!(
            err_of(base(json!({"field": "a", "op": "==", "value": 1, "vaule": 2}))).field,
            "conditions.rule.vaule"
        );
        assert_eq!(
            err_of(base(
                json!({"all": [{"field": "a", "op": "==", "value": 1}, {"op": "=="}]})
            ))
            .field,
            "conditions.rule.all[1].field"
        );
        assert_eq!(err_of(base(json!({"all": [], "any": []}))).field, "conditions.rule.any");
        assert_eq!(err_of(base(json!({"not": 5}))).field, "conditions.rule.not");
        assert_eq!(err_of(base(json!({"all": 5}))).field, "conditions.rule.all");
        let mut deep = json!({"field": "a", "op": "exists"});
        for _ in 0..20 {
            deep = json!({"not": deep});
        }
        assert!(err_of(base(deep)).message.contains("deeper"));
    }
}
