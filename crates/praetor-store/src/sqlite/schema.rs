//! SQLite schema, versioned. Each migration runs once, in order, inside a transaction.

pub const MIGRATIONS: &[(i64, &str)] = &[(
    1,
    r#"
CREATE TABLE workspaces (
    workspace_id TEXT PRIMARY KEY,
    name         TEXT NOT NULL,
    settings     TEXT NOT NULL,
    hmac_secret  BLOB NOT NULL,
    created_at   INTEGER NOT NULL
);
CREATE TABLE api_keys (
    key_id       TEXT PRIMARY KEY,
    workspace_id TEXT NOT NULL REFERENCES workspaces(workspace_id),
    key_hash     TEXT NOT NULL UNIQUE,
    prefix       TEXT NOT NULL,
    scopes       TEXT NOT NULL,
    agent_id     TEXT,
    label        TEXT,
    created_at   INTEGER NOT NULL,
    revoked_at   INTEGER
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
    require_signature   INTEGER NOT NULL,
    trust_score         INTEGER NOT NULL,
    clean_streak        INTEGER NOT NULL,
    is_active           INTEGER NOT NULL,
    attributes          TEXT NOT NULL,
    created_at          INTEGER NOT NULL,
    updated_at          INTEGER NOT NULL,
    last_seen_at        INTEGER,
    total_actions       INTEGER NOT NULL DEFAULT 0,
    allowed_actions     INTEGER NOT NULL DEFAULT 0,
    blocked_actions     INTEGER NOT NULL DEFAULT 0,
    escalated_actions   INTEGER NOT NULL DEFAULT 0,
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
    created_at    INTEGER NOT NULL,
    expires_at    INTEGER,
    revoked_at    INTEGER,
    FOREIGN KEY (workspace_id, agent_id) REFERENCES agents(workspace_id, agent_id)
);
CREATE TABLE policies (
    workspace_id TEXT NOT NULL REFERENCES workspaces(workspace_id),
    policy_id    TEXT NOT NULL,
    def          TEXT NOT NULL,
    created_at   INTEGER NOT NULL,
    updated_at   INTEGER NOT NULL,
    PRIMARY KEY (workspace_id, policy_id)
);
CREATE TABLE decisions (
    workspace_id TEXT NOT NULL,
    decision_id  TEXT NOT NULL,
    agent_id     TEXT,
    action_type  TEXT NOT NULL,
    decision     TEXT NOT NULL,
    created_at   INTEGER NOT NULL,
    vault_seq    INTEGER,
    content      TEXT,
    body         TEXT NOT NULL,
    PRIMARY KEY (workspace_id, decision_id)
);
CREATE INDEX decisions_by_time ON decisions (workspace_id, created_at);
CREATE INDEX decisions_by_agent ON decisions (workspace_id, agent_id, created_at);
CREATE TABLE vault_entries (
    workspace_id TEXT NOT NULL,
    seq          INTEGER NOT NULL,
    leaf         BLOB NOT NULL,
    leaf_hash    BLOB NOT NULL,
    chain_hash   BLOB NOT NULL,
    hmac         BLOB NOT NULL,
    created_at   INTEGER NOT NULL,
    PRIMARY KEY (workspace_id, seq)
) WITHOUT ROWID;
CREATE TABLE vault_hashes (
    workspace_id TEXT NOT NULL,
    idx          INTEGER NOT NULL,
    hash         BLOB NOT NULL,
    PRIMARY KEY (workspace_id, idx)
) WITHOUT ROWID;
CREATE TABLE vault_checkpoints (
    workspace_id TEXT NOT NULL,
    size         INTEGER NOT NULL,
    root         BLOB NOT NULL,
    note         TEXT NOT NULL,
    created_at   INTEGER NOT NULL,
    PRIMARY KEY (workspace_id, size)
) WITHOUT ROWID;
-- The vault is append-only: the application has no way to change or remove an entry.
CREATE TRIGGER vault_entries_no_update BEFORE UPDATE ON vault_entries
BEGIN SELECT RAISE(ABORT, 'vault entries are append-only'); END;
CREATE TRIGGER vault_entries_no_delete BEFORE DELETE ON vault_entries
BEGIN SELECT RAISE(ABORT, 'vault entries are append-only'); END;
CREATE TRIGGER vault_hashes_no_update BEFORE UPDATE ON vault_hashes
BEGIN SELECT RAISE(ABORT, 'vault hashes are append-only'); END;
CREATE TRIGGER vault_hashes_no_delete BEFORE DELETE ON vault_hashes
BEGIN SELECT RAISE(ABORT, 'vault hashes are append-only'); END;
CREATE TRIGGER decisions_no_delete BEFORE DELETE ON decisions
BEGIN SELECT RAISE(ABORT, 'decisions are append-only'); END;
"#,
),
    (
        2,
        r#"
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
    created_at    INTEGER NOT NULL,
    expires_at    INTEGER,
    closed_at     INTEGER,
    version       INTEGER NOT NULL,
    PRIMARY KEY (workspace_id, session_id)
);
CREATE INDEX sessions_by_status ON sessions (workspace_id, status, created_at);
CREATE INDEX sessions_by_agent ON sessions (workspace_id, agent_id);
"#,
    ),
    (
        3,
        r#"
-- Authority objects (roles, temporal windows, delegation grants, breakglass,
-- escalations): one row each, the record as JSON, versioned like sessions.
CREATE TABLE objects (
    workspace_id TEXT NOT NULL REFERENCES workspaces(workspace_id),
    kind         TEXT NOT NULL,
    object_id    TEXT NOT NULL,
    agent_id     TEXT,
    status       TEXT NOT NULL,
    body         TEXT NOT NULL,
    created_at   INTEGER NOT NULL,
    updated_at   INTEGER NOT NULL,
    version      INTEGER NOT NULL,
    PRIMARY KEY (workspace_id, kind, object_id)
);
CREATE INDEX objects_by_status ON objects (workspace_id, kind, status, created_at);
"#,
    ),
    (
        4,
        r#"
-- What each shadow policy would have done: one row per shadow match.
CREATE TABLE shadow_hits (
    workspace_id TEXT NOT NULL,
    policy_id    TEXT NOT NULL,
    decision_id  TEXT NOT NULL,
    actual       TEXT NOT NULL,
    would        TEXT NOT NULL,
    changed      INTEGER NOT NULL,
    at           INTEGER NOT NULL
);
CREATE INDEX shadow_hits_by_policy ON shadow_hits (workspace_id, policy_id, at);
"#,
    ),
    (
        5,
        r#"
-- Every rule or policy violation, with its full context (in `body`).
CREATE TABLE violations (
    workspace_id TEXT NOT NULL,
    violation_id TEXT NOT NULL,
    rule_id      TEXT NOT NULL,
    severity     TEXT NOT NULL,
    agent_id     TEXT,
    decision_id  TEXT NOT NULL,
    at           INTEGER NOT NULL,
    body         TEXT NOT NULL,
    PRIMARY KEY (workspace_id, violation_id)
);
CREATE INDEX violations_by_time ON violations (workspace_id, at);
CREATE INDEX violations_by_rule ON violations (workspace_id, rule_id, at);
"#,
    ),
    (
        6,
        r#"
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
    attempts        INTEGER NOT NULL,
    next_attempt_at INTEGER NOT NULL,
    last_error      TEXT,
    last_status     INTEGER,
    created_at      INTEGER NOT NULL,
    delivered_at    INTEGER,
    PRIMARY KEY (workspace_id, delivery_id)
);
CREATE INDEX deliveries_due ON deliveries (status, next_attempt_at);
CREATE INDEX deliveries_by_webhook ON deliveries (workspace_id, webhook_id, created_at);
"#,
    ),
    (
        7,
        r#"
-- Several writers on one database (issue 8): an etag on the rows decisions read and
-- write, so a decision evaluated against a stale copy is refused and evaluated again;
-- the session of each decision, so a session's history can be read back; and the
-- change feed other nodes follow to refresh what they hold in memory.
ALTER TABLE agents ADD COLUMN etag TEXT NOT NULL DEFAULT '';
ALTER TABLE sessions ADD COLUMN etag TEXT NOT NULL DEFAULT '';
ALTER TABLE decisions ADD COLUMN session_id TEXT;
CREATE INDEX decisions_by_session ON decisions (workspace_id, session_id, created_at) WHERE session_id IS NOT NULL;
CREATE TABLE changes (
    workspace_id TEXT NOT NULL,
    seq          INTEGER NOT NULL,
    node_id      TEXT NOT NULL,
    key          TEXT NOT NULL,
    at           INTEGER NOT NULL,
    PRIMARY KEY (workspace_id, seq)
) WITHOUT ROWID;
-- Work one node does for all (signing checkpoints): held by whoever renewed it last,
-- taken over once it expires.
CREATE TABLE leases (
    workspace_id TEXT NOT NULL,
    name         TEXT NOT NULL,
    holder       TEXT NOT NULL,
    expires_at   INTEGER NOT NULL,
    PRIMARY KEY (workspace_id, name)
);
"#,
    ),
    (
        8,
        r#"
-- Request-signature nonces, consumed in the transaction of the decision they sign, so
-- a signed request replayed to another node, or after a restart, is refused.
CREATE TABLE nonces (
    workspace_id TEXT NOT NULL,
    agent_id     TEXT NOT NULL,
    nonce        TEXT NOT NULL,
    expires_at   INTEGER NOT NULL,
    PRIMARY KEY (workspace_id, agent_id, nonce)
) WITHOUT ROWID;
CREATE INDEX nonces_by_expiry ON nonces (workspace_id, expires_at);
"#,
    ),
    (
        9,
        r#"
-- Vault entries in a rowid table. As a WITHOUT ROWID table each ~1 KB entry lived in
-- an index b-tree, where an append at the right edge rebalances three sibling pages:
-- a commit rewrote about one page per entry (31 of the 124 WAL pages of a group
-- commit in the realistic benchmark). Rows of a rowid table are appended to the last
-- page; the primary key's index holds only small keys. Same columns, same order.
CREATE TABLE vault_entries_rowid (
    workspace_id TEXT NOT NULL,
    seq          INTEGER NOT NULL,
    leaf         BLOB NOT NULL,
    leaf_hash    BLOB NOT NULL,
    chain_hash   BLOB NOT NULL,
    hmac         BLOB NOT NULL,
    created_at   INTEGER NOT NULL,
    PRIMARY KEY (workspace_id, seq)
);
INSERT INTO vault_entries_rowid (workspace_id, seq, leaf, leaf_hash, chain_hash, hmac, created_at)
    SELECT workspace_id, seq, leaf, leaf_hash, chain_hash, hmac, created_at FROM vault_entries ORDER BY workspace_id, seq;
DROP TABLE vault_entries;
ALTER TABLE vault_entries_rowid RENAME TO vault_entries;
CREATE TRIGGER vault_entries_no_update BEFORE UPDATE ON vault_entries
BEGIN SELECT RAISE(ABORT, 'vault entries are append-only'); END;
CREATE TRIGGER vault_entries_no_delete BEFORE DELETE ON vault_entries
BEGIN SELECT RAISE(ABORT, 'vault entries are append-only'); END;
"#,
    ),
    (
        10,
        r#"
-- No table changes. Since this version a violation's row may hold none of its body
-- (an empty text): the body is read back from the violation as sealed in its
-- decision's vault entry. A build that does not know this fails to read such a row;
-- this migration makes builds that check (`sql_store::migrate`) refuse the database
-- at start instead.
"#,
    ),
    (
        11,
        concat!(
            r#"
-- A credential revoked by a rotation (1) lets the sessions started with it go on; one
-- revoked otherwise (0: a compromise) ends them. A revocation after a rotation sets it
-- back to 0.
ALTER TABLE credentials ADD COLUMN rotated INTEGER NOT NULL DEFAULT 0;
"#,
            crate::backfill_rotated_credentials!()
        ),
    ),
    (12, crate::approved_actions_table!("INTEGER")),
    (
        13,
        r#"
-- Violations and signed checkpoints are append-only too: the application never
-- changes or removes one, and now the database refuses it as well.
CREATE TRIGGER violations_no_update BEFORE UPDATE ON violations
BEGIN SELECT RAISE(ABORT, 'violations are append-only'); END;
CREATE TRIGGER violations_no_delete BEFORE DELETE ON violations
BEGIN SELECT RAISE(ABORT, 'violations are append-only'); END;
CREATE TRIGGER vault_checkpoints_no_update BEFORE UPDATE ON vault_checkpoints
BEGIN SELECT RAISE(ABORT, 'vault checkpoints are append-only'); END;
CREATE TRIGGER vault_checkpoints_no_delete BEFORE DELETE ON vault_checkpoints
BEGIN SELECT RAISE(ABORT, 'vault checkpoints are append-only'); END;
"#,
    ),
];
