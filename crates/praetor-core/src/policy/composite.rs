//! `composite`: one policy whose condition is a boolean tree over the other kinds'
//! conditions, so a governance rule ("PII in outbound e-mail from a low-trust agent")
//! runs in the same engine as every policy, with the same compiled matchers.
//!
//! ```json
//! { "when": { "all": [
//!     { "pii": { "categories": ["ssn"] } },
//!     { "any": [ { "trust_below": 70 }, { "not": { "action_type": ["email.internal"] } } ] },
//!     { "metadata": { "field": "amount", "op": ">", "value": 100 } },
//!     { "content_pattern": { "patterns": ["wire transfer"] } },
//!     { "temporal": { "timezone": "UTC", "blocked_hours": [0, 1, 2] } } ] } }
//! ```
//! A leaf is true when that kind of policy, with those conditions, would match. A leaf
//! that needed redacted content is unknown (under `on_redacted_content: escalate|block`);
//! unknown stays unknown through `not`, `all` and `any` (unless decided without it), and
//! an unknown rule applies the redaction setting's effect: it fails closed.
//! Sequence conditions are not allowed inside a composite.

use serde_json::{Map, Value};

use super::conditions::Obj;
use super::content_pattern::PatternCache;
use super::{Effect, PolicyDef, PolicyError, PolicyType, Rule as KindRule, compile_kind};
use crate::engine::EvalCtx;
use crate::glob::GlobList;
use crate::pii::CategorySet;

/// How deep a condition tree may nest, and how many nodes it may hold.
const MAX_DEPTH: usize = 12;
const MAX_NODES: usize = 128;

#[derive(Debug)]
pub(crate) enum Node {
    All(Vec<Node>),
    Any(Vec<Node>),
    Not(Box<Node>),
    Leaf(Box<KindRule>),
}

#[derive(Debug)]
pub(crate) struct Rule {
    root: Node,
}

pub(crate) fn compile(def: &PolicyDef, cache: &mut PatternCache<'_>) -> Result<Rule, PolicyError> {
    let c = Obj::new(&def.conditions, "conditions", &["when"])?;
    let when = def.conditions.get("when").ok_or_else(|| c.err("when", "required: the condition tree"))?;
    let mut count = 0;
    Ok(Rule { root: node(def, when, "conditions.when", 0, &mut count, cache)? })
}

fn node(def: &PolicyDef, v: &Value, path: &str, depth: usize, count: &mut usize, cache: &mut PatternCache<'_>) -> Result<Node, PolicyError> {
    *count += 1;
    if depth > MAX_DEPTH || *count > MAX_NODES {
        return Err(PolicyError::new(path, format!("the condition tree is limited to {MAX_DEPTH} levels and {MAX_NODES} nodes")));
    }
    let obj = v.as_object().filter(|m| m.len() == 1).ok_or_else(|| {
        PolicyError::new(path, "each node is an object with exactly one key: all, any, not, pii, content_pattern, metadata, trust_below, action_type or temporal")
    })?;
    let (key, inner) = obj.iter().next().ok_or_else(|| PolicyError::new(path, "empty node"))?;
    let here = format!("{path}.{key}");
    let mut list = |inner: &Value| -> Result<Vec<Node>, PolicyError> {
        let items = inner.as_array().filter(|a| !a.is_empty()).ok_or_else(|| PolicyError::new(&here, "a non-empty list of conditions"))?;
        items.iter().enumerate().map(|(i, x)| node(def, x, &format!("{here}[{i}]"), depth + 1, count, cache)).collect()
    };
    match key.as_str() {
        "all" => Ok(Node::All(list(inner)?)),
        "any" => Ok(Node::Any(list(inner)?)),
        "not" => Ok(Node::Not(Box::new(node(def, inner, &here, depth + 1, count, cache)?))),
        "pii" => leaf(def, PolicyType::Pii, inner.clone(), None, vec![], &here, cache),
        "content_pattern" => leaf(def, PolicyType::ContentPattern, inner.clone(), None, vec![], &here, cache),
        "temporal" => leaf(def, PolicyType::Temporal, inner.clone(), None, vec![], &here, cache),
        "metadata" => leaf(def, PolicyType::Metadata, Value::Object(Map::from_iter([("rule".to_owned(), inner.clone())])), None, vec![], &here, cache),
        "trust_below" => {
            let t = inner.as_u64().filter(|t| *t <= 100).ok_or_else(|| PolicyError::new(&here, "an integer from 0 to 100"))?;
            leaf(def, PolicyType::Threshold, Value::Null, Some(t as u8), vec![], &here, cache)
        }
        "action_type" => {
            let globs: Vec<String> = inner
                .as_array()
                .map(|a| a.iter().filter_map(|x| x.as_str().map(str::to_owned)).collect())
                .filter(|g: &Vec<String>| !g.is_empty())
                .ok_or_else(|| PolicyError::new(&here, "a non-empty list of action-type globs"))?;
            leaf(def, PolicyType::ActionType, Value::Null, None, globs, &here, cache)
        }
        other => Err(PolicyError::new(path, format!("unknown condition `{other}`"))),
    }
}

/// Compile a leaf as a policy of its kind; its errors are renamed to the leaf's path.
fn leaf(def: &PolicyDef, kind: PolicyType, conditions: Value, trust: Option<u8>, action_types: Vec<String>, path: &str, cache: &mut PatternCache<'_>) -> Result<Node, PolicyError> {
    let sub = PolicyDef {
        policy_type: kind,
        conditions,
        trust_threshold: trust,
        action_types: action_types.clone(),
        ..def.clone()
    };
    let scope = GlobList::new(&action_types, path).map_err(|e| PolicyError::new(path, e.message))?;
    compile_kind(&sub, scope, cache)
        .map(|r| Node::Leaf(Box::new(r)))
        .map_err(|e| {
            let field = e.field.strip_prefix("conditions.").map(|f| format!("{path}.{f}")).unwrap_or_else(|| path.to_owned());
            PolicyError { field, ..e }
        })
}

impl Rule {
    /// Every leaf, for the set's shared pattern bank and PII categories.
    pub(crate) fn leaves_mut(&mut self) -> Vec<&mut KindRule> {
        fn walk<'a>(n: &'a mut Node, out: &mut Vec<&'a mut KindRule>) {
            match n {
                Node::All(v) | Node::Any(v) => v.iter_mut().for_each(|c| walk(c, out)),
                Node::Not(c) => walk(c, out),
                Node::Leaf(r) => out.push(r),
            }
        }
        let mut out = Vec::new();
        walk(&mut self.root, &mut out);
        out
    }

    pub(crate) fn categories(&mut self) -> CategorySet {
        let mut set = CategorySet::empty();
        for leaf in self.leaves_mut() {
            if let KindRule::Pii(r) = leaf {
                set = set.union(r.categories());
            }
        }
        set
    }

    pub(crate) fn eval(&self, effect: Effect, cx: &EvalCtx<'_>) -> Result<Option<super::Hit>, String> {
        Ok(match eval(&self.root, effect, cx)? {
            Tri::True(reason) => Some(super::Hit::new(reason)),
            Tri::False => None,
            // Content the rule needed was redacted: the workspace's `on_redacted_content`
            // decides, with the effect the leaf asked for (never lifted by a `not`).
            Tri::Unknown(hit) => Some(hit),
        })
    }
}

/// A node's value: true with a reason, false, or unknown because a leaf could not see
/// redacted content (carrying that leaf's hit and effect).
enum Tri {
    True(String),
    False,
    Unknown(super::Hit),
}

fn eval(n: &Node, effect: Effect, cx: &EvalCtx<'_>) -> Result<Tri, String> {
    match n {
        Node::All(children) => {
            let mut reasons = Vec::with_capacity(children.len());
            let mut unknown = None;
            for c in children {
                match eval(c, effect, cx)? {
                    Tri::True(r) => reasons.push(r),
                    Tri::False => return Ok(Tri::False),
                    Tri::Unknown(h) => unknown = unknown.or(Some(h)),
                }
            }
            Ok(match unknown {
                Some(h) => Tri::Unknown(h),
                None => Tri::True(reasons.join(" and ")),
            })
        }
        Node::Any(children) => {
            let mut unknown = None;
            for c in children {
                match eval(c, effect, cx)? {
                    Tri::True(r) => return Ok(Tri::True(r)),
                    Tri::False => {}
                    Tri::Unknown(h) => unknown = unknown.or(Some(h)),
                }
            }
            Ok(unknown.map(Tri::Unknown).unwrap_or(Tri::False))
        }
        Node::Not(c) => Ok(match eval(c, effect, cx)? {
            Tri::True(_) => Tri::False,
            Tri::False => Tri::True("not (a condition that did not hold)".to_owned()),
            Tri::Unknown(h) => Tri::Unknown(h),
        }),
        // A leaf's hit with its own effect is the redacted-content hit.
        Node::Leaf(rule) => Ok(match rule.eval_kind(effect, None, cx)? {
            Some(h) if h.effect.is_some() => Tri::Unknown(h),
            Some(h) => Tri::True(h.reason),
            None => Tri::False,
        }),
    }
}

#[cfg(test)]
mod tests {
    use crate::policy::{CompiledPolicySet, PolicyDef};
    use serde_json::json;

    fn compile(when: serde_json::Value) -> Result<CompiledPolicySet, crate::PolicyError> {
        let def: PolicyDef = serde_json::from_value(json!({
            "policy_id": "r1", "name": "rule", "policy_type": "composite", "decision": "block", "conditions": { "when": when }
        }))
        .unwrap();
        CompiledPolicySet::compile(&[def])
    }

    #[test]
    fn errors_name_the_node() {
        let e = compile(json!({ "all": [{ "pii": { "categories": ["ssn"] } }, { "content_pattern": { "patterns": ["("] } }] })).unwrap_err();
        assert_eq!(e.field, "conditions.when.all[1].content_pattern.patterns[0]");
        let e = compile(json!({ "any": [{ "velocity": {} }] })).unwrap_err();
        assert_eq!(e.field, "conditions.when.any[0]");
        let e = compile(json!({ "all": [] })).unwrap_err();
        assert_eq!(e.field, "conditions.when.all");
        let e = compile(json!({ "trust_below": 120 })).unwrap_err();
        assert_eq!(e.field, "conditions.when.trust_below");
        let e = compile(json!({ "pii": {}, "metadata": {} })).unwrap_err();
        assert_eq!(e.field, "conditions.when");
    }

    #[test]
    fn trees_are_bounded() {
        let mut deep = json!({ "trust_below": 10 });
        for _ in 0..20 {
            deep = json!({ "not": deep });
        }
        assert!(compile(deep).unwrap_err().message.contains("limited"));
    }

    #[test]
    fn a_redacted_leaf_is_not_lifted_by_not() {
        use crate::{ActionRequest, DecisionInput, Identity, Verdict, WorkspaceSettings, decide};
        let defs: Vec<PolicyDef> = serde_json::from_value(json!([{
            "policy_id": "r1", "name": "rule", "policy_type": "composite", "decision": "block",
            "conditions": { "when": { "not": { "content_pattern": { "patterns": ["approved"] } } } }
        }]))
        .unwrap();
        let set = CompiledPolicySet::compile(&defs).unwrap();
        let mut md = serde_json::Map::new();
        md.insert("content_sha256".into(), json!("a".repeat(64)));
        let req = ActionRequest { action_type: "x".into(), content_redacted: true, metadata: md, ..ActionRequest::default() };
        let run = |setting: &str| {
            let settings: WorkspaceSettings = serde_json::from_value(json!({ "on_redacted_content": setting })).unwrap();
            let input = DecisionInput {
                request: &req,
                identity: &Identity::Anonymous,
                agent: None,
                agent_history: &[],
                session_history: &[],
                agent_history_from_ms: i64::MIN,
                session_history_from_ms: i64::MIN,
                session: None,
                authority: Default::default(),
                now_ms: 0,
            };
            decide(&input, &set, &settings).verdict
        };
        assert_eq!(run("escalate"), Verdict::Escalate, "unknown keeps the setting's effect");
        assert_eq!(run("block"), Verdict::Block);
    }
}
