//! The decision hot path, measured (DESIGN.md: "measure with a benchmark, never with a
//! timed test"). A realistic workspace: 30 policies (12 action-type globs, 6 content
//! regexes, 1 PII policy on four categories, 4 metadata rules, 2 temporal, 3 velocity,
//! 2 ordered sequences), a 1.5 KB content, a few metadata keys and 40 actions of history.
//! Target: `decide` p50 <= 10 µs.
//!
//! Run: `cargo bench -p praetor-core --bench engine`.

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use praetor_core::pii::{self, Category};
use praetor_core::{
    ActionRequest, AgentFacts, CompiledPolicySet, DecisionInput, Identity, PastAction, PolicyDef, WorkspaceSettings,
    decide,
};
use serde_json::{Value, json};

/// 2026-01-07T12:00:00Z.
const NOW: i64 = 1_767_787_200_000;

fn policies() -> Vec<PolicyDef> {
    let mut v: Vec<Value> = Vec::new();
    let globs: [(&str, &str); 12] = [
        ("delete_*", "block"),
        ("db.drop*", "block"),
        ("shell.exec", "escalate"),
        ("fs.write:/etc/*", "block"),
        ("payment.refund", "escalate"),
        ("email.send_bulk", "escalate"),
        ("*.admin.*", "block"),
        ("iam.*", "escalate"),
        ("k8s.delete*", "block"),
        ("secrets.read", "allow_with_warning"),
        ("tool.browser.download", "allow_with_warning"),
        ("net.raw_[a-z]*", "block"),
    ];
    for (g, d) in globs {
        v.push(json!({"name": format!("glob {g}"), "policy_type": "action_type", "action_types": [g], "decision": d}));
    }
    let regexes = [
        r"drop\s+table",
        r"rm\s+-rf\s+/",
        r"ignore (all|previous) instructions",
        r"BEGIN (RSA|OPENSSH) PRIVATE KEY",
        r"password\s*[:=]",
        r"(curl|wget)\s+https?://\S+\s*\|\s*(sh|bash)",
    ];
    for (i, r) in regexes.iter().enumerate() {
        v.push(
            json!({"name": format!("regex {i}"), "policy_type": "content_pattern", "decision": "block",
                      "conditions": {"patterns": [r], "case_insensitive": i % 2 == 0}}),
        );
    }
    v.push(json!({"name": "pii", "policy_type": "pii", "decision": "escalate",
                  "conditions": {"categories": ["email", "phone", "credit_card", "ssn"]}}));
    v.push(
        json!({"name": "big payment", "policy_type": "metadata", "decision": "escalate",
                  "conditions": {"rule": {"field": "payment.amount", "op": ">", "value": 10000}}}),
    );
    v.push(
        json!({"name": "sanctioned", "policy_type": "metadata", "decision": "block",
                  "conditions": {"rule": {"field": "country", "op": "in", "value": ["KP", "IR", "SY", "CU"]}}}),
    );
    v.push(
        json!({"name": "mass mail", "policy_type": "metadata", "decision": "escalate",
                  "conditions": {"rule": {"all": [{"field": "recipient_count", "op": ">", "value": 50},
                                                  {"not": {"field": "internal", "op": "==", "value": true}}]}}}),
    );
    v.push(
        json!({"name": "approval", "policy_type": "metadata", "decision": "escalate", "action_types": ["payment.*"],
                  "conditions": {"rule": {"not": {"field": "approval_id", "op": "exists"}}}}),
    );
    v.push(
        json!({"name": "nights NY", "policy_type": "temporal", "decision": "escalate", "action_types": ["payment.*"],
                  "conditions": {"timezone": "America/New_York", "blocked_hours": [0, 1, 2, 3, 4, 5]}}),
    );
    v.push(
        json!({"name": "weekdays London", "policy_type": "temporal", "decision": "allow_with_warning",
                  "conditions": {"timezone": "Europe/London", "allowed_days": ["mon", "tue", "wed", "thu", "fri"]}}),
    );
    v.push(
        json!({"name": "payments rate", "policy_type": "sequence", "decision": "block", "action_types": ["payment.*"],
                  "conditions": {"velocity": {"max": 5, "window_seconds": 60}}}),
    );
    v.push(
        json!({"name": "email rate", "policy_type": "sequence", "decision": "escalate", "action_types": ["email.*"],
                  "conditions": {"velocity": {"max": 20, "window_seconds": 3600}}}),
    );
    v.push(
        json!({"name": "global rate", "policy_type": "sequence", "decision": "block",
                  "conditions": {"velocity": {"max": 100, "window_seconds": 60}}}),
    );
    v.push(
        json!({"name": "read then mail", "policy_type": "sequence", "decision": "escalate",
                  "conditions": {"ordered": {"first": ["db.read*"], "then": ["email.send"], "within_seconds": 300}}}),
    );
    v.push(
        json!({"name": "secret then net", "policy_type": "sequence", "decision": "block",
                  "conditions": {"ordered": {"first": ["secrets.read"], "then": ["net.*"], "within_seconds": 600}}}),
    );
    assert_eq!(v.len(), 30);
    v.into_iter()
        .enumerate()
        .map(|(i, x)| match serde_json::from_value::<PolicyDef>(x) {
            Ok(mut d) => {
                d.policy_id = format!("pol_{i}");
                d
            }
            Err(e) => panic!("bench policy {i}: {e}"),
        })
        .collect()
}

/// About `n` bytes of agent-ish text: prose, JSON-like tool arguments, numbers, dates.
fn text(n: usize) -> String {
    let chunk = "The agent searched the knowledge base for quarterly revenue figures and found \
        3 matching documents (ids 48213, 48214, 48290). {\"query\": \"revenue Q3 2025\", \"limit\": 10, \
        \"filters\": {\"region\": \"EMEA\", \"updated_after\": \"2025-10-01T00:00:00Z\"}} Summary: total \
        1,234,567.89 EUR across 12 accounts; contact the finance team before 17:30 on 2026-01-09. ";
    let mut s = String::with_capacity(n + chunk.len());
    while s.len() < n {
        s.push_str(chunk);
    }
    s.truncate(n);
    s
}

fn history() -> Vec<PastAction> {
    let types = [
        "db.read_users",
        "tool.search",
        "email.draft",
        "tool.search",
        "payment.quote",
    ];
    (0..40)
        .map(|i| PastAction {
            action_type: types[i % types.len()].to_owned(),
            at_ms: NOW - (40 - i as i64) * 15_000,
        })
        .collect()
}

/// A verified request at `NOW`, outside any session, with the agent's history complete.
fn input<'a>(request: &'a ActionRequest, agent: Option<&'a AgentFacts>, history: &'a [PastAction]) -> DecisionInput<'a> {
    DecisionInput {
        request,
        identity: &Identity::Verified,
        agent,
        agent_history: history,
        session_history: &[],
        agent_history_from_ms: i64::MIN,
        session_history_from_ms: i64::MIN,
        session: None,
        authority: Default::default(),
        now_ms: NOW,
    }
}

fn bench_decide(c: &mut Criterion) {
    let set = match CompiledPolicySet::compile(&policies()) {
        Ok(s) => s,
        Err(e) => panic!("compile: {e}"),
    };
    let settings = WorkspaceSettings::default();
    let agent = AgentFacts {
        agent_id: "agt_bench".into(),
        name: "bench".into(),
        trust_score: 80,
        scopes: vec![],
        permission_boundary: None,
    };
    let hist = history();
    let metadata = match json!({"framework": "langchain", "tool": "search", "recipient_count": 3, "country": "FR",
                                "payment": {"amount": "125.50", "currency": "EUR"}, "resource": "kb://finance/q3"})
    {
        Value::Object(m) => m,
        _ => unreachable!(),
    };
    let mut g = c.benchmark_group("decide");
    for (label, content) in [
        ("30_policies_1.5kb", Some(text(1536))),
        ("30_policies_no_content", None),
    ] {
        let request = ActionRequest {
            action_type: "tool.search".into(),
            content,
            content_redacted: false,
            metadata: metadata.clone(),
            session_id: None,
            refused_unread: None,
        };
        let input = input(&request, Some(&agent), &hist);
        g.bench_function(label, |b| {
            b.iter(|| decide(black_box(&input), black_box(&set), &settings))
        });
    }
    g.finish();

    c.bench_function("compile/30_policies", |b| {
        let defs = policies();
        b.iter(|| CompiledPolicySet::compile(black_box(&defs)).is_ok())
    });
}

/// `n` content policies of one pattern each, half of them case-insensitive, all
/// sharing a literal prefix the text holds (the worst case for reading the patterns one
/// by one: each finds its prefix and must look further).
fn content_policies(n: usize) -> Vec<PolicyDef> {
    (0..n)
        .map(|i| {
            let v = json!({"name": format!("pattern {i}"), "policy_type": "content_pattern", "decision": "block",
                           "conditions": {"patterns": [format!(r"quarterly\s+revenue\s+{i}\d+")], "case_insensitive": i % 2 == 0}});
            match serde_json::from_value::<PolicyDef>(v) {
                Ok(mut d) => {
                    d.policy_id = format!("pat_{i}");
                    d
                }
                Err(e) => panic!("content policy {i}: {e}"),
            }
        })
        .collect()
}

/// `n` content policies of one pattern each, half of them case-insensitive, whose prefix
/// literals the text does not hold (code names, ticket and key prefixes, cut to 8 bytes:
/// many share theirs): the prefilter rules them all out.
fn distinct_content_policies(n: usize) -> Vec<PolicyDef> {
    let words = ["codename", "ticket-", "acct_", "AKIA", "ghp_"];
    (0..n)
        .map(|i| {
            let v = json!({"name": format!("pattern {i}"), "policy_type": "content_pattern", "decision": "block",
                           "conditions": {"patterns": [format!(r"{}{i}\b", words[i % words.len()])], "case_insensitive": i % 2 == 0}});
            match serde_json::from_value::<PolicyDef>(v) {
                Ok(mut d) => {
                    d.policy_id = format!("pat_{i}");
                    d
                }
                Err(e) => panic!("content policy {i}: {e}"),
            }
        })
        .collect()
}

/// Workspaces with many content patterns: without a shared prefilter each distinct
/// pattern read the content on its own, so a decision's cost grew with their number
/// (see BENCHMARKS "Session 30" and "Session 31"). `shared_prefix`: every pattern's
/// literal is in the text (the prefilter rules none out); `distinct`: none is.
fn bench_many_patterns(c: &mut Criterion) {
    let settings = WorkspaceSettings::default();
    let mut g = c.benchmark_group("decide_content_patterns");
    g.sample_size(30);
    let scoped = |n: usize| -> Vec<PolicyDef> {
        // Each policy on an action type of its own: a decision asks about one pattern.
        let mut defs = distinct_content_policies(n);
        for (i, d) in defs.iter_mut().enumerate() {
            d.action_types = vec![if i == 0 { "tool.search".to_owned() } else { format!("tool.t{i}") }];
        }
        defs
    };
    // 1,000 policies of which `k` are in scope, on 1.5 KB and on 512 KiB: a field is
    // screened once more than 4 patterns ask about it (`FieldScreen`).
    for (k, size) in [(1usize, 1536usize), (4, 1536), (1, 512 * 1024), (4, 512 * 1024), (8, 512 * 1024)] {
        let mut defs = distinct_content_policies(1000);
        for (i, d) in defs.iter_mut().enumerate() {
            d.action_types = vec![if i < k { "tool.search".to_owned() } else { format!("tool.t{i}") }];
        }
        let set = CompiledPolicySet::compile(&defs).unwrap_or_else(|e| panic!("{e}"));
        let request = ActionRequest { action_type: "tool.search".into(), content: Some(text(size)), content_redacted: false, metadata: Default::default(), session_id: None, refused_unread: None };
        let input = input(&request, None, &[]);
        g.bench_function(BenchmarkId::new(format!("inscope{k}"), size), |b| b.iter(|| decide(black_box(&input), black_box(&set), &settings)));
    }
    for (label, n) in [("shared_prefix", 15usize), ("shared_prefix", 100), ("shared_prefix", 1000), ("distinct", 15), ("distinct", 100), ("distinct", 1000), ("scoped", 1000)] {
        let defs = match label {
            "distinct" => distinct_content_policies(n),
            "scoped" => scoped(n),
            _ => content_policies(n),
        };
        let set = match CompiledPolicySet::compile(&defs) {
            Ok(s) => s,
            Err(e) => panic!("compile: {e}"),
        };
        let request = ActionRequest {
            action_type: "tool.search".into(),
            content: Some(text(1536)),
            content_redacted: false,
            metadata: Default::default(),
            session_id: None,
            refused_unread: None,
        };
        let input = input(&request, None, &[]);
        g.bench_function(BenchmarkId::new(format!("{label}_1.5kb"), n), |b| b.iter(|| decide(black_box(&input), black_box(&set), &settings)));
    }
    g.finish();

    // What a policy write costs a workspace at the pattern limit: the whole set compiled
    // from nothing (start-up), or after the set in force (a write adding one pattern).
    let mut g = c.benchmark_group("compile_content_patterns");
    g.sample_size(10);
    let defs = content_policies(1000);
    let in_force = match CompiledPolicySet::compile(&defs[..999]) {
        Ok(s) => s,
        Err(e) => panic!("compile: {e}"),
    };
    g.bench_function("1000_from_nothing", |b| b.iter(|| CompiledPolicySet::compile(black_box(&defs)).is_ok()));
    g.bench_function("1000_after_999", |b| b.iter(|| CompiledPolicySet::compile_after(black_box(&defs), &in_force).is_ok()));
    // The same with literals of many kinds, so that the prefilter's automaton, built
    // again when the patterns in force change, is not trivial.
    let distinct = distinct_content_policies(1000);
    let in_force = match CompiledPolicySet::compile(&distinct[..999]) {
        Ok(s) => s,
        Err(e) => panic!("compile: {e}"),
    };
    g.bench_function("1000_distinct_after_999", |b| b.iter(|| CompiledPolicySet::compile_after(black_box(&distinct), &in_force).is_ok()));
    g.finish();
}

fn bench_pii(c: &mut Criterion) {
    let four = [Category::Email, Category::Phone, Category::CreditCard, Category::Ssn];
    let mut g = c.benchmark_group("pii_scan");
    for n in [1024usize, 10 * 1024] {
        let t = text(n);
        g.throughput(Throughput::Bytes(n as u64));
        g.bench_with_input(BenchmarkId::new("four_categories", n), &t, |b, t| {
            b.iter(|| pii::scan(black_box(t), &four))
        });
        g.bench_with_input(BenchmarkId::new("all_categories", n), &t, |b, t| {
            b.iter(|| pii::scan(black_box(t), &Category::ALL))
        });
    }
    g.finish();
}

criterion_group!(benches, bench_decide, bench_many_patterns, bench_pii);
criterion_main!(benches);
