//! A decision's answer, stored once. Most of what `POST /intercept` answers is also in
//! the decision's sealed vault entry (its verdict, outcome, ids, policies, identity,
//! time); a decision's row keeps only the rest, and reading the decision back joins the
//! two. So the row is a third of its former size, and what the API shows of a decision
//! is what was sealed.

use praetor_store::DecisionRow;
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
const DERIVED: [&str; 4] = ["ok", "authorisation_id", "session_id", "escalation_id"];

/// What a decision's row keeps of `answer`: the fields `entry` (the decision's vault
/// entry, as sealed) cannot give back. Should the two ever disagree, so that the answer
/// could not be rebuilt exactly, the whole answer is kept instead. (This runs for every
/// decision, so the check compares the given-back fields in place rather than
/// rebuilding the answer.)
pub fn stored(answer: &Map<String, Value>, entry: &Map<String, Value>) -> Map<String, Value> {
    if !entry_gives_back(answer, entry) {
        return answer.clone();
    }
    answer
        .iter()
        .filter(|(k, _)| !FROM_ENTRY.iter().any(|(field, _)| field == k) && !DERIVED.contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// Whether `rebuild(entry, rest)` gives back exactly the fields of `answer` that the
/// row leaves out: the `FROM_ENTRY` fields, and the `DERIVED` ones as `rebuild` makes
/// them (present in the answer exactly when it would add them).
fn entry_gives_back(answer: &Map<String, Value>, entry: &Map<String, Value>) -> bool {
    let copied = FROM_ENTRY.iter().all(|(field, from)| matches!((answer.get(*field), entry.get(*from)), (Some(a), Some(e)) if a == e));
    let Some(decision_id) = entry.get("decision_id").and_then(Value::as_str) else { return false };
    let derived = answer.get("ok") == Some(&json!(true))
        && answer.get("authorisation_id").and_then(Value::as_str) == Some(decision_id.replacen("dec_", "auth_", 1).as_str());
    let optional = ["session_id", "escalation_id"].iter().all(|f| answer.get(*f) == entry.get(*f).filter(|v| !v.is_null()));
    copied && derived && optional
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
/// `decision`, as rows written before answers were stored once and fallbacks do) is
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

fn rebuild(entry: &Map<String, Value>, rest: &Map<String, Value>) -> Option<Map<String, Value>> {
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
            "boundary_check": "within", "jurisdiction": null, "policy_set_hash": "ff", "created_at": "2026-12-05T10:00:00.000Z",
        }))
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
        let kept = stored(&answer(), &entry());
        let mut names: Vec<&str> = kept.keys().map(String::as_str).collect();
        names.sort_unstable();
        assert_eq!(names, ["boundary_check", "jurisdiction", "permission_scope", "policy_evaluated", "reasoning", "trust_score"]);
        assert_eq!(read_back(&Value::Object(kept), Some(&leaf(&entry()))), Ok(Value::Object(answer())));
    }

    #[test]
    fn a_session_and_an_escalation_come_back_from_the_entry() {
        let mut e = entry();
        e.insert("session_id".into(), json!("sess_1"));
        e.insert("escalation_id".into(), json!("esc_1"));
        let mut a = answer();
        a.insert("session_id".into(), json!("sess_1"));
        a.insert("escalation_id".into(), json!("esc_1"));
        a.insert("escalation".into(), json!({ "escalation_id": "esc_1", "status": "pending" }));
        let kept = stored(&a, &e);
        assert!(!kept.contains_key("session_id") && !kept.contains_key("escalation_id") && kept.contains_key("escalation"));
        assert_eq!(read_back(&Value::Object(kept), Some(&leaf(&e))), Ok(Value::Object(a)));
    }

    #[test]
    fn an_answer_the_entry_does_not_match_is_kept_whole() {
        // A field the answer has differently from the entry (here a request's chain
        // field of the same name), or one the rebuild would add that the answer lacks.
        let mut a = answer();
        a.insert("decision_id".into(), json!("dec_other"));
        assert_eq!(stored(&a, &entry()), a);
        let mut e = entry();
        e.insert("session_id".into(), json!("sess_1"));
        assert_eq!(stored(&answer(), &e), answer(), "the answer has no session_id");
        let mut short = entry();
        short.remove("policies");
        assert_eq!(stored(&answer(), &short), answer());
        let mut escalated = answer();
        escalated.insert("escalation_id".into(), json!("esc_1"));
        assert_eq!(stored(&escalated, &entry()), escalated, "the entry names no escalation");
        let mut other_auth = answer();
        other_auth.insert("authorisation_id".into(), json!("auth_other"));
        assert_eq!(stored(&other_auth, &entry()), other_auth);
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
        let kept = Value::Object(stored(&answer(), &entry()));
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
        let kept = Value::Object(stored(&answer(), &entry()));
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
