//! A decision's answer, stored once. Most of what `POST /intercept` answers is also in
//! the decision's sealed vault entry (its verdict, outcome, ids, policies, identity,
//! time); a decision's row keeps only the rest, and reading the decision back joins the
//! two. So the row is a third of its former size, and what the API shows of a decision
//! is what was sealed.
//!
//! The answer is typed ([`Answer`]): [`FromEntry`] holds the fields the entry gives
//! back, [`Rest`] the row's part. A field belongs to exactly one of them, and a test
//! holds `FromEntry` to the fields [`rebuild`] takes from the entry.

use praetor_core::{BoundaryCheck, EvalError, Identity, Triggered};
use praetor_store::DecisionRow;
use serde::Serialize;
use serde_json::{Map, Value, json};

/// Answer fields read back from the sealed entry: (answer field, entry field).
const FROM_ENTRY: [(&str, &str); 10] = [
    ("decision", "decision"),
    ("outcome", "outcome"),
    ("policy_result", "outcome"),
    ("decision_id", "decision_id"),
    ("policies_triggered", "policies"),
    ("agent_id", "agent_id"),
    ("action_type", "action_type"),
    ("identity", "identity"),
    ("policy_set_hash", "policy_set_hash"),
    ("created_at", "time"),
];

/// Fields made from the entry's: `ok`, `authorisation_id`, and `session_id` and
/// `escalation_id` when the entry has them.
#[cfg(test)]
const DERIVED: [&str; 4] = ["ok", "authorisation_id", "session_id", "escalation_id"];

/// What `POST /intercept` answers for one decision (wire §2.2 plus the authorisation
/// object's fields). It is typed and serialised once, straight into the response. Built
/// as a JSON map, filtered and cloned for the row, serialised and dropped, the answer
/// cost up to a sixth of the server's instructions per decision; typed, about 6 % fewer
/// (BENCHMARKS.md, "Session 23").
#[derive(Debug, Serialize)]
pub struct Answer {
    #[serde(flatten)]
    pub sealed: FromEntry,
    #[serde(flatten)]
    pub rest: Rest,
    #[serde(flatten)]
    pub receipt: Receipt,
}

/// The fields of an answer its decision's sealed entry gives back ([`rebuild`]: the
/// `FROM_ENTRY` fields and the derived ones). Made from the same values as the entry
/// (`pipeline::vault_entry`), so they are the entry's by construction; `record` checks it
/// in debug builds.
#[derive(Debug, Serialize)]
pub struct FromEntry {
    pub ok: bool,
    pub decision: &'static str,
    pub outcome: &'static str,
    pub policy_result: &'static str,
    pub decision_id: String,
    pub authorisation_id: String,
    pub policies_triggered: Vec<Triggered>,
    pub agent_id: Option<String>,
    pub action_type: String,
    pub identity: Identity,
    pub policy_set_hash: String,
    pub created_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub session_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub escalation_id: Option<String>,
}

/// The rest of an answer: what the decision's row stores ([`Rest::to_row`]).
#[derive(Debug, Serialize)]
pub struct Rest {
    pub reasoning: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub shadow_policies: Vec<ShadowAnswer>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<EvalError>,
    pub trust_score: Option<u8>,
    pub permission_scope: Vec<String>,
    pub policy_evaluated: usize,
    pub boundary_check: BoundaryCheck,
    pub jurisdiction: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub escalation: Option<OpenedEscalation>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub delegation: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub breakglass_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub overridden_policies: Option<Vec<Triggered>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub covered_by: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub approved_by: Option<ApprovedBy>,
    /// The request's chain fields (`chain_id`, `chain_step`, `parent_decision_id`,
    /// `grant_id`), as given.
    #[serde(flatten)]
    pub chain: Map<String, Value>,
}

impl Rest {
    /// The row's body: a JSON object of these fields.
    pub fn to_row(&self) -> Value {
        serde_json::to_value(self).unwrap_or_else(|e| json!({ "read_error": format!("the answer could not be encoded: {e}") }))
    }
}

/// The row keeps only the answer's `rest`, and reading the decision back joins it with
/// the sealed entry: that must give back the answer exactly. It does by construction
/// (`pipeline::vault_entry` takes the shared fields from `FromEntry`); debug builds, and
/// so every test that makes a decision, check it.
pub fn debug_assert_gives_back(answer: &Answer, entry: &Map<String, Value>, stored: &Value) {
    if cfg!(debug_assertions) {
        let rebuilt = stored.as_object().and_then(|rest| rebuild(entry, rest));
        let answered = serde_json::to_value(answer).ok();
        assert_eq!(rebuilt.map(Value::Object), answered, "the sealed entry and the stored rest do not give the answer back");
    }
}

/// A shadow policy that matched: what it would have decided.
#[derive(Debug, Serialize)]
pub struct ShadowAnswer {
    pub policy_id: String,
    pub name: String,
    pub decision: String,
    pub reason: String,
    pub would_decide: &'static str,
    pub would_change: bool,
}

#[derive(Debug, Serialize)]
pub struct OpenedEscalation {
    pub escalation_id: String,
    pub status: &'static str,
    pub expires_at: String,
}

#[derive(Debug, Serialize)]
pub struct ApprovedBy {
    pub escalation_id: String,
    pub approver: Option<String>,
}

/// Where the decision was sealed and how long it took: known once it is committed.
#[derive(Debug, Default, Serialize)]
pub struct Receipt {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vault_entry_id: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub leaf_hash: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub latency_ms: Option<f64>,
}

/// A stored decision read back ([`read`]).
#[derive(Debug, PartialEq)]
pub struct Joined {
    /// The answer, as far as it can be shown, with `read_error` saying why when part
    /// of it cannot.
    pub answer: Value,
    /// The row departs from its sealed entry, so nothing of the row's own is shown:
    /// not the rest of its answer, nor its content.
    pub row_withheld: bool,
}

/// A stored decision's answer, with its sealed entry: a whole answer (it has
/// `decision`: rows written before answers were stored once, and rows that earlier
/// versions kept whole because the entry could not give their answer back) is
/// returned as it is; the rest of one is joined with the entry. A row that departs
/// from its entry ([`DecisionRow::departs_from`]: changed after it was sealed) shows
/// only what the entry gives back, and `read_error` says why. `Err` says why the row
/// cannot be compared with an entry (it has none, or one that cannot be read) or
/// joined with it (the entry lacks fields): the caller shows the row, with that reason.
pub fn read(row: &DecisionRow) -> Result<Joined, String> {
    let entry = match row.sealed_leaf.as_deref().map(serde_json::from_slice::<Map<String, Value>>) {
        Some(Ok(entry)) => entry,
        None => return Err("the decision has no sealed entry to join its answer with".to_owned()),
        Some(Err(e)) => return Err(format!("the decision's sealed entry cannot be read ({})", praetor_store::unreadable_json(&e))),
    };
    if let Some(why) = row.departs_from(&entry) {
        // What the entry seals of the answer, as much of it as the entry holds (it may
        // be no decision's entry at all).
        let mut sealed = rebuild(&entry, &Map::new())
            .unwrap_or_else(|| FROM_ENTRY.iter().filter_map(|(field, from)| Some(((*field).to_owned(), entry.get(*from)?.clone()))).collect());
        if let Some(unreadable) = row.body.get("read_error").and_then(Value::as_str) {
            praetor_store::add_read_error(&mut sealed, unreadable.to_owned());
        }
        praetor_store::add_read_error(&mut sealed, format!("the decision's row does not match its sealed entry: {why}; only what was sealed is shown"));
        return Ok(Joined { answer: Value::Object(sealed), row_withheld: true });
    }
    let answer = match &row.body {
        Value::Object(rest) if !rest.contains_key("decision") => {
            Value::Object(rebuild(&entry, rest).ok_or_else(|| "the decision's sealed entry lacks fields of its answer".to_owned())?)
        }
        whole => whole.clone(),
    };
    Ok(Joined { answer, row_withheld: false })
}

/// The answer `entry` and `rest` (a row's body) give back; `None` if the entry lacks one
/// of its fields.
pub fn rebuild(entry: &Map<String, Value>, rest: &Map<String, Value>) -> Option<Map<String, Value>> {
    let mut answer = rest.clone();
    for (field, from) in FROM_ENTRY {
        answer.insert(field.to_owned(), entry.get(from)?.clone());
    }
    let decision_id = entry.get("decision_id")?.as_str()?;
    answer.insert("ok".into(), json!(true));
    answer.insert("authorisation_id".into(), json!(decision_id.replacen("dec_", "auth_", 1)));
    for field in ["session_id", "escalation_id"] {
        if let Some(v) = entry.get(field).filter(|v| !v.is_null()) {
            answer.insert(field.to_owned(), v.clone());
        }
    }
    Some(answer)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => panic!("not an object"),
        }
    }

    fn entry() -> Map<String, Value> {
        map(json!({
            "kind": "decision", "time": "2026-12-05T10:00:00.000Z", "workspace_id": "ws_1", "decision_id": "dec_01",
            "agent_id": "agt_1", "session_id": null, "action_type": "email.send", "content_sha256": praetor_core::sha256_hex(b"hi"),
            "decision": "block", "outcome": "refused", "policies": [{ "policy_id": "pol_1", "name": "n", "decision": "block", "reason": "r" }],
            "policy_set_hash": "ff", "identity": { "result": "verified" }, "approver": null, "seq": 7,
        }))
    }

    fn answer() -> Map<String, Value> {
        map(json!({
            "ok": true, "decision": "block", "outcome": "refused", "policy_result": "refused", "decision_id": "dec_01",
            "authorisation_id": "auth_01", "reasoning": "blocked by n", "agent_id": "agt_1", "action_type": "email.send",
            "policies_triggered": [{ "policy_id": "pol_1", "name": "n", "decision": "block", "reason": "r" }],
            "trust_score": 70, "identity": { "result": "verified" }, "permission_scope": ["email.*"], "policy_evaluated": 3,
            "boundary_check": "within_scope", "jurisdiction": null, "policy_set_hash": "ff", "created_at": "2026-12-05T10:00:00.000Z",
        }))
    }

    /// `answer()`, typed as `record` makes it.
    fn typed() -> Answer {
        let triggered = Triggered { policy_id: "pol_1".into(), name: "n".into(), decision: "block".into(), reason: "r".into() };
        Answer {
            sealed: FromEntry {
                ok: true, decision: "block", outcome: "refused", policy_result: "refused", decision_id: "dec_01".into(),
                authorisation_id: "auth_01".into(), policies_triggered: vec![triggered], agent_id: Some("agt_1".into()),
                action_type: "email.send".into(), identity: Identity::Verified, policy_set_hash: "ff".into(),
                created_at: "2026-12-05T10:00:00.000Z".into(), session_id: None, escalation_id: None,
            },
            rest: Rest {
                reasoning: "blocked by n".into(), shadow_policies: vec![], errors: vec![], trust_score: Some(70),
                permission_scope: vec!["email.*".into()], policy_evaluated: 3, boundary_check: BoundaryCheck::WithinScope,
                jurisdiction: None, escalation: None, delegation: None, breakglass_id: None, overridden_policies: None,
                covered_by: None, approved_by: None, chain: Map::new(),
            },
            receipt: Receipt::default(),
        }
    }

    /// What the row keeps of `typed()`.
    fn kept() -> Value {
        typed().rest.to_row()
    }

    fn leaf(e: &Map<String, Value>) -> Vec<u8> {
        serde_json::to_vec(e).unwrap()
    }

    /// The row `entry()` seals (in the session `leaf` names, if any), holding `body`,
    /// read back with `leaf`.
    fn row(body: &Value, leaf: Option<&[u8]>) -> DecisionRow {
        let text = serde_json::to_string(body).unwrap();
        let session_id = leaf.and_then(|l| serde_json::from_slice::<Value>(l).ok()).and_then(|e| e["session_id"].as_str().map(str::to_owned));
        DecisionRow {
            decision_id: "dec_01".into(), workspace_id: "ws_1".into(), agent_id: Some("agt_1".into()), session_id,
            action_type: "email.send".into(), decision: "block".into(), created_at: 1_796_464_800_000, vault_seq: Some(7),
            content: Some("hi".into()), body: body.clone(), sealed_leaf: leaf.map(<[u8]>::to_vec),
            digests: Some(praetor_store::RowDigests::of(&text, Some("hi"))),
        }
    }

    /// The answer `read` gives for `body` with `leaf`, or why it cannot.
    fn read_back(body: &Value, leaf: Option<&[u8]>) -> Result<Value, String> {
        let joined = read(&row(body, leaf))?;
        assert!(!joined.row_withheld, "{joined:?}");
        Ok(joined.answer)
    }

    #[test]
    fn the_row_keeps_only_what_the_entry_cannot_give_back_and_reads_back_whole() {
        assert_eq!(serde_json::to_value(typed()).unwrap(), Value::Object(answer()), "the typed answer is the wire's");
        let kept = kept();
        let mut names: Vec<&str> = kept.as_object().unwrap().keys().map(String::as_str).collect();
        names.sort_unstable();
        assert_eq!(names, ["boundary_check", "jurisdiction", "permission_scope", "policy_evaluated", "reasoning", "trust_score"]);
        assert_eq!(read_back(&kept, Some(&leaf(&entry()))), Ok(Value::Object(answer())));
        // Once committed, the answer also says where it was sealed (not stored: the row
        // has its own `vault_seq`).
        let mut sent = typed();
        sent.receipt = Receipt { vault_entry_id: Some(7), leaf_hash: Some("ab".into()), latency_ms: Some(0.25) };
        let sent = serde_json::to_value(sent).unwrap();
        assert_eq!((&sent["vault_entry_id"], &sent["leaf_hash"], &sent["latency_ms"]), (&json!(7), &json!("ab"), &json!(0.25)));
        assert_eq!(sent["decision"], "block");
    }

    /// `typed()` with every optional field set, and the four chain fields.
    fn full() -> Answer {
        let mut a = typed();
        let t = |id: &str| Triggered { policy_id: id.into(), name: "n".into(), decision: "block".into(), reason: "r".into() };
        a.sealed.session_id = Some("sess_1".into());
        a.sealed.escalation_id = Some("esc_1".into());
        a.rest.shadow_policies = vec![ShadowAnswer {
            policy_id: "pol_s".into(), name: "s".into(), decision: "allow".into(), reason: "r".into(), would_decide: "allow", would_change: true,
        }];
        a.rest.errors = vec![EvalError { policy_id: "pol_e".into(), message: "bad".into() }];
        a.rest.escalation = Some(OpenedEscalation { escalation_id: "esc_1".into(), status: "pending", expires_at: "2026-12-05T11:00:00.000Z".into() });
        a.rest.delegation = Some(json!({ "grant_id": "gr_1" }));
        a.rest.breakglass_id = Some("bg_1".into());
        a.rest.overridden_policies = Some(vec![t("pol_o")]);
        a.rest.covered_by = Some("gr_2".into());
        a.rest.approved_by = Some(ApprovedBy { escalation_id: "esc_0".into(), approver: None });
        for (k, v) in [("chain_id", json!("ch_1")), ("chain_step", json!(2)), ("parent_decision_id", json!("dec_00")), ("grant_id", json!("gr_1"))] {
            a.rest.chain.insert(k.into(), v);
        }
        a
    }

    /// Every field `FromEntry` answers is one `rebuild` gives back from the entry, and
    /// no field of `Rest` is: else the row would lose it, or keep what it need not.
    #[test]
    fn the_fields_given_back_are_the_ones_from_the_entry() {
        let a = full();
        let from_entry = serde_json::to_value(&a.sealed).unwrap();
        let mut names: Vec<&str> = from_entry.as_object().unwrap().keys().map(String::as_str).collect();
        names.sort_unstable();
        let mut expected: Vec<&str> = FROM_ENTRY.iter().map(|(field, _)| *field).chain(DERIVED).collect();
        expected.sort_unstable();
        assert_eq!(names, expected);
        let kept = a.rest.to_row();
        assert_eq!(kept.as_object().unwrap().len(), 6 + 8 + 4, "every field of `Rest` and the chain: {kept}");
        for name in kept.as_object().unwrap().keys() {
            assert!(!expected.contains(&name.as_str()), "{name} is stored and given back");
        }
    }

    /// The wire's answer (xybern-wire.md §2.2 and the authorisation object): which fields
    /// are always there, `null` when unknown, and which only when they apply.
    #[test]
    fn the_answer_on_the_wire() {
        let mut a = typed();
        a.sealed.agent_id = None;
        a.rest.trust_score = None;
        let minimal = serde_json::to_value(&a).unwrap();
        assert_eq!(minimal, json!({
            "ok": true, "decision": "block", "outcome": "refused", "policy_result": "refused", "decision_id": "dec_01",
            "authorisation_id": "auth_01", "reasoning": "blocked by n", "agent_id": null, "action_type": "email.send",
            "policies_triggered": [{ "policy_id": "pol_1", "name": "n", "decision": "block", "reason": "r" }],
            "trust_score": null, "identity": { "result": "verified" }, "permission_scope": ["email.*"], "policy_evaluated": 3,
            "boundary_check": "within_scope", "jurisdiction": null, "policy_set_hash": "ff", "created_at": "2026-12-05T10:00:00.000Z",
        }));
        let mut sent = full();
        sent.receipt = Receipt { vault_entry_id: Some(7), leaf_hash: Some("ab".into()), latency_ms: Some(0.25) };
        let sent = serde_json::to_value(&sent).unwrap();
        let extra: Map<String, Value> = sent.as_object().unwrap().iter().filter(|(k, _)| !minimal.as_object().unwrap().contains_key(*k)).map(|(k, v)| (k.clone(), v.clone())).collect();
        assert_eq!(Value::Object(extra), json!({
            "session_id": "sess_1", "escalation_id": "esc_1",
            "shadow_policies": [{ "policy_id": "pol_s", "name": "s", "decision": "allow", "reason": "r", "would_decide": "allow", "would_change": true }],
            "errors": [{ "policy_id": "pol_e", "message": "bad" }],
            "escalation": { "escalation_id": "esc_1", "status": "pending", "expires_at": "2026-12-05T11:00:00.000Z" },
            "delegation": { "grant_id": "gr_1" }, "breakglass_id": "bg_1",
            "overridden_policies": [{ "policy_id": "pol_o", "name": "n", "decision": "block", "reason": "r" }],
            "covered_by": "gr_2", "approved_by": { "escalation_id": "esc_0", "approver": null },
            "chain_id": "ch_1", "chain_step": 2, "parent_decision_id": "dec_00", "grant_id": "gr_1",
            "vault_entry_id": 7, "leaf_hash": "ab", "latency_ms": 0.25,
        }));
    }

    /// The check every debug decision runs can fail: an entry that says otherwise than
    /// the answer.
    #[test]
    #[should_panic(expected = "do not give the answer back")]
    fn an_entry_that_disagrees_with_the_answer_fails_the_check() {
        let mut e = entry();
        e.insert("outcome".into(), json!("allowed"));
        debug_assert_gives_back(&typed(), &e, &kept());
    }

    #[test]
    fn an_entry_that_agrees_passes_the_check() {
        let mut e = entry();
        for (k, v) in [("session_id", "sess_1"), ("escalation_id", "esc_1")] {
            e.insert(k.into(), json!(v));
        }
        let a = full();
        debug_assert_gives_back(&a, &e, &a.rest.to_row());
    }

    #[test]
    fn a_session_and_an_escalation_come_back_from_the_entry() {
        let mut e = entry();
        e.insert("session_id".into(), json!("sess_1"));
        e.insert("escalation_id".into(), json!("esc_1"));
        let mut a = typed();
        a.sealed.session_id = Some("sess_1".into());
        a.sealed.escalation_id = Some("esc_1".into());
        a.rest.escalation = Some(OpenedEscalation { escalation_id: "esc_1".into(), status: "pending", expires_at: "2026-12-05T11:00:00.000Z".into() });
        a.rest.chain.insert("chain_id".into(), json!("ch_1"));
        let kept = a.rest.to_row();
        let kept_map = kept.as_object().unwrap();
        assert!(!kept_map.contains_key("session_id") && !kept_map.contains_key("escalation_id"));
        assert!(kept_map.contains_key("escalation") && kept_map.contains_key("chain_id"));
        assert_eq!(read_back(&kept, Some(&leaf(&e))), Ok(serde_json::to_value(&a).unwrap()));
    }

    #[test]
    fn whole_answers_read_as_stored() {
        let whole = Value::Object(answer());
        assert_eq!(read_back(&whole, Some(&leaf(&entry()))), Ok(whole.clone()), "a row written whole is not joined");
        // Not even where the entry says otherwise (a row kept whole because the two
        // disagreed, or one written before answers were stored once).
        let mut other = entry();
        other.insert("outcome".into(), json!("allowed"));
        other.insert("reasoning".into(), json!("from the entry"));
        assert_eq!(read_back(&whole, Some(&leaf(&other))), Ok(whole));
    }

    #[test]
    fn a_row_that_cannot_be_joined_says_why() {
        let kept = kept();
        let mut short = entry();
        short.remove("policies");
        for (leaf, why) in [(None, "no sealed entry"), (Some(b"{\"decision\": no".to_vec()), "cannot be read (Syntax error at line 1, column 15)"), (Some(leaf(&short)), "lacks fields")] {
            let err = read_back(&kept, leaf.as_deref()).unwrap_err();
            assert!(err.contains(why), "{err}");
        }
        // The leaf's text is not quoted (it may hold an action's metadata).
        let err = read_back(&kept, Some(br#""a secret""#)).unwrap_err();
        assert!(!err.contains("secret"), "{err}");
    }

    /// A row changed after it was sealed shows what the entry seals, says why, and
    /// withholds the rest: whole answers (which hold every field) included.
    #[test]
    fn a_row_that_departs_from_its_entry_shows_only_what_was_sealed() {
        let kept = kept();
        let mut sealed = entry();
        sealed.insert("answer_sha256".into(), json!(row(&kept, None).digests.unwrap().body_sha256));
        assert_eq!(read_back(&kept, Some(&leaf(&sealed))), Ok(Value::Object(answer())), "an honest row reads whole");
        let mut reworded = kept.clone();
        reworded["reasoning"] = json!("nothing to see");
        let mut changed_content = row(&kept, Some(&leaf(&sealed)));
        changed_content.content = Some("ho".into());
        changed_content.digests = None; // made from what the row now holds
        let mut other_verdict = row(&Value::Object(answer()), Some(&leaf(&entry())));
        other_verdict.decision = "allow".into();
        for (changed, why) in [
            (row(&reworded, Some(&leaf(&sealed))), "its stored answer is not the one sealed"),
            (changed_content, "its content is not the content sealed"),
            (other_verdict, "its `decision` is not the one sealed"),
        ] {
            let joined = read(&changed).unwrap();
            assert!(joined.row_withheld, "{why}: {joined:?}");
            let shown = joined.answer;
            assert!(shown["read_error"].as_str().unwrap().contains(why), "{shown}");
            assert_eq!((&shown["decision"], &shown["decision_id"], &shown["reasoning"]), (&json!("block"), &json!("dec_01"), &Value::Null), "{shown}");
        }
        // Pointed at an entry that is no decision's: nothing of the row, nor a rebuild.
        let elsewhere = read(&row(&kept, Some(br#"{"kind":"session.started","time":"2026-12-05T10:00:00.000Z"}"#))).unwrap();
        assert!(elsewhere.row_withheld);
        assert_eq!(elsewhere.answer, json!({ "created_at": "2026-12-05T10:00:00.000Z",
            "read_error": "the decision's row does not match its sealed entry: its vault entry is not a decision's; only what was sealed is shown" }));
    }

    /// A whole answer without an entry to compare it with is not shown as if sealed.
    #[test]
    fn a_whole_answer_without_its_entry_says_why() {
        let whole = Value::Object(answer());
        assert_eq!(read_back(&whole, None), Err("the decision has no sealed entry to join its answer with".to_owned()));
        assert!(read_back(&whole, Some(b"{")).unwrap_err().starts_with("the decision's sealed entry cannot be read"));
    }
}
