//! `praetor bench`: a load generator for a running server (like `redis-benchmark`).
//! It sets up its own agents and policies through the API, drives intercepts from
//! `--concurrency` connections, shows a progress line, and prints decisions per second,
//! latency percentiles and the count of each decision and of errors.

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::{Args, ValueEnum};
use hdrhistogram::Histogram;
use serde_json::{Value, json};

/// What the load generator reads of an answer: its verdict. The rest of the answer is
/// checked to be JSON but not built into a tree, so that the bench, which shares the
/// machine with the server, spends as little of it as it can (a `Value` of the whole
/// answer was a fifth of the bench's CPU).
#[derive(serde::Deserialize)]
struct Verdict<'a> {
    #[serde(borrow)]
    decision: Option<std::borrow::Cow<'a, str>>,
}

/// The `decision` of an answer's JSON (`None` if it has none), or why it is not one.
fn verdict_of(answer: &[u8]) -> Result<Option<String>, String> {
    serde_json::from_slice::<Verdict>(answer).map(|v| v.decision.map(String::from)).map_err(|e| format!("answer: {e}"))
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Scenario {
    /// One allow policy, one agent, short content.
    Simple,
    /// 30 policies of every kind (bench/realistic-policies.json), 50 agents with
    /// scopes, content of 200-2,000 characters, some with PII.
    Realistic,
    /// Each connection works inside a session with budgets (actions, spend, tokens),
    /// starts a new session when its budget terminates the old one, and ends it at the
    /// end of the run.
    Session,
}

/// The session scenario's budgets: the 51st action of a session, or the one that takes
/// its spend past 1,000 EUR, answers `terminate`.
const SESSION_MAX_ACTIONS: u64 = 50;
const SESSION_MAX_SPEND_EUR: &str = "1000";

#[derive(Debug, Clone, Args)]
pub struct BenchArgs {
    /// The server's base URL.
    #[arg(long, default_value = "http://127.0.0.1:8787")]
    pub url: String,
    /// Further nodes of the same cluster (several nodes on one PostgreSQL): the set-up
    /// runs on `--url`, and the workers are spread over all the nodes in turn.
    #[arg(long = "also-url")]
    pub also_urls: Vec<String>,
    /// With several nodes: send each agent's requests to one node (agent i to node i
    /// modulo the nodes), as a load balancer routing by agent would, instead of
    /// spreading every agent over all of them. Not with `--scenario session`.
    #[arg(long)]
    pub route_by_agent: bool,
    /// An admin API key (the bench creates agents and policies).
    #[arg(long, env = "PRAETOR_BENCH_KEY")]
    pub key: String,
    #[arg(long, default_value_t = 16)]
    pub concurrency: usize,
    /// Seconds to run (ignored when --requests is given).
    #[arg(long, default_value_t = 10)]
    pub duration: u64,
    /// Stop after this many requests instead of after --duration.
    #[arg(long)]
    pub requests: Option<u64>,
    #[arg(long, value_enum, default_value = "simple")]
    pub scenario: Scenario,
    /// Machine-readable summary on stdout.
    #[arg(long)]
    pub json: bool,
}

const REALISTIC_POLICIES: &str = include_str!("../../../bench/realistic-policies.json");

struct Setup {
    agents: Vec<String>,
    policy_ids: Vec<String>,
}

async fn api(client: &reqwest::Client, args: &BenchArgs, method: reqwest::Method, path: &str, body: Option<Value>) -> anyhow::Result<Value> {
    let mut req = client.request(method, format!("{}/api/v1{path}", args.url.trim_end_matches('/'))).header("X-API-Key", &args.key);
    if let Some(b) = body {
        req = req.json(&b);
    }
    let res = req.send().await.with_context(|| format!("cannot reach {}", args.url))?;
    let status = res.status();
    let v: Value = res.json().await.context("the server did not answer JSON")?;
    if !status.is_success() {
        bail!("{path}: {status}: {}", v["error"]["message"].as_str().unwrap_or("?"));
    }
    Ok(v)
}

async fn setup(client: &reqwest::Client, args: &BenchArgs) -> anyhow::Result<Setup> {
    let (policies, agent_count): (Vec<Value>, usize) = match args.scenario {
        Scenario::Simple | Scenario::Session => (
            vec![json!({"name": "bench: allow bench actions", "policy_type": "action_type", "action_types": ["bench.*"], "decision": "allow"})],
            1,
        ),
        Scenario::Realistic => {
            let doc: Value = serde_json::from_str(REALISTIC_POLICIES).context("bench/realistic-policies.json")?;
            let list = doc["policies"].as_array().cloned().unwrap_or_default();
            let renamed = list
                .into_iter()
                .map(|mut p| {
                    let name = format!("bench: {}", p["name"].as_str().unwrap_or("policy"));
                    p["name"] = json!(name);
                    p
                })
                .collect();
            (renamed, 50)
        }
    };
    let mut policy_ids = Vec::new();
    for p in policies {
        let v = api(client, args, reqwest::Method::POST, "/enforce/policies", Some(p)).await?;
        policy_ids.push(v["policy"]["policy_id"].as_str().unwrap_or_default().to_owned());
    }
    // Realistic agents have scopes that cover some of the mix, so boundaries refuse
    // some actions; the simple scenario's agent may do anything.
    let scope_sets: Vec<Vec<&str>> = match args.scenario {
        Scenario::Simple | Scenario::Session => vec![vec![]],
        Scenario::Realistic => vec![vec!["tool.*", "db.read*", "email.*"], vec!["payment.*", "invoice.*"], vec!["*"]],
    };
    let mut agents = Vec::new();
    for i in 0..agent_count {
        let scopes = &scope_sets[i % scope_sets.len()];
        let v = api(client, args, reqwest::Method::POST, "/enforce/agents",
            Some(json!({"name": format!("bench-{}-agent-{i}", scenario_name(args.scenario)), "framework": "bench", "scopes": scopes}))).await?;
        agents.push(v["agent"]["agent_id"].as_str().unwrap_or_default().to_owned());
    }
    Ok(Setup { agents, policy_ids })
}

fn scenario_name(s: Scenario) -> &'static str {
    match s {
        Scenario::Simple => "simple",
        Scenario::Realistic => "realistic",
        Scenario::Session => "session",
    }
}

/// A deterministic mix of realistic actions; `n` picks one.
fn realistic_action(n: u64, agent: &str) -> Value {
    const PROSE: &str = "The agent reviewed the customer's ticket history and drafted a reply summarising \
        the refund policy, the delivery window and the next steps for escalation to the billing team. ";
    let len = 200 + (n * 7919 % 1800) as usize;
    let mut content = String::with_capacity(len + PROSE.len());
    while content.len() < len {
        content.push_str(PROSE);
    }
    content.truncate(len);
    match n % 10 {
        0 => content.push_str(" Card on file: 4111 1111 1111 1111."),
        1 => content.push_str(" Reach me at jane.doe@example.com or +1 415 555 0100."),
        _ => {}
    }
    let (action, metadata) = match n % 8 {
        0 => ("tool.search", json!({"framework": "langchain", "query": "refund policy"})),
        1 => ("db.read_orders", json!({"table": "orders", "limit": 50})),
        2 => ("email.send", json!({"to": "customer@example.com", "recipient_count": 1})),
        3 => ("payment.send", json!({"payment": {"amount": (n % 20_000).to_string(), "currency": "EUR"}, "country": "FR"})),
        4 => ("invoice.create", json!({"amount": 120})),
        5 => ("tool.browser.open", json!({"url": "https://example.com"})),
        6 => ("delete_record", json!({"table": "tickets"})),
        _ => ("tool.calculator", json!({})),
    };
    json!({"action_type": action, "agent_id": agent, "action_content": content, "metadata": metadata})
}

/// A session action: a payment of 1-30 EUR with a few tokens, so every budget counts.
fn session_action(n: u64, session_id: &str) -> Value {
    json!({"action_type": "bench.pay", "agent_id": null, "session_id": session_id, "action_content": "pay invoice",
        "metadata": {"amount": (1 + n % 30).to_string(), "currency": "EUR", "tokens": 40}})
}

async fn start_session(client: &reqwest::Client, args: &BenchArgs, agent: &str) -> anyhow::Result<String> {
    let body = json!({"agent_id": agent, "label": "bench",
        "budgets": {"max_actions": SESSION_MAX_ACTIONS, "max_spend": {"EUR": SESSION_MAX_SPEND_EUR}, "ttl_seconds": 3600}});
    let v = api(client, args, reqwest::Method::POST, "/enforce/sessions/start", Some(body)).await?;
    v["session_id"].as_str().map(str::to_owned).context("the session start answered no `session_id`")
}

#[derive(Default)]
struct Tally {
    decisions: BTreeMap<String, u64>,
    errors: u64,
    sessions_started: u64,
    first_error: Option<String>,
}

impl Tally {
    fn error(&mut self, what: String) {
        self.errors += 1;
        self.first_error.get_or_insert(what);
    }
}

/// Which of `nodes` worker `worker` sends its request for agent `agent` to: the
/// worker's own node, or with `by_agent` the agent's, so that one node decides for it.
fn node_for(agent: usize, worker: usize, nodes: usize, by_agent: bool) -> usize {
    if by_agent { agent % nodes } else { worker % nodes }
}

pub fn run(args: BenchArgs) -> anyhow::Result<std::process::ExitCode> {
    if args.concurrency == 0 || args.concurrency > 4096 {
        bail!("`--concurrency` must be between 1 and 4096");
    }
    if args.route_by_agent && matches!(args.scenario, Scenario::Session) {
        bail!("`--route-by-agent` does not apply to `--scenario session`: each worker keeps its session on one node");
    }
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(run_async(args))
}

async fn run_async(args: BenchArgs) -> anyhow::Result<std::process::ExitCode> {
    let client = reqwest::Client::builder().pool_max_idle_per_host(args.concurrency).build()?;
    let setup = setup(&client, &args).await?;
    let urls: Vec<String> = std::iter::once(&args.url)
        .chain(&args.also_urls)
        .map(|u| format!("{}/api/v1/enforce/intercept", u.trim_end_matches('/')))
        .collect();
    if !args.also_urls.is_empty() {
        // The other nodes learn the set-up's policies from the change feed (within a second).
        tokio::time::sleep(std::time::Duration::from_millis(1_000)).await;
    }
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut workers = Vec::new();
    for w in 0..args.concurrency {
        let (client, urls, stop, sent, done) = (client.clone(), urls.clone(), stop.clone(), sent.clone(), done.clone());
        let agents = setup.agents.clone();
        let args = args.clone();
        workers.push(tokio::spawn(async move {
            let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("histogram bounds");
            let mut tally = Tally::default();
            // The session scenario's current session (started outside the timed request).
            let mut session: Option<String> = None;
            loop {
                let n = sent.fetch_add(1, Ordering::Relaxed);
                if stop.load(Ordering::Relaxed) || args.requests.is_some_and(|l| n >= l) {
                    break;
                }
                let a = (n as usize + w) % agents.len();
                let agent = &agents[a];
                let url = &urls[node_for(a, w, urls.len(), args.route_by_agent)];
                let body = match args.scenario {
                    Scenario::Simple => json!({"action_type": "bench.read", "agent_id": agent, "action_content": "read row 42", "metadata": {}}),
                    Scenario::Realistic => realistic_action(n, agent),
                    Scenario::Session => {
                        if session.is_none() {
                            match start_session(&client, &args, agent).await {
                                Ok(id) => {
                                    tally.sessions_started += 1;
                                    session = Some(id);
                                }
                                Err(e) => {
                                    tally.error(format!("session start: {e:#}"));
                                    done.fetch_add(1, Ordering::Relaxed);
                                    continue;
                                }
                            }
                        }
                        session_action(n, session.as_deref().unwrap_or_default())
                    }
                };
                let t = Instant::now();
                let res = client.post(url).header("X-API-Key", &args.key).json(&body).send().await;
                let answer = match res {
                    Ok(r) if r.status().is_success() => r.bytes().await.map_err(|e| format!("answer: {e}")),
                    Ok(r) => Err(format!("HTTP {}: {}", r.status(), r.text().await.unwrap_or_default())),
                    Err(e) => Err(format!("request: {e}")),
                };
                let micros = t.elapsed().as_micros() as u64;
                let _ = hist.record(micros.max(1));
                let verdict = answer.and_then(|bytes| verdict_of(&bytes));
                match verdict.as_ref().map(Option::as_deref) {
                    Ok(Some(d)) => {
                        *tally.decisions.entry(d.to_owned()).or_default() += 1;
                        if d == "terminate" {
                            session = None; // its budget is spent: the next action starts another
                        }
                    }
                    Ok(None) => tally.error("an answer without `decision`".into()),
                    Err(e) => tally.error(e.clone()),
                }
                done.fetch_add(1, Ordering::Relaxed);
            }
            if let Some(id) = session {
                let _ = api(&client, &args, reqwest::Method::POST, &format!("/enforce/sessions/{id}/end"), Some(json!({"reason": "bench finished"}))).await;
            }
            (hist, tally)
        }));
    }
    // Progress line, once a second, on stderr.
    let deadline = started + Duration::from_secs(args.duration);
    let mut last = (Instant::now(), 0u64);
    loop {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let n = done.load(Ordering::Relaxed);
        if last.0.elapsed() >= Duration::from_secs(1) {
            let rate = (n - last.1) as f64 / last.0.elapsed().as_secs_f64();
            eprint!("\r{:>6.1}s  {:>9} decisions  {:>9.0}/s   ", started.elapsed().as_secs_f64(), n, rate);
            let _ = std::io::stderr().flush();
            last = (Instant::now(), n);
        }
        let finished = match args.requests {
            Some(l) => n >= l,
            None => Instant::now() >= deadline,
        };
        if finished || workers.iter().all(|w| w.is_finished()) {
            break;
        }
    }
    stop.store(true, Ordering::Relaxed);
    let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    let mut tally = Tally::default();
    for w in workers {
        let (h, t) = w.await?;
        hist.add(&h)?;
        for (k, v) in t.decisions {
            *tally.decisions.entry(k).or_default() += v;
        }
        tally.errors += t.errors;
        tally.sessions_started += t.sessions_started;
        if tally.first_error.is_none() {
            tally.first_error = t.first_error;
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    eprintln!();
    // Leave the workspace as it was: remove the bench's policies (agents stay; they are
    // reused by the next run, registration being idempotent).
    for id in &setup.policy_ids {
        let _ = api(&client, &args, reqwest::Method::DELETE, &format!("/enforce/policies/{id}"), None).await;
    }
    let total = hist.len();
    let us = |q: f64| hist.value_at_quantile(q);
    let summary = json!({
        "scenario": scenario_name(args.scenario),
        "concurrency": args.concurrency,
        "seconds": elapsed,
        "requests": total,
        "decisions_per_second": total as f64 / elapsed,
        "latency_us": {"p50": us(0.5), "p90": us(0.9), "p99": us(0.99), "p99_9": us(0.999), "max": hist.max()},
        "decisions": tally.decisions,
        "errors": tally.errors,
        "first_error": tally.first_error,
        "sessions_started": tally.sessions_started,
    });
    if args.json {
        println!("{summary}");
    } else {
        println!("scenario {}  concurrency {}  {:.1} s", summary["scenario"].as_str().unwrap_or(""), args.concurrency, elapsed);
        println!("  {:.0} decisions/s  ({} requests, {} errors)", summary["decisions_per_second"].as_f64().unwrap_or(0.0), total, tally.errors);
        println!("  latency  p50 {} µs  p90 {} µs  p99 {} µs  p99.9 {} µs  max {} µs", us(0.5), us(0.9), us(0.99), us(0.999), hist.max());
        let counts: Vec<String> = tally.decisions.iter().map(|(k, v)| format!("{k} {v}")).collect();
        println!("  decisions  {}", counts.join("  "));
        if tally.sessions_started > 0 {
            println!("  sessions started  {}", tally.sessions_started);
        }
        if let Some(e) = &tally.first_error {
            println!("  first error  {e}");
        }
    }
    Ok(if tally.errors == 0 { std::process::ExitCode::SUCCESS } else { std::process::ExitCode::from(1) })
}

#[cfg(test)]
mod tests {
    use super::{node_for, verdict_of};

    #[test]
    fn routing_by_agent_keeps_each_agent_on_one_node() {
        // Spread: a worker keeps its node whatever the agent.
        assert_eq!((0..4).map(|a| node_for(a, 1, 3, false)).collect::<Vec<_>>(), vec![1, 1, 1, 1]);
        // By agent: every worker sends agent 4 to node 1, and the agents cover every node.
        assert!((0..5).all(|w| node_for(4, w, 3, true) == 1));
        assert_eq!((0..6).map(|a| node_for(a, 0, 3, true)).collect::<Vec<_>>(), vec![0, 1, 2, 0, 1, 2]);
    }

    #[test]
    fn an_answer_is_read_for_its_verdict_and_must_be_json() {
        let answer = br#"{"ok":true,"decision":"block","policies_triggered":[{"policy_id":"p","reason":"a \"quoted\" reason"}],"identity":{"result":"verified"}}"#;
        assert_eq!(verdict_of(answer), Ok(Some("block".to_owned())));
        assert_eq!(verdict_of(br#"{"decision":"esc\u0061late"}"#), Ok(Some("escalate".to_owned())), "an escaped verdict is read too");
        assert_eq!(verdict_of(br#"{"ok":true}"#), Ok(None));
        for bad in [&b"not json"[..], br#"{"decision":"allow"} trailing"#, br#"{"decision":7}"#, br#"{"decision":"allow","#] {
            let err = verdict_of(bad).unwrap_err();
            assert!(err.starts_with("answer: "), "{err}");
        }
    }
}
