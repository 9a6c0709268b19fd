//! Mapping between records and rows, for both backends: applying mutations and
//! reading back.

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::model::*;
use crate::sql::{Arg, Db, Row, ToArg, args};
use crate::{DecisionEntries, Mutation, Result, Snapshot, StoreError};

fn to_json<T: Serialize>(v: &T) -> Result<String> {
    serde_json::to_string(v).map_err(|e| StoreError::Corrupt(format!("cannot encode record: {e}")))
}

fn from_json<T: DeserializeOwned>(s: &str, what: &str) -> Result<T> {
    serde_json::from_str(s).map_err(|e| StoreError::Corrupt(format!("{what}: {e}")))
}

/// What a violation's row holds as its body when its decision's sealed entry gives the
/// body back ([`Violation::rebuilds_from`]): no text, which no JSON body can be, so a
/// build that does not know this fails to read it rather than show it wrong.
const VIOLATION_BODY_IN_ENTRY: &str = "";

/// The JSON text of a mutation's large body (a decision's answer, a violation, an
/// authority object), so that it can be made before the transaction reaches the writer
/// thread. `None` for the other mutations. A violation that its decision's entry,
/// sealed in the same transaction (`decisions`), gives back whole stores none of it.
pub fn encode_body(m: &Mutation, decisions: &DecisionEntries<'_>) -> Option<Result<String>> {
    match m {
        Mutation::InsertDecision { row, .. } => Some(to_json(&row.body)),
        Mutation::InsertViolation(v)
            if decisions.get(&(v.workspace_id.as_str(), v.decision_id.as_str())).is_some_and(|e| v.rebuilds_from(e)) =>
        {
            Some(Ok(VIOLATION_BODY_IN_ENTRY.to_owned()))
        }
        Mutation::InsertViolation(v) => Some(to_json(&v.body)),
        Mutation::PutObject(o) => Some(to_json(&o.body)),
        _ => None,
    }
}

/// `encoded`, or the body encoded now.
fn body_text<'a>(encoded: Option<&'a str>, body: &serde_json::Value) -> Result<std::borrow::Cow<'a, str>> {
    Ok(match encoded {
        Some(text) => std::borrow::Cow::Borrowed(text),
        None => std::borrow::Cow::Owned(to_json(body)?),
    })
}

/// Write `m`. `seals` are the sequence numbers of the transaction's vault entries;
/// `encoded` is `encode_body(m)` if it was made beforehand.
pub fn apply(db: &dyn Db, m: &Mutation, seals: &[u64], encoded: Option<&str>) -> Result<()> {
    match m {
        Mutation::InsertWorkspace(w) => {
            db.execute(
                "INSERT INTO workspaces (workspace_id, name, settings, hmac_secret, created_at) VALUES (?1,?2,?3,?4,?5)",
                args![w.workspace_id, w.name, to_json(&w.settings)?, w.hmac_secret, w.created_at],
            )?;
        }
        Mutation::PutWorkspaceSettings { workspace_id, settings } => {
            db.execute(
                "UPDATE workspaces SET settings = ?2 WHERE workspace_id = ?1",
                args![workspace_id, to_json(settings)?],
            )?;
        }
        Mutation::PatchWorkspaceSettings { workspace_id, patch } => {
            let stored: String = db
                .value("SELECT settings FROM workspaces WHERE workspace_id = ?1", args![workspace_id])?
                .ok_or_else(|| StoreError::Corrupt(format!("workspace `{workspace_id}` does not exist")))?;
            let mut merged: serde_json::Map<String, serde_json::Value> = from_json(&stored, "workspace settings")?;
            merged.extend(patch.clone());
            db.execute("UPDATE workspaces SET settings = ?2 WHERE workspace_id = ?1", args![workspace_id, to_json(&merged)?])?;
        }
        Mutation::InsertApiKey(k) => {
            let scopes: Vec<&str> = k.scopes.iter().map(|s| s.as_str()).collect();
            db.execute(
                "INSERT INTO api_keys (key_id, workspace_id, key_hash, prefix, scopes, agent_id, label, created_at, revoked_at)
                 VALUES (?1,?2,?3,?4,?5,?6,?7,?8,?9)",
                args![k.key_id, k.workspace_id, k.key_hash, k.prefix, to_json(&scopes)?, k.agent_id, k.label, k.created_at, k.revoked_at],
            )?;
        }
        Mutation::RevokeApiKey { workspace_id, key_id, at } => {
            db.execute(
                "UPDATE api_keys SET revoked_at = ?3 WHERE workspace_id = ?1 AND key_id = ?2 AND revoked_at IS NULL",
                args![workspace_id, key_id, at],
            )?;
        }
        Mutation::PutAgent(a) => {
            db.execute(
                "INSERT INTO agents (workspace_id, agent_id, name, framework, description, capabilities, scopes,
                    permission_boundary, require_signature, trust_score, clean_streak, is_active, attributes,
                    created_at, updated_at, last_seen_at, etag)
                 VALUES (?1,?2,?3,?4,?5,?6,?7,?8,?9,?10,?11,?12,?13,?14,?15,?16,?17)
                 ON CONFLICT (workspace_id, agent_id) DO UPDATE SET
                    name = excluded.name, framework = excluded.framework, description = excluded.description,
                    capabilities = excluded.capabilities, scopes = excluded.scopes,
                    permission_boundary = excluded.permission_boundary, require_signature = excluded.require_signature,
                    is_active = excluded.is_active, attributes = excluded.attributes, updated_at = excluded.updated_at,
                    etag = excluded.etag",
                args![
                    a.workspace_id, a.agent_id, a.name, a.framework, a.description, to_json(&a.capabilities)?,
                    to_json(&a.scopes)?, a.permission_boundary.as_ref().map(to_json).transpose()?,
                    a.require_signature, a.trust_score, a.clean_streak, a.is_active, to_json(&a.attributes)?,
                    a.created_at, a.updated_at, a.last_seen_at, a.etag
                ],
            )?;
        }
        Mutation::SetTrust { workspace_id, agent_id, trust_score } => {
            db.execute(
                "UPDATE agents SET trust_score = ?3, clean_streak = 0 WHERE workspace_id = ?1 AND agent_id = ?2",
                args![workspace_id, agent_id, trust_score],
            )?;
        }
        Mutation::InsertCredential(c) => {
            db.execute(
                "INSERT INTO credentials (credential_id, workspace_id, agent_id, algorithm, public_key, did, created_at, expires_at, revoked_at, rotated)
                 VALUES (?1,?2,?3,?4,?5,?6,?7,?8,?9,?10)",
                args![c.credential_id, c.workspace_id, c.agent_id, c.algorithm, c.public_key, c.did, c.created_at, c.expires_at, c.revoked_at, c.rotated],
            )?;
        }
        Mutation::PutPolicy(p) => {
            db.execute(
                "INSERT INTO policies (workspace_id, policy_id, def, created_at, updated_at) VALUES (?1,?2,?3,?4,?5)
                 ON CONFLICT (workspace_id, policy_id) DO UPDATE SET def = excluded.def, updated_at = excluded.updated_at",
                args![p.workspace_id, p.def.policy_id, to_json(&p.def)?, p.created_at, p.updated_at],
            )?;
        }
        Mutation::DeletePolicy { workspace_id, policy_id } => {
            db.execute(
                "DELETE FROM policies WHERE workspace_id = ?1 AND policy_id = ?2",
                args![workspace_id, policy_id],
            )?;
        }
        Mutation::InsertDecision { row, seal } => {
            let seq = match seal {
                Some(i) => Some(*seals.get(*i).ok_or_else(|| {
                    StoreError::Corrupt(format!("decision refers to seal {i} the transaction does not have"))
                })? as i64),
                None => None,
            };
            db.insert_row_later("INSERT INTO decisions (workspace_id, decision_id, agent_id, action_type, decision, created_at, vault_seq, content, body, session_id)
                 VALUES (?1,?2,?3,?4,?5,?6,?7,?8,?9,?10)", args![row.workspace_id, row.decision_id, row.agent_id, row.action_type, row.decision, row.created_at, seq, row.content, body_text(encoded, &row.body)?.as_ref(), row.session_id],
            )?;
        }
        Mutation::PutSession(x) => {
            db.execute_later("INSERT INTO sessions (workspace_id, session_id, agent_id, credential_id, label, budgets, consumed, status,
                    kill_reason, attributes, created_at, expires_at, closed_at, version, etag)
                 VALUES (?1,?2,?3,?4,?5,?6,?7,?8,?9,?10,?11,?12,?13,?14,?15)
                 ON CONFLICT (workspace_id, session_id) DO UPDATE SET
                    consumed = excluded.consumed, status = excluded.status, kill_reason = excluded.kill_reason,
                    closed_at = excluded.closed_at, version = excluded.version, etag = excluded.etag
                 WHERE excluded.version > sessions.version", args![
                x.workspace_id, x.session_id, x.agent_id, x.credential_id, x.label, to_json(&x.budgets)?,
                to_json(&x.consumed)?, x.status.as_str(), x.kill_reason, to_json(&x.attributes)?, x.created_at,
                x.expires_at, x.closed_at, x.version as i64, x.etag
            ], None)?;
        }
        Mutation::PutObject(o) => {
            // Each write moves an object on by exactly one version: a new object comes
            // in at version 1, and a change at the version right after the stored one.
            // One not above the stored version was made from a stale copy (another node
            // moved the object on); one further above, or a new object past version 1,
            // was made on top of a change that never committed (a decision on an
            // approval whose own commit failed, a settlement of an escalation whose
            // opening was refused). Either is refused rather than dropped, so the
            // caller reloads and decides again.
            let stale = || StoreError::Stale(format!("{} `{}`", o.kind, o.object_id));
            let body = body_text(encoded, &o.body)?;
            if o.version == 1 {
                db.execute_later("INSERT INTO objects (workspace_id, kind, object_id, agent_id, status, body, created_at, updated_at, version)
                     VALUES (?1,?2,?3,?4,?5,?6,?7,?8,?9) ON CONFLICT (workspace_id, kind, object_id) DO NOTHING", args![
                    o.workspace_id, o.kind, o.object_id, o.agent_id, o.status, body.as_ref(), o.created_at, o.updated_at, o.version as i64
                ], Some(&stale))?;
            } else {
                db.execute_later("UPDATE objects SET agent_id = ?4, status = ?5, body = ?6, updated_at = ?7, version = ?8
                     WHERE workspace_id = ?1 AND kind = ?2 AND object_id = ?3 AND version = ?9", args![
                    o.workspace_id, o.kind, o.object_id, o.agent_id, o.status, body.as_ref(), o.updated_at, o.version as i64, o.version as i64 - 1
                ], Some(&stale))?;
            }
        }
        Mutation::InsertViolation(v) => {
            db.insert_row_later("INSERT INTO violations (workspace_id, violation_id, rule_id, severity, agent_id, decision_id, at, body)
                 VALUES (?1,?2,?3,?4,?5,?6,?7,?8)", args![v.workspace_id, v.violation_id, v.rule_id, v.severity, v.agent_id, v.decision_id, v.at, body_text(encoded, &v.body)?.as_ref()])?;
        }
        Mutation::PutDelivery(d) => {
            db.execute("INSERT INTO deliveries (workspace_id, delivery_id, channel, target, webhook_id, event, payload, status, attempts,
                    next_attempt_at, last_error, last_status, created_at, delivered_at)
                 VALUES (?1,?2,?3,?4,?5,?6,?7,?8,?9,?10,?11,?12,?13,?14)
                 ON CONFLICT (workspace_id, delivery_id) DO UPDATE SET status = excluded.status, attempts = excluded.attempts,
                    next_attempt_at = excluded.next_attempt_at, last_error = excluded.last_error,
                    last_status = excluded.last_status, delivered_at = excluded.delivered_at", args![
                d.workspace_id, d.delivery_id, d.channel, d.target, d.webhook_id, d.event, to_json(&d.payload)?, d.status,
                d.attempts, d.next_attempt_at, d.last_error, d.last_status, d.created_at, d.delivered_at
            ])?;
        }
        Mutation::InsertApprovedAction(a) => {
            db.execute_later(
                "INSERT INTO approved_actions (workspace_id, escalation_id, agent_id, session_id, action_type, approved_at)
                 VALUES (?1,?2,?3,?4,?5,?6) ON CONFLICT (workspace_id, escalation_id) DO NOTHING",
                args![a.workspace_id, a.escalation_id, a.agent_id, a.session_id, a.action_type, a.at],
                None,
            )?;
        }
        Mutation::ApprovedActionRetried { workspace_id, escalation_id } => {
            db.execute_later(
                "UPDATE approved_actions SET retried = 1 WHERE workspace_id = ?1 AND escalation_id = ?2",
                args![workspace_id, escalation_id],
                None,
            )?;
        }
        Mutation::InsertShadowHit(h) => {
            db.insert_row_later("INSERT INTO shadow_hits (workspace_id, policy_id, decision_id, actual, would, changed, at) VALUES (?1,?2,?3,?4,?5,?6,?7)", args![h.workspace_id, h.policy_id, h.decision_id, h.actual, h.would, h.changed, h.at])?;
        }
        Mutation::RevokeCredential { workspace_id, credential_id, at, rotated } => {
            let revoked = if *rotated {
                db.execute(
                    "UPDATE credentials SET revoked_at = ?3, rotated = ?4 WHERE workspace_id = ?1 AND credential_id = ?2 AND revoked_at IS NULL",
                    args![workspace_id, credential_id, at, true],
                )?
            } else {
                // A rotated credential keeps the time it stopped signing, and loses its
                // sessions.
                db.execute(
                    "UPDATE credentials SET revoked_at = COALESCE(revoked_at, ?3), rotated = ?4
                     WHERE workspace_id = ?1 AND credential_id = ?2 AND (revoked_at IS NULL OR rotated = ?5)",
                    args![workspace_id, credential_id, at, false, true],
                )?
            };
            if revoked > 0 {
                // Every copy of the agent is stale now: its next decision anywhere reads
                // the credentials back. (A credential is rotated at most once and revoked
                // at most once after that, so the two etags are new each time.)
                let etag = if *rotated { format!("rotated:{credential_id}") } else { format!("revoked:{credential_id}") };
                db.execute(
                    "UPDATE agents SET etag = ?3 WHERE workspace_id = ?1
                        AND agent_id = (SELECT agent_id FROM credentials WHERE workspace_id = ?1 AND credential_id = ?2)",
                    args![workspace_id, credential_id, etag],
                )?;
            }
        }
        Mutation::AgentActivity(a) => {
            let (allowed, blocked, escalated) = match a.decision.as_str() {
                "allow" => (1, 0, 0),
                "escalate" => (0, 0, 1),
                _ => (0, 1, 0),
            };
            db.execute_later("UPDATE agents SET trust_score = ?3, clean_streak = ?4, last_seen_at = ?5,
                    total_actions = total_actions + 1, allowed_actions = allowed_actions + ?6,
                    blocked_actions = blocked_actions + ?7, escalated_actions = escalated_actions + ?8, etag = ?9
                 WHERE workspace_id = ?1 AND agent_id = ?2", args![a.workspace_id, a.agent_id, a.trust_score, a.clean_streak, a.at, allowed, blocked, escalated, a.etag],
                None,
            )?;
        }
        Mutation::Expect { workspace_id, of, id, etag } => {
            db.expect_row_later(
                &format!("SELECT 1 FROM {} WHERE workspace_id = ?1 AND {} = ?2 AND etag = ?3", table(*of), key_column(*of)),
                args![workspace_id, id, etag],
                &|| StoreError::Stale(format!("{} `{id}`", noun(*of))),
            )?;
        }
        Mutation::ExpectActive { workspace_id, agent_id, credential_id } => {
            // Held and sent with the batch, like `Expect`: no round trip of its own.
            db.expect_row_later(
                "SELECT 1 FROM agents WHERE workspace_id = ?1 AND agent_id = ?2 AND is_active = ?3",
                args![workspace_id, agent_id, true],
                &|| StoreError::Stale(format!("agent `{agent_id}` is not active")),
            )?;
            if let Some(c) = credential_id {
                db.expect_row_later(
                    "SELECT 1 FROM credentials WHERE workspace_id = ?1 AND credential_id = ?2 AND agent_id = ?3 AND revoked_at IS NULL",
                    args![workspace_id, c, agent_id],
                    &|| StoreError::Stale(format!("credential `{c}` is revoked")),
                )?;
            }
        }
        Mutation::ExpectAnotherAdmin { workspace_id, key_id } => {
            // Checked inside the transaction, which holds the workspace (a batch takes
            // each workspace's lock before any write on PostgreSQL; SQLite has one
            // writer), so it sees every revocation committed before it.
            db.expect_row_later(
                "SELECT 1 FROM api_keys WHERE workspace_id = ?1 AND key_id <> ?2 AND revoked_at IS NULL AND scopes LIKE '%\"admin\"%'",
                args![workspace_id, key_id],
                &|| StoreError::Stale(format!("key `{key_id}` is the last admin key")),
            )?;
        }
        Mutation::ExpectKeyLive { workspace_id, key_id } => {
            db.expect_row_later(
                "SELECT 1 FROM api_keys WHERE workspace_id = ?1 AND key_id = ?2 AND revoked_at IS NULL",
                args![workspace_id, key_id],
                &|| StoreError::Stale(format!("key `{key_id}` is already revoked")),
            )?;
        }
        Mutation::ExpectPolicy { workspace_id, policy_id, updated_at } => {
            let stale = || StoreError::Stale(format!("policy `{policy_id}`"));
            match updated_at {
                Some(at) => db.expect_row_later(
                    "SELECT 1 FROM policies WHERE workspace_id = ?1 AND policy_id = ?2 AND updated_at = ?3",
                    args![workspace_id, policy_id, at],
                    &stale,
                )?,
                None => db.expect_row_later(
                    "SELECT 1 WHERE NOT EXISTS (SELECT 1 FROM policies WHERE workspace_id = ?1 AND policy_id = ?2)",
                    args![workspace_id, policy_id],
                    &stale,
                )?,
            }
        }
        Mutation::ExpectPackPolicies { workspace_id, pack, count } => {
            // Read and counted here (a pack deploy is rare): a definition's `pack` is
            // `<name>@<version>`, compared exactly (SQLite's LIKE ignores case).
            let prefix = format!("{pack}@");
            let defs: Vec<serde_json::Value> = db.all("SELECT def FROM policies WHERE workspace_id = ?1", args![workspace_id], |r| {
                from_json(&r.get::<String>(0)?, "a stored policy")
            })?;
            let live = defs.iter().filter(|d| d["pack"].as_str().is_some_and(|p| p.starts_with(&prefix))).count() as u64;
            if live != *count {
                return Err(StoreError::Stale(format!("policy pack `{pack}`")));
            }
        }
        Mutation::ExpectFirstWorkspace => {
            // Under `FIRST_WORKSPACE_LOCK`, taken before this statement runs: a first
            // start that committed meanwhile is seen here.
            db.expect_row_later("SELECT 1 WHERE NOT EXISTS (SELECT 1 FROM workspaces)", args![], &|| {
                StoreError::Stale("the first workspace (another node created it)".into())
            })?;
        }
        Mutation::Touch { workspace_id, of, id, etag } => {
            db.execute(&format!("UPDATE {} SET etag = ?3 WHERE workspace_id = ?1 AND {} = ?2", table(*of), key_column(*of)), args![workspace_id, id, etag])?;
        }
        Mutation::ClaimDelivery { workspace_id, delivery_id, attempts, now, until } => {
            let claimed = db.execute(
                "UPDATE deliveries SET next_attempt_at = ?5 WHERE workspace_id = ?1 AND delivery_id = ?2
                    AND status = 'pending' AND attempts = ?3 AND next_attempt_at <= ?4",
                args![workspace_id, delivery_id, attempts, now, until],
            )?;
            if claimed == 0 {
                return Err(StoreError::Stale(format!("delivery `{delivery_id}`")));
            }
        }
        Mutation::RecordDeliveryAttempt { delivery: d, claimed_attempts, claimed_until } => {
            let recorded = db.execute(
                "UPDATE deliveries SET status = ?3, attempts = ?4, next_attempt_at = ?5, last_error = ?6, last_status = ?7, delivered_at = ?8
                 WHERE workspace_id = ?1 AND delivery_id = ?2 AND status = 'pending' AND attempts = ?9 AND next_attempt_at = ?10",
                args![d.workspace_id, d.delivery_id, d.status, d.attempts, d.next_attempt_at, d.last_error, d.last_status, d.delivered_at, claimed_attempts, claimed_until],
            )?;
            if recorded == 0 {
                return Err(StoreError::Stale(format!("delivery `{}` (its claim ran out, or it was queued again)", d.delivery_id)));
            }
        }
        Mutation::TakeLease { workspace_id, name, holder, now, until } => {
            let taken = db.execute(
                "INSERT INTO leases (workspace_id, name, holder, expires_at) VALUES (?1, ?2, ?3, ?5)
                 ON CONFLICT (workspace_id, name) DO UPDATE SET holder = excluded.holder, expires_at = excluded.expires_at
                 WHERE leases.holder = excluded.holder OR leases.expires_at <= ?4",
                args![workspace_id, name, holder, now, until],
            )?;
            if taken == 0 {
                return Err(StoreError::Stale(format!("lease `{name}`")));
            }
        }
        Mutation::ClaimNonce { workspace_id, agent_id, nonce, now, until } => {
            db.execute_later(
                "INSERT INTO nonces (workspace_id, agent_id, nonce, expires_at) VALUES (?1, ?2, ?3, ?5)
                 ON CONFLICT (workspace_id, agent_id, nonce) DO UPDATE SET expires_at = excluded.expires_at
                 WHERE nonces.expires_at <= ?4",
                args![workspace_id, agent_id, nonce, now, until],
                Some(&|| StoreError::Replayed(format!("nonce of agent `{agent_id}`"))),
            )?;
        }
        Mutation::PruneNonces { workspace_id, now } => {
            db.execute("DELETE FROM nonces WHERE workspace_id = ?1 AND expires_at <= ?2", args![workspace_id, now])?;
        }
        Mutation::UpdateAgentFields(f) => {
            let list = |v: &Option<Vec<String>>| v.as_ref().map(to_json).transpose();
            db.execute(
                "UPDATE agents SET description = COALESCE(?3, description), capabilities = COALESCE(?4, capabilities),
                    scopes = COALESCE(?5, scopes), permission_boundary = COALESCE(?6, permission_boundary),
                    require_signature = COALESCE(?7, require_signature), updated_at = ?8, etag = ?9
                 WHERE workspace_id = ?1 AND agent_id = ?2",
                args![
                    f.workspace_id, f.agent_id, f.description, list(&f.capabilities)?, list(&f.scopes)?,
                    f.permission_boundary.as_ref().map(to_json).transpose()?, f.require_signature, f.updated_at, f.etag
                ],
            )?;
        }
        Mutation::DeactivateAgent { workspace_id, agent_id, at, etag } => {
            db.execute(
                "UPDATE agents SET is_active = ?3, updated_at = ?4, etag = ?5 WHERE workspace_id = ?1 AND agent_id = ?2",
                args![workspace_id, agent_id, false, at, etag],
            )?;
        }
        Mutation::PruneChanges { workspace_id, before } => {
            // The newest entry stays whatever its age: numbering continues from it.
            db.execute(
                "DELETE FROM changes WHERE workspace_id = ?1 AND at < ?2
                    AND seq < (SELECT MAX(seq) FROM changes WHERE workspace_id = ?1)",
                args![workspace_id, before],
            )?;
        }
    }
    Ok(())
}

fn workspace_from_row(r: &dyn Row) -> Result<Workspace> {
    Ok(Workspace {
        workspace_id: r.get(0)?,
        name: r.get(1)?,
        settings: from_json(&r.get::<String>(2)?, "workspace settings")?,
        hmac_secret: r.get(3)?,
        created_at: r.get(4)?,
    })
}

fn api_key_from_row(r: &dyn Row) -> Result<ApiKey> {
    let scopes: Vec<String> = from_json(&r.get::<String>(4)?, "key scopes")?;
    Ok(ApiKey {
        key_id: r.get(0)?,
        workspace_id: r.get(1)?,
        key_hash: r.get(2)?,
        prefix: r.get(3)?,
        scopes: scopes.iter().filter_map(|s| Scope::parse(s)).collect(),
        agent_id: r.get(5)?,
        label: r.get(6)?,
        created_at: r.get(7)?,
        revoked_at: r.get(8)?,
    })
}

pub const AGENT_COLUMNS: &str = "workspace_id, agent_id, name, framework, description, capabilities, scopes,
    permission_boundary, require_signature, trust_score, clean_streak, is_active, attributes, created_at,
    updated_at, last_seen_at, total_actions, allowed_actions, blocked_actions, escalated_actions, etag";

fn agent_from_row(r: &dyn Row) -> Result<Agent> {
    let boundary: Option<String> = r.get(7)?;
    Ok(Agent {
        workspace_id: r.get(0)?,
        agent_id: r.get(1)?,
        name: r.get(2)?,
        framework: r.get(3)?,
        description: r.get(4)?,
        capabilities: from_json(&r.get::<String>(5)?, "agent capabilities")?,
        scopes: from_json(&r.get::<String>(6)?, "agent scopes")?,
        permission_boundary: boundary.map(|b| from_json(&b, "permission boundary")).transpose()?,
        require_signature: r.get(8)?,
        trust_score: r.get(9)?,
        clean_streak: r.get(10)?,
        is_active: r.get(11)?,
        attributes: from_json(&r.get::<String>(12)?, "agent attributes")?,
        created_at: r.get(13)?,
        updated_at: r.get(14)?,
        last_seen_at: r.get(15)?,
        total_actions: r.get::<i64>(16)? as u64,
        allowed_actions: r.get::<i64>(17)? as u64,
        blocked_actions: r.get::<i64>(18)? as u64,
        escalated_actions: r.get::<i64>(19)? as u64,
        etag: r.get(20)?,
        copy_generation: 0,
    })
}

fn credential_from_row(r: &dyn Row) -> Result<Credential> {
    Ok(Credential {
        credential_id: r.get(0)?,
        workspace_id: r.get(1)?,
        agent_id: r.get(2)?,
        algorithm: r.get(3)?,
        public_key: r.get(4)?,
        did: r.get(5)?,
        created_at: r.get(6)?,
        expires_at: r.get(7)?,
        revoked_at: r.get(8)?,
        rotated: r.get(9)?,
    })
}

fn policy_from_row(r: &dyn Row) -> Result<PolicyRecord> {
    Ok(PolicyRecord {
        workspace_id: r.get(0)?,
        def: from_json(&r.get::<String>(1)?, "policy definition")?,
        created_at: r.get(2)?,
        updated_at: r.get(3)?,
    })
}

fn decision_from_row(r: &dyn Row) -> Result<DecisionRow> {
    let body: String = r.get(8)?;
    let mut row = DecisionRow {
        workspace_id: r.get(0)?,
        decision_id: r.get(1)?,
        agent_id: r.get(2)?,
        action_type: r.get(3)?,
        decision: r.get(4)?,
        created_at: r.get(5)?,
        // A negative sequence number (only a hand-edited row holds one) names no entry:
        // read as none, so the row is reported as having no entry rather than as
        // sealed at a number near 2^64.
        vault_seq: r.get::<Option<i64>>(6)?.and_then(|s| u64::try_from(s).ok()),
        content: r.get(7)?,
        // An unreadable answer spoils this decision only (see `violation_from_row`): its
        // body says why, and reading it back joins what its sealed entry gives.
        body: match serde_json::from_str::<serde_json::Value>(&body) {
            Ok(body) if body.is_object() => body,
            Ok(_) => serde_json::json!({ "read_error": "the decision's stored answer is not a JSON object" }),
            Err(e) => serde_json::json!({ "read_error": format!("the decision's stored answer cannot be read ({})", unreadable_json(&e)) }),
        },
        session_id: r.get(9)?,
        sealed_leaf: r.get(10)?,
        digests: None,
    };
    row.digests = Some(RowDigests::of(&body, row.content.as_deref()));
    Ok(row)
}

pub const SESSION_COLUMNS: &str = "workspace_id, session_id, agent_id, credential_id, label, budgets, consumed, status,
    kill_reason, attributes, created_at, expires_at, closed_at, version, etag";

fn session_from_row(r: &dyn Row) -> Result<Session> {
    let status: String = r.get(7)?;
    Ok(Session {
        workspace_id: r.get(0)?,
        session_id: r.get(1)?,
        agent_id: r.get(2)?,
        credential_id: r.get(3)?,
        label: r.get(4)?,
        budgets: from_json(&r.get::<String>(5)?, "session budgets")?,
        consumed: from_json(&r.get::<String>(6)?, "session consumption")?,
        status: from_json(&format!("\"{status}\""), "session status")?,
        kill_reason: r.get(8)?,
        attributes: from_json(&r.get::<String>(9)?, "session attributes")?,
        created_at: r.get(10)?,
        expires_at: r.get(11)?,
        closed_at: r.get(12)?,
        version: r.get(13)?,
        etag: r.get(14)?,
        copy_generation: 0,
    })
}

pub fn list_sessions(db: &dyn Db, ws: &str, f: &SessionFilter) -> Result<Vec<Session>> {
    let w = Where::new(&[("workspace_id", ws)]).eq("status", &f.status).eq("agent_id", &f.agent_id).limit(f.limit.clamp(1, 1000));
    db.all(
        &format!("SELECT {SESSION_COLUMNS} FROM sessions WHERE {} ORDER BY (status = 'active') DESC, created_at DESC LIMIT ?", w.sql()),
        &w.args(),
        session_from_row,
    )
}

pub fn get_session(db: &dyn Db, ws: &str, id: &str) -> Result<Option<Session>> {
    db.first(&format!("SELECT {SESSION_COLUMNS} FROM sessions WHERE workspace_id = ?1 AND session_id = ?2"), args![ws, id], session_from_row)
}

const OBJECT_COLUMNS: &str = "workspace_id, kind, object_id, agent_id, status, body, created_at, updated_at, version";

fn object_from_row(r: &dyn Row) -> Result<ObjectRecord> {
    Ok(ObjectRecord {
        workspace_id: r.get(0)?,
        kind: r.get(1)?,
        object_id: r.get(2)?,
        agent_id: r.get(3)?,
        status: r.get(4)?,
        body: from_json(&r.get::<String>(5)?, "object body")?,
        created_at: r.get(6)?,
        updated_at: r.get(7)?,
        version: r.get(8)?,
    })
}

pub fn list_objects(db: &dyn Db, ws: &str, f: &ObjectFilter) -> Result<Vec<ObjectRecord>> {
    let w = Where::new(&[("workspace_id", ws), ("kind", &f.kind)])
        .eq("status", &f.status)
        .eq("agent_id", &f.agent_id)
        .limit(f.limit.clamp(1, 1000));
    db.all(&format!("SELECT {OBJECT_COLUMNS} FROM objects WHERE {} ORDER BY created_at DESC, object_id LIMIT ?", w.sql()), &w.args(), object_from_row)
}

pub fn get_object(db: &dyn Db, ws: &str, kind: &str, id: &str) -> Result<Option<ObjectRecord>> {
    db.first(
        &format!("SELECT {OBJECT_COLUMNS} FROM objects WHERE workspace_id = ?1 AND kind = ?2 AND object_id = ?3"),
        args![ws, kind, id],
        object_from_row,
    )
}

const API_KEY_COLUMNS: &str = "key_id, workspace_id, key_hash, prefix, scopes, agent_id, label, created_at, revoked_at";
const CREDENTIAL_COLUMNS: &str = "credential_id, workspace_id, agent_id, algorithm, public_key, did, created_at, expires_at, revoked_at, rotated";

pub fn load_snapshot(db: &dyn Db) -> Result<Snapshot> {
    // Before the workspaces: a workspace and its first entry commit together, so one
    // created meanwhile (by another node) shows in the list read after, never only here.
    let logged_workspaces = crate::vault_rows::logged_workspaces(db)?;
    Ok(Snapshot {
        workspaces: db.all("SELECT workspace_id, name, settings, hmac_secret, created_at FROM workspaces ORDER BY created_at", args![], workspace_from_row)?,
        api_keys: db.all(&format!("SELECT {API_KEY_COLUMNS} FROM api_keys"), args![], api_key_from_row)?,
        agents: db.all(&format!("SELECT {AGENT_COLUMNS} FROM agents ORDER BY created_at"), args![], agent_from_row)?,
        credentials: db.all(&format!("SELECT {CREDENTIAL_COLUMNS} FROM credentials ORDER BY created_at"), args![], credential_from_row)?,
        policies: db.all("SELECT workspace_id, def, created_at, updated_at FROM policies ORDER BY created_at, policy_id", args![], policy_from_row)?,
        active_sessions: db.all(&format!("SELECT {SESSION_COLUMNS} FROM sessions WHERE status = 'active'"), args![], session_from_row)?,
        objects: db.all(
            // Settled escalations and ended grants are read by id when asked for; memory
            // holds only what decisions may still use.
            &format!(
                "SELECT {OBJECT_COLUMNS} FROM objects WHERE (kind != 'escalation' OR status IN ('pending', 'approved'))
                    AND (kind != 'grant' OR status NOT IN ('revoked', 'expired'))"
            ),
            args![],
            object_from_row,
        )?,
        logged_workspaces,
    })
}

/// A `WHERE` clause from fixed conditions and optional equality filters, with its
/// arguments in order (the list queries' one way to filter). Placeholders are bare
/// `?`, numbered in order; `limit` and `offset` add arguments for a trailing
/// `LIMIT ? OFFSET ?`.
struct Where<'a> {
    clauses: Vec<String>,
    args: Vec<Arg<'a>>,
}

impl<'a> Where<'a> {
    fn new(fixed: &[(&str, &'a str)]) -> Where<'a> {
        Where {
            clauses: fixed.iter().map(|(c, _)| format!("{c} = ?")).collect(),
            args: fixed.iter().map(|(_, v)| Arg::Text(v)).collect(),
        }
    }

    fn eq(mut self, col: &str, val: &'a Option<String>) -> Where<'a> {
        if let Some(v) = val {
            self.clauses.push(format!("{col} = ?"));
            self.args.push(Arg::Text(v));
        }
        self
    }

    fn cmp(mut self, clause: &str, val: Option<i64>) -> Where<'a> {
        if let Some(v) = val {
            self.clauses.push(clause.to_owned());
            self.args.push(Arg::Int(v));
        }
        self
    }

    /// An argument for the statement's tail (not a condition).
    fn limit(mut self, n: impl Into<i64>) -> Where<'a> {
        self.args.push(Arg::Int(n.into()));
        self
    }

    fn sql(&self) -> String {
        self.clauses.join(" AND ")
    }

    fn args(&self) -> Vec<&dyn ToArg> {
        self.args.iter().map(|a| a as &dyn ToArg).collect()
    }
}

const DECISION_COLUMNS: &str = "d.workspace_id, d.decision_id, d.agent_id, d.action_type, d.decision, d.created_at, d.vault_seq,
    d.content, d.body, d.session_id";

/// Decision rows from `source` (a table or subquery named `d`) with their sealed
/// entries (null for a decision without one, which the server never writes but a
/// test may).
fn decision_select(source: &str) -> String {
    format!("SELECT {DECISION_COLUMNS}, e.leaf FROM {source} LEFT JOIN vault_entries e ON e.workspace_id = d.workspace_id AND e.seq = d.vault_seq")
}

pub fn list_decisions(db: &dyn Db, ws: &str, f: &DecisionFilter) -> Result<(Vec<DecisionRow>, u64)> {
    let w = Where::new(&[("d.workspace_id", ws)])
        .eq("d.agent_id", &f.agent_id)
        .eq("d.decision", &f.decision)
        .eq("d.action_type", &f.action_type)
        .cmp("d.created_at >= ?", f.since)
        .cmp("d.created_at <= ?", f.until);
    let filter = w.sql();
    let total: i64 = db.value(&format!("SELECT COUNT(*) FROM decisions d WHERE {filter}"), &w.args())?.unwrap_or(0);
    let per_page = f.per_page.clamp(1, 500);
    let offset = i64::from(f.page.max(1) - 1) * i64::from(per_page);
    let page = w.limit(per_page).limit(offset);
    let rows = db.all(
        // The page is chosen first, so only its rows are joined with their entries.
        &format!(
            "{} ORDER BY d.created_at DESC, d.decision_id DESC",
            decision_select(&format!(
                "(SELECT {DECISION_COLUMNS} FROM decisions d WHERE {filter} ORDER BY d.created_at DESC, d.decision_id DESC LIMIT ? OFFSET ?) d"
            ))
        ),
        &page.args(),
        decision_from_row,
    )?;
    Ok((rows, total as u64))
}

/// Every decision row of `ws`, with its sealed entry, in no particular order:
/// `praetor vault check`'s walk of the rows. A row that cannot be read is given as its
/// id (as far as it can be read) and why, so that the walk goes on.
pub fn each_decision(db: &dyn Db, ws: &str, each: &mut dyn FnMut(std::result::Result<DecisionRow, (String, StoreError)>) -> Result<()>) -> Result<()> {
    db.query(&format!("{} WHERE d.workspace_id = ?1", decision_select("decisions d")), args![ws], &mut |r| {
        each(decision_from_row(r).map_err(|e| (r.get::<String>(1).unwrap_or_default(), e)))
    })
}

pub fn get_decision(db: &dyn Db, ws: &str, id: &str) -> Result<Option<DecisionRow>> {
    db.first(&format!("{} WHERE d.workspace_id = ?1 AND d.decision_id = ?2", decision_select("decisions d")), args![ws, id], decision_from_row)
}

pub fn api_key_by_hash(db: &dyn Db, hash: &str) -> Result<Option<ApiKey>> {
    db.first(&format!("SELECT {API_KEY_COLUMNS} FROM api_keys WHERE key_hash = ?1"), args![hash], api_key_from_row)
}

pub fn list_api_keys(db: &dyn Db, ws: &str) -> Result<Vec<ApiKey>> {
    db.all(&format!("SELECT {API_KEY_COLUMNS} FROM api_keys WHERE workspace_id = ?1 ORDER BY created_at, key_id"), args![ws], api_key_from_row)
}

pub fn shadow_report(db: &dyn Db, ws: &str, policy_id: Option<&str>, since: Millis) -> Result<Vec<ShadowSummary>> {
    let groups = db.all(
        "SELECT policy_id, actual, would, changed, COUNT(*) FROM shadow_hits
         WHERE workspace_id = ?1 AND at >= ?2 AND (CAST(?3 AS TEXT) IS NULL OR policy_id = ?3)
         GROUP BY policy_id, actual, would, changed ORDER BY policy_id",
        args![ws, since, policy_id],
        |r| Ok((r.get::<String>(0)?, r.get::<String>(1)?, r.get::<String>(2)?, r.get::<bool>(3)?, r.get::<u64>(4)?)),
    )?;
    let mut out: Vec<ShadowSummary> = Vec::new();
    for (pid, actual, would, changed, n) in groups {
        if out.last().is_none_or(|s| s.policy_id != pid) {
            out.push(ShadowSummary { policy_id: pid.clone(), ..ShadowSummary::default() });
        }
        if let Some(s) = out.last_mut() {
            s.matched += n;
            if changed {
                s.would_change += n;
                s.transitions.push((actual, would, n));
            }
        }
    }
    for s in &mut out {
        s.examples = db.all(
            "SELECT decision_id FROM shadow_hits WHERE workspace_id = ?1 AND policy_id = ?2 AND changed = 1 AND at >= ?3
             ORDER BY at DESC LIMIT 5",
            args![ws, s.policy_id, since],
            |r| r.get::<String>(0),
        )?;
    }
    Ok(out)
}

/// A violation row with the sealed entry of its decision (null for a violation whose
/// decision has no entry, which the server never writes but a test may). The row holds
/// what the list filters on, and the body unless the entry gives it back; the decision's
/// context comes from the entry, for the fields the body lacks.
const VIOLATION_SELECT: &str = "SELECT v.workspace_id, v.violation_id, v.rule_id, v.severity, v.agent_id, v.decision_id, v.at, v.body, e.leaf
    FROM violations v
    LEFT JOIN decisions d ON d.workspace_id = v.workspace_id AND d.decision_id = v.decision_id
    LEFT JOIN vault_entries e ON e.workspace_id = d.workspace_id AND e.seq = d.vault_seq";

fn violation_from_row(r: &dyn Row) -> Result<Violation> {
    let mut v = Violation {
        workspace_id: r.get(0)?,
        violation_id: r.get(1)?,
        rule_id: r.get(2)?,
        severity: r.get(3)?,
        agent_id: r.get(4)?,
        decision_id: r.get(5)?,
        at: r.get(6)?,
        body: serde_json::Value::Null,
        decision_agent: None,
    };
    let body = r.get::<String>(7)?;
    // A damaged row or entry spoils this violation only, not every listing it falls in:
    // it is shown with what its row holds and why the rest is missing, as a decision
    // whose answer cannot be joined is.
    let mut unreadable_entry = None;
    let entry = match r.get::<Option<Vec<u8>>>(8)? {
        Some(leaf) => match serde_json::from_slice::<serde_json::Map<String, serde_json::Value>>(&leaf) {
            Ok(entry) => Some(entry),
            Err(e) => {
                unreadable_entry = Some(format!("the sealed entry of decision `{}` cannot be read ({})", v.decision_id, unreadable_json(&e)));
                None
            }
        },
        None => None,
    };
    let whole = if body == VIOLATION_BODY_IN_ENTRY {
        match (&entry, unreadable_entry.take()) {
            (_, Some(why)) => Err(why),
            (None, None) => Err(format!("the violation is stored as its decision's sealed entry, and decision `{}` has none", v.decision_id)),
            (Some(e), None) => v.rebuilt_body(e).ok_or_else(|| "the violation is stored as its decision's sealed entry, which does not hold it".to_owned()),
        }
    } else {
        match serde_json::from_str::<serde_json::Value>(&body) {
            // A stored body that departs from what is sealed of it is shown as sealed,
            // saying so: the row was changed after its decision was sealed.
            Ok(body) if body.is_object() => match entry.as_ref().and_then(|e| v.stored_body_departs(&body, e).map(|why| (e, why))) {
                Some((e, why)) => {
                    tracing::warn!(violation_id = %v.violation_id, reason = %why, "a violation's row departs from its sealed entry; showing what is sealed");
                    match v.rebuilt_body(e) {
                        Some(serde_json::Value::Object(mut sealed)) => {
                            add_read_error(&mut sealed, why);
                            Ok(serde_json::Value::Object(sealed))
                        }
                        _ => Err(why),
                    }
                }
                None => Ok(body),
            },
            Ok(_) => Err("the violation's stored body is not a JSON object".to_owned()),
            Err(e) => Err(format!("the violation's stored body cannot be read ({})", unreadable_json(&e))),
        }
    };
    v.body = match whole {
        Ok(body) => body,
        Err(why) => {
            tracing::warn!(violation_id = %v.violation_id, decision_id = %v.decision_id, reason = %why, "a stored violation cannot be read whole; returning what its row holds");
            row_part(&v, why)
        }
    };
    if let (Some(why), serde_json::Value::Object(body)) = (unreadable_entry, &mut v.body) {
        tracing::warn!(violation_id = %v.violation_id, reason = %why, "a stored violation is shown without its decision's context");
        add_read_error(body, why);
    }
    if let Some(entry) = &entry {
        v.decision_agent = entry.get("agent_id").and_then(serde_json::Value::as_str).map(str::to_owned);
        v.add_decision_context(entry);
    }
    Ok(v)
}

/// Say in `body`'s `read_error` why part of a stored record is missing, after any reason
/// already there (the record's own part is read first, then what it is joined with).
pub fn add_read_error(body: &mut serde_json::Map<String, serde_json::Value>, why: String) {
    let why = match body.get("read_error").and_then(serde_json::Value::as_str) {
        Some(first) => format!("{first}; {why}"),
        None => why,
    };
    body.insert("read_error".into(), why.into());
}

/// Why a stored JSON text cannot be read, by its position only: serde's message may
/// quote the text, which may hold an action's metadata, and this goes to the log.
pub fn unreadable_json(e: &serde_json::Error) -> String {
    format!("{:?} error at line {}, column {}", e.classify(), e.line(), e.column())
}

/// The body of a violation whose stored body cannot be had: the row's own columns, and
/// in `read_error` why the rest is missing.
fn row_part(v: &Violation, why: String) -> serde_json::Value {
    serde_json::json!({
        "violation_id": v.violation_id, "rule_id": v.rule_id, "severity": v.severity, "agent_id": v.agent_id,
        "decision_id": v.decision_id, "at": praetor_core::iso_millis(v.at), "read_error": why,
    })
}

pub fn list_violations(db: &dyn Db, ws: &str, f: &ViolationFilter) -> Result<Vec<Violation>> {
    let w = Where::new(&[("v.workspace_id", ws)])
        .eq("v.rule_id", &f.rule_id)
        .eq("v.severity", &f.severity)
        .eq("v.agent_id", &f.agent_id)
        .cmp("v.at >= ?", f.since)
        .limit(f.limit.clamp(1, 1000));
    db.all(&format!("{VIOLATION_SELECT} WHERE {} ORDER BY v.at DESC, v.violation_id LIMIT ?", w.sql()), &w.args(), violation_from_row)
}

pub fn get_violation(db: &dyn Db, ws: &str, id: &str) -> Result<Option<Violation>> {
    db.first(&format!("{VIOLATION_SELECT} WHERE v.workspace_id = ?1 AND v.violation_id = ?2"), args![ws, id], violation_from_row)
}

const DELIVERY_COLUMNS: &str = "workspace_id, delivery_id, channel, target, webhook_id, event, payload, status, attempts,
    next_attempt_at, last_error, last_status, created_at, delivered_at";

fn delivery_from_row(r: &dyn Row) -> Result<Delivery> {
    Ok(Delivery {
        workspace_id: r.get(0)?,
        delivery_id: r.get(1)?,
        channel: r.get(2)?,
        target: r.get(3)?,
        webhook_id: r.get(4)?,
        event: r.get(5)?,
        payload: from_json(&r.get::<String>(6)?, "delivery payload")?,
        status: r.get(7)?,
        attempts: r.get(8)?,
        next_attempt_at: r.get(9)?,
        last_error: r.get(10)?,
        last_status: r.get(11)?,
        created_at: r.get(12)?,
        delivered_at: r.get(13)?,
    })
}

pub fn due_deliveries(db: &dyn Db, now: Millis, limit: u32, skip_targets: &[String], skip_workspaces: &[String]) -> Result<Vec<Delivery>> {
    let mut args: Vec<&dyn ToArg> = vec![&now, &limit];
    let mut skip = String::new();
    for (column, values) in [("target", skip_targets), ("workspace_id", skip_workspaces)] {
        if values.is_empty() {
            continue;
        }
        let first = args.len() + 1;
        let marks: Vec<String> = (first..first + values.len()).map(|i| format!("?{i}")).collect();
        skip.push_str(&format!(" AND {column} NOT IN ({})", marks.join(", ")));
        args.extend(values.iter().map(|v| v as &dyn ToArg));
    }
    db.all(
        &format!("SELECT {DELIVERY_COLUMNS} FROM deliveries WHERE status = 'pending' AND next_attempt_at <= ?1{skip} ORDER BY next_attempt_at LIMIT ?2"),
        &args,
        delivery_from_row,
    )
}

pub fn list_deliveries(db: &dyn Db, ws: &str, webhook_id: Option<&str>, limit: u32) -> Result<Vec<Delivery>> {
    db.all(
        &format!(
            "SELECT {DELIVERY_COLUMNS} FROM deliveries WHERE workspace_id = ?1 AND (CAST(?2 AS TEXT) IS NULL OR webhook_id = ?2)
             ORDER BY created_at DESC, delivery_id LIMIT ?3"
        ),
        args![ws, webhook_id, limit.clamp(1, 1000)],
        delivery_from_row,
    )
}

fn table(of: Guarded) -> &'static str {
    match of {
        Guarded::Agent => "agents",
        Guarded::Session => "sessions",
    }
}

fn key_column(of: Guarded) -> &'static str {
    match of {
        Guarded::Agent => "agent_id",
        Guarded::Session => "session_id",
    }
}

fn noun(of: Guarded) -> &'static str {
    match of {
        Guarded::Agent => "agent",
        Guarded::Session => "session",
    }
}

/// The actions that ran matching `filter` (`agent_id = ?2` or `session_id = ?2`) since
/// `since`, the newest `cap`, returned oldest first: allowed decisions, and approved
/// escalations whose action no decision ran (the SDK runs it without asking again).
/// Two queries, each walking its own index newest first, merged here: a `UNION` would
/// read every row since `since` before it could sort them.
fn allowed_since(db: &dyn Db, filter: &str, ws: &str, id: &str, since: Millis, cap: u32) -> Result<Vec<praetor_core::PastAction>> {
    let past = |r: &dyn crate::sql::Row| Ok(praetor_core::PastAction { action_type: r.get(0)?, at_ms: r.get(1)? });
    let mut out = db.all(
        &format!(
            "SELECT action_type, created_at FROM decisions
             WHERE workspace_id = ?1 AND {filter} AND decision = 'allow' AND created_at >= ?3
             ORDER BY created_at DESC LIMIT ?4"
        ),
        args![ws, id, since, cap],
        past,
    )?;
    out.extend(db.all(
        &format!(
            "SELECT action_type, approved_at FROM approved_actions
             WHERE workspace_id = ?1 AND {filter} AND retried = 0 AND approved_at >= ?3
             ORDER BY approved_at DESC LIMIT ?4"
        ),
        args![ws, id, since, cap],
        past,
    )?);
    // Newest first (a stable sort keeps each query's order among equal times), then
    // the newest `cap`, oldest first.
    out.sort_by_key(|a| std::cmp::Reverse(a.at_ms));
    out.truncate(cap as usize);
    out.reverse();
    Ok(out)
}

/// The row first, then what hangs off it: a write landing in between makes the history
/// newer than the etag, never older, so a decision made from it is refused, not wrong.
pub fn agent_state(db: &dyn Db, ws: &str, id: &str, since: Millis, cap: u32) -> Result<Option<AgentState>> {
    let Some(agent) = db.first(&format!("SELECT {AGENT_COLUMNS} FROM agents WHERE workspace_id = ?1 AND agent_id = ?2"), args![ws, id], agent_from_row)? else {
        return Ok(None);
    };
    let credentials = db.all(
        &format!("SELECT {CREDENTIAL_COLUMNS} FROM credentials WHERE workspace_id = ?1 AND agent_id = ?2 ORDER BY created_at"),
        args![ws, id],
        credential_from_row,
    )?;
    let history = allowed_since(db, "agent_id = ?2", ws, id, since, cap)?;
    Ok(Some(AgentState { agent, credentials, history, history_since: since }))
}

pub fn session_state(db: &dyn Db, ws: &str, id: &str, since: Millis, cap: u32) -> Result<Option<SessionState>> {
    let Some(session) = get_session(db, ws, id)? else { return Ok(None) };
    let history = allowed_since(db, "session_id = ?2", ws, id, since, cap)?;
    Ok(Some(SessionState { session, history, history_since: since }))
}

pub fn list_policies(db: &dyn Db, ws: &str) -> Result<Vec<PolicyRecord>> {
    db.all("SELECT workspace_id, def, created_at, updated_at FROM policies WHERE workspace_id = ?1 ORDER BY created_at, policy_id", args![ws], policy_from_row)
}

pub fn get_workspace(db: &dyn Db, ws: &str) -> Result<Option<Workspace>> {
    db.first("SELECT workspace_id, name, settings, hmac_secret, created_at FROM workspaces WHERE workspace_id = ?1", args![ws], workspace_from_row)
}

pub fn get_api_key(db: &dyn Db, ws: &str, key_id: &str) -> Result<Option<ApiKey>> {
    db.first(&format!("SELECT {API_KEY_COLUMNS} FROM api_keys WHERE workspace_id = ?1 AND key_id = ?2"), args![ws, key_id], api_key_from_row)
}

/// Append one change-feed entry. The caller holds the workspace's write lock, so the
/// next sequence number is free and entries are numbered in commit order.
pub fn insert_change(db: &dyn Db, ws: &str, node_id: &str, key: &str, at: Millis) -> Result<()> {
    db.execute_later(
        "INSERT INTO changes (workspace_id, seq, node_id, key, at)
         VALUES (?1, (SELECT COALESCE(MAX(seq), 0) + 1 FROM changes WHERE workspace_id = ?1), ?2, ?3, ?4)",
        args![ws, node_id, key, at],
        None,
    )
}

pub fn changes_since(db: &dyn Db, ws: &str, after: u64, limit: u32) -> Result<Vec<Change>> {
    db.all(
        "SELECT seq, node_id, key, at FROM changes WHERE workspace_id = ?1 AND seq > ?2 ORDER BY seq LIMIT ?3",
        args![ws, after as i64, limit],
        |r| Ok(Change { seq: r.get::<i64>(0)? as u64, node_id: r.get(1)?, key: r.get(2)?, at: r.get(3)? }),
    )
}

pub fn change_heads(db: &dyn Db) -> Result<std::collections::HashMap<String, u64>> {
    let rows = db.all("SELECT workspace_id, MAX(seq) FROM changes GROUP BY workspace_id", args![], |r| Ok((r.get::<String>(0)?, r.get::<i64>(1)? as u64)))?;
    Ok(rows.into_iter().collect())
}
