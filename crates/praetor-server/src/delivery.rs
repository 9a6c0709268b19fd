//! Outbound deliveries: signed webhooks, Slack messages and e-mail alerts.
//!
//! Every delivery is enqueued in the same transaction as the event that causes it, so it
//! is as durable as the event and survives a restart; a decision never waits for one.
//! The dispatcher sends what is due, retries failures with exponential backoff, and
//! gives up (status `dead`, kept and listed) after the last attempt.
//!
//! Delivery is at least once: a restart in the middle of a send, or a failure to record
//! a successful attempt, sends it again. Receivers dedupe on the body's `delivery_id`
//! (the `X-Praetor-Delivery` header's value, inside what the signature covers).
//! Alert webhooks (a rule's `alert.webhook_url`) share no secret with Praetor and are
//! sent unsigned; subscribe a registered webhook to `violation.recorded` for signed ones.
//! A violation is sealed inside its decision's vault entry and delivered as an event of
//! its own.
//!
//! Webhook signature (documented in the README):
//! `X-Praetor-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>`,
//! plus `X-Praetor-Event` and `X-Praetor-Delivery`. Receivers check the HMAC and refuse
//! timestamps too far from their clock (replays).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

use hmac::{KeyInit, Mac};
use praetor_core::glob::Glob;
use praetor_store::{Delivery, Mutation, SealRequest, Txn};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::authority::Object;
use crate::clock::iso;
use crate::secrets::new_id;
use crate::state::AppState;

pub const WEBHOOK_KIND: &str = "webhook";

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Webhook {
    pub webhook_id: String,
    pub url: String,
    /// Event globs: `decision.block`, `breakglass.*`, `session.*`, `*`.
    pub events: Vec<String>,
    pub description: Option<String>,
    /// Hex HMAC key. Shown once at creation and rotation; never listed.
    pub secret: String,
    pub deleted: bool,
    pub created_at: i64,
    pub version: u64,
}

impl Webhook {
    fn status_at(&self, _now: i64) -> &'static str {
        if self.deleted { "deleted" } else { "active" }
    }

    fn agent_ref(&self) -> Option<&str> {
        None
    }

    pub fn wants(&self, event: &str) -> bool {
        !self.deleted && self.events.iter().any(|p| Glob::new(p).is_ok_and(|g| g.is_match(event)))
    }

    /// The webhook as shown: its URL whole (`full_url`) only to those who may change
    /// it, to others cut to its host, since a webhook's URL often carries a credential
    /// in its path or query.
    pub fn view(&self, full_url: bool) -> Value {
        let url = if full_url { self.url.clone() } else { crate::api::rules::redact_url(&self.url) };
        json!({
            "webhook_id": self.webhook_id, "url": url, "events": self.events, "description": self.description,
            "status": self.status_at(0), "created_at": iso(self.created_at),
        })
    }
}

crate::authority::object_impl!(Webhook, WEBHOOK_KIND, webhook_id);

/// Every event name: each kind of vault entry this server seals, and
/// `decision.<verdict>` for decisions (`event_name`). A webhook's glob must match one of
/// them (`event_glob`); the API tests check the entries they read through
/// `harness::vault_entries` against this list. (`webhook.test` is not one: the test
/// endpoint sends it whatever a webhook subscribes to.)
pub const EVENT_NAMES: &[&str] = &[
    "agent.deactivated", "agent.registered", "agent.revoked", "agent.updated",
    "breakglass.closed", "breakglass.reviewed", "breakglass.triggered",
    "credential.revoked", "credential.rotated",
    "decision.allow", "decision.block", "decision.escalate", "decision.terminate",
    "escalation.expired", "escalation.resolved",
    "grant.created", "grant.revoked",
    "key.created", "key.revoked",
    "pack.deployed", "pack.rolled_back",
    "policy.created", "policy.deleted", "policy.promoted", "policy.updated",
    "role.assigned", "role.created", "role.unassigned",
    "rule.created", "rule.deleted", "rule.updated",
    "session.budget_exceeded", "session.ended", "session.expired", "session.killed", "session.started",
    "settings.updated",
    "violation.recorded",
    "webhook.created", "webhook.deleted", "webhook.secret_rotated",
    "window.extended", "window.opened", "window.revoked",
    "workspace.created",
];

/// Why `glob`, a webhook's event glob, is refused, if it is: one that matches no event
/// (`session`, `decision.blocked`, edge whitespace, an invisible character) would make a
/// subscription that never fires, its alerts lost without a word.
pub fn event_glob(glob: &str) -> Result<(), String> {
    if glob.len() > crate::config::limits::ID_MAX {
        return Err(format!("is {} bytes long; the limit is {}", glob.len(), crate::config::limits::ID_MAX));
    }
    praetor_core::glob::spelling(glob)?;
    let compiled = praetor_core::glob::Glob::new(glob).map_err(|e| e.message)?;
    if EVENT_NAMES.iter().any(|name| compiled.is_match(name)) {
        return Ok(());
    }
    Err("matches no event; events are `decision.<verdict>` and the kinds the vault seals, such as `session.killed` or `violation.recorded` (README, Webhooks)".to_owned())
}

/// The event name of a sealed entry: its kind, or `decision.<verdict>` for decisions.
fn event_name(seal: &SealRequest) -> String {
    match seal.body.get("kind").and_then(Value::as_str) {
        Some("decision") => format!("decision.{}", seal.body.get("decision").and_then(Value::as_str).unwrap_or("unknown")),
        Some(k) => k.to_owned(),
        None => "unknown".into(),
    }
}

/// A new pending delivery, due now.
pub fn delivery(workspace_id: &str, channel: &str, target: &str, webhook_id: Option<&str>, event: &str, mut payload: Value, now: i64) -> Delivery {
    let delivery_id = new_id("dlv");
    // A webhook's envelope names its delivery inside the body the signature covers, so a
    // receiver dedupes on a signed id: a captured delivery replayed under another
    // `X-Praetor-Delivery` header is still the same delivery.
    if channel == "webhook"
        && let Value::Object(envelope) = &mut payload
    {
        envelope.insert("delivery_id".into(), json!(delivery_id));
    }
    Delivery {
        delivery_id,
        workspace_id: workspace_id.to_owned(),
        channel: channel.to_owned(),
        target: target.to_owned(),
        webhook_id: webhook_id.map(str::to_owned),
        event: event.to_owned(),
        payload,
        status: "pending".into(),
        attempts: 0,
        next_attempt_at: now,
        last_error: None,
        last_status: None,
        created_at: now,
        delivered_at: None,
    }
}

/// Add to `txn` a delivery for every webhook that wants one of its events, and the
/// alerts of `alert` rules' violations. Called on every commit (`AppState::commit`).
/// The events are the transaction's sealed entries and its violations (sealed inside
/// their decision's entry, delivered as `violation.recorded` each).
pub fn enqueue(state: &AppState, txn: &mut Txn) {
    if txn.seal.is_empty() {
        return;
    }
    let now = state.now_ms();
    let mut out = Vec::new();
    for seal in &txn.seal {
        let Some(ws) = state.workspace(&seal.workspace_id) else { continue };
        deliveries_of(&ws, &event_name(seal), || Value::Object(seal.body.clone()), None, now, &mut out);
    }
    // Built on first use: only a violation with a subscriber needs it.
    let decisions = std::cell::OnceCell::new();
    for m in &txn.mutations {
        let Mutation::InsertViolation(v) = m else { continue };
        let Some(ws) = state.workspace(&v.workspace_id) else { continue };
        let alert_rule = (v.body.get("action").and_then(Value::as_str) == Some("alert")).then_some(v.rule_id.as_str());
        let data = || {
            let mut full = v.clone();
            if let Some(entry) = decisions.get_or_init(|| txn.decision_entries()).get(&(v.workspace_id.as_str(), v.decision_id.as_str())) {
                full.add_decision_context(entry);
            }
            Value::Object(crate::events::event(&v.workspace_id, VIOLATION_EVENT, None, v.at, full.body).body)
        };
        deliveries_of(&ws, VIOLATION_EVENT, data, alert_rule, now, &mut out);
    }
    txn.mutations.extend(out.into_iter().map(Mutation::PutDelivery));
}

/// The event a webhook subscribes to for violations.
pub const VIOLATION_EVENT: &str = "violation.recorded";

/// The deliveries of one event: one per webhook that wants it and, for a violation of
/// an `alert` rule (`alert_rule`), one per alert target of that rule. `data` builds the
/// event's body, only when something is delivered (most events go nowhere).
fn deliveries_of(
    ws: &crate::state::WorkspaceState,
    event: &str,
    data: impl FnOnce() -> Value,
    alert_rule: Option<&str>,
    now: i64,
    out: &mut Vec<Delivery>,
) {
    let subscribed: Vec<(String, String)> = {
        let live = ws.live.lock();
        live.authority.webhooks.values().filter(|w| w.wants(event)).map(|w| (w.url.clone(), w.webhook_id.clone())).collect()
    };
    if subscribed.is_empty() && alert_rule.is_none() {
        return;
    }
    let data = data();
    let envelope = |data: &Value| json!({ "event": event, "workspace_id": ws.workspace_id, "occurred_at": iso(now), "data": data });
    for (url, webhook_id) in subscribed {
        out.push(delivery(&ws.workspace_id, "webhook", &url, Some(&webhook_id), event, envelope(&data), now));
    }
    // An `alert` rule's violation notifies the rule's own targets (kept on the rule,
    // never copied into the violation, the vault or a webhook payload).
    let Some(rule_id) = alert_rule else { return };
    let targets = ws
        .policies
        .load()
        .records
        .iter()
        .find(|r| r.def.policy_id == rule_id)
        .and_then(|r| r.def.governance.as_ref().and_then(|g| g.get("alert")).cloned())
        .unwrap_or(Value::Null);
    for email in targets["emails"].as_array().into_iter().flatten().filter_map(Value::as_str) {
        out.push(delivery(&ws.workspace_id, "email", email, None, event, data.clone(), now));
    }
    if let Some(url) = targets["slack_webhook_url"].as_str() {
        out.push(delivery(&ws.workspace_id, "slack", url, None, event, data.clone(), now));
    }
    if let Some(url) = targets["webhook_url"].as_str() {
        out.push(delivery(&ws.workspace_id, "webhook", url, None, event, envelope(&data), now));
    }
}

/// `t=<unix seconds>,v1=<hex HMAC-SHA256(key, "<t>.<body>")>`, the key being the bytes
/// the hex secret encodes (as the README tells receivers).
pub fn signature(secret_hex: &str, t: i64, body: &[u8]) -> String {
    let key = hex::decode(secret_hex).unwrap_or_default();
    // HMAC takes a key of any length, so this cannot fail.
    let mut mac = <hmac::Hmac<sha2::Sha256> as KeyInit>::new_from_slice(&key).expect("HMAC accepts any key length");
    mac.update(format!("{t}.").as_bytes());
    mac.update(body);
    format!("t={t},v1={}", hex::encode(mac.finalize().into_bytes()))
}

/// Addresses a delivery may never reach without `allow_private_targets`: loopback,
/// private, link-local, shared (CGNAT), benchmarking, reserved, unspecified, multicast,
/// and IPv6 forms that embed such an IPv4 address (mapped, compatible, NAT64, 6to4).
pub fn forbidden(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_multicast()
                || v4.is_broadcast()
                || o[0] == 0
                || (o[0] == 100 && (o[1] & 0xc0) == 64)
                || (o[0] == 192 && o[1] == 0 && o[2] == 0)
                || (o[0] == 198 && (o[1] & 0xfe) == 18)
                || o[0] >= 240
        }
        IpAddr::V6(v6) => {
            let seg = v6.segments();
            let embedded = |hi: u16, lo: u16| IpAddr::V4(std::net::Ipv4Addr::new((hi >> 8) as u8, hi as u8, (lo >> 8) as u8, lo as u8));
            if let Some(v4) = v6.to_ipv4_mapped() {
                return forbidden(IpAddr::V4(v4));
            }
            if seg[..6] == [0, 0, 0, 0, 0, 0] {
                // ::/96 (IPv4-compatible), also :: and ::1
                return true;
            }
            if seg[0] == 0x64 && seg[1] == 0xff9b && seg[2..6] == [0, 0, 0, 0] {
                return forbidden(embedded(seg[6], seg[7]));
            }
            if seg[0] == 0x2002 {
                return forbidden(embedded(seg[1], seg[2]));
            }
            // The local-use NAT64 prefix (RFC 8215) embeds an IPv4 address in its last 32
            // bits, as the well-known one does; so does the IPv4-translated form.
            if seg[0] == 0x64 && seg[1] == 0xff9b && seg[2] == 1 {
                // Only a /96 prefix puts it in the last 32 bits (RFC 6052); the rest of
                // this /48 is never globally routed (RFC 8215): refused.
                return seg[3..6] != [0, 0, 0] || forbidden(embedded(seg[6], seg[7]));
            }
            if seg[..4] == [0, 0, 0, 0] && seg[4] == 0xffff && seg[5] == 0 {
                return forbidden(embedded(seg[6], seg[7]));
            }
            // Teredo and the other IETF protocol assignments (2001::/23), documentation
            // (2001:db8::/32 and 3fff::/20) and discard-only (100::/64): nothing a
            // webhook lives at.
            if (seg[0] == 0x2001 && (seg[1] < 0x200 || seg[1] == 0xdb8)) || (seg[0] & 0xfff0) == 0x3ff0 || seg[..4] == [0x100, 0, 0, 0] {
                return true;
            }
            v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (seg[0] & 0xfe00) == 0xfc00
                || (seg[0] & 0xffc0) == 0xfe80
                || (seg[0] & 0xffc0) == 0xfec0
        }
    }
}

const DNS_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

async fn resolve(host: &str, port: u16) -> Result<Vec<std::net::SocketAddr>, String> {
    let host = host.trim_start_matches('[').trim_end_matches(']').to_owned();
    match tokio::time::timeout(DNS_TIMEOUT, tokio::net::lookup_host((host.as_str(), port))).await {
        Ok(Ok(addrs)) => Ok(addrs.collect()),
        Ok(Err(e)) => Err(format!("cannot resolve `{host}`: {e}")),
        Err(_) => Err(format!("resolving `{host}` timed out")),
    }
}

/// Outbound safety: an http(s) URL whose host does not resolve to a forbidden address,
/// unless the operator allows those (`allow_private_targets`). Checked when a target is
/// registered; at send time the dispatcher's own resolver (`SafeResolver`) drops
/// forbidden addresses, so a name cannot pass this check and then rebind.
pub async fn check_target(url: &str, allow_private: bool) -> Result<(), String> {
    let parsed = reqwest::Url::parse(url).map_err(|e| format!("`{url}` is not a URL: {e}"))?;
    if !["http", "https"].contains(&parsed.scheme()) {
        return Err("only http and https URLs are allowed".into());
    }
    let host = parsed.host_str().ok_or("the URL has no host")?;
    let port = parsed.port_or_known_default().unwrap_or(443);
    if allow_private {
        return Ok(());
    }
    for a in resolve(host, port).await? {
        if forbidden(a.ip()) {
            return Err(format!("`{host}` resolves to {}, a loopback, link-local or private address (allow_private_targets is off)", a.ip()));
        }
    }
    Ok(())
}

/// The dispatcher's DNS resolver: with `allow_private_targets` off it never hands a
/// forbidden address to the connection, whatever the name resolved to at registration.
struct SafeResolver;

impl reqwest::dns::Resolve for SafeResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let addrs: Vec<std::net::SocketAddr> = resolve(&host, 0).await?.into_iter().filter(|a| !forbidden(a.ip())).collect();
            if addrs.is_empty() {
                return Err(format!("`{host}` resolves only to forbidden addresses").into());
            }
            Ok(Box::new(addrs.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

fn alert_text(d: &Delivery) -> (String, String) {
    let p = &d.payload;
    let subject = format!(
        "[Praetor] {} violation: {}",
        p["severity"].as_str().unwrap_or("?"),
        p["rule_name"].as_str().unwrap_or("?")
    );
    let body = format!(
        "Rule: {} ({})\nSeverity: {}\nDecision: {} ({})\nAgent: {}\nAction type: {}\nReason: {}\nAt: {}\nWorkspace: {}\n",
        p["rule_name"].as_str().unwrap_or("?"),
        p["rule_id"].as_str().unwrap_or("?"),
        p["severity"].as_str().unwrap_or("?"),
        p["decision"].as_str().unwrap_or("?"),
        p["decision_id"].as_str().unwrap_or("?"),
        p["agent_id"].as_str().unwrap_or("anonymous"),
        p["action_type"].as_str().unwrap_or("?"),
        p["reason"].as_str().unwrap_or(""),
        p["at"].as_str().unwrap_or("?"),
        d.workspace_id,
    );
    (subject, body)
}

/// One attempt. `Ok(status)` when the receiver accepted it.
async fn attempt(state: &AppState, client: &reqwest::Client, d: &Delivery) -> Result<Option<u16>, (Option<u16>, String)> {
    match d.channel.as_str() {
        "email" => send_email(state, d).await.map(|_| None).map_err(|e| (None, e)),
        "slack" | "webhook" => {
            check_target(&d.target, state.config.allow_private_targets).await.map_err(|e| (None, e))?;
            let (body, headers) = if d.channel == "slack" {
                let (subject, text) = alert_text(d);
                (serde_json::to_vec(&json!({ "text": format!("*{subject}*\n{text}") })).unwrap_or_default(), vec![])
            } else {
                let body = serde_json::to_vec(&d.payload).unwrap_or_default();
                let mut headers = vec![("X-Praetor-Event", d.event.clone()), ("X-Praetor-Delivery", d.delivery_id.clone())];
                let secret = d.webhook_id.as_ref().and_then(|id| {
                    state.workspace(&d.workspace_id).and_then(|ws| ws.live.lock().authority.webhooks.get(id).map(|w| w.secret.clone()))
                });
                if let Some(secret) = secret {
                    headers.push(("X-Praetor-Signature", signature(&secret, state.now_ms() / 1000, &body)));
                }
                (body, headers)
            };
            let mut req = client.post(&d.target).header("Content-Type", "application/json").body(body);
            for (k, v) in headers {
                req = req.header(k, v);
            }
            let res = req.send().await.map_err(|e| (None, format!("request failed: {}", without_url(e))))?;
            let status = res.status().as_u16();
            if res.status().is_success() { Ok(Some(status)) } else { Err((Some(status), format!("the receiver answered {status}"))) }
        }
        other => Err((None, format!("unknown channel `{other}`"))),
    }
}

async fn send_email(state: &AppState, d: &Delivery) -> Result<(), String> {
    use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
    let smtp = state.config.smtp.as_ref().ok_or("no SMTP server is configured (smtp.host)")?;
    let (subject, body) = alert_text(d);
    let msg = Message::builder()
        .from(smtp.from.parse().map_err(|e| format!("smtp.from `{}`: {e}", smtp.from))?)
        .to(d.target.parse().map_err(|e| format!("`{}`: {e}", d.target))?)
        .subject(subject)
        .body(body)
        .map_err(|e| format!("cannot build the message: {e}"))?;
    let mut builder = if smtp.starttls {
        AsyncSmtpTransport::<Tokio1Executor>::starttls_relay(&smtp.host).map_err(|e| format!("smtp: {e}"))?
    } else {
        AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&smtp.host)
    };
    builder = builder.port(smtp.port).timeout(Some(std::time::Duration::from_secs(10)));
    if let (Some(u), Some(p)) = (&smtp.username, &smtp.password) {
        builder = builder.credentials(lettre::transport::smtp::authentication::Credentials::new(u.clone(), p.clone()));
    }
    builder.build().send(msg).await.map(|_| ()).map_err(|e| format!("smtp: {e}"))
}

/// At most this many delivery attempts run at once. Each runs on its own task, so a
/// receiver that accepts and never answers holds one slot until its timeout, not the
/// whole queue (every other webhook, alert and workspace behind it).
const IN_FLIGHT_MAX: usize = 16;

/// At most this many attempts at once to one target (a delivery's URL, or e-mail
/// address): a target that accepts and never answers holds this many slots until their
/// attempts time out, not every slot, and the other targets' deliveries go on.
const IN_FLIGHT_PER_TARGET: usize = 4;

/// At most this many attempts at once for one workspace: however many targets one
/// workspace's rules and webhooks name, the others' deliveries keep slots.
const IN_FLIGHT_PER_WORKSPACE: usize = 8;

/// After this many failed attempts in a row to one target, its circuit opens: its
/// deliveries wait, unattempted (so none of their attempts is spent), while it stays
/// open.
const CIRCUIT_FAILURES: u32 = 5;

/// How long a target's circuit stays open the first time. It doubles each time the
/// circuit opens again without a delivery getting through, up to `CIRCUIT_OPEN_MAX_MS`.
const CIRCUIT_OPEN_MS: i64 = 30_000;
const CIRCUIT_OPEN_MAX_MS: i64 = 600_000;

/// A target whose last failure is this old, and whose circuit is not open, is forgotten:
/// the map holds only targets failing lately.
const CIRCUIT_FORGET_MS: i64 = 3_600_000;

/// One target's run of failures. Closed while `failures < CIRCUIT_FAILURES`; then open
/// until `open_until`, and half-open after it: one attempt at a time, whose success
/// closes the circuit and whose failure opens it again for twice as long.
#[derive(Debug, Default)]
struct Circuit {
    failures: u32,
    /// How many times it opened since the target last took a delivery.
    opened: u32,
    /// When it last opened, and until when.
    opened_at: i64,
    open_until: i64,
    last_failure: i64,
}

impl Circuit {
    fn tripped(&self) -> bool {
        self.failures >= CIRCUIT_FAILURES
    }

    /// Whether it is open at `now`. A clock stepped back past the time it opened would
    /// keep it open that much longer: it is then over.
    fn open(&self, now: i64) -> bool {
        self.tripped() && (self.opened_at..self.open_until).contains(&now)
    }

    /// Whether an attempt may start at `now` with `in_flight` attempts already running.
    fn admits(&self, in_flight: usize, now: i64) -> bool {
        !self.tripped() || (!self.open(now) && in_flight == 0)
    }
}

/// At most this many targets are left out of one read of the queue for their open
/// circuits: each is a parameter of the query, and SQLite takes at most 32,766. Past
/// it, the reads let the others' deliveries in and `AttemptSlot::take` passes them by;
/// as those are the oldest due, they could fill every read.
const SKIPPED_CIRCUITS_MAX: usize = 16_000;

/// Attempts in flight, per target and per workspace, and the targets failing lately.
#[derive(Default)]
struct Busy {
    targets: HashMap<String, usize>,
    workspaces: HashMap<String, usize>,
    circuits: HashMap<String, Circuit>,
}

type InFlight = Arc<parking_lot::Mutex<Busy>>;

impl Busy {
    fn in_flight(&self, target: &str) -> usize {
        self.targets.get(target).copied().unwrap_or(0)
    }

    /// The targets and workspaces at their bound, and the targets whose circuit admits no
    /// attempt at `now`: the queue is read without their deliveries, so that a busy or
    /// failing one's many due deliveries never hide the others'.
    fn saturated(&self, now: i64) -> (Vec<String>, Vec<String>) {
        let full = |m: &HashMap<String, usize>, max: usize| -> Vec<String> { m.iter().filter(|(_, n)| **n >= max).map(|(k, _)| k.clone()).collect() };
        let mut targets = full(&self.targets, IN_FLIGHT_PER_TARGET);
        targets.extend(self.circuits.iter().filter(|(t, c)| !c.admits(self.in_flight(t), now)).map(|(t, _)| t.clone()).take(SKIPPED_CIRCUITS_MAX));
        targets.sort();
        targets.dedup();
        (targets, full(&self.workspaces, IN_FLIGHT_PER_WORKSPACE))
    }

    /// Record how an attempt to `target` that started at `started` ended at `now`: a
    /// success closes its circuit, a failure counts, and opens the circuit once there
    /// are `CIRCUIT_FAILURES` in a row (again, twice as long, when a half-open attempt
    /// fails). Failures of attempts that started before the circuit last opened only
    /// count: they are not the half-open attempt.
    fn record(&mut self, target: &str, delivered: bool, started: i64, now: i64) {
        if delivered {
            if self.circuits.remove(target).is_some_and(|c| c.tripped()) {
                tracing::info!(delivery_target = %target_for_log(target), "delivery circuit closed: the target took a delivery");
            }
            return;
        }
        let c = self.circuits.entry(target.to_owned()).or_default();
        c.failures = c.failures.saturating_add(1);
        c.last_failure = now;
        if c.tripped() && !c.open(now) && (c.opened == 0 || started >= c.opened_at || now < c.opened_at) {
            let open_ms = CIRCUIT_OPEN_MS.saturating_mul(1 << c.opened.min(16)).min(CIRCUIT_OPEN_MAX_MS);
            c.opened_at = now;
            c.open_until = now.saturating_add(open_ms);
            c.opened = c.opened.saturating_add(1);
            tracing::warn!(delivery_target = %target_for_log(target), failures = c.failures, open_ms, "delivery circuit open: the target's deliveries wait");
        }
    }

    /// Forget the targets that have not failed for `CIRCUIT_FORGET_MS` and whose circuit
    /// is not open.
    fn forget_old_failures(&mut self, now: i64) {
        self.circuits.retain(|_, c| c.open(now) || now.abs_diff(c.last_failure) < CIRCUIT_FORGET_MS as u64);
    }
}

/// One attempt's place in its target's and its workspace's counts, given back when the
/// attempt ends (even by a panic).
struct AttemptSlot {
    target: String,
    workspace: String,
    busy: InFlight,
}

impl AttemptSlot {
    /// A place for `d` at `now`, unless its target or its workspace is at its bound, or
    /// its target's circuit admits no attempt.
    fn take(busy: &InFlight, d: &Delivery, now: i64) -> Option<AttemptSlot> {
        let mut held = busy.lock();
        let in_flight = held.in_flight(&d.target);
        if in_flight >= IN_FLIGHT_PER_TARGET
            || held.workspaces.get(&d.workspace_id).copied().unwrap_or(0) >= IN_FLIGHT_PER_WORKSPACE
            || held.circuits.get(&d.target).is_some_and(|c| !c.admits(in_flight, now))
        {
            return None;
        }
        *held.targets.entry(d.target.clone()).or_default() += 1;
        *held.workspaces.entry(d.workspace_id.clone()).or_default() += 1;
        Some(AttemptSlot { target: d.target.clone(), workspace: d.workspace_id.clone(), busy: busy.clone() })
    }
}

impl Drop for AttemptSlot {
    fn drop(&mut self) {
        let mut guard = self.busy.lock();
        let held = &mut *guard;
        for (m, k) in [(&mut held.targets, &self.target), (&mut held.workspaces, &self.workspace)] {
            if let Some(n) = m.get_mut(k) {
                *n -= 1;
                if *n == 0 {
                    m.remove(k);
                }
            }
        }
    }
}

/// Send what is due, a few times a second, and record each attempt.
pub fn spawn_dispatcher(state: Arc<AppState>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut builder = reqwest::Client::builder().timeout(std::time::Duration::from_secs(5)).redirect(reqwest::redirect::Policy::none());
        if !state.config.allow_private_targets {
            // The targets' names are resolved here, by `SafeResolver`, and connected to
            // directly: a proxy from `HTTP(S)_PROXY` would resolve them itself and reach
            // whatever address it found (the loopback, the metadata service).
            builder = builder.dns_resolver(Arc::new(SafeResolver)).no_proxy();
        }
        let client = match builder.build()
        {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(error = %e, "cannot build the delivery client; no deliveries will be sent");
                return;
            }
        };
        let slots = Arc::new(tokio::sync::Semaphore::new(IN_FLIGHT_MAX));
        let busy: InFlight = Default::default();
        let mut tick = tokio::time::interval(std::time::Duration::from_millis(200));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            dispatch_due(&state, &client, &slots, &busy).await;
        }
    })
}

/// How long a node's claim on a delivery attempt lasts: longer than any attempt takes
/// (`attempt_max`).
const CLAIM_MS: i64 = 60_000;

/// The longest one attempt may take, DNS and all: the configured bound, held to half the
/// claim.
fn attempt_max(state: &AppState) -> std::time::Duration {
    std::time::Duration::from_millis(state.config.delivery_attempt_timeout_ms.clamp(1, CLAIM_MS as u64 / 2))
}

/// Claim what is due, as many as there are free slots and no target or workspace past
/// its bound (`IN_FLIGHT_PER_TARGET`, `IN_FLIGHT_PER_WORKSPACE`), and start an attempt
/// for each.
async fn dispatch_due(state: &Arc<AppState>, client: &reqwest::Client, slots: &Arc<tokio::sync::Semaphore>, busy: &InFlight) {
    // A node whose database a newer version has migrated does nothing more (the store
    // said why, once).
    if state.store.superseded().is_some() {
        return;
    }
    let free = slots.available_permits().min(32);
    if free == 0 {
        return;
    }
    // Without the targets and workspaces at their bound or whose circuit is open; read
    // past the free slots, as the first due ones may take a target or a workspace to its
    // bound.
    let (targets, workspaces) = {
        let mut held = busy.lock();
        held.forget_old_failures(state.now_ms());
        held.saturated(state.now_ms())
    };
    let due = match state.store.due_deliveries(state.now_ms(), (free * 4) as u32, &targets, &workspaces).await {
        Ok(d) => d,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the delivery queue");
            return;
        }
    };
    for d in due {
        if slots.available_permits() == 0 {
            break;
        }
        // Its turn comes when one of its target's or workspace's attempts ends, or its
        // target's circuit lets an attempt through.
        let Some(place) = AttemptSlot::take(busy, &d, state.now_ms()) else { continue };
        let Ok(slot) = slots.clone().try_acquire_owned() else { break };
        // Claim it first: with several nodes on one database, each delivery attempt is
        // made by one of them (a node that dies mid-attempt loses its claim when
        // `CLAIM_MS` runs out, and another node retries). A claimed delivery is not due
        // again until then, so the next tick does not start it twice.
        let now = state.now_ms();
        let claim = Mutation::ClaimDelivery {
            workspace_id: d.workspace_id.clone(),
            delivery_id: d.delivery_id.clone(),
            attempts: d.attempts,
            now,
            until: now + CLAIM_MS,
        };
        match state.store.commit(Txn { mutations: vec![claim], seal: vec![] }).await {
            Ok(_) => {}
            Err(praetor_store::StoreError::Stale(_)) => continue,
            Err(e) => {
                tracing::warn!(error = %e, "cannot claim a delivery");
                continue;
            }
        }
        let (state, client, busy) = (state.clone(), client.clone(), busy.clone());
        let claim = Claim { attempts: d.attempts, until: now + CLAIM_MS };
        tokio::spawn(async move {
            let target = d.target.clone();
            // Before the slot is given back: a half-open circuit admits its next attempt
            // only once this one's outcome is known.
            if let Some(delivered) = send_and_record(&state, &client, d, claim).await {
                busy.lock().record(&target, delivered, now, state.now_ms());
            }
            drop((slot, place));
        });
    }
}

/// What a node's claim on a delivery set (`Mutation::ClaimDelivery`): its outcome is
/// recorded only while the delivery still stands so.
struct Claim {
    attempts: u32,
    until: i64,
}

/// One claimed delivery's attempt, and its outcome stored: delivered, retried later
/// with backoff, or given up as a dead letter. Whether the target took it (`None` when
/// no attempt was made: the webhook was deleted).
async fn send_and_record(state: &AppState, client: &reqwest::Client, mut d: Delivery, claim: Claim) -> Option<bool> {
    let gone = d.webhook_id.as_ref().is_some_and(|id| {
        state.workspace(&d.workspace_id).is_none_or(|ws| ws.live.lock().authority.webhooks.get(id).is_none_or(|w| w.deleted))
    });
    let result = if gone {
        Err((None, "the webhook was deleted".to_owned()))
    } else {
        // Bounded as a whole, well inside the claim: an SMTP relay that accepts and never
        // answers is otherwise waited on for ever (lettre's timeout covers the connect
        // only), holding a slot, and the expired claim would start it again.
        let bound = attempt_max(state);
        match tokio::time::timeout(bound, attempt(state, client, &d)).await {
            Ok(result) => result,
            Err(_) => Err((None, format!("no answer within {} ms", bound.as_millis()))),
        }
    };
    let now = state.now_ms();
    // A deleted webhook's delivery is given up without an attempt: its count stays what
    // was tried.
    if !gone {
        d.attempts += 1;
    }
    let delivered = (!gone).then_some(result.is_ok());
    match result {
        Ok(status) => {
            d.status = "delivered".into();
            d.delivered_at = Some(now);
            d.last_status = status;
            d.last_error = None;
        }
        Err((status, error)) => {
            d.last_status = status;
            d.last_error = Some(error.clone());
            if gone || d.attempts >= state.config.delivery_max_attempts {
                d.status = "dead".into();
                tracing::warn!(delivery_id = %d.delivery_id, channel = %d.channel, error = %error, "delivery given up");
            } else {
                let backoff = state.config.delivery_backoff_ms.saturating_mul(1 << (d.attempts - 1).min(16));
                d.next_attempt_at = now + backoff.min(3_600_000) as i64;
            }
        }
    }
    let delivery_id = d.delivery_id.clone();
    let record = Mutation::RecordDeliveryAttempt { delivery: d, claimed_attempts: claim.attempts, claimed_until: claim.until };
    match state.store.commit(Txn { mutations: vec![record], seal: vec![] }).await {
        Ok(_) => {}
        // Another node took the delivery over once the claim ran out, or an operator
        // queued it again: what was recorded since stands.
        Err(praetor_store::StoreError::Stale(_)) => tracing::warn!(%delivery_id, "a delivery attempt outlived its claim; its outcome is not recorded"),
        Err(e) => tracing::warn!(error = %e, %delivery_id, "cannot record a delivery attempt"),
    }
    delivered
}

/// A failed request's error and its causes, without the URL reqwest puts in it: the
/// URL may carry a credential, and the error is stored, shown and logged.
fn without_url(e: reqwest::Error) -> String {
    let e = e.without_url();
    let mut text = e.to_string();
    let mut cause = std::error::Error::source(&e);
    while let Some(c) = cause {
        text.push_str(": ");
        text.push_str(&c.to_string());
        cause = c.source();
    }
    redact_urls_in(&text)
}

/// `text` with every `http://` or `https://` URL in it cut to its host.
/// A delivery target as logs show it: a URL as its host (its path or query may carry a
/// credential), an e-mail address as its domain.
fn target_for_log(target: &str) -> String {
    match target.rsplit_once('@') {
        Some((_, domain)) if !target.contains("://") => format!("…@{domain}"),
        _ => redact_urls_in(target),
    }
}

fn redact_urls_in(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = ["http://", "https://"].iter().filter_map(|s| rest.find(s)).min() {
        out.push_str(&rest[..at]);
        let url_len = rest[at..].find(|c: char| c.is_whitespace() || matches!(c, ')' | '"' | '\'' | '>' | ',')).unwrap_or(rest.len() - at);
        out.push_str(&crate::api::rules::redact_url(&rest[at..at + url_len]));
        rest = &rest[at + url_len..];
    }
    out.push_str(rest);
    out
}

pub fn delivery_view(d: &Delivery) -> Value {
    // URLs are cut to their host: a Slack webhook's path is its credential, and other
    // webhooks often carry one in the path or query (a registered one is named by
    // `webhook_id`). So are any in the error (rows stored before errors left them out).
    let target = if d.channel == "email" { d.target.clone() } else { crate::api::rules::redact_url(&d.target) };
    let last_error = d.last_error.as_deref().map(redact_urls_in);
    json!({
        "delivery_id": d.delivery_id, "channel": d.channel, "target": target, "webhook_id": d.webhook_id, "event": d.event,
        "status": d.status, "attempts": d.attempts, "next_attempt_at": iso(d.next_attempt_at), "last_error": last_error,
        "last_status": d.last_status, "created_at": iso(d.created_at), "delivered_at": d.delivered_at.map(iso),
    })
}

#[cfg(test)]
mod tests {
    use super::{Busy, CIRCUIT_FORGET_MS, CIRCUIT_OPEN_MAX_MS, forbidden, target_for_log};

    const T: &str = "https://hooks.example.com/x";

    /// Whether an attempt to `T` may start at `now` (none in flight).
    fn admits(b: &Busy, now: i64) -> bool {
        b.circuits.get(T).is_none_or(|c| c.admits(0, now)) && !b.saturated(now).0.contains(&T.to_owned())
    }

    #[test]
    fn a_circuit_opens_after_five_failures_in_a_row_and_a_success_closes_it() {
        let mut b = Busy::default();
        for _ in 0..4 {
            b.record(T, false, 0, 0);
        }
        assert!(admits(&b, 0), "four failures: still closed");
        b.record(T, true, 0, 0);
        for _ in 0..4 {
            b.record(T, false, 0, 0);
        }
        assert!(admits(&b, 0), "a success started the count again");
        b.record(T, false, 0, 0);
        assert!(!admits(&b, 29_999), "open for 30 s");
        // Attempts under way when it opened count, without opening it again.
        b.record(T, false, 0, 10);
        assert!(admits(&b, 30_000), "half-open after 30 s");
        let c = &b.circuits[T];
        assert!(!c.admits(1, 30_000), "half-open: one attempt at a time");
        // A failed half-open attempt opens it for twice as long, then four times...
        b.record(T, false, 30_000, 30_000);
        assert!(!admits(&b, 89_999) && admits(&b, 90_000));
        b.record(T, false, 90_000, 90_000);
        assert!(!admits(&b, 209_999) && admits(&b, 210_000));
        // ...up to ten minutes.
        for _ in 0..10 {
            let now = b.circuits[T].open_until;
            b.record(T, false, now, now);
        }
        let c = &b.circuits[T];
        assert_eq!(c.open_until - c.last_failure, CIRCUIT_OPEN_MAX_MS);
        b.record(T, true, c.open_until, c.open_until);
        assert!(b.circuits.is_empty(), "a delivery that got through closes it");
    }

    #[test]
    fn only_an_attempt_made_while_half_open_opens_the_circuit_again() {
        let mut b = Busy::default();
        for _ in 0..5 {
            b.record(T, false, 0, 0);
        }
        // An attempt that started before the circuit opened (and took its time) fails
        // after it half-opened: it counts, but the circuit stays half-open.
        b.record(T, false, -5, 31_000);
        assert!(admits(&b, 31_000));
        b.record(T, false, 31_000, 31_500);
        assert!(!admits(&b, 31_500), "the half-open attempt's failure opens it again");
    }

    #[test]
    fn a_clock_stepped_back_does_not_hold_a_circuit_open() {
        let t0 = 1_800_000_000_000;
        let mut b = Busy::default();
        for _ in 0..5 {
            b.record(T, false, t0, t0);
        }
        assert!(!admits(&b, t0 + 1));
        let back = t0 - 600_000;
        b.forget_old_failures(back);
        assert!(admits(&b, back), "ten minutes back, the circuit is not open for ten minutes more");
        b.record(T, false, back, back);
        assert!(!admits(&b, back + 1), "a failure then opens it from the clock's new reading");
        assert!(admits(&b, back + 60_000));
        // A day back, its failures are forgotten.
        b.forget_old_failures(t0 - 86_400_000);
        assert!(b.circuits.is_empty());
    }

    #[test]
    fn the_queue_read_leaves_out_a_bounded_number_of_open_circuits() {
        let mut b = Busy::default();
        for i in 0..1_000 {
            for _ in 0..5 {
                b.record(&format!("https://t{i}.example.com/"), false, 0, 0);
            }
        }
        assert_eq!(b.saturated(1).0.len(), 1_000, "all of them, under the bound");
        for i in 1_000..super::SKIPPED_CIRCUITS_MAX + 10 {
            for _ in 0..5 {
                b.record(&format!("https://t{i}.example.com/"), false, 0, 0);
            }
        }
        assert_eq!(b.saturated(1).0.len(), super::SKIPPED_CIRCUITS_MAX);
    }

    #[test]
    fn targets_that_stopped_failing_are_forgotten() {
        let mut b = Busy::default();
        b.record(T, false, 0, 0);
        b.record("ops@example.com", false, 0, 0);
        for _ in 0..5 {
            b.record("https://down.example.com/", false, CIRCUIT_FORGET_MS - 10, CIRCUIT_FORGET_MS - 10);
        }
        b.forget_old_failures(CIRCUIT_FORGET_MS);
        let mut kept: Vec<&String> = b.circuits.keys().collect();
        kept.sort();
        assert_eq!(kept, ["https://down.example.com/"], "an open circuit, or a recent failure, is kept");
    }

    #[test]
    fn logs_show_a_target_without_its_path_or_mailbox() {
        assert_eq!(target_for_log("https://hooks.slack.com/services/T0/B0/secret"), "https://hooks.slack.com/…");
        assert_eq!(target_for_log("ops@example.com"), "…@example.com");
    }

    #[test]
    fn urls_in_errors_are_cut_to_their_host() {
        let error = "request failed: error sending request for url (https://192.0.2.1/services/T0/B0/XoXsEcReT): connection refused";
        assert_eq!(super::redact_urls_in(error), "request failed: error sending request for url (https://192.0.2.1/…): connection refused");
        assert_eq!(super::redact_urls_in("a http://h:8080/x?token=s, then https://g/y"), "a http://h/…, then https://g/…");
        assert_eq!(super::redact_urls_in("the receiver answered 500"), "the receiver answered 500");
    }

    #[test]
    fn forbidden_addresses_include_embedded_and_reserved_forms() {
        for a in [
            "127.0.0.1", "10.1.2.3", "172.16.0.1", "192.168.1.1", "169.254.169.254", "0.0.0.0", "0.1.2.3", "100.64.0.1",
            "198.18.0.1", "240.0.0.1", "255.255.255.255", "::1", "::", "::ffff:10.0.0.1", "::10.0.0.1", "64:ff9b::a00:1",
            "2002:a00:1::", "fc00::1", "fe80::1", "fec0::1", "ff02::1",
            // Local-use NAT64 and the IPv4-translated form embed one; Teredo,
            // documentation and discard-only ranges are no webhook's.
            "64:ff9b:1::a9fe:a9fe", "::ffff:0:a9fe:a9fe", "2001:0:4136:e378:8000:63bf:3fff:fdd2", "2001:db8::1", "100::1",
            "64:ff9b:1:0:a:0:100:0", "3fff::1",
        ] {
            assert!(forbidden(a.parse().unwrap()), "{a} must be forbidden");
        }
        for a in ["93.184.216.34", "8.8.8.8", "2606:4700::1111", "64:ff9b::808:808", "2002:808:808::", "64:ff9b:1::808:808", "2001:4860:4860::8888"] {
            assert!(!forbidden(a.parse().unwrap()), "{a} is public");
        }
    }
}
