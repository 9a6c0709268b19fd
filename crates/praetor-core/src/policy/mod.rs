//! Policy definitions (the JSON users write), their validation and compilation.
//!
//! A `PolicyDef` is what the API accepts and stores. `CompiledPolicySet::compile`
//! validates every definition (errors name the definition's index and field) and
//! compiles regexes, globs and PII automata once per policy change, never per request.
//!
//! One module per policy kind holds that kind's `conditions` schema, its compiled form
//! and its evaluation: `action_type`, `threshold`, `content_pattern`, `pii`, `metadata`,
//! `temporal`, `sequence`. Common rules, for every kind:
//! - `action_types` (globs, see `crate::glob`) scope the policy: it is evaluated only for
//!   matching actions; empty means every action (`action_type` with `match: unlisted` is
//!   the exception: it is evaluated for every action).
//! - `conditions` are read strictly: an unknown key is an error naming it
//!   (`conditions.paterns`); `null` counts as absent.
//! - Disabled policies are validated but never evaluated.

mod action_type;
pub(crate) mod composite;
pub(crate) mod conditions;
pub(crate) mod content_pattern;
pub(crate) mod metadata;
pub(crate) mod prefilter;
mod pii;
pub mod sequence;
mod temporal;
mod threshold;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::engine::EvalCtx;
use crate::glob::{Glob, GlobList};
use crate::pii::CategorySet;
use content_pattern::{CompiledPatterns, PatternBank};
pub(crate) use content_pattern::PatternCache;
pub use content_pattern::{MAX_LISTED as MAX_CONTENT_PATTERNS_LISTED, listed as content_patterns_listed};

/// The effect a matching policy asks for. Ordered from least to most restrictive:
/// `allow < allow_with_warning < escalate < block`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Effect {
    Allow,
    AllowWithWarning,
    Escalate,
    Block,
}

impl Effect {
    /// The wire name: `allow | allow_with_warning | escalate | block`.
    pub fn as_str(self) -> &'static str {
        match self {
            Effect::Allow => "allow",
            Effect::AllowWithWarning => "allow_with_warning",
            Effect::Escalate => "escalate",
            Effect::Block => "block",
        }
    }

    /// True for the effects that refuse (`escalate`, `block`): a policy with such an
    /// effect fails closed when it cannot be evaluated.
    pub fn refuses(self) -> bool {
        self >= Effect::Escalate
    }
}

impl std::fmt::Display for Effect {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PolicyType {
    ActionType,
    Threshold,
    ContentPattern,
    Pii,
    Metadata,
    Temporal,
    Sequence,
    /// A boolean tree over the other kinds' conditions (governance rules).
    Composite,
}

impl PolicyType {
    pub fn as_str(self) -> &'static str {
        match self {
            PolicyType::ActionType => "action_type",
            PolicyType::Threshold => "threshold",
            PolicyType::ContentPattern => "content_pattern",
            PolicyType::Pii => "pii",
            PolicyType::Metadata => "metadata",
            PolicyType::Temporal => "temporal",
            PolicyType::Sequence => "sequence",
            PolicyType::Composite => "composite",
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PolicyMode {
    /// Enforced: the policy's effect takes part in the decision. `live` (the xybern
    /// wire's name) is accepted for it.
    #[default]
    #[serde(alias = "live")]
    Enforce,
    /// Evaluated and reported, never changes the answer.
    Shadow,
    /// Kept, validated, never evaluated (like `enabled: false`).
    Disabled,
}

fn default_true() -> bool {
    true
}

/// A policy as users write it (wire §6 field names). `conditions` is kind-specific and
/// validated by `CompiledPolicySet::compile`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyDef {
    /// Assigned by the server on create; a policy written through the API may name only
    /// its own (the server refuses another).
    #[serde(default)]
    pub policy_id: String,
    pub name: String,
    #[serde(default)]
    pub description: Option<String>,
    pub policy_type: PolicyType,
    /// Action-type globs this policy applies to. Empty means every action.
    #[serde(default)]
    pub action_types: Vec<String>,
    pub decision: Effect,
    /// Higher first when reporting; the most restrictive effect wins regardless.
    #[serde(default)]
    pub priority: i32,
    #[serde(default = "default_true")]
    pub enabled: bool,
    #[serde(default)]
    pub mode: PolicyMode,
    /// For `threshold` policies: match when the agent's trust score is below this.
    #[serde(default)]
    pub trust_threshold: Option<u8>,
    #[serde(default)]
    pub conditions: Value,
    /// The policy pack this policy came from (`name@version`); set by the server on
    /// deploy, ignored on input elsewhere.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pack: Option<String>,
    /// For governance rules (`/api/v1/rules`): the rule as written (condition, action,
    /// severity, alert, schedule). Opaque to the engine; set by the server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub governance: Option<Value>,
}

impl PolicyDef {
    /// Whether the engine evaluates this policy at all (enforced or in shadow): both
    /// `enabled: false` and `mode: disabled` turn it off.
    pub fn is_evaluated(&self) -> bool {
        self.enabled && self.mode != PolicyMode::Disabled
    }
}

/// A policy definition that failed validation. `index` is the definition's position
/// when a list was compiled; `field` is a dot path such as `conditions.patterns[2]`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("policy {}field `{field}`: {message}", index.map(|i| format!("#{i} ")).unwrap_or_default())]
pub struct PolicyError {
    pub index: Option<usize>,
    pub field: String,
    pub message: String,
}

impl PolicyError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> PolicyError {
        PolicyError {
            index: None,
            field: field.into(),
            message: message.into(),
        }
    }

    /// The same error, for `field`.
    pub(crate) fn at(self, field: impl Into<String>) -> PolicyError {
        PolicyError {
            field: field.into(),
            ..self
        }
    }
}

/// What applies when the content is redacted and a content policy needs it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnRedactedContent {
    #[default]
    Skip,
    Escalate,
    Block,
}

/// Workspace-wide settings the engine reads.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkspaceSettings {
    /// What applies when no policy matches.
    #[serde(default = "default_decision")]
    pub default_decision: Effect,
    #[serde(default)]
    pub on_redacted_content: OnRedactedContent,
    /// Reported as `jurisdiction` when the request's metadata names none.
    #[serde(default)]
    pub default_jurisdiction: Option<String>,
    /// The trust score new agents start at, and that clean runs climb back to.
    #[serde(default = "default_trust_baseline")]
    pub trust_baseline: u8,
    /// How long an escalation waits for a person before it expires.
    #[serde(default = "default_escalation_ttl")]
    pub escalation_ttl_seconds: u64,
    /// How long an approval stays actionable: after it, the escalation still reads
    /// `approved` but its `decision` is `block`, so a stale approval cannot be replayed.
    #[serde(default = "default_approval_freshness")]
    pub approval_freshness_seconds: u64,
    /// How many escalations the workspace holds at most. Each is kept in memory until it
    /// settles and the sweeper prunes it, so this is what bounds that memory; a decision
    /// that would open one more blocks instead (fails closed) and says why.
    #[serde(default = "default_max_pending_escalations")]
    pub max_pending_escalations: u64,
    /// How many of those one agent may hold (requests that name no agent count as one):
    /// an agent flooding escalations then blocks its own, not every other agent's.
    #[serde(default = "default_max_pending_escalations_per_agent")]
    pub max_pending_escalations_per_agent: u64,
    /// Whether a request that names no agent (no `agent_id`, no session, a key bound to
    /// none) is decided at all. Such a request has no scopes, boundary, roles or history,
    /// so per-agent checks cannot apply to it; a workspace whose agents are all
    /// registered turns this off, and then such a request is refused (`__identity`).
    #[serde(default = "default_allow_anonymous")]
    pub allow_anonymous: bool,
}

/// The largest `max_pending_escalations` accepted: about 1 KB of memory each.
pub const MAX_PENDING_ESCALATIONS_LIMIT: u64 = 1_000_000;

/// The longest `escalation_ttl_seconds` and `approval_freshness_seconds` accepted: a
/// year. (Larger values would overflow once turned into milliseconds past now.)
pub const MAX_SETTING_SECONDS: u64 = 365 * 86_400;

impl WorkspaceSettings {
    /// How long an escalation waits, in milliseconds (bounded even for settings stored
    /// before the bound was checked).
    pub fn escalation_ttl_ms(&self) -> i64 {
        seconds_to_ms(self.escalation_ttl_seconds)
    }

    /// How long an approval stays actionable, in milliseconds (bounded likewise).
    pub fn approval_freshness_ms(&self) -> i64 {
        seconds_to_ms(self.approval_freshness_seconds)
    }
}

fn seconds_to_ms(seconds: u64) -> i64 {
    (seconds.min(MAX_SETTING_SECONDS) * 1000) as i64
}

fn default_escalation_ttl() -> u64 {
    3600
}
fn default_approval_freshness() -> u64 {
    900
}
fn default_max_pending_escalations() -> u64 {
    10_000
}
fn default_max_pending_escalations_per_agent() -> u64 {
    1_000
}

fn default_allow_anonymous() -> bool {
    true
}

fn default_decision() -> Effect {
    Effect::Allow
}
fn default_trust_baseline() -> u8 {
    80
}

impl Default for WorkspaceSettings {
    fn default() -> Self {
        WorkspaceSettings {
            default_decision: default_decision(),
            on_redacted_content: OnRedactedContent::default(),
            default_jurisdiction: None,
            trust_baseline: default_trust_baseline(),
            escalation_ttl_seconds: default_escalation_ttl(),
            approval_freshness_seconds: default_approval_freshness(),
            max_pending_escalations: default_max_pending_escalations(),
            max_pending_escalations_per_agent: default_max_pending_escalations_per_agent(),
            allow_anonymous: default_allow_anonymous(),
        }
    }
}

/// What a matching policy reports: why, and (rarely) an effect other than its own,
/// e.g. `escalate` for a `block` content policy that could not see redacted content.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Hit {
    pub reason: String,
    pub effect: Option<Effect>,
}

impl Hit {
    pub(crate) fn new(reason: impl Into<String>) -> Hit {
        Hit {
            reason: reason.into(),
            effect: None,
        }
    }
}

/// One compiled, enabled policy.
#[derive(Debug)]
pub(crate) struct CompiledPolicy {
    pub id: String,
    pub name: String,
    pub effect: Effect,
    pub priority: i32,
    pub mode: PolicyMode,
    /// The action types this policy is evaluated for; empty means every action.
    pub scope: GlobList,
    pub rule: Rule,
}

#[derive(Debug)]
pub(crate) enum Rule {
    ActionType(action_type::Rule),
    Threshold(threshold::Rule),
    ContentPattern(content_pattern::Rule),
    Pii(pii::Rule),
    Metadata(metadata::Rule),
    Temporal(temporal::Rule),
    Sequence(sequence::Rule),
    Composite(composite::Rule),
}

impl CompiledPolicy {
    /// Evaluate a policy already known to be in scope (`scope_hit` is the scope glob
    /// that matched, `None` for an unscoped policy). `Err` is an evaluation error.
    pub(crate) fn eval(&self, scope_hit: Option<&Glob>, cx: &EvalCtx<'_>) -> Result<Option<Hit>, String> {
        self.rule.eval_kind(self.effect, scope_hit, cx)
    }
}

impl Rule {
    /// Every action-type glob list this condition holds (a composite's, in its leaves).
    fn glob_lists(&mut self) -> Vec<&GlobList> {
        match self {
            Rule::ActionType(r) => vec![r.globs()],
            Rule::Sequence(r) => r.glob_lists(),
            Rule::Composite(r) => r.leaves_mut().into_iter().flat_map(|leaf| leaf.glob_lists()).collect(),
            _ => vec![],
        }
    }

    /// Evaluate this kind's condition (for a policy, or a composite's leaf).
    pub(crate) fn eval_kind(&self, effect: Effect, scope_hit: Option<&Glob>, cx: &EvalCtx<'_>) -> Result<Option<Hit>, String> {
        match self {
            Rule::ActionType(r) => Ok(r.eval(&cx.input.request.action_type, scope_hit)),
            Rule::Threshold(r) => Ok(r.eval(cx)),
            Rule::ContentPattern(r) => Ok(r.eval(effect, cx)),
            Rule::Pii(r) => Ok(r.eval(effect, cx)),
            Rule::Metadata(r) => r.eval(cx),
            Rule::Temporal(r) => r.eval(cx.input.now_ms),
            Rule::Sequence(r) => r.eval(cx),
            Rule::Composite(r) => r.eval(effect, cx),
        }
    }
}

/// The compiled form of a workspace's policies. Cheap to share behind an `Arc`.
///
/// Holds only the enabled policies, in definition order, plus what is shared between
/// them: every distinct content pattern compiled once (`PatternBank`: a field is read at
/// most once per pattern) and the union of PII categories (each field is PII-scanned
/// once).
#[derive(Debug)]
pub struct CompiledPolicySet {
    policies: Vec<CompiledPolicy>,
    /// Ids of every definition, enabled or not, in definition order.
    ids: Vec<String>,
    pub(crate) patterns: PatternBank,
    /// How many content patterns compiling this set compiled (`patterns_compiled`).
    patterns_compiled: usize,
    /// Every content pattern the definitions list, in any mode, compiled: the next set
    /// takes them from here (`compile_after`).
    listed_patterns: CompiledPatterns,
    pub(crate) pii_categories: CategorySet,
    history_window_ms: i64,
    hash: [u8; 32],
}

/// Longest `name` accepted, in bytes.
pub const MAX_NAME_LEN: usize = 200;
/// The most action-type globs one policy may list.
pub const MAX_ACTION_TYPES: usize = 256;
/// The longest description a new definition may have, in bytes.
pub const MAX_DESCRIPTION_BYTES: usize = 4096;

fn compile_one(def: &PolicyDef, cache: &mut PatternCache<'_>) -> Result<CompiledPolicy, PolicyError> {
    if def.name.trim().is_empty() {
        return Err(PolicyError::new("name", "must not be empty"));
    }
    if def.name.len() > MAX_NAME_LEN {
        return Err(PolicyError::new("name", format!("longer than {MAX_NAME_LEN} bytes")));
    }
    if let Some(t) = def.trust_threshold
        && t > 100
    {
        return Err(PolicyError::new(
            "trust_threshold",
            format!("expected 0-100, found `{t}`"),
        ));
    }
    let mut scope = GlobList::new(&def.action_types, "action_types")?;
    let rule = compile_kind(def, scope.clone(), cache)?;
    if let Rule::ActionType(r) = &rule
        && r.is_unlisted()
    {
        // An allow-list is evaluated for every action.
        scope = GlobList::default();
    }
    Ok(CompiledPolicy {
        id: def.policy_id.clone(),
        name: def.name.clone(),
        effect: def.decision,
        priority: def.priority,
        mode: def.mode,
        scope,
        rule,
    })
}

/// Compile a definition's condition as its kind says (`scope`: its action-type globs;
/// `cache`: the content patterns compiled so far).
pub(crate) fn compile_kind(def: &PolicyDef, scope: GlobList, cache: &mut PatternCache<'_>) -> Result<Rule, PolicyError> {
    Ok(match def.policy_type {
        PolicyType::ActionType => Rule::ActionType(action_type::compile(def, scope)?),
        PolicyType::Threshold => Rule::Threshold(threshold::compile(def)?),
        PolicyType::ContentPattern => Rule::ContentPattern(content_pattern::compile(def, cache)?),
        PolicyType::Pii => Rule::Pii(pii::compile(def)?),
        PolicyType::Metadata => Rule::Metadata(metadata::compile(def)?),
        PolicyType::Temporal => Rule::Temporal(temporal::compile(def)?),
        PolicyType::Sequence => Rule::Sequence(sequence::compile(def, &scope)?),
        PolicyType::Composite => Rule::Composite(composite::compile(def, cache)?),
    })
}

impl CompiledPolicySet {
    /// Validate and compile every definition. The first invalid one is reported with
    /// its index and field.
    pub fn compile(defs: &[PolicyDef]) -> Result<CompiledPolicySet, PolicyError> {
        Self::compile_with(defs, PatternCache::default())
    }

    /// [`CompiledPolicySet::compile`] for a set that replaces `previous`: the content
    /// patterns `previous` compiled are taken from it, not compiled again (compiling
    /// them is most of the cost of a large set: about 0.1 s for 1,000 patterns in a release
    /// build, against about 6 ms for the rest).
    pub fn compile_after(defs: &[PolicyDef], previous: &CompiledPolicySet) -> Result<CompiledPolicySet, PolicyError> {
        Self::compile_with(defs, PatternCache::after(&previous.listed_patterns, &previous.patterns))
    }

    fn compile_with(defs: &[PolicyDef], mut cache: PatternCache<'_>) -> Result<CompiledPolicySet, PolicyError> {
        let mut policies = Vec::with_capacity(defs.len());
        let mut ids = Vec::with_capacity(defs.len());
        let mut seen = std::collections::HashSet::with_capacity(defs.len());
        for (i, def) in defs.iter().enumerate() {
            let compiled = compile_one(def, &mut cache).map_err(|e| PolicyError { index: Some(i), ..e })?;
            if !def.policy_id.is_empty() && !seen.insert(def.policy_id.as_str()) {
                return Err(PolicyError {
                    index: Some(i),
                    field: "policy_id".to_owned(),
                    message: format!("duplicate policy id `{}`", def.policy_id),
                });
            }
            ids.push(def.policy_id.clone());
            if def.is_evaluated() {
                policies.push(compiled);
            }
        }
        let mut bank = content_pattern::BankBuilder::default();
        let mut pii_categories = CategorySet::empty();
        let mut history_window_ms = 0i64;
        for p in &mut policies {
            match &mut p.rule {
                Rule::ContentPattern(r) => r.register(&mut bank),
                Rule::Pii(r) => pii_categories = pii_categories.union(r.categories()),
                Rule::Sequence(r) => history_window_ms = history_window_ms.max(r.window_ms()),
                Rule::Composite(r) => {
                    pii_categories = pii_categories.union(r.categories());
                    for leaf in r.leaves_mut() {
                        if let Rule::ContentPattern(c) = leaf {
                            c.register(&mut bank);
                        }
                    }
                }
                _ => {}
            }
        }
        Ok(CompiledPolicySet {
            policies,
            ids,
            patterns: bank.build(&mut cache)?,
            patterns_compiled: cache.compiled(),
            listed_patterns: cache.into_patterns(),
            pii_categories,
            history_window_ms,
            hash: hash_defs(defs)?,
        })
    }

    /// Validate one definition on its own (for create/update), with `index: None`.
    /// Beyond what compiling needs, a new definition must keep bounds that stored ones
    /// from older versions may not: those still load (`compile`), these are refused.
    pub fn validate(def: &PolicyDef) -> Result<(), PolicyError> {
        Self::validate_with(def, &mut PatternCache::checking())
    }

    /// [`CompiledPolicySet::validate`] for one of many definitions checked together (a
    /// pack's): `cache` holds the patterns checked so far, so a repeat is not compiled
    /// again.
    pub(crate) fn validate_with(def: &PolicyDef, cache: &mut PatternCache<'_>) -> Result<(), PolicyError> {
        // Names are shown in answers, logs and the dashboard: no terminal escapes or NULs.
        if def.name.chars().any(char::is_control) {
            return Err(PolicyError::new("name", "must not contain control characters"));
        }
        // Held in memory and shown in every listing, whether made alone or in a pack.
        if def.description.as_ref().is_some_and(|d| d.len() > MAX_DESCRIPTION_BYTES) {
            return Err(PolicyError::new("description", format!("is longer than {MAX_DESCRIPTION_BYTES} bytes")));
        }
        // Before anything compiles: a composite tree of 128 nodes could list 12,700.
        let listed = content_pattern::listed([def]);
        if listed > content_pattern::MAX_PATTERNS {
            let field = if def.policy_type == PolicyType::Composite { "conditions.when" } else { "conditions.patterns" };
            return Err(PolicyError::new(field, format!("lists {listed} content patterns; a policy may list at most {}", content_pattern::MAX_PATTERNS)));
        }
        if def.action_types.len() > MAX_ACTION_TYPES {
            return Err(PolicyError::new("action_types", format!("has {} globs; the limit is {MAX_ACTION_TYPES}", def.action_types.len())));
        }
        let mut compiled = compile_one(def, cache)?;
        // Once the rule's shape is known good (its own errors come first).
        match (def.policy_type, def.conditions.get("rule"), def.conditions.get("when")) {
            (PolicyType::Metadata, Some(rule), _) => metadata::refuse_empty_lists(rule, "conditions.rule", false)?,
            (PolicyType::Composite, _, Some(when)) => metadata::refuse_empty_lists(when, "conditions.when", true)?,
            _ => {}
        }
        // Action-type globs are spelled visibly (`crate::glob::spelling`), wherever
        // the definition writes them.
        GlobList::new(&def.action_types, "action_types")?.spelling()?;
        compiled.rule.glob_lists().into_iter().try_for_each(GlobList::spelling)
    }

    /// The longest look-back any velocity or sequence policy needs, in milliseconds.
    /// The caller keeps at least this much action history per agent and per session.
    pub fn history_window_ms(&self) -> i64 {
        self.history_window_ms
    }

    /// How many content patterns compiling this set compiled: each distinct one listed
    /// (in any mode) that the set it replaced did not hold.
    pub fn patterns_compiled(&self) -> usize {
        self.patterns_compiled
    }

    /// Number of definitions compiled, enabled or not.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// Number of enabled policies (the ones `decide` evaluates).
    pub fn enabled_len(&self) -> usize {
        self.policies.len()
    }

    /// Ids of every definition, enabled or not, in definition order.
    pub fn policy_ids(&self) -> impl Iterator<Item = &str> {
        self.ids.iter().map(String::as_str)
    }

    /// SHA-256 over the definitions: each definition as canonical JSON (sorted keys, no
    /// whitespace), sorted, each prefixed by its length as 8 big-endian bytes. It does not
    /// depend on the order the definitions were given in. Record it with a decision to
    /// say which policy set decided.
    pub fn hash(&self) -> [u8; 32] {
        self.hash
    }

    /// `hash()` as 64 lowercase hex digits.
    pub fn hash_hex(&self) -> String {
        self.hash.iter().map(|b| format!("{b:02x}")).collect()
    }

    pub(crate) fn policies(&self) -> &[CompiledPolicy] {
        &self.policies
    }
}

fn hash_defs(defs: &[PolicyDef]) -> Result<[u8; 32], PolicyError> {
    let mut docs = Vec::with_capacity(defs.len());
    for def in defs {
        let v = serde_json::to_value(def).map_err(|e| PolicyError::new("", format!("cannot encode policy: {e}")))?;
        let mut s = String::new();
        canonical_json(&v, &mut s);
        docs.push(s);
    }
    docs.sort_unstable();
    let mut h = Sha256::new();
    for d in &docs {
        h.update((d.len() as u64).to_be_bytes());
        h.update(d.as_bytes());
    }
    Ok(h.finalize().into())
}

/// JSON with object keys sorted and no whitespace; numbers and strings as serde_json
/// writes them.
fn canonical_json(v: &Value, out: &mut String) {
    match v {
        Value::Object(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort_unstable();
            out.push('{');
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(k.clone()).to_string());
                out.push(':');
                if let Some(x) = m.get(k) {
                    canonical_json(x, out);
                }
            }
            out.push('}');
        }
        Value::Array(a) => {
            out.push('[');
            for (i, x) in a.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                canonical_json(x, out);
            }
            out.push(']');
        }
        other => out.push_str(&other.to_string()),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use serde_json::json;

    /// A definition from JSON, with an id.
    pub(crate) fn def(id: &str, v: Value) -> PolicyDef {
        let mut d: PolicyDef = serde_json::from_value(v).unwrap();
        d.policy_id = id.to_owned();
        d
    }

    pub(crate) fn err_of(v: Value) -> PolicyError {
        CompiledPolicySet::validate(&def("p", v)).unwrap_err()
    }

    /// An empty `all` or `any` in a metadata rule is refused when written (it would
    /// match every action, or none), in a metadata policy and in a composite's metadata
    /// leaf; one stored before the check still compiles.
    #[test]
    fn a_metadata_rule_of_no_rules_is_refused_when_written() {
        let meta = |rule: Value| json!({"name": "m", "policy_type": "metadata", "decision": "block", "conditions": {"rule": rule}});
        for (rule, field) in [
            (json!({"all": []}), "conditions.rule.all"),
            (json!({"any": []}), "conditions.rule.any"),
            (json!({"not": {"all": [{"field": "a", "op": "exists", "value": true}, {"any": []}]}}), "conditions.rule.not.all[1].any"),
        ] {
            let e = err_of(meta(rule.clone()));
            assert_eq!(e.field, field, "{rule}: {e:?}");
            assert!(e.message.contains("non-empty list"), "{e:?}");
            CompiledPolicySet::compile(&[def("p", meta(rule.clone()))]).unwrap_or_else(|e| panic!("a stored {rule} still compiles: {e:?}"));
        }
        let composite = json!({"name": "c", "policy_type": "composite", "decision": "block", "conditions": {"when": {"all": [
            {"trust_below": 50}, {"metadata": {"any": []}}]}}});
        assert_eq!(err_of(composite).field, "conditions.when.all[1].metadata.any");
        CompiledPolicySet::validate(&def("p", meta(json!({"all": [{"field": "a", "op": "exists", "value": true}]})))).unwrap();
    }

    #[test]
    fn compiled_set_can_be_shared_between_threads() {
        fn shared<T: Send + Sync>() {}
        shared::<CompiledPolicySet>();
    }

    #[test]
    fn compile_reports_index_and_field() {
        let defs = vec![
            def(
                "a",
                json!({"name": "ok", "policy_type": "action_type", "action_types": ["x"], "decision": "block"}),
            ),
            def(
                "b",
                json!({"name": "bad", "policy_type": "action_type", "action_types": ["[x"], "decision": "block"}),
            ),
        ];
        let err = CompiledPolicySet::compile(&defs).unwrap_err();
        assert_eq!(err.index, Some(1));
        assert_eq!(err.field, "action_types[0]");
        assert!(
            err.to_string()
                .starts_with("policy #1 field `action_types[0]`: unclosed"),
            "{err}"
        );
    }

    /// Bounds added after definitions were stored without them refuse new definitions,
    /// but stored ones still load: a server must start, and every node must follow,
    /// with what an older version accepted.
    #[test]
    fn newer_bounds_refuse_new_definitions_but_stored_ones_still_compile() {
        let tab = def("t", json!({"name": "No\tdeletes", "policy_type": "action_type", "action_types": ["delete_*"], "decision": "block"}));
        let globs: Vec<String> = (0..MAX_ACTION_TYPES + 1).map(|i| format!("a{i}.*")).collect();
        let many = def("m", json!({"name": "many", "policy_type": "action_type", "action_types": globs, "decision": "block"}));
        assert_eq!(CompiledPolicySet::validate(&tab).unwrap_err().field, "name");
        assert_eq!(CompiledPolicySet::validate(&many).unwrap_err().field, "action_types");
        assert_eq!(CompiledPolicySet::compile(&[tab, many]).unwrap().len(), 2);
    }

    /// An action-type glob with an invisible character or edge whitespace could never be
    /// meant: new definitions are refused naming the glob, wherever it is written;
    /// stored ones still load (they match nothing a request may now spell).
    #[test]
    fn new_globs_with_invisible_characters_are_refused_naming_the_glob() {
        let scope = def("s", json!({"name": "s", "policy_type": "action_type", "action_types": ["ok", "r.delete\u{200b}_*"], "decision": "block"}));
        assert_eq!(CompiledPolicySet::validate(&scope).unwrap_err().field, "action_types[1]");
        let unlisted = def("u", json!({"name": "u", "policy_type": "action_type", "action_types": [" db.read"], "decision": "block", "conditions": {"match": "unlisted"}}));
        assert_eq!(CompiledPolicySet::validate(&unlisted).unwrap_err().field, "action_types[0]");
        let velocity = def("v", json!({"name": "v", "policy_type": "sequence", "decision": "block",
                                       "conditions": {"velocity": {"max": 1, "window_seconds": 60, "counted_action_types": ["pay.*\u{2028}"]}}}));
        assert_eq!(CompiledPolicySet::validate(&velocity).unwrap_err().field, "conditions.velocity.counted_action_types[0]");
        let composite = def("c", json!({"name": "c", "policy_type": "composite", "decision": "block",
                                        "conditions": {"when": {"all": [{"trust_below": 50}, {"action_type": ["\u{feff}pay"]}]}}}));
        assert_eq!(CompiledPolicySet::validate(&composite).unwrap_err().field, "conditions.when.all[1].action_type[0]");
        assert_eq!(CompiledPolicySet::compile(&[scope, unlisted, velocity, composite]).unwrap().len(), 4);
    }

    #[test]
    fn validate_has_no_index() {
        let err = err_of(json!({"name": " ", "policy_type": "threshold", "trust_threshold": 5, "decision": "block"}));
        assert_eq!(err.index, None);
        assert_eq!(err.field, "name");
        assert_eq!(err.to_string(), "policy field `name`: must not be empty");
    }

    #[test]
    fn trust_threshold_range() {
        let err = err_of(json!({"name": "t", "policy_type": "threshold", "trust_threshold": 101, "decision": "block"}));
        assert_eq!(err.field, "trust_threshold");
    }

    #[test]
    fn duplicate_ids_are_rejected() {
        let d = json!({"name": "t", "policy_type": "threshold", "trust_threshold": 10, "decision": "block"});
        let err = CompiledPolicySet::compile(&[def("a", d.clone()), def("a", d)]).unwrap_err();
        assert_eq!((err.index, err.field.as_str()), (Some(1), "policy_id"));
    }

    #[test]
    fn unknown_top_level_field_is_a_serde_error() {
        let r: Result<PolicyDef, _> =
            serde_json::from_value(json!({"name": "t", "policy_type": "threshold", "decision": "block", "priorty": 1}));
        assert!(r.is_err());
    }

    #[test]
    fn set_accessors_and_hash() {
        let a = def(
            "a",
            json!({"name": "A", "policy_type": "action_type", "action_types": ["x"], "decision": "block"}),
        );
        let b = def(
            "b",
            json!({"name": "B", "policy_type": "threshold", "trust_threshold": 3, "decision": "escalate", "enabled": false}),
        );
        let s1 = CompiledPolicySet::compile(&[a.clone(), b.clone()]).unwrap();
        let s2 = CompiledPolicySet::compile(&[b.clone(), a.clone()]).unwrap();
        assert_eq!(s1.len(), 2);
        assert_eq!(s1.enabled_len(), 1);
        assert_eq!(s1.policy_ids().collect::<Vec<_>>(), vec!["a", "b"]);
        assert_eq!(s1.hash(), s2.hash(), "order-independent");
        assert_eq!(s1.hash_hex().len(), 64);
        let mut a2 = a.clone();
        a2.priority = 7;
        let s3 = CompiledPolicySet::compile(&[a2, b]).unwrap();
        assert_ne!(s1.hash(), s3.hash());
        let empty = CompiledPolicySet::compile(&[]).unwrap();
        assert!(empty.is_empty());
        assert_eq!(empty.history_window_ms(), 0);
    }

    #[test]
    fn history_window_is_the_longest_enabled_sequence_window() {
        let v = |w: u64, enabled: bool| {
            json!({"name": "v", "policy_type": "sequence", "decision": "block", "enabled": enabled,
                   "conditions": {"velocity": {"max": 3, "window_seconds": w}}})
        };
        let o = json!({"name": "o", "policy_type": "sequence", "decision": "block",
                       "conditions": {"ordered": {"first": ["a"], "then": ["b"], "within_seconds": 90}}});
        let set = CompiledPolicySet::compile(&[def("1", v(60, true)), def("2", v(3600, false)), def("3", o)]).unwrap();
        assert_eq!(set.history_window_ms(), 90_000);
    }
}
