//! Runtime sessions as the engine sees them: live budgets and the kill switch.
//!
//! The server keeps each session's state; the engine only reads it (`SessionFacts`) and
//! says what an allowed action would cost (`Charge`). Two rules, in the order of the
//! pipeline:
//! 1. **Closed sessions first** (right after identity): a session that is killed,
//!    terminated, ended or past its expiry answers `terminate` for every action, whatever
//!    the policies say (`__session`).
//! 2. **Budgets last** (after the policies): an action the policies allow is charged one
//!    action, its `metadata.amount` in `metadata.currency` and its `metadata.tokens`. If
//!    the charge would take the session past any budget the answer is `terminate`
//!    (`__budget`, naming the budget) and the session ends. An amount that is not a
//!    number (or is too small for 28 decimal places), a currency that is not a
//!    currency code written as one (`is_currency_code`), or, when the session has a
//!    spend budget, an amount without a currency or in a currency the
//!    budget does not name, is refused (`block`, naming the field): a cost that cannot
//!    be read, or counted against the budget, cannot be allowed. Nor escalated: an
//!    action the policies escalate is refused the same way, as its approval could never
//!    let it run. An escalated action is charged when a person approves it
//!    (`Decision::approval_charge`), not when it is retried (escalations the server
//!    recorded before it kept that charge are charged on their retry).
//!
//! Amounts are exact decimals: a JSON integer, a JSON decimal (read from its text, so
//! `0.10` is one tenth) or a decimal string. Never binary floating point.

use std::collections::BTreeMap;

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::action::ActionRequest;
use crate::policy::metadata::{as_number, too_precise};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SessionStatus {
    Active,
    /// Stopped by a person or a revocation (`kill_reason` says why).
    Killed,
    /// Stopped by the engine: a budget was exhausted.
    Terminated,
    /// Past `expires_at`.
    Expired,
    /// Closed by the agent.
    Ended,
}

impl SessionStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            SessionStatus::Active => "active",
            SessionStatus::Killed => "killed",
            SessionStatus::Terminated => "terminated",
            SessionStatus::Expired => "expired",
            SessionStatus::Ended => "ended",
        }
    }
}

/// A session's limits. Absent fields are unlimited.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Budgets {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_actions: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl_seconds: Option<u64>,
    /// Per currency code, e.g. `{"USD": "5000"}`; serialised as decimal strings.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty", with = "decimal_limits")]
    pub max_spend: BTreeMap<String, Decimal>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u64>,
}

/// What a session has used so far.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Consumed {
    pub actions: u64,
    #[serde(default, with = "decimal_map")]
    pub spend: BTreeMap<String, Decimal>,
    pub tokens: u64,
}

impl Consumed {
    /// Add an allowed action's charge. The sums saturate: an agent chooses the amounts,
    /// and a sum that wrapped would read as little used (a budget bypass), one that
    /// overflowed a decimal would panic. A saturated sum only stands where no budget
    /// limits it (`exceeded` refuses any charge that would pass a budget).
    pub fn add(&mut self, c: &Charge) {
        self.actions = self.actions.saturating_add(c.actions);
        if let Some((cur, amount)) = &c.spend {
            let used = self.spend.entry(cur.clone()).or_default();
            *used = used.saturating_add(*amount);
        }
        self.tokens = self.tokens.saturating_add(c.tokens);
    }
}

/// What one allowed action costs its session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Charge {
    pub actions: u64,
    /// Currency code and amount.
    pub spend: Option<(String, Decimal)>,
    pub tokens: u64,
}

/// The session facts one decision reads.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionFacts {
    pub session_id: String,
    pub status: SessionStatus,
    /// Why a non-active session stopped.
    pub reason: Option<String>,
    pub expires_at_ms: Option<i64>,
    pub budgets: Budgets,
    pub consumed: Consumed,
}

impl SessionFacts {
    /// Why no action may run in this session at `now_ms`, if so.
    pub fn closed_reason(&self, now_ms: i64) -> Option<String> {
        let id = &self.session_id;
        match self.status {
            SessionStatus::Active => {}
            SessionStatus::Killed => {
                return Some(format!("session `{id}` was killed: {}", self.reason.as_deref().unwrap_or("no reason given")));
            }
            SessionStatus::Terminated => {
                return Some(format!("session `{id}` is terminated: {}", self.reason.as_deref().unwrap_or("budget exhausted")));
            }
            SessionStatus::Expired => return Some(format!("session `{id}` has expired")),
            SessionStatus::Ended => return Some(format!("session `{id}` has ended")),
        }
        match self.expires_at_ms {
            Some(at) if now_ms >= at => Some(format!("session `{id}` has expired (ttl_seconds reached)")),
            _ => None,
        }
    }
}

/// Why an action cannot be charged: the field and the problem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChargeError {
    pub field: &'static str,
    pub message: String,
}

/// What `request` would cost in a session with these budgets. Spend is read only when
/// `metadata.amount` is present; tokens when `metadata.tokens` is.
pub fn charge_for(request: &ActionRequest, budgets: &Budgets) -> Result<Charge, ChargeError> {
    let md = &request.metadata;
    let spend = spend_of(md, &budgets.max_spend, "the session's spend budget")?;
    let tokens = match md.get("tokens") {
        None | Some(Value::Null) => 0,
        Some(v) => v.as_u64().ok_or_else(|| ChargeError {
            field: "metadata.tokens",
            message: format!("`{v}` is not a non-negative integer"),
        })?,
    };
    Ok(Charge { actions: 1, spend, tokens })
}

/// What an action spends: `metadata.amount` in `metadata.currency`, read exactly, when
/// the amount is present. `limited` are the currencies a budget (`budget`, named in
/// errors) limits: when there are any, the currency is required and must be one of them.
pub fn spend_of(md: &serde_json::Map<String, Value>, limited: &BTreeMap<String, Decimal>, budget: &str) -> Result<Option<(String, Decimal)>, ChargeError> {
    let Some(v) = md.get("amount").filter(|v| !v.is_null()) else { return Ok(None) };
    let amount = as_number(v).ok_or_else(|| ChargeError {
        field: "metadata.amount",
        message: if too_precise(v) {
            // Charged rounded, it would be charged as something it is not.
            format!("`{v}` is too small or too precise to count exactly (a decimal holds 28 decimal places and 96 bits of digits)")
        } else if crate::policy::metadata::beyond_decimal(v) {
            format!("is a number beyond what a decimal holds ({})", crate::policy::metadata::BEYOND)
        } else {
            format!("`{v}` is not a number (use an integer, a decimal or a decimal string)")
        },
    })?;
    if amount.is_sign_negative() {
        return Err(ChargeError { field: "metadata.amount", message: format!("`{amount}` is negative") });
    }
    if amount.is_zero() && written_nonzero(v) {
        // Decimals hold 28 places: a smaller amount would be charged as nothing,
        // however often it is spent.
        return Err(ChargeError { field: "metadata.amount", message: format!("`{v}` is too small to count (under 1e-28)") });
    }
    match md.get("currency") {
        Some(Value::String(c)) if !c.trim().is_empty() => Ok(Some((currency_code(c, limited, budget)?, amount))),
        None | Some(Value::Null) if limited.is_empty() => Ok(None),
        None | Some(Value::Null) => Err(ChargeError { field: "metadata.currency", message: format!("is required with `metadata.amount` under {budget}") }),
        Some(other) => Err(ChargeError { field: "metadata.currency", message: format!("`{other}` is not a currency code") }),
    }
}

/// Whether an amount as sent has a nonzero digit before any exponent (`0.0…01`,
/// `1e-40`): one that reads as zero once parsed was rounded away.
fn written_nonzero(v: &Value) -> bool {
    let text = match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    text.split(['e', 'E']).next().is_some_and(|mantissa| mantissa.bytes().any(|b| matches!(b, b'1'..=b'9')))
}

/// What a currency code may be: an uppercase ASCII letter, then 2 to 9 uppercase ASCII
/// letters or digits. ISO 4217's codes (`USD`) have this shape, and so do the tickers
/// agents pay in (`USDC`, `ETH`, `WBTC`). Nothing else (`US$`, a fullwidth `ＵＳＤ`, a
/// zero-width space), so one currency has one spelling in a session's budgets and
/// consumption.
pub const CURRENCY_CODE_SHAPE: &str = "an uppercase letter, then 2 to 9 uppercase letters or digits, such as `USD` or `USDC`";

/// Whether `code` is a currency code (`CURRENCY_CODE_SHAPE`).
pub fn is_currency_code(code: &str) -> bool {
    let b = code.as_bytes();
    (3..=10).contains(&b.len())
        && b[0].is_ascii_uppercase()
        && b.iter().all(|c| c.is_ascii_uppercase() || c.is_ascii_digit())
}

/// The currency an amount is charged in: a currency code (`is_currency_code`) written
/// as one, and, when a budget limits currencies (`limited`), one it names. A currency the
/// budget does not name would be spent without limit (fail closed). Another spelling
/// of a code (`usd`, ` USD`) is refused rather than read as it: policies compare
/// `metadata.currency` as sent, so a spend they saw as not `USD` must not be charged as
/// `USD`.
fn currency_code(written: &str, limited: &BTreeMap<String, Decimal>, budget: &str) -> Result<String, ChargeError> {
    let refuse = |message: String| Err(ChargeError { field: "metadata.currency", message });
    if !is_currency_code(written) {
        let canonical = written.trim().to_ascii_uppercase();
        if is_currency_code(&canonical) {
            return refuse(format!("`{written}` must be written `{canonical}` (policies compare the currency as sent)"));
        }
        return refuse(format!("`{written}` is not a currency code ({CURRENCY_CODE_SHAPE})"));
    }
    let code = written.to_owned();
    if !limited.is_empty() && !limited.contains_key(&code) {
        let named: Vec<&str> = limited.keys().map(String::as_str).collect();
        return refuse(format!("`{code}` is not a currency of {budget} ({})", named.join(", ")));
    }
    Ok(code)
}

/// The budget this charge would exceed, named for the reason text, if any.
pub fn exceeded(facts: &SessionFacts, charge: &Charge) -> Option<String> {
    let (b, c) = (&facts.budgets, &facts.consumed);
    // Checked sums: one that does not fit is past any budget.
    if let Some(max) = b.max_actions
        && c.actions.checked_add(charge.actions).is_none_or(|total| total > max)
    {
        return Some(format!("budget `max_actions` ({max}) exhausted: {} actions already taken", c.actions));
    }
    if let Some((cur, amount)) = &charge.spend
        && let Some(max) = b.max_spend.get(cur)
    {
        let used = c.spend.get(cur).copied().unwrap_or_default();
        if used.checked_add(*amount).is_none_or(|total| total > *max) {
            return Some(format!(
                "budget `max_spend.{cur}` ({max}) would be exceeded: {used} spent, this action is {amount}"
            ));
        }
    }
    if let Some(max) = b.max_tokens
        && c.tokens.checked_add(charge.tokens).is_none_or(|total| total > max)
    {
        return Some(format!(
            "budget `max_tokens` ({max}) would be exceeded: {} used, this action is {}",
            c.tokens, charge.tokens
        ));
    }
    None
}

/// Parse a spend budget value: an integer, a decimal or a decimal string, read as an
/// action's amount is (`as_number`: `-?[0-9]+(\.[0-9]+)?`, never rounded), so a budget
/// and what is charged to it take the same spellings (`1e3` and ` 5` are neither).
pub fn parse_amount(v: &Value) -> Option<Decimal> {
    as_number(v)
}

/// `decimal_map` for limits per currency (a session's `max_spend`, a grant's
/// `max_amount`): given, it names at least one currency. An empty map would read as no
/// limit at all, where whoever wrote it most likely meant that nothing may be spent.
pub mod decimal_limits {
    use std::collections::BTreeMap;

    use rust_decimal::Decimal;
    use serde::Deserializer;
    use serde::de::Error;

    pub use super::decimal_map::serialize;

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<BTreeMap<String, Decimal>, D::Error> {
        let limits = super::decimal_map::deserialize(d)?;
        if limits.is_empty() {
            return Err(D::Error::custom(
                "names no currency: leave it out for no limit, or name each currency that may be spent (`{\"USD\": 0}` for none)",
            ));
        }
        Ok(limits)
    }
}

/// Decimals as strings on the wire and in storage (no binary floating point anywhere);
/// accepted as strings or JSON numbers.
pub mod decimal_map {
    use std::collections::BTreeMap;

    use rust_decimal::Decimal;
    use serde::de::Error;
    use serde::{Deserializer, Serializer};
    use serde_json::Value;

    pub fn serialize<S: Serializer>(m: &BTreeMap<String, Decimal>, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(m.iter().map(|(k, v)| (k, v.normalize().to_string())))
    }

    /// Keys are kept as written, and the caller checks that each is a currency code:
    /// folding them (`usd` to `USD`) would merge two budgets into the last one given,
    /// which may be the larger. A key given twice is refused for the same reason.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<BTreeMap<String, Decimal>, D::Error> {
        struct Amounts;
        impl<'de> serde::de::Visitor<'de> for Amounts {
            type Value = BTreeMap<String, Decimal>;

            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an object of currency codes to decimal amounts")
            }

            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut out = BTreeMap::new();
                while let Some((k, v)) = map.next_entry::<String, Value>()? {
                    let amount = super::parse_amount(&v).ok_or_else(|| A::Error::custom(format!("`{k}`: `{v}` is not a decimal amount")))?;
                    if amount.is_sign_negative() {
                        return Err(A::Error::custom(format!("`{k}`: `{v}` is negative")));
                    }
                    if out.contains_key(&k) {
                        return Err(A::Error::custom(format!("`{k}` is given twice")));
                    }
                    out.insert(k, amount);
                }
                Ok(out)
            }
        }
        d.deserialize_map(Amounts)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn request(metadata: Value) -> ActionRequest {
        ActionRequest {
            action_type: "pay".into(),
            metadata: metadata.as_object().cloned().unwrap_or_default(),
            ..ActionRequest::default()
        }
    }

    fn facts(budgets: Value, consumed: Consumed) -> SessionFacts {
        SessionFacts {
            session_id: "s".into(),
            status: SessionStatus::Active,
            reason: None,
            expires_at_ms: None,
            budgets: serde_json::from_value(budgets).unwrap(),
            consumed,
        }
    }

    #[test]
    fn amounts_are_exact_decimals_in_every_form() {
        let b: Budgets = serde_json::from_value(json!({"max_spend": {"EUR": "0.30"}})).unwrap();
        let mut used = Consumed::default();
        for form in [json!(0.10), json!("0.10"), json!(0.1)] {
            let c = charge_for(&request(json!({"amount": form, "currency": "EUR"})), &b).unwrap();
            let f = SessionFacts { budgets: b.clone(), consumed: used.clone(), ..facts(json!({}), Consumed::default()) };
            assert_eq!(exceeded(&f, &c), None);
            used.add(&c);
        }
        assert_eq!(used.spend["EUR"].to_string(), "0.30");
        let c = charge_for(&request(json!({"amount": "0.10", "currency": "EUR"})), &b).unwrap();
        let f = SessionFacts { budgets: b, consumed: used, ..facts(json!({}), Consumed::default()) };
        assert!(exceeded(&f, &c).unwrap().contains("max_spend.EUR"));
    }

    /// Budget keys are kept as written, for the caller to refuse what is not a currency
    /// code: folded, `{"USD": 5, "usd": 1000}` became a budget of 1000 USD. A key given
    /// twice is refused, since the last one would win.
    #[test]
    fn budget_keys_are_kept_as_written_and_never_merged() {
        let b: Budgets = serde_json::from_value(json!({"max_spend": {"USD": 5, "usd": 1000, " EUR": 1}})).unwrap();
        let keys: Vec<&str> = b.max_spend.keys().map(String::as_str).collect();
        assert_eq!(keys, [" EUR", "USD", "usd"]);
        assert_eq!(b.max_spend["USD"].to_string(), "5");
        let twice = serde_json::from_str::<Budgets>(r#"{"max_spend": {"USD": 5, "USD": 1000}}"#).unwrap_err();
        assert!(twice.to_string().contains("`USD` is given twice"), "{twice}");
    }

    /// A limit per currency that names none would read as no limit: refused, for a
    /// session's spend and a grant's amount alike. And an amount beyond a decimal is
    /// named as such.
    #[test]
    fn an_empty_limit_per_currency_is_refused() {
        let e = serde_json::from_value::<Budgets>(json!({"max_spend": {}})).unwrap_err();
        assert!(e.to_string().contains("names no currency"), "{e}");
        let e = serde_json::from_value::<crate::grant_budget::GrantLimits>(json!({"max_amount": {}})).unwrap_err();
        assert!(e.to_string().contains("names no currency"), "{e}");
        assert!(serde_json::from_value::<Budgets>(json!({})).unwrap().max_spend.is_empty(), "absent is no limit");
        let b: Budgets = serde_json::from_value(json!({"max_spend": {"USD": 0}})).unwrap();
        assert!(charge_for(&request(json!({"amount": 1, "currency": "USD"})), &b).is_ok(), "charged; the budget refuses it");
        let e = charge_for(&request(json!({"amount": 1e32, "currency": "USD"})), &Budgets::default()).unwrap_err();
        assert_eq!(e.field, "metadata.amount");
        assert!(e.message.starts_with("is a number beyond what a decimal holds"), "{}", e.message);
    }

    /// A budget's amount takes the spellings an action's amount does, and no others.
    #[test]
    fn budget_amounts_are_spelled_as_action_amounts_are() {
        for ok in [json!(5), json!(0.3), json!("0.30"), json!("5000"), json!("100000000000000000000")] {
            let b: Budgets = serde_json::from_value(json!({"max_spend": {"USD": ok}})).unwrap_or_else(|e| panic!("{ok}: {e}"));
            assert_eq!(Some(b.max_spend["USD"]), as_number(&ok), "{ok}");
        }
        for bad in [json!("1e3"), json!(" 5"), json!("5 "), json!("+5"), json!("0x10"), json!("five"), json!(".5")] {
            let e = serde_json::from_value::<Budgets>(json!({"max_spend": {"USD": bad}})).unwrap_err();
            assert!(e.to_string().contains("is not a decimal amount"), "{bad}: {e}");
        }
    }

    /// A spend budget in USD once left every other currency unlimited, each recorded as
    /// a new one (`EUR`, `XXX`, `US$`, a fullwidth `ＵＳＤ`, `USD` with a zero-width
    /// space). With a spend budget, only the currencies it names are charged.
    #[test]
    fn a_spend_budget_refuses_currencies_it_does_not_name() {
        let b: Budgets = serde_json::from_value(json!({"max_spend": {"USD": 100}})).unwrap();
        for cur in ["EUR", "XXX", "US$", "ＵＳＤ", "USD\u{200b}", "USDX", "US", "USDC"] {
            let e = charge_for(&request(json!({"amount": 1, "currency": cur})), &b).unwrap_err();
            assert_eq!(e.field, "metadata.currency", "{cur}");
        }
        let e = charge_for(&request(json!({"amount": 1, "currency": "EUR"})), &b).unwrap_err();
        assert!(e.message.contains("`EUR`") && e.message.contains("USD"), "{}", e.message);
        assert_eq!(charge_for(&request(json!({"amount": 1, "currency": "USD"})), &b).unwrap().spend.unwrap().0, "USD");
        // Another spelling of the code is refused, and the answer names the code.
        for cur in [" usd ", "usd", "Usd", "USD "] {
            let e = charge_for(&request(json!({"amount": 1, "currency": cur})), &b).unwrap_err();
            assert_eq!(e.field, "metadata.currency", "{cur}");
            assert!(e.message.contains("must be written `USD`"), "{cur}: {}", e.message);
        }
        // Without a spend budget any currency code is counted, nothing else.
        assert!(charge_for(&request(json!({"amount": 1, "currency": "EUR"})), &Budgets::default()).is_ok());
        assert_eq!(charge_for(&request(json!({"amount": 1, "currency": "eur"})), &Budgets::default()).unwrap_err().field, "metadata.currency");
        assert_eq!(charge_for(&request(json!({"amount": 1, "currency": "US$"})), &Budgets::default()).unwrap_err().field, "metadata.currency");
    }

    /// Agents pay in tokens as well as in ISO 4217 currencies: a budget in `USDC` counts
    /// `USDC` spends, and no other code.
    #[test]
    fn currency_codes_include_tickers() {
        for code in ["USD", "USDC", "USDT", "ETH", "WBTC", "BTC2", "ABCDEFGHIJ"] {
            assert!(is_currency_code(code), "{code}");
        }
        for code in ["US", "usd", "1INCH", "ABCDEFGHIJK", "US$", "USD C", "ＵＳＤＣ", "USDC\u{200b}", ""] {
            assert!(!is_currency_code(code), "{code:?}");
        }
        let b: Budgets = serde_json::from_value(json!({"max_spend": {"USDC": 100}})).unwrap();
        let c = charge_for(&request(json!({"amount": "2.5", "currency": "USDC"})), &b).unwrap();
        assert_eq!(c.spend.unwrap().0, "USDC");
        for cur in ["USD", "USDC.e", "USDT"] {
            assert_eq!(charge_for(&request(json!({"amount": 1, "currency": cur})), &b).unwrap_err().field, "metadata.currency", "{cur}");
        }
    }

    #[test]
    fn unreadable_costs_name_the_field() {
        let b: Budgets = serde_json::from_value(json!({"max_spend": {"USD": 10}})).unwrap();
        assert_eq!(charge_for(&request(json!({"amount": "lots", "currency": "USD"})), &b).unwrap_err().field, "metadata.amount");
        assert_eq!(charge_for(&request(json!({"amount": -1, "currency": "USD"})), &b).unwrap_err().field, "metadata.amount");
        // Too small to count is refused, not charged as nothing; zero is zero.
        for tiny in [json!("0.00000000000000000000000000001"), json!("0.000000000000000000000000000000000009")] {
            let e = charge_for(&request(json!({"amount": tiny, "currency": "USD"})), &b).unwrap_err();
            assert_eq!(e.field, "metadata.amount", "{tiny}");
            assert!(e.message.contains("too small"), "{}", e.message);
        }
        let precise = charge_for(&request(json!({"amount": "1.00000000000000000000000000001", "currency": "USD"})), &b).unwrap_err();
        assert!(precise.field == "metadata.amount" && precise.message.contains("too precise"), "{}", precise.message);
        let zeros = charge_for(&request(json!({"amount": "0001.500000000000000000000000000000000", "currency": "USD"})), &b).unwrap();
        assert_eq!(zeros.spend.unwrap().1, Decimal::new(15, 1), "zeros that carry nothing do not count as digits");
        for zero in [json!(0), json!("0.000"), json!(0.0), json!("-0")] {
            assert_eq!(charge_for(&request(json!({"amount": zero, "currency": "USD"})), &b).unwrap().spend.unwrap().1, Decimal::ZERO, "{zero}");
        }
        assert_eq!(charge_for(&request(json!({"amount": 5})), &b).unwrap_err().field, "metadata.currency");
        assert_eq!(charge_for(&request(json!({"tokens": 1.5})), &b).unwrap_err().field, "metadata.tokens");
        // Without a spend budget an amount needs no currency.
        assert!(charge_for(&request(json!({"amount": 5})), &Budgets::default()).is_ok());
    }

    #[test]
    fn each_budget_is_named_when_exceeded() {
        let f = facts(json!({"max_actions": 2, "max_tokens": 100}), Consumed { actions: 2, ..Consumed::default() });
        let c = charge_for(&request(json!({})), &f.budgets).unwrap();
        assert!(exceeded(&f, &c).unwrap().contains("max_actions"));
        let f = facts(json!({"max_tokens": 100}), Consumed { tokens: 90, ..Consumed::default() });
        let c = charge_for(&request(json!({"tokens": 11})), &f.budgets).unwrap();
        assert!(exceeded(&f, &c).unwrap().contains("max_tokens"));
        let c = charge_for(&request(json!({"tokens": 10})), &f.budgets).unwrap();
        assert_eq!(exceeded(&f, &c), None, "reaching a budget exactly is allowed");
    }

    /// Amounts and token counts are the agent's to choose: sums that do not fit are past
    /// any budget, never wrapped round to little used, never a panic.
    #[test]
    fn sums_too_large_to_hold_exceed_the_budget_and_never_wrap() {
        let f = facts(json!({"max_tokens": 100}), Consumed { tokens: 5, ..Consumed::default() });
        let c = charge_for(&request(json!({"tokens": u64::MAX})), &f.budgets).unwrap();
        assert!(exceeded(&f, &c).unwrap().contains("max_tokens"));
        let f = facts(json!({"max_actions": 10}), Consumed { actions: u64::MAX, ..Consumed::default() });
        assert!(exceeded(&f, &charge_for(&request(json!({})), &f.budgets).unwrap()).unwrap().contains("max_actions"));
        let huge = Decimal::MAX.to_string();
        let used = Consumed { spend: [("USD".to_owned(), Decimal::ONE)].into(), ..Consumed::default() };
        let f = facts(json!({"max_spend": {"USD": 5000}}), used);
        let c = charge_for(&request(json!({"amount": huge, "currency": "USD"})), &f.budgets).unwrap();
        assert!(exceeded(&f, &c).unwrap().contains("max_spend.USD"));
        // Without a budget the sums saturate where they would overflow.
        let mut used = Consumed { tokens: u64::MAX - 1, ..Consumed::default() };
        for _ in 0..2 {
            used.add(&charge_for(&request(json!({"tokens": 7, "amount": huge, "currency": "EUR"})), &Budgets::default()).unwrap());
        }
        assert_eq!((used.tokens, used.spend["EUR"]), (u64::MAX, Decimal::MAX));
    }

    #[test]
    fn closed_sessions_say_why() {
        let mut f = facts(json!({}), Consumed::default());
        assert_eq!(f.closed_reason(0), None);
        f.expires_at_ms = Some(1000);
        assert!(f.closed_reason(1000).unwrap().contains("expired"));
        f.status = SessionStatus::Killed;
        f.reason = Some("operator".into());
        assert!(f.closed_reason(0).unwrap().contains("operator"));
    }

    #[test]
    fn budgets_reject_unknown_fields_and_bad_amounts() {
        assert!(serde_json::from_value::<Budgets>(json!({"max_action": 3})).is_err());
        assert!(serde_json::from_value::<Budgets>(json!({"max_spend": {"USD": "ten"}})).is_err());
        assert!(serde_json::from_value::<Budgets>(json!({"max_spend": {"USD": -5}})).is_err());
        let b: Budgets = serde_json::from_value(json!({"max_spend": {"USD": 5000}})).unwrap();
        assert_eq!(serde_json::to_value(&b).unwrap(), json!({"max_spend": {"USD": "5000"}}));
    }

    mod through_decide {
        use super::*;
        use crate::{CompiledPolicySet, DecisionInput, Identity, PolicyDef, Verdict, WorkspaceSettings, decide};

        fn run(policies: Value, identity: Identity, metadata: Value, s: &SessionFacts) -> crate::Decision {
            run_with(policies, identity, metadata, s, Default::default())
        }

        fn run_with(policies: Value, identity: Identity, metadata: Value, s: &SessionFacts, authority: crate::authority::Authority<'_>) -> crate::Decision {
            let defs: Vec<PolicyDef> = serde_json::from_value(policies).unwrap();
            let set = CompiledPolicySet::compile(&defs).unwrap();
            let req = request(metadata);
            let input = DecisionInput {
                request: &req,
                identity: &identity,
                agent: None,
                agent_history: &[],
                session_history: &[],
                agent_history_from_ms: i64::MIN,
                session_history_from_ms: i64::MIN,
                session: Some(s),
                authority,
                now_ms: 0,
            };
            decide(&input, &set, &WorkspaceSettings::default())
        }

        #[test]
        fn an_allowed_action_is_charged() {
            let f = facts(json!({"max_actions": 5}), Consumed::default());
            let d = run(json!([]), Identity::Anonymous, json!({"amount": "2.5", "currency": "USD"}), &f);
            assert_eq!(d.verdict, Verdict::Allow);
            let c = d.charge.unwrap();
            assert_eq!((c.actions, c.spend.unwrap().0), (1, "USD".to_owned()));
            assert_eq!(d.ends_session, None);
        }

        #[test]
        fn a_spend_in_a_currency_the_budget_does_not_name_is_blocked() {
            let f = facts(json!({"max_spend": {"USD": 100}}), Consumed::default());
            let d = run(json!([]), Identity::Anonymous, json!({"amount": 1, "currency": "EUR"}), &f);
            assert_eq!(d.verdict, Verdict::Block);
            assert_eq!(d.triggered[0].policy_id, "__budget");
            assert!(d.triggered[0].reason.contains("metadata.currency"), "{}", d.triggered[0].reason);
            assert_eq!(d.charge, None);
        }

        /// A person is not asked to approve what could not run once approved.
        #[test]
        fn an_escalation_whose_cost_cannot_be_read_is_blocked() {
            let f = facts(json!({"max_spend": {"USD": 100}}), Consumed::default());
            let p = json!([{"policy_id": "p1", "name": "review", "policy_type": "action_type", "action_types": ["*"], "decision": "escalate"}]);
            let d = run(p.clone(), Identity::Anonymous, json!({"amount": 1, "currency": "usd"}), &f);
            assert_eq!(d.verdict, Verdict::Block);
            assert_eq!(d.triggered[0].policy_id, "__budget");
            assert!(d.triggered[0].reason.contains("must be written `USD`"), "{}", d.triggered[0].reason);
            assert_eq!(d.triggered.iter().map(|t| t.policy_id.as_str()).collect::<Vec<_>>(), ["__budget", "p1"], "the escalating policy stays listed");
            let d = run(p, Identity::Anonymous, json!({"amount": 1, "currency": "USD"}), &f);
            assert_eq!((d.verdict, d.charge), (Verdict::Escalate, None), "an escalation is not charged when it is raised");
            let c = d.approval_charge.expect("its approval will charge the session");
            assert_eq!((c.actions, c.spend), (1, Some(("USD".to_owned(), Decimal::ONE))));
        }

        fn approved_retry(s: &SessionFacts, paid: bool) -> crate::Decision {
            retry_under(json!([{"policy_id": "p1", "name": "review", "policy_type": "action_type", "action_types": ["*"], "decision": "escalate"}]), s, paid)
        }

        fn retry_under(p: Value, s: &SessionFacts, paid: bool) -> crate::Decision {
            let approval = crate::authority::ApprovalFacts { escalation_id: "esc_1".into(), approver: "key_a".into(), reason: None, paid, paid_grant: None, counted: false };
            let authority = crate::authority::Authority { approval: Some(&approval), ..Default::default() };
            run_with(p, Identity::Anonymous, json!({"amount": 3, "currency": "USD"}), s, authority)
        }

        /// The approval charged the session; the retry it allows must neither charge it
        /// again nor be refused for the budget its own charge used up.
        #[test]
        fn a_retry_on_an_approval_paid_for_is_not_charged_again() {
            let used = Consumed { actions: 1, spend: [("USD".to_owned(), Decimal::from(3))].into(), tokens: 0 };
            let f = facts(json!({"max_actions": 1, "max_spend": {"USD": 3}}), used);
            let d = approved_retry(&f, true);
            assert_eq!(d.verdict, Verdict::Allow, "{}", d.reasoning);
            assert_eq!((d.charge, d.approval_charge, d.ends_session), (None, None, None));
            assert_eq!(d.authority.approved_by.as_deref(), Some("esc_1"));
            // An approval given before approvals were charged (`paid` false) is charged
            // on its retry, as it always was, and the budget still holds.
            let d = approved_retry(&f, false);
            assert_eq!(d.verdict, Verdict::Terminate, "{}", d.reasoning);
            let fresh = facts(json!({"max_actions": 2}), Consumed::default());
            assert_eq!(approved_retry(&fresh, false).charge.map(|c| c.actions), Some(1));
        }

        /// Policies changed since the escalation so that they allow the action: the
        /// approval that paid for it is still what it runs on (used up, not charged
        /// again); one that did not pay leaves the action charged as any allowed one.
        #[test]
        fn a_retry_the_policies_now_allow_is_not_charged_twice() {
            let used = Consumed { actions: 1, spend: [("USD".to_owned(), Decimal::from(3))].into(), tokens: 0 };
            let f = facts(json!({"max_actions": 1}), used);
            let d = retry_under(json!([]), &f, true);
            assert_eq!((d.verdict, d.charge, d.authority.approved_by.as_deref()), (Verdict::Allow, None, Some("esc_1")), "{}", d.reasoning);
            let fresh = facts(json!({"max_actions": 2}), Consumed::default());
            let d = retry_under(json!([]), &fresh, false);
            assert_eq!((d.charge.map(|c| c.actions), d.authority.approved_by), (Some(1), None));
            // Refused now, it uses nothing.
            let p = json!([{"policy_id": "p1", "name": "no", "policy_type": "action_type", "action_types": ["*"], "decision": "block"}]);
            let d = retry_under(p, &fresh, true);
            assert_eq!((d.verdict, d.authority.approved_by), (Verdict::Block, None));
        }

        #[test]
        fn a_refused_action_costs_nothing() {
            let f = facts(json!({"max_actions": 5}), Consumed::default());
            let p = json!([{"policy_id": "p1", "name": "no", "policy_type": "action_type", "action_types": ["pay"], "decision": "block"}]);
            let d = run(p, Identity::Anonymous, json!({}), &f);
            assert_eq!(d.verdict, Verdict::Block);
            assert_eq!(d.charge, None);
        }

        #[test]
        fn the_action_past_the_budget_terminates_and_ends_the_session() {
            let f = facts(json!({"max_actions": 1}), Consumed { actions: 1, ..Consumed::default() });
            let d = run(json!([]), Identity::Anonymous, json!({}), &f);
            assert_eq!(d.verdict, Verdict::Terminate);
            assert_eq!(d.triggered[0].policy_id, "__budget");
            assert!(d.ends_session.unwrap().contains("max_actions"));
        }

        #[test]
        fn a_closed_session_terminates_before_identity_and_policies() {
            let mut f = facts(json!({}), Consumed::default());
            f.status = SessionStatus::Killed;
            f.reason = Some("revoked: leaked".into());
            let failed = Identity::Failed { check: "agent_deactivated".into(), reason: "gone".into() };
            let d = run(json!([]), failed, json!({}), &f);
            assert_eq!(d.verdict, Verdict::Terminate);
            assert_eq!(d.triggered[0].policy_id, "__session");
            assert!(d.reasoning.contains("revoked: leaked"));
            assert_eq!(d.ends_session, None, "it is already over");
        }
    }
}
