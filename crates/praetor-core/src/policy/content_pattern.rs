//! `content_pattern` policies: regular expressions over the action's content and
//! metadata.
//!
//! Conditions:
//! ```json
//! { "patterns": ["(?i)drop\\s+table", "rm -rf /"],   // required, 1-100 regexes
//!   "case_insensitive": false,                       // optional, default false
//!   "fields": ["content", "metadata"] }              // optional, default both
//! ```
//! Syntax is the `regex` crate's (RE2-like: no look-around, no back-references; linear
//! time). The policy matches when any pattern matches the content, or any string value
//! or object key anywhere in the metadata (nested objects and arrays included; numbers
//! are not read); the reason names the pattern and the field (`metadata.to`,
//! `metadata.items[2].note`, or `metadata.args.<key 0>` for a key, named by its position
//! in key order), never the text.
//!
//! Hostile patterns are bounded: at most 1,024 bytes, nesting depth 64, and 1 MiB of
//! compiled program each, and a workspace's policies list at most `MAX_LISTED` in all.
//! Compiling a set compiles each distinct pattern once (`PatternCache`), and not at all
//! when the set it replaces had it: a write that adds one pattern compiles one (after
//! the new definition was checked on its own, which compiles its patterns once). The
//! patterns in force are shared between policies in the set's `PatternBank`; each field
//! is read at most once per distinct pattern, and from 16 patterns with prefix literals
//! on, once a decision asks about more than 4 of them, one pass over it rules out the
//! patterns whose literals it lacks (`prefilter.rs`, `FieldScreen`).

use std::collections::{HashMap, hash_map};
use std::sync::{Arc, OnceLock};

use regex::{Regex, RegexBuilder};

use super::prefilter::{self, Prefilter};

use super::conditions::{Fields, Obj, fields};
use serde_json::Value;

use super::{Effect, Hit, PolicyDef, PolicyError, PolicyType};
use crate::engine::{ContentView, EvalCtx};

pub const MAX_PATTERNS: usize = 100;
pub const MAX_PATTERN_LEN: usize = 1024;
/// Compiled size limit of one pattern (the `regex` crate's `size_limit`).
pub const PATTERN_SIZE_LIMIT: usize = 1 << 20;
const NEST_LIMIT: u32 = 64;
/// Lazy-DFA cache per regex.
const DFA_SIZE_LIMIT: usize = 2 << 20;

/// Index of a pattern in the bank.
pub(crate) type Slot = usize;

#[derive(Debug)]
pub(crate) struct Rule {
    patterns: Vec<String>,
    case_insensitive: bool,
    fields: Fields,
    slots: Vec<Slot>,
}

pub(crate) fn compile(def: &PolicyDef, cache: &mut PatternCache<'_>) -> Result<Rule, PolicyError> {
    let c = Obj::new(
        &def.conditions,
        "conditions",
        &["patterns", "case_insensitive", "fields"],
    )?;
    let list = c.required_str_list("patterns")?;
    if list.len() > MAX_PATTERNS {
        return Err(c.err("patterns", format!("at most {MAX_PATTERNS} patterns")));
    }
    let case_insensitive = c.bool("case_insensitive")?.unwrap_or(false);
    for (i, p) in list.iter().enumerate() {
        cache.check(p, case_insensitive).map_err(|m| PolicyError::new(format!("conditions.patterns[{i}]"), m))?;
    }
    Ok(Rule {
        patterns: list.iter().map(|s| (*s).to_owned()).collect(),
        case_insensitive,
        fields: fields(&c)?,
        slots: Vec::new(),
    })
}

/// A content pattern compiled: its regex and its prefix literals (`prefilter`).
#[derive(Debug)]
pub(crate) struct Compiled {
    regex: Regex,
    /// Read when the pattern goes into force (a bank), not when it is only checked:
    /// for patterns of many alternatives it costs about what compiling them does.
    prefixes: OnceLock<Option<Vec<Vec<u8>>>>,
}

impl Compiled {
    fn prefixes(&self, ci: bool) -> &Option<Vec<Vec<u8>>> {
        self.prefixes.get_or_init(|| prefilter::prefixes(self.regex.as_str(), ci, NEST_LIMIT))
    }
}

/// What a set knows of each content pattern it lists, by case mode and text: the
/// compiled form of each pattern in force, and for the others (listed by disabled
/// policies only) that they compile. Kept with the set so that the next set need not
/// compile them again; a disabled policy's regexes are not kept (they can be large and
/// are never read).
#[derive(Debug, Default)]
pub(crate) struct CompiledPatterns {
    /// Indexed by `case_insensitive as usize`; `None`: known to compile, not kept.
    by_mode: [HashMap<String, Option<Arc<Compiled>>>; 2],
}

#[derive(Debug)]
struct Entry {
    compiled: Option<Arc<Compiled>>,
    /// Does this set's bank use it?
    in_force: bool,
}

/// The patterns checked and compiled while a set compiles: each distinct one compiled
/// at most once however often it is listed, and none that the set it replaces
/// (`earlier`) already compiled or checked. It keeps only what this set lists, so what a
/// set holds does not grow with its history.
#[derive(Debug, Default)]
pub(crate) struct PatternCache<'e> {
    earlier: Option<&'e CompiledPatterns>,
    /// The bank of the set replaced: its prefilter is taken if the patterns in force
    /// are the same.
    earlier_bank: Option<&'e PatternBank>,
    now: [HashMap<String, Entry>; 2],
    /// How many patterns were compiled (not taken from `earlier` or a repeat).
    compiled: usize,
    /// Only checking (a definition or a pack validated): each regex is dropped once it
    /// compiled, so that checking 1,000 patterns never holds them all.
    checking_only: bool,
}

impl<'e> PatternCache<'e> {
    pub(crate) fn after(earlier: &'e CompiledPatterns, earlier_bank: &'e PatternBank) -> PatternCache<'e> {
        PatternCache { earlier: Some(earlier), earlier_bank: Some(earlier_bank), ..PatternCache::default() }
    }

    /// A cache for checking definitions, which keeps no regex.
    pub(crate) fn checking() -> PatternCache<'e> {
        PatternCache { checking_only: true, ..PatternCache::default() }
    }

    pub(crate) fn compiled(&self) -> usize {
        self.compiled
    }

    /// What the set keeps: the compiled form of the patterns in force, and the mere
    /// knowledge that the others compile.
    pub(crate) fn into_patterns(self) -> CompiledPatterns {
        let keep = |map: HashMap<String, Entry>| map.into_iter().map(|(p, e)| (p, e.compiled.filter(|_| e.in_force))).collect();
        let [cs, ci] = self.now;
        CompiledPatterns { by_mode: [keep(cs), keep(ci)] }
    }

    /// The entry for `p`: this set's, or one taken from the set before, or a new one
    /// compiled now.
    fn entry(&mut self, p: &str, ci: bool) -> Result<&mut Entry, String> {
        let mode = usize::from(ci);
        match self.now[mode].entry(p.to_owned()) {
            hash_map::Entry::Occupied(seen) => Ok(seen.into_mut()),
            hash_map::Entry::Vacant(new) => {
                let compiled = match self.earlier.and_then(|e| e.by_mode[mode].get(p)) {
                    Some(known) => known.clone(),
                    None => {
                        let c = compile_pattern(p, ci)?;
                        self.compiled += 1;
                        (!self.checking_only).then(|| Arc::new(c))
                    }
                };
                Ok(new.insert(Entry { compiled, in_force: false }))
            }
        }
    }

    /// Whether `p` compiles, or why it is refused.
    pub(crate) fn check(&mut self, p: &str, ci: bool) -> Result<(), String> {
        self.entry(p, ci).map(|_| ())
    }

    /// The compiled form of `p`, for the set's bank (kept with the set).
    pub(crate) fn compile(&mut self, p: &str, ci: bool) -> Result<Arc<Compiled>, String> {
        let entry = self.entry(p, ci)?;
        entry.in_force = true;
        if let Some(c) = &entry.compiled {
            return Ok(c.clone());
        }
        // Known to compile, but kept by no set before: a disabled policy enabled.
        let c = Arc::new(compile_pattern(p, ci)?);
        entry.compiled = Some(c.clone());
        self.compiled += 1;
        Ok(c)
    }
}

fn compile_pattern(p: &str, ci: bool) -> Result<Compiled, String> {
    Ok(Compiled { regex: build_regex(p, ci)?, prefixes: OnceLock::new() })
}

fn build_regex(p: &str, ci: bool) -> Result<Regex, String> {
    if p.is_empty() {
        return Err("empty pattern (it would match everything)".to_owned());
    }
    if p.len() > MAX_PATTERN_LEN {
        return Err(format!("pattern longer than {MAX_PATTERN_LEN} bytes"));
    }
    RegexBuilder::new(p)
        .case_insensitive(ci)
        .size_limit(PATTERN_SIZE_LIMIT)
        .dfa_size_limit(DFA_SIZE_LIMIT)
        .nest_limit(NEST_LIMIT)
        .build()
        .map_err(|e| format!("invalid regex: {e}"))
}

impl Rule {
    pub(crate) fn register(&mut self, bank: &mut BankBuilder) {
        self.slots = self
            .patterns
            .iter()
            .map(|p| bank.add(p, self.case_insensitive))
            .collect();
    }

    pub(crate) fn eval(&self, effect: Effect, cx: &EvalCtx<'_>) -> Option<Hit> {
        let mut redacted = false;
        if self.fields.content {
            match cx.content() {
                ContentView::Visible(_) => {
                    for (p, slot) in self.patterns.iter().zip(&self.slots) {
                        if cx.content_matches(*slot) {
                            return Some(Hit::new(format!("content matches pattern `{p}`")));
                        }
                    }
                }
                ContentView::Redacted => redacted = true,
                ContentView::Absent => {}
            }
        }
        if self.fields.metadata {
            for (p, slot) in self.patterns.iter().zip(&self.slots) {
                if let Some(path) = cx.metadata_match(*slot) {
                    return Some(Hit::new(format!("{path} matches pattern `{p}`")));
                }
            }
        }
        if redacted {
            return cx.redacted_content_hit(effect);
        }
        None
    }
}

/// The most content patterns a workspace's definitions may list in all (see [`listed`]).
/// Each pattern in force that the prefilter cannot rule out reads the content on its
/// own in every decision that reaches it: 1,000 sharing a literal the text holds took a
/// decision about 1.4 ms on 1.5 KB (1,000 whose literals the text lacks, about 20 µs), and
/// the set about 50 MB; 10,000, about 60 ms and 430 MB (BENCHMARKS "Session 30" and
/// "Session 31").
pub const MAX_LISTED: usize = 1_000;

/// How many content patterns `defs` list: every pattern of every content-pattern policy
/// and of every composite policy's `content_pattern` leaves, whatever the policy's mode,
/// each time it is listed. A bound on it bounds both what a decision reads (distinct
/// patterns in force, at most this many) and what compiling the set from nothing costs
/// (each distinct listed pattern is compiled once). Read from the definitions, without compiling anything; what is
/// malformed is skipped (compiling reports it).
pub fn listed<'d>(defs: impl IntoIterator<Item = &'d PolicyDef>) -> usize {
    defs.into_iter()
        .map(|def| match def.policy_type {
            PolicyType::ContentPattern => patterns_of(&def.conditions),
            PolicyType::Composite => def.conditions.get("when").map_or(0, |when| leaf_patterns(when, 0)),
            _ => 0,
        })
        .sum()
}

fn patterns_of(conditions: &Value) -> usize {
    conditions.get("patterns").and_then(Value::as_array).map_or(0, |list| list.iter().filter(|p| p.is_string()).count())
}

/// The patterns of the `content_pattern` leaves of a composite condition tree
/// (`composite.rs`), to the depth a tree may have and a little beyond (deeper ones do
/// not compile).
fn leaf_patterns(node: &Value, depth: usize) -> usize {
    let Some((key, inner)) = node.as_object().and_then(|m| m.iter().next()) else { return 0 };
    if depth > 16 {
        return 0;
    }
    match key.as_str() {
        "all" | "any" => inner.as_array().into_iter().flatten().map(|n| leaf_patterns(n, depth + 1)).sum(),
        "not" => leaf_patterns(inner, depth + 1),
        "content_pattern" => patterns_of(inner),
        _ => 0,
    }
}

/// Collects every pattern of every enabled content policy.
#[derive(Debug, Default)]
pub(crate) struct BankBuilder {
    patterns: Vec<(String, bool)>,
}

impl BankBuilder {
    pub(crate) fn add(&mut self, p: &str, ci: bool) -> Slot {
        // One slot per distinct pattern, shared by every policy that uses it.
        match self.patterns.iter().position(|(x, c)| x == p && *c == ci) {
            Some(i) => i,
            None => {
                self.patterns.push((p.to_owned(), ci));
                self.patterns.len() - 1
            }
        }
    }

    /// The bank of the patterns added, taken from `cache` (where compiling the policies
    /// put them) or compiled there.
    pub(crate) fn build(self, cache: &mut PatternCache<'_>) -> Result<PatternBank, PolicyError> {
        let mut bank = PatternBank::default();
        let mut prefixes = Vec::with_capacity(self.patterns.len());
        for (p, ci) in &self.patterns {
            let c = cache.compile(p, *ci).map_err(|e| PolicyError::new("conditions.patterns", format!("`{p}`: {e}")))?;
            bank.regexes.push(c.regex.clone());
            bank.joinable.push(!mentions_haystack_edges(p));
            prefixes.push(c.prefixes(*ci).clone());
        }
        // Most writes leave the patterns in force as they were: the automaton over their
        // literals (seconds for 1,000 patterns in a debug build) is then shared.
        bank.prefilter = match cache.earlier_bank.filter(|b| b.keys == self.patterns) {
            Some(earlier) => earlier.prefilter.clone(),
            None => Prefilter::new(&prefixes).map(Arc::new),
        };
        bank.keys = self.patterns;
        Ok(bank)
    }
}

/// Every distinct content pattern of the policy set, compiled once.
///
/// Why not one `RegexSet`: a set reports every pattern that matches, so it always reads
/// the whole text, and a single case-insensitive member costs it its literal
/// prefilter (measured: 2.4 µs per 1.5 KB for six patterns, against 0.7 µs for the same
/// patterns one by one). Separate regexes keep their own prefilters, run lazily (only
/// for in-scope policies, stopping at a policy's first match) and are cached per request,
/// so a field is still read at most once per pattern. With many patterns, the bank's
/// own prefilter reads a field once for all of them and rules out those whose literals
/// it lacks (`screen`): sets of many patterns were tried and overflowed the lazy DFA's
/// cache (BENCHMARKS "Session 30").
#[derive(Debug, Default)]
pub(crate) struct PatternBank {
    regexes: Vec<Regex>,
    /// Per pattern: may it be tried first on many texts joined by `\n`
    /// (`is_match_in_none`)?
    joinable: Vec<bool>,
    /// With many patterns, one pass over a text rules most of them out (`screen`).
    prefilter: Option<Arc<Prefilter>>,
    /// Per pattern: its text and case mode.
    keys: Vec<(String, bool)>,
}

/// Which patterns of a bank may match one text (`PatternBank::screen`).
#[derive(Debug)]
pub(crate) struct Screen(Option<Vec<bool>>);

impl Screen {
    /// True when pattern `slot` certainly does not match the text screened.
    pub(crate) fn rules_out(&self, slot: Slot) -> bool {
        self.0.as_ref().is_some_and(|may| !may.get(slot).copied().unwrap_or(true))
    }
}

/// A field's screen, read only once the field has been asked about more than
/// `SCREEN_AFTER` patterns: the screen reads the field for the whole bank, which for
/// 1,000 patterns costs about what 4 of them reading a 1.5 KB field on their own do, and
/// about what 40 do on 512 KiB (release build: the automaton over thousands of literals
/// reads far fewer bytes a second than one literal's search). A decision whose policies
/// in scope ask about a few patterns does not pay for it.
#[derive(Debug, Default)]
pub(crate) struct FieldScreen {
    asked: std::cell::Cell<usize>,
    screen: std::cell::OnceCell<Screen>,
}

/// See [`FieldScreen`].
pub(crate) const SCREEN_AFTER: usize = 4;

impl FieldScreen {
    /// True when pattern `slot` certainly does not match `text`, the field this screen
    /// is for (always the same text).
    pub(crate) fn rules_out(&self, bank: &PatternBank, slot: Slot, text: &str) -> bool {
        if self.screen.get().is_none() {
            let asked = self.asked.get() + 1;
            self.asked.set(asked);
            if asked <= SCREEN_AFTER {
                return false;
            }
        }
        self.screen.get_or_init(|| bank.screen(text)).rules_out(slot)
    }

    /// Whether the screen was read.
    #[cfg(test)]
    pub(crate) fn was_read(&self) -> bool {
        self.screen.get().is_some()
    }
}

/// Could `pattern` hold an assertion about where the haystack starts or ends (`^`,
/// `$`, `\A`, `\z`)? Read from the pattern's text, so it also answers yes for `[^a]`
/// or `\$`: a yes only costs speed.
fn mentions_haystack_edges(pattern: &str) -> bool {
    pattern.contains(['^', '$']) || pattern.contains("\\A") || pattern.contains("\\z")
}

impl PatternBank {
    pub(crate) fn len(&self) -> usize {
        self.regexes.len()
    }

    /// Read `text` once for which patterns may match it; without a prefilter (few
    /// patterns) it rules none out and costs nothing.
    pub(crate) fn screen(&self, text: &str) -> Screen {
        Screen(self.prefilter.as_ref().map(|f| f.candidates(text)))
    }

    pub(crate) fn is_match(&self, slot: Slot, text: &str) -> bool {
        self.regexes.get(slot).is_some_and(|r| r.is_match(text))
    }

    /// True when pattern `slot` certainly matches none of the texts `joined` holds,
    /// one after another with `\n` between them; false when it may match one of them.
    ///
    /// Why this is sound: a match inside one text is also a match at the same place in
    /// the joined haystack, unless an assertion judges it by what lies beyond the text.
    /// Word boundaries see a `\n` there as they see the edge of a haystack (neither is
    /// a word character), and so do line anchors (`(?m)^`). Only the haystack's own
    /// edges (`^`, `$`, `\A`, `\z` outside multi-line mode) differ, and a pattern that
    /// could hold one is never judged here. A match across a `\n` only makes the caller
    /// look at each text.
    pub(crate) fn is_match_in_none(&self, slot: Slot, joined: &str) -> bool {
        self.joinable.get(slot).copied().unwrap_or(false) && !self.is_match(slot, joined)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use crate::engine::tests::{Fx, ids};
    use crate::policy::tests::err_of;
    use crate::{Outcome, Verdict};
    use serde_json::json;

    fn sql() -> serde_json::Value {
        json!({"name": "SQL", "policy_type": "content_pattern", "decision": "block",
               "conditions": {"patterns": ["drop\\s+table", "truncate"], "case_insensitive": true}})
    }

    #[test]
    fn matches_content() {
        let d = Fx::new(vec![sql()])
            .content("please DROP  TABLE users")
            .decide("db.exec");
        assert_eq!(d.verdict, Verdict::Block);
        assert_eq!(d.triggered[0].reason, "content matches pattern `drop\\s+table`");
        assert_eq!(
            Fx::new(vec![sql()]).content("select 1").decide("db.exec").verdict,
            Verdict::Allow
        );
    }

    #[test]
    fn case_sensitive_by_default() {
        let p = json!({"name": "s", "policy_type": "content_pattern", "decision": "block",
                       "conditions": {"patterns": ["secret"]}});
        assert_eq!(
            Fx::new(vec![p.clone()]).content("SECRET").decide("x").verdict,
            Verdict::Allow
        );
        assert_eq!(Fx::new(vec![p]).content("a secret").decide("x").verdict, Verdict::Block);
    }

    #[test]
    fn matches_nested_metadata_and_names_the_field() {
        let fx = Fx::new(vec![sql()]).metadata(json!({"args": {"queries": ["select 1", "truncate logs"]}}));
        let d = fx.decide("db.exec");
        assert_eq!(
            d.triggered[0].reason,
            "metadata.args.queries[1] matches pattern `truncate`"
        );
    }

    #[test]
    fn metadata_keys_are_read_too() {
        let d = Fx::new(vec![sql()]).metadata(json!({"args": {"q": 1, "TRUNCATE logs": true}})).decide("db.exec");
        assert_eq!(d.triggered[0].reason, "metadata.args.<key 0> matches pattern `truncate`");
    }

    #[test]
    fn fields_limit_where_it_looks() {
        let p = json!({"name": "m", "policy_type": "content_pattern", "decision": "block",
                       "conditions": {"patterns": ["evil"], "fields": ["metadata"]}});
        assert_eq!(
            Fx::new(vec![p.clone()]).content("evil").decide("x").verdict,
            Verdict::Allow
        );
        assert_eq!(
            Fx::new(vec![p])
                .metadata(json!({"to": "evil corp"}))
                .decide("x")
                .verdict,
            Verdict::Block
        );
    }

    #[test]
    fn shared_sets_keep_policies_apart() {
        let a = json!({"name": "a", "policy_type": "content_pattern", "decision": "escalate",
                       "conditions": {"patterns": ["alpha"]}});
        let b = json!({"name": "b", "policy_type": "content_pattern", "decision": "block",
                       "conditions": {"patterns": ["BETA"], "case_insensitive": true}});
        let c = json!({"name": "c", "policy_type": "content_pattern", "decision": "allow_with_warning",
                       "conditions": {"patterns": ["alpha"]}});
        let fx = Fx::new(vec![a, b, c]);
        let d = fx.clone().content("alpha only").decide("x");
        assert_eq!(ids(&d.triggered), vec!["p1", "p3"]);
        assert_eq!(d.verdict, Verdict::Escalate);
        let d = fx.content("beta!").decide("x");
        assert_eq!(ids(&d.triggered), vec!["p2"]);
    }

    #[test]
    fn empty_content_is_empty_text() {
        let p = json!({"name": "e", "policy_type": "content_pattern", "decision": "block",
                       "conditions": {"patterns": ["^$"]}});
        let d = Fx::new(vec![p.clone()]).content("").decide("x");
        assert_eq!(d.verdict, Verdict::Block);
        // No content at all is not empty text.
        let d = Fx::new(vec![p]).decide("x");
        assert_eq!((d.verdict, d.outcome), (Verdict::Allow, Outcome::Allowed));
    }

    #[test]
    fn validation() {
        let base = |c: serde_json::Value| json!({"name": "c", "policy_type": "content_pattern", "decision": "block", "conditions": c});
        let e = err_of(base(json!({"paterns": ["x"]})));
        assert_eq!(e.field, "conditions.paterns");
        let e = err_of(base(json!({"patterns": ["ok", "(unclosed"]})));
        assert_eq!(e.field, "conditions.patterns[1]");
        assert!(e.message.starts_with("invalid regex"), "{}", e.message);
        assert_eq!(err_of(base(json!({"patterns": []}))).field, "conditions.patterns");
        assert_eq!(err_of(base(json!({}))).field, "conditions.patterns");
        assert_eq!(err_of(base(json!({"patterns": [""]}))).field, "conditions.patterns[0]");
        assert_eq!(
            err_of(base(json!({"patterns": ["x"], "case_insensitive": "yes"}))).field,
            "conditions.case_insensitive"
        );
        assert_eq!(
            err_of(base(json!({"patterns": ["x"], "fields": ["body"]}))).field,
            "conditions.fields[0]"
        );
        assert_eq!(
            err_of(json!({"name": "c", "policy_type": "content_pattern", "decision": "block"})).field,
            "conditions.patterns"
        );
    }

    /// `listed` counts every listed pattern, in any mode, composite leaves included; the
    /// compiled set's bank (distinct patterns in force) never holds more.
    #[test]
    fn every_listed_pattern_is_counted_whatever_the_mode() {
        let content = |p: Vec<&str>, ci: bool, enabled: bool| json!({"name": "c", "policy_type": "content_pattern", "decision": "block", "enabled": enabled,
                                                                     "conditions": {"patterns": p, "case_insensitive": ci}});
        let composite = json!({"name": "t", "policy_type": "composite", "decision": "block", "conditions": {"when": {"all": [
            {"content_pattern": {"patterns": ["wire", "beta"]}}, {"not": {"any": [{"content_pattern": {"patterns": ["deep"], "case_insensitive": true}}, {"trust_below": 50}]}}]}}});
        let mut shadow = content(vec!["shadowed"], false, true);
        shadow["mode"] = json!("shadow");
        let mut disabled = content(vec!["off by mode"], false, true);
        disabled["mode"] = json!("disabled");
        let defs: Vec<crate::PolicyDef> = [
            content(vec!["alpha", "beta"], false, true),
            content(vec!["beta", "BETA"], true, true),
            content(vec!["off", "alpha"], false, false),
            composite,
            shadow,
            disabled,
            json!({"name": "g", "policy_type": "action_type", "action_types": ["x"], "decision": "block"}),
        ]
        .into_iter()
        .enumerate()
        .map(|(i, v)| match serde_json::from_value::<crate::PolicyDef>(v) {
            Ok(mut d) => {
                d.policy_id = format!("p{i}");
                d
            }
            Err(e) => panic!("{e}"),
        })
        .collect();
        // 2 + 2 + 2 (disabled) + 3 (the tree) + 1 (shadow) + 1 (mode disabled).
        assert_eq!(super::listed(&defs), 11);
        let set = match crate::CompiledPolicySet::compile(&defs) {
            Ok(s) => s,
            Err(e) => panic!("{e}"),
        };
        // In force and distinct: alpha, beta; beta/i, BETA/i; wire, deep/i; shadowed.
        assert_eq!(set.patterns.len(), 7);
        // Compiled once each, in any mode: those 7, `off` and `off by mode`.
        assert_eq!(set.patterns_compiled(), 9);
    }

    fn defs(list: &[(&str, Vec<&str>, bool, bool)]) -> Vec<crate::PolicyDef> {
        list.iter()
            .map(|(id, patterns, ci, enabled)| {
                crate::policy::tests::def(id, json!({"name": id, "policy_type": "content_pattern", "decision": "block", "enabled": enabled,
                                                     "conditions": {"patterns": patterns, "case_insensitive": ci}}))
            })
            .collect()
    }

    fn compiled(defs: &[crate::PolicyDef], previous: Option<&crate::CompiledPolicySet>) -> crate::CompiledPolicySet {
        let set = match previous {
            Some(p) => crate::CompiledPolicySet::compile_after(defs, p),
            None => crate::CompiledPolicySet::compile(defs),
        };
        set.unwrap_or_else(|e| panic!("{e}"))
    }

    /// A set that replaces another compiles only the patterns the other did not list,
    /// and decides as a set compiled from nothing would. Patterns no longer listed are
    /// not kept: a later set that lists one again compiles it again.
    #[test]
    fn a_set_compiles_only_the_patterns_the_set_it_replaces_did_not_list() {
        let mut list = vec![("a", vec!["wire\\s+funds", "beta"], false, true), ("b", vec!["beta", "beta"], false, true), ("c", vec!["dormant"], false, false)];
        let first = compiled(&defs(&list), None);
        assert_eq!(first.patterns_compiled(), 3);
        // `beta` in the other case mode is another pattern; `gamma` is new.
        list.push(("d", vec!["beta", "gamma", "dormant"], true, true));
        let second = compiled(&defs(&list), Some(&first));
        assert_eq!(second.patterns_compiled(), 3, "beta/i, gamma/i and dormant/i");
        for (content, verdict) in [("please WIRE  FUNDS", Verdict::Allow), ("wire  funds", Verdict::Block), ("GAMMA ray", Verdict::Block), ("BETA", Verdict::Block), ("Dormant", Verdict::Block), ("dull", Verdict::Allow)] {
            let from_nothing = Fx::new(vec![]).content(content).decide_with(&compiled(&defs(&list), None), "x").verdict;
            assert_eq!((content, Fx::new(vec![]).content(content).decide_with(&second, "x").verdict), (content, verdict));
            assert_eq!(from_nothing, verdict, "{content}");
        }
        // A disabled policy's regex is not kept, only that it compiles: listed again
        // while disabled, it is not compiled; enabled, it is.
        let kept = |set: &crate::CompiledPolicySet| set.listed_patterns.by_mode.iter().flat_map(|m| m.values()).filter(|c| c.is_some()).count();
        assert_eq!((kept(&first), kept(&second)), (2, 5));
        assert_eq!(compiled(&defs(&list), Some(&second)).patterns_compiled(), 0);
        let mut enabled = list.clone();
        enabled[2].3 = true;
        let with_c = compiled(&defs(&enabled), Some(&second));
        assert_eq!((with_c.patterns_compiled(), kept(&with_c)), (1, 6), "dormant, case-sensitive, now in force");
        // The disabled policy goes, then comes back: its pattern was not kept.
        let without: Vec<_> = list.iter().filter(|p| p.0 != "c").cloned().collect();
        let third = compiled(&defs(&without), Some(&second));
        assert_eq!(third.patterns_compiled(), 0);
        assert_eq!(compiled(&defs(&list), Some(&third)).patterns_compiled(), 1, "dormant, case-sensitive");
        // A broken pattern is still refused, named by its place.
        list.push(("e", vec!["beta", "(unclosed"], false, true));
        let e = crate::CompiledPolicySet::compile_after(&defs(&list), &second).unwrap_err();
        assert_eq!((e.index, e.field.as_str()), (Some(4), "conditions.patterns[1]"));
    }

    /// A new policy lists at most `MAX_PATTERNS` in all, composite leaves together,
    /// refused before any of them compiles (the broken one is not what is named).
    #[test]
    fn a_new_policy_lists_at_most_a_hundred_patterns_in_all() {
        let leaf = |n: usize, extra: &[&str]| {
            let mut p: Vec<String> = (0..n).map(|i| format!("w{i}")).collect();
            p.extend(extra.iter().map(|s| (*s).to_owned()));
            json!({"content_pattern": {"patterns": p}})
        };
        let composite = |leaves: Vec<serde_json::Value>| {
            let v = json!({"name": "t", "policy_type": "composite", "decision": "block", "conditions": {"when": {"any": leaves}}});
            match serde_json::from_value::<crate::PolicyDef>(v) {
                Ok(d) => d,
                Err(e) => panic!("{e}"),
            }
        };
        let over = crate::CompiledPolicySet::validate(&composite(vec![leaf(60, &[]), leaf(40, &["(unclosed"])]));
        let e = over.err().map(|e| (e.field, e.message)).unwrap_or_default();
        assert_eq!(e, ("conditions.when".to_owned(), "lists 101 content patterns; a policy may list at most 100".to_owned()));
        assert!(crate::CompiledPolicySet::validate(&composite(vec![leaf(60, &[]), leaf(40, &[])])).is_ok());
        // A plain content policy over it is named by its own list, as before.
        assert_eq!(err_of(json!({"name": "c", "policy_type": "content_pattern", "decision": "block",
                                  "conditions": {"patterns": (0..101).map(|i| format!("w{i}")).collect::<Vec<_>>()}})).field, "conditions.patterns");
    }

    #[test]
    fn hostile_patterns_are_bounded() {
        let base = |p: &str| json!({"name": "c", "policy_type": "content_pattern", "decision": "block", "conditions": {"patterns": [p]}});
        // Huge counted repetition of a Unicode class: over the size limit.
        let e = err_of(base("(\\w{1000}){1000}"));
        assert_eq!(e.field, "conditions.patterns[0]");
        let e = err_of(base(&"a".repeat(super::MAX_PATTERN_LEN + 1)));
        assert_eq!(e.field, "conditions.patterns[0]");
        let deep = format!("{}a{}", "(".repeat(200), ")".repeat(200));
        assert_eq!(err_of(base(&deep)).field, "conditions.patterns[0]");
    }

    /// Pieces random patterns are made of (literals, letters whose case folds to ASCII
    /// or to other letters, classes, optional and repeated parts, alternations,
    /// assertions, inline flags), each with texts it matches in some case mode, so that
    /// random texts made of them match often.
    const PIECES: &[(&str, &[&str])] = &[
        ("ab", &["ab", "AB", "aB"]),
        ("wire", &["wire", "WIRE"]),
        ("ſt", &["ſt", "st", "ST", "ſT"]),
        ("K", &["K", "k", "K"]),
        ("ß", &["ß", "ẞ", "ss"]),
        ("İ", &["İ", "i"]),
        ("ı", &["ı", "I"]),
        ("Σ", &["Σ", "σ", "ς"]),
        ("ǅ", &["ǅ", "Ǆ", "ǆ"]),
        (r"\s+", &[" ", "\n ", "\u{a0}"]),
        (r"\d", &["7", "٣"]),
        ("[a-c]", &["b", "B"]),
        ("(xy)?", &["", "xy", "XY"]),
        ("(ab|ſq|k)", &["ab", "ſq", "SQ", "k", "K"]),
        ("z*", &["", "zz", "Z"]),
        ("a{0}b", &["b", "B"]),
        ("(|cd)", &["", "cd"]),
        (r"\b", &[""]),
        (r"\B", &[""]),
        ("^", &[""]),
        ("$", &[""]),
        (".", &["q", "é"]),
        ("(?i:st)", &["st", "ST", "ſt"]),
        ("(?-i:Ab)", &["Ab", "AB"]),
        ("(?x: a b )", &["ab", "AB"]),
        ("é", &["é", "É", "e\u{301}"]),
        (r"\w", &["w", "Ж"]),
    ];

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(128))]
        /// The prefilter never rules out a pattern that matches: not on one text, and not
        /// on texts joined as the metadata's are. The texts are made of the patterns'
        /// pieces (in another case, at times), so most patterns match some of them.
        #[test]
        fn the_prefilter_never_rules_out_a_match(
            drawn in proptest::collection::vec(
                (proptest::collection::vec((0usize..64, 0usize..8), 1..6), proptest::bool::ANY, "[a-z \n]{0,4}", "[a-z \n]{0,4}"),
                1..12,
            ),
        ) {
            let mut builder = super::BankBuilder::default();
            let mut cache = super::PatternCache::default();
            // Enough screened patterns that the prefilter is built, whatever is drawn.
            for i in 0..crate::policy::prefilter::PREFILTER_FROM {
                builder.add(&format!("pad{i}"), false);
            }
            let mut slots = Vec::new();
            let mut texts = Vec::new();
            for (picks, ci, before, after) in &drawn {
                let pieces: Vec<&(&str, &[&str])> = picks.iter().map(|(p, _)| &PIECES[p % PIECES.len()]).collect();
                let pattern: String = pieces.iter().map(|(p, _)| *p).collect();
                let sample: String = pieces.iter().zip(picks).map(|((_, samples), (_, i))| samples[i % samples.len()]).collect();
                slots.push((pattern.clone(), builder.add(&pattern, *ci)));
                texts.push(format!("{before}{sample}{after}"));
            }
            let bank = match builder.build(&mut cache) { Ok(b) => b, Err(e) => panic!("{e}") };
            proptest::prop_assert!(bank.prefilter.is_some());
            // The pads in a text of their own, first: in the joined texts every pad comes
            // before the drawn patterns' literals, so a screen that stops too early there
            // rules out a pattern that matches.
            texts.insert(0, (0..crate::policy::prefilter::PREFILTER_FROM).map(|i| format!("pad{i} ")).collect());
            let joined = texts.join("\n");
            let (screens, joined_screen) = (texts.iter().map(|t| bank.screen(t)).collect::<Vec<_>>(), bank.screen(&joined));
            for (p, slot) in &slots {
                for (t, screen) in texts.iter().zip(&screens) {
                    if bank.is_match(*slot, t) {
                        proptest::prop_assert!(!screen.rules_out(*slot), "{p:?} matches {t:?} but was ruled out");
                        proptest::prop_assert!(!joined_screen.rules_out(*slot), "{p:?} matches {t:?} but was ruled out of {joined:?}");
                    }
                }
            }
        }
    }

    /// Checking keeps no regex (a pack's 1,000 patterns are not all held at once), but
    /// what was checked is known to compile, and compiles again when a bank needs it.
    #[test]
    fn checking_keeps_no_regex() {
        let mut cache = super::PatternCache::checking();
        assert_eq!(cache.check("secret\\d", false), Ok(()));
        assert!(cache.check("(", false).is_err());
        assert!(cache.now[0].get("secret\\d").is_some_and(|e| e.compiled.is_none()));
        assert!(cache.compile("secret\\d", false).is_ok_and(|c| c.regex.is_match("secret7")));
        assert_eq!(cache.compiled(), 2);
    }

    /// The prefilter's automaton is built once for the patterns in force and shared by
    /// the sets after it while they stay the same.
    #[test]
    fn the_prefilter_is_shared_while_the_patterns_in_force_stay() {
        let mut list: Vec<(String, Vec<String>, bool, bool)> =
            (0..20).map(|i| (format!("c{i:02}"), vec![format!("ticket{i}-")], false, true)).collect();
        let as_defs = |list: &[(String, Vec<String>, bool, bool)]| {
            let borrowed: Vec<(&str, Vec<&str>, bool, bool)> = list.iter().map(|(id, p, ci, on)| (id.as_str(), p.iter().map(String::as_str).collect(), *ci, *on)).collect();
            defs(&borrowed)
        };
        let first = compiled(&as_defs(&list), None);
        let automaton = |set: &crate::CompiledPolicySet| set.patterns.prefilter.clone().unwrap_or_else(|| panic!("a prefilter"));
        // A disabled policy changes nothing in force.
        list.push(("d".into(), vec!["dormant".into()], false, false));
        let second = compiled(&as_defs(&list), Some(&first));
        assert!(Arc::ptr_eq(&automaton(&first), &automaton(&second)));
        // A new pattern in force: a new automaton, which knows it.
        list.push(("e".into(), vec!["codename".into()], false, true));
        let third = compiled(&as_defs(&list), Some(&second));
        assert!(!Arc::ptr_eq(&automaton(&second), &automaton(&third)));
        let slot = third.patterns.regexes.iter().position(|r| r.as_str() == "codename").unwrap_or(usize::MAX);
        assert!(!third.patterns.screen("the codename").rules_out(slot));
        assert!(third.patterns.screen("ticket").rules_out(slot));
        // The same texts in the other case mode are other patterns: not shared (the
        // case-sensitive automaton would rule `ÉCLAIR07` out; ASCII folding does not
        // reach `É`).
        let eclairs = |ci: bool| -> Vec<(String, Vec<String>, bool, bool)> { (0..20).map(|i| (format!("c{i:02}"), vec![format!("éclair{i:02}")], ci, true)).collect() };
        let sensitive = compiled(&as_defs(&eclairs(false)), None);
        let insensitive = compiled(&as_defs(&eclairs(true)), Some(&sensitive));
        assert!(!Arc::ptr_eq(&automaton(&sensitive), &automaton(&insensitive)));
        assert!(sensitive.patterns.screen("ÉCLAIR07").rules_out(7));
        assert!(!insensitive.patterns.screen("ÉCLAIR07").rules_out(7));
    }

    /// A field is screened only once it was asked about more than `SCREEN_AFTER`
    /// patterns: a decision whose policies in scope list a few patterns reads the field
    /// with those alone (1,000 policies each scoped to its own action type, on 500 KiB,
    /// paid for a screen of all of them in every decision).
    #[test]
    fn a_field_is_screened_only_once_many_patterns_ask_about_it() {
        let mut builder = super::BankBuilder::default();
        let slots: Vec<usize> = (0..20).map(|i| builder.add(&format!("lit{i:02}x"), false)).collect();
        let bank = match builder.build(&mut super::PatternCache::default()) { Ok(b) => b, Err(e) => panic!("{e}") };
        let field = super::FieldScreen::default();
        let text = "only lit07x here";
        for slot in &slots[..super::SCREEN_AFTER] {
            assert!(!field.rules_out(&bank, *slot, text), "not screened yet: nothing is ruled out");
        }
        assert!(!field.was_read());
        assert!(field.rules_out(&bank, slots[10], text));
        assert!(field.was_read());
        assert!(!field.rules_out(&bank, slots[7], text));
        assert!(field.rules_out(&bank, slots[0], text), "once read, it rules out even the patterns asked first");
    }

    /// The screen stops reading once every screened pattern may match, and not before:
    /// the pattern whose literal comes last in the text is not ruled out.
    #[test]
    fn the_screen_stops_only_once_nothing_is_left_to_rule_out() {
        let mut builder = super::BankBuilder::default();
        let slots: Vec<usize> = (0..20).map(|i| builder.add(&format!("lit{i:02}x"), false)).collect();
        let bank = match builder.build(&mut super::PatternCache::default()) { Ok(b) => b, Err(e) => panic!("{e}") };
        let all: String = (0..20).map(|i| format!("lit{i:02}x ")).collect();
        let screen = bank.screen(&all);
        assert_eq!(slots.iter().filter(|s| screen.rules_out(**s)).count(), 0);
        let screen = bank.screen(&all.replace("lit19x", "lit1"));
        assert_eq!(slots.iter().filter(|s| screen.rules_out(**s)).copied().collect::<Vec<_>>(), vec![19]);
    }

    /// With many patterns, the prefilter is built and rules out those whose literals
    /// the text lacks; a decision still finds the one that matches, in the content or in
    /// the metadata, and in the folded form of either.
    #[test]
    fn many_patterns_are_screened_and_still_found() {
        let mut builder = super::BankBuilder::default();
        let slots: Vec<usize> = (0..20).map(|i| builder.add(&format!(r"secret{i}\s+key"), i % 2 == 0)).collect();
        let unscreened = builder.add(r"\w+@corp", false);
        let bank = match builder.build(&mut super::PatternCache::default()) { Ok(b) => b, Err(e) => panic!("{e}") };
        let screen = bank.screen("the SECRET4  key and secret7 key");
        let may: Vec<usize> = slots.iter().copied().filter(|s| !screen.rules_out(*s)).collect();
        assert_eq!(may, vec![4, 7], "secret4 (case ignored) and secret7");
        assert!(!screen.rules_out(unscreened), "a pattern without literals is never ruled out");
        // Below the threshold, nothing is ruled out.
        let mut few = super::BankBuilder::default();
        let slot = few.add("secret", false);
        let few = match few.build(&mut super::PatternCache::default()) { Ok(b) => b, Err(e) => panic!("{e}") };
        assert!(!few.screen("nothing here").rules_out(slot));
        // Through a decision: content, folded content (zero-width space) and metadata.
        let policies: Vec<serde_json::Value> = (0..20)
            .map(|i| json!({"name": format!("p{i}"), "policy_type": "content_pattern", "decision": "block", "conditions": {"patterns": [format!(r"secret{i}\s+key")]}}))
            .collect();
        for (content, metadata, reason) in [
            ("a secret13 key", json!({}), Some("content matches pattern `secret13\\s+key`")),
            ("a secret1\u{200b}3 key", json!({}), Some("content matches pattern `secret13\\s+key`")),
            ("nothing", json!({"note": ["x", "the secret9 key"]}), Some("metadata.note[1] matches pattern `secret9\\s+key`")),
            ("secret 13 key", json!({"note": "secretkey"}), None),
        ] {
            let d = Fx::new(policies.clone()).content(content).metadata(metadata).decide("x");
            assert_eq!(d.triggered.first().map(|t| t.reason.as_str()), reason, "{content}");
        }
    }
}
