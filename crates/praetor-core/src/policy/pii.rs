//! `pii` policies: personal data and credentials in the content or metadata.
//!
//! Conditions:
//! ```json
//! { "categories": ["email", "phone", "credit_card", "ssn", "iban", "ip_address", "secret"],
//!                                            // optional, default all seven; not empty
//!   "fields": ["content", "metadata"] }      // optional, default both
//! ```
//! Detection is `crate::pii::scan`. In metadata it reads string values, object keys, and
//! numbers for the categories a number can hold (`crate::pii::NUMBER_CATEGORIES`): a
//! whole number as its decimal digits, an array of them as one number written in groups
//! (see `metadata_texts::walk`). The reason lists the first location of each category
//! found, never the value: `pii: credit_card at content[10..29]; email at metadata.to[0..15]`
//! (byte offsets into that field, or into the digits of a number); a key holding PII is
//! named by its position (`metadata.<key 0>`), in its own location and those below it.

use std::fmt::Write as _;

use super::conditions::{Fields, Obj, fields};
use super::{Effect, Hit, PolicyDef, PolicyError};
use crate::engine::{ContentView, EvalCtx};
use crate::pii::{Category, CategorySet, PiiMatch};

#[derive(Debug)]
pub(crate) struct Rule {
    categories: CategorySet,
    fields: Fields,
}

pub(crate) fn compile(def: &PolicyDef) -> Result<Rule, PolicyError> {
    let c = Obj::new(&def.conditions, "conditions", &["categories", "fields"])?;
    let categories = match c.str_list("categories")? {
        None => CategorySet::all(),
        Some(list) if list.is_empty() => return Err(c.err("categories", "must not be empty")),
        Some(list) => {
            let mut set = CategorySet::empty();
            for (i, name) in list.iter().enumerate() {
                let cat = Category::parse(name).ok_or_else(|| {
                    let all: Vec<String> = Category::ALL.iter().map(|c| format!("`{c}`")).collect();
                    PolicyError::new(
                        format!("conditions.categories[{i}]"),
                        format!("unknown category `{name}`; expected one of {}", all.join(", ")),
                    )
                })?;
                set.insert(cat);
            }
            set
        }
    };
    Ok(Rule {
        categories,
        fields: fields(&c)?,
    })
}

impl Rule {
    pub(crate) fn categories(&self) -> CategorySet {
        self.categories
    }

    pub(crate) fn eval(&self, effect: Effect, cx: &EvalCtx<'_>) -> Option<Hit> {
        // First location per category, in category order of discovery.
        let mut found: Vec<(Category, String)> = Vec::new();
        let mut note = |field: &str, m: &PiiMatch| {
            if self.categories.contains(m.category) && !found.iter().any(|(c, _)| *c == m.category) {
                found.push((m.category, format!("{field}[{}..{}]", m.start, m.end)));
            }
        };
        let mut redacted = false;
        if self.fields.content {
            match cx.content() {
                ContentView::Visible(_) => cx.content_pii().iter().for_each(|m| note("content", m)),
                ContentView::Redacted => redacted = true,
                ContentView::Absent => {}
            }
        }
        if self.fields.metadata {
            for (path, m) in cx.metadata_pii() {
                note(path, m);
            }
        }
        if found.is_empty() {
            return if redacted {
                cx.redacted_content_hit(effect)
            } else {
                None
            };
        }
        let mut reason = String::from("pii: ");
        for (i, (cat, at)) in found.iter().enumerate() {
            if i > 0 {
                reason.push_str("; ");
            }
            let _ = write!(reason, "{cat} at {at}");
        }
        Some(Hit::new(reason))
    }
}

#[cfg(test)]
mod tests {
    use crate::Verdict;
    use crate::engine::tests::Fx;
    use crate::policy::tests::err_of;
    use serde_json::json;

    fn cards() -> serde_json::Value {
        json!({"name": "No cards", "policy_type": "pii", "decision": "block",
               "conditions": {"categories": ["credit_card", "ssn"]}})
    }

    #[test]
    fn reason_has_category_and_location_not_value() {
        let d = Fx::new(vec![cards()])
            .content("charge card 4111-1111-1111-1111 now")
            .decide("pay");
        assert_eq!(d.verdict, Verdict::Block);
        assert_eq!(d.triggered[0].reason, "pii: credit_card at content[12..31]");
        assert!(!d.reasoning.contains("4111"));
    }

    #[test]
    fn luhn_failure_and_invalid_ssn_do_not_match() {
        let fx = Fx::new(vec![cards()]);
        assert_eq!(
            fx.clone().content("card 4111 1111 1111 1112").decide("pay").verdict,
            Verdict::Allow
        );
        assert_eq!(fx.content("ssn 000-12-3456").decide("pay").verdict, Verdict::Allow);
    }

    #[test]
    fn other_categories_are_ignored() {
        let d = Fx::new(vec![cards()]).content("mail bob@example.com").decide("x");
        assert_eq!(d.verdict, Verdict::Allow);
    }

    #[test]
    fn metadata_and_several_categories() {
        let p = json!({"name": "pii", "policy_type": "pii", "decision": "escalate"});
        let d = Fx::new(vec![p])
            .content("ssn 123-45-6789")
            .metadata(json!({"to": "bob@example.com", "n": 4111111111111111u64}))
            .decide("x");
        assert_eq!(d.verdict, Verdict::Escalate);
        // The card sent as a JSON integer is found too (this test once expected it not
        // to be: numbers were not read, so an SDK sending a tool's integer argument in
        // metadata passed every PII policy).
        assert_eq!(
            d.triggered[0].reason,
            "pii: ssn at content[4..15]; credit_card at metadata.n[0..16]; email at metadata.to[0..15]"
        );
    }

    fn one(category: &str) -> serde_json::Value {
        json!({"name": "p", "policy_type": "pii", "decision": "block", "conditions": {"categories": [category]}})
    }

    fn reason(category: &str, metadata: serde_json::Value) -> Option<String> {
        let d = Fx::new(vec![one(category)]).metadata(metadata).decide("r.pii");
        d.triggered.first().map(|t| t.reason.clone())
    }

    #[test]
    fn numbers_in_metadata_are_read_as_their_digits() {
        let r = |c: &str, v: serde_json::Value| reason(c, v);
        assert_eq!(r("credit_card", json!({"card_number": 4111111111111111u64})).as_deref(), Some("pii: credit_card at metadata.card_number[0..16]"));
        // Nine digits are an SSN as a whole value (a number cannot carry the dashes), as
        // a string value too; not inside text.
        assert_eq!(r("ssn", json!({"ssn": 123456789})).as_deref(), Some("pii: ssn at metadata.ssn[0..9]"));
        assert!(r("ssn", json!({"ssn": "123456789"})).is_some());
        assert_eq!(r("ssn", json!({"note": "order 123456789"})), None);
        assert_eq!(r("ssn", json!({"ssn": 666456789})), None);
        // An integer drops an SSN's leading zeros (078-05-1120): read as one under a key
        // that names an SSN, and only there (an 8-digit id is not one).
        assert_eq!(r("ssn", json!({"ssn": 78051120})).as_deref(), Some("pii: ssn at metadata.ssn[0..8]"));
        assert!(r("ssn", json!({"customer": {"socialSecurityNumber": 1234567}})).is_some(), "001-23-4567");
        assert!(r("ssn", json!({"SSNs": [78051120]})).is_some());
        for key in ["customerSSN", "customerSSNHash", "SSNLast4", "applicantSSNNo", "customerssn", "socialsecuritynumber", "Social-Security", "SSNumber"] {
            assert!(r("ssn", json!({ key: 78051120 })).is_some(), "{key} names an SSN");
        }
        assert!(r("ssn", json!({"ssn_last_known": 78051120})).is_some());
        for key in ["order_id", "businessNumber", "className", "processNumber", "accessNumber", "crossnet_id", "CLASSNAME", "bossNote"] {
            assert_eq!(r("ssn", json!({ key: 78051120 })), None, "{key} names no SSN");
        }
        assert_eq!(r("ssn", json!({"ssn": 5120})), None, "too short to be one");
        assert_eq!(r("ssn", json!({"ssn": 51120})), None);
        assert_eq!(r("ssn", json!({"ssn": 78000120})), None, "group 00 is not valid");
        assert_eq!(r("phone", json!({"to": 14155552671u64})).as_deref(), Some("pii: phone at metadata.to[0..11]"));
        assert_eq!(r("credit_card", json!({"a": [{"b": 4111111111111111u64}]})).as_deref(), Some("pii: credit_card at metadata.a[0].b[0..16]"));
        // A float with no fraction is the same number (`4111111111111111.0`, `4.111111111111111e15`).
        assert!(r("credit_card", json!({"card": 4111111111111111.0f64})).is_some());
        // Checksums still apply, and an amount is not a card.
        assert_eq!(r("credit_card", json!({"n": 4111111111111112u64})), None);
        assert_eq!(r("credit_card", json!({"amount": 1234.5, "qty": 3})), None);
    }

    #[test]
    fn pii_written_with_unicode_dashes_is_found() {
        let fx = Fx::new(vec![json!({"name": "pii", "policy_type": "pii", "decision": "block",
                                     "conditions": {"categories": ["credit_card", "ssn", "phone"]}})]);
        for text in ["card 4111\u{2013}1111\u{2013}1111\u{2013}1111", "card 4111\u{2011}1111\u{2011}1111\u{2011}1111",
                     "card 4111\u{2212}1111\u{2212}1111\u{2212}1111", "ssn 078\u{2010}05\u{2010}1120",
                     "call 555\u{2011}123\u{2011}4567", "call 555\u{2012}123\u{2012}4567"] {
            assert_eq!(fx.clone().content(text).decide("x").verdict, Verdict::Block, "{text:?}");
            assert_eq!(fx.clone().metadata(json!({ "note": text })).decide("x").verdict, Verdict::Block, "{text:?} in metadata");
        }
    }

    #[test]
    fn an_array_of_numbers_is_read_as_one_number_written_in_groups() {
        let card = json!({"card": [4111, 1111, 1111, 1111]});
        assert_eq!(reason("credit_card", card).as_deref(), Some("pii: credit_card at metadata.card[0..19]"));
        assert!(reason("ssn", json!({"ssn": [123, 45, 6789]})).is_some());
        assert!(reason("credit_card", json!({"card": ["4111", "1111", "1111", "1111"]})).is_some());
        assert_eq!(reason("credit_card", json!({"card": [4111, 1111, 1111, 1112]})), None);
        assert_eq!(reason("credit_card", json!({"scores": [4111, "x", 1111, 1111, 1111]})), None);
    }

    #[test]
    fn metadata_keys_are_read_and_never_shown() {
        let r = reason("email", json!({"bob@example.com": true})).unwrap();
        assert_eq!(r, "pii: email at metadata.<key 0>[0..15]");
        let r = reason("credit_card", json!({"cards": {"x": 1, "4111111111111111": {"email": "a@b.io"}}})).unwrap();
        assert_eq!(r, "pii: credit_card at metadata.cards.<key 0>[0..16]");
        // A value under a key that holds PII names the key by position, not by its text.
        let d = Fx::new(vec![json!({"name": "p", "policy_type": "pii", "decision": "block"})])
            .metadata(json!({"4111111111111111": {"to": "bob@example.com"}}))
            .decide("r.pii");
        assert_eq!(d.triggered[0].reason, "pii: credit_card at metadata.<key 0>[0..16]; email at metadata.<key 0>.to[0..15]");
        assert!(!d.reasoning.contains("4111"));
    }

    #[test]
    fn iban_checksum() {
        let p =
            json!({"name": "iban", "policy_type": "pii", "decision": "block", "conditions": {"categories": ["iban"]}});
        assert_eq!(
            Fx::new(vec![p.clone()])
                .content("GB82 WEST 1234 5698 7654 32")
                .decide("x")
                .verdict,
            Verdict::Block
        );
        assert_eq!(
            Fx::new(vec![p])
                .content("GB82 WEST 1234 5698 7654 33")
                .decide("x")
                .verdict,
            Verdict::Allow
        );
    }

    #[test]
    fn validation() {
        let base =
            |c: serde_json::Value| json!({"name": "p", "policy_type": "pii", "decision": "block", "conditions": c});
        assert_eq!(
            err_of(base(json!({"categories": ["email", "passport"]}))).field,
            "conditions.categories[1]"
        );
        assert_eq!(err_of(base(json!({"categories": []}))).field, "conditions.categories");
        assert_eq!(
            err_of(base(json!({"category": ["email"]}))).field,
            "conditions.category"
        );
        assert!(
            crate::CompiledPolicySet::validate(&crate::policy::tests::def("p", base(serde_json::Value::Null))).is_ok()
        );
    }
}
