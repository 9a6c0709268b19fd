//! PostgreSQL schema, versioned separately from SQLite's. Each migration runs once, in
//! order, inside a transaction, under a lock so that nodes starting together do not
//! race. Version 1 is the whole schema of SQLite's migrations 1-6; the column types
//! differ only where the dialects do (BIGINT for INTEGER, BYTEA for BLOB), and a
//! decision's action type and content, free text from agents that may hold NUL (which
//! PostgreSQL's text cannot), are BYTEA holding UTF-8.

pub const MIGRATIONS: &[(i64, &str)] = &[(
    1,
    r#"
CREATE TABLE workspaces (
    workspace_id TEXT PRIMARY KEY,
    name         TEXT NOT NULL,
    settings     TEXT NOT NULL,
    hmac_secret  BYTEA NOT NULL,
    created_at   BIGINT NOT NULL
);
CREATE TABLE api_keys (
    key_id       TEXT PRIMARY KEY,
    workspace_id TEXT NOT NULL REFERENCES workspaces(workspace_id),
    key_hash     TEXT NOT NULL UNIQUE,
    prefix       TEXT NOT NULL,
    scopes       TEXT NOT NULL,
    agent_id     TEXT,
    label        TEXT,
    created_at   BIGINT NOT NULL,
    revoked_at   BIGINT
);
CREATE TABLE agents (
    workspace_id        TEXT NOT NULL REFERENCES workspaces(workspace_id),
    agent_id            TEXT NOT NULL,
    name                TEXT NOT NULL,
    framework           TEXT NOT NULL,
    description         TEXT,
    capabilities        TEXT NOT NULL,
    scopes              TEXT NOT NULL,
    permission_boundary TEXT,
    require_signature   BIGINT NOT NULL,
    trust_score         BIGINT NOT NULL,
    clean_streak        BIGINT NOT NULL,
    is_active           BIGINT NOT NULL,
    attributes          TEXT NOT NULL,
    created_at          BIGINT NOT NULL,
    updated_at          BIGINT NOT NULL,
    last_seen_at        BIGINT,
    total_actions       BIGINT NOT NULL DEFAULT 0,
    allowed_actions     BIGINT NOT NULL DEFAULT 0,
    blocked_actions     BIGINT NOT NULL DEFAULT 0,
    escalated_actions   BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (workspace_id, agent_id)
);
CREATE UNIQUE INDEX agents_identity ON agents (workspace_id, name, framework);
CREATE TABLE credentials (
    credential_id TEXT PRIMARY KEY,
    workspace_id  TEXT NOT NULL,
    agent_id      TEXT NOT NULL,
    algorithm     TEXT NOT NULL,
    public_key    TEXT NOT NULL,
    did           TEXT NOT NULL,
    created_at    BIGINT NOT NULL,
    expires_at    BIGINT,
    revoked_at    BIGINT,
    FOREIGN KEY (workspace_id, agent_id) REFERENCES agents(workspace_id, agent_id)
);
CREATE TABLE policies (
    workspace_id TEXT NOT NULL REFERENCES workspaces(workspace_id),
    policy_id    TEXT NOT NULL,
    def          TEXT NOT NULL,
    created_at   BIGINT NOT NULL,
    updated_at   BIGINT NOT NULL,
    PRIMARY KEY (workspace_id, policy_id)
);
CREATE TABLE decisions (
    workspace_id TEXT NOT NULL,
    decision_id  TEXT NOT NULL,
    agent_id     TEXT,
    action_type  BYTEA NOT NULL,
    decision     TEXT NOT NULL,
    created_at   BIGINT NOT NULL,
    vault_seq    BIGINT,
    content      BYTEA,
    body         TEXT NOT NULL,
    PRIMARY KEY (workspace_id, decision_id)
);
CREATE INDEX decisions_by_time ON decisions (workspace_id, created_at);
CREATE INDEX decisions_by_agent ON decisions (workspace_id, agent_id, created_at);
CREATE TABLE vault_entries (
    workspace_id TEXT NOT NULL,
    seq          BIGINT NOT NULL,
    leaf         BYTEA NOT NULL,
    leaf_hash    BYTEA NOT NULL,
    chain_hash   BYTEA NOT NULL,
    hmac         BYTEA NOT NULL,
    created_at   BIGINT NOT NULL,
    PRIMARY KEY (workspace_id, seq)
);
CREATE TABLE vault_hashes (
    workspace_id TEXT NOT NULL,
    idx          BIGINT NOT NULL,
    hash         BYTEA NOT NULL,
    PRIMARY KEY (workspace_id, idx)
);
CREATE TABLE vault_checkpoints (
    workspace_id TEXT NOT NULL,
    size         BIGINT NOT NULL,
    root         BYTEA NOT NULL,
    note         TEXT NOT NULL,
    created_at   BIGINT NOT NULL,
    PRIMARY KEY (workspace_id, size)
);

CREATE TABLE sessions (
    workspace_id  TEXT NOT NULL REFERENCES workspaces(workspace_id),
    session_id    TEXT NOT NULL,
    agent_id      TEXT NOT NULL,
    credential_id TEXT,
    label         TEXT,
    budgets       TEXT NOT NULL,
    consumed      TEXT NOT NULL,
    status        TEXT NOT NULL,
    kill_reason   TEXT,
    attributes    TEXT NOT NULL,
    created_at    BIGINT NOT NULL,
    expires_at    BIGINT,
    closed_at     BIGINT,
    version       BIGINT NOT NULL,
    PRIMARY KEY (workspace_id, session_id)
);
CREATE INDEX sessions_by_status ON sessions (workspace_id, status, created_at);
CREATE INDEX sessions_by_agent ON sessions (workspace_id, agent_id);

-- Authority objects (roles, temporal windows, delegation grants, breakglass,
-- escalations): one row each, the record as JSON, versioned like sessions.
CREATE TABLE objects (
    workspace_id TEXT NOT NULL REFERENCES workspaces(workspace_id),
    kind         TEXT NOT NULL,
    object_id    TEXT NOT NULL,
    agent_id     TEXT,
    status       TEXT NOT NULL,
    body         TEXT NOT NULL,
    created_at   BIGINT NOT NULL,
    updated_at   BIGINT NOT NULL,
    version      BIGINT NOT NULL,
    PRIMARY KEY (workspace_id, kind, object_id)
);
CREATE INDEX objects_by_status ON objects (workspace_id, kind, status, created_at);

-- What each shadow policy would have done: one row per shadow match.
CREATE TABLE shadow_hits (
    workspace_id TEXT NOT NULL,
    policy_id    TEXT NOT NULL,
    decision_id  TEXT NOT NULL,
    actual       TEXT NOT NULL,
    would        TEXT NOT NULL,
    changed      BIGINT NOT NULL,
    at           BIGINT NOT NULL
);
CREATE INDEX shadow_hits_by_policy ON shadow_hits (workspace_id, policy_id, at);

-- Every rule or policy violation, with its full context (in `body`).
CREATE TABLE violations (
    workspace_id TEXT NOT NULL,
    violation_id TEXT NOT NULL,
    rule_id      TEXT NOT NULL,
    severity     TEXT NOT NULL,
    agent_id     TEXT,
    decision_id  TEXT NOT NULL,
    at           BIGINT NOT NULL,
    body         TEXT NOT NULL,
    PRIMARY KEY (workspace_id, violation_id)
);
CREATE INDEX violations_by_time ON violations (workspace_id, at);
CREATE INDEX violations_by_rule ON violations (workspace_id, rule_id, at);

-- The durable outbound queue: webhook deliveries and alerts. Enqueued in the same
-- transaction as the event, sent by the dispatcher, kept until delivered or given up.
CREATE TABLE deliveries (
    workspace_id    TEXT NOT NULL,
    delivery_id     TEXT NOT NULL,
    channel         TEXT NOT NULL,
    target          TEXT NOT NULL,
    webhook_id      TEXT,
    event           TEXT NOT NULL,
    payload         TEXT NOT NULL,
    status          TEXT NOT NULL,
    attempts        BIGINT NOT NULL,
    next_attempt_at BIGINT NOT NULL,
    last_error      TEXT,
    last_status     BIGINT,
    created_at      BIGINT NOT NULL,
    delivered_at    BIGINT,
    PRIMARY KEY (workspace_id, delivery_id)
);
CREATE INDEX deliveries_due ON deliveries (status, next_attempt_at);
CREATE INDEX deliveries_by_webhook ON deliveries (workspace_id, webhook_id, created_at);

-- The vault and the decisions are append-only: the application has no way to change
-- or remove an entry, and the database refuses it too.
CREATE FUNCTION praetor_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '% is append-only', TG_TABLE_NAME;
END $$;
CREATE TRIGGER vault_entries_append_only BEFORE UPDATE OR DELETE ON vault_entries
    FOR EACH ROW EXECUTE FUNCTION praetor_append_only();
CREATE TRIGGER vault_hashes_append_only BEFORE UPDATE OR DELETE ON vault_hashes
    FOR EACH ROW EXECUTE FUNCTION praetor_append_only();
CREATE TRIGGER decisions_no_delete BEFORE DELETE ON decisions
    FOR EACH ROW EXECUTE FUNCTION praetor_append_only();
-- Row triggers do not fire on TRUNCATE.
CREATE TRIGGER vault_entries_no_truncate BEFORE TRUNCATE ON vault_entries
    FOR EACH STATEMENT EXECUTE FUNCTION praetor_append_only();
CREATE TRIGGER vault_hashes_no_truncate BEFORE TRUNCATE ON vault_hashes
    FOR EACH STATEMENT EXECUTE FUNCTION praetor_append_only();
CREATE TRIGGER decisions_no_truncate BEFORE TRUNCATE ON decisions
    FOR EACH STATEMENT EXECUTE FUNCTION praetor_append_only();
"#,
), (
    2,
    r#"
-- SQLite's migration 7: etags for optimistic concurrency between nodes, the session of
-- each decision, and the change feed.
ALTER TABLE agents ADD COLUMN etag TEXT NOT NULL DEFAULT '';
ALTER TABLE sessions ADD COLUMN etag TEXT NOT NULL DEFAULT '';
ALTER TABLE decisions ADD COLUMN session_id TEXT;
CREATE INDEX decisions_by_session ON decisions (workspace_id, session_id, created_at) WHERE session_id IS NOT NULL;
CREATE TABLE changes (
    workspace_id TEXT NOT NULL,
    seq          BIGINT NOT NULL,
    node_id      TEXT NOT NULL,
    key          TEXT NOT NULL,
    at           BIGINT NOT NULL,
    PRIMARY KEY (workspace_id, seq)
);
CREATE TABLE leases (
    workspace_id TEXT NOT NULL,
    name         TEXT NOT NULL,
    holder       TEXT NOT NULL,
    expires_at   BIGINT NOT NULL,
    PRIMARY KEY (workspace_id, name)
);
"#,
), (
    3,
    r#"
-- SQLite's migration 8: request-signature nonces, consumed in the decision's transaction.
CREATE TABLE nonces (
    workspace_id TEXT NOT NULL,
    agent_id     TEXT NOT NULL,
    nonce        TEXT NOT NULL,
    expires_at   BIGINT NOT NULL,
    PRIMARY KEY (workspace_id, agent_id, nonce)
);
CREATE INDEX nonces_by_expiry ON nonces (workspace_id, expires_at);
"#,
), (
    4,
    r#"
-- SQLite's migration 10: no table changes, a marker that older builds refuse (see there).
"#,
), (
    5,
    concat!(
        r#"
-- SQLite's migration 11: whether a credential was revoked by a rotation (see there).
ALTER TABLE credentials ADD COLUMN rotated BIGINT NOT NULL DEFAULT 0;
"#,
        crate::backfill_rotated_credentials!()
    ),
), (
    6,
    // SQLite's migration 12.
    crate::approved_actions_table!("BIGINT"),
), (
    7,
    r#"
-- SQLite's migration 13: violations and signed checkpoints are append-only too.
CREATE TRIGGER violations_append_only BEFORE UPDATE OR DELETE ON violations
    FOR EACH ROW EXECUTE FUNCTION praetor_append_only();
CREATE TRIGGER vault_checkpoints_append_only BEFORE UPDATE OR DELETE ON vault_checkpoints
    FOR EACH ROW EXECUTE FUNCTION praetor_append_only();
CREATE TRIGGER violations_no_truncate BEFORE TRUNCATE ON violations
    FOR EACH STATEMENT EXECUTE FUNCTION praetor_append_only();
CREATE TRIGGER vault_checkpoints_no_truncate BEFORE TRUNCATE ON vault_checkpoints
    FOR EACH STATEMENT EXECUTE FUNCTION praetor_append_only();
"#,
)];
