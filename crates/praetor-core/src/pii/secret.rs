//! Credentials in their published formats:
//! - AWS access key ids `AKIA…`/`ASIA…` + 16 of `0-9A-Z`;
//! - GitHub tokens `gh[pousr]_` + 36+ alphanumerics, and `github_pat_` + 22+ of `\w`;
//! - Slack tokens `xox[baprs]-` + 10+ of `A-Za-z0-9-`;
//! - Stripe live keys `sk_live_` / `rk_live_` + 16+ alphanumerics;
//! - OpenAI-style keys `sk-` + 32+ of `A-Za-z0-9_-` (covers `sk-proj-…`);
//! - Google API keys `AIza` + 35 of `0-9A-Za-z_-`;
//! - JSON Web Tokens `eyJ….eyJ….…` (base64url header and payload, optional signature);
//! - PEM private keys: a `-----BEGIN … PRIVATE KEY-----` header (the match is the header).
//!
//! Every token must start and end on a boundary: `my-AKIA…` and `…AKIA…xyz` are not
//! reported.

use super::{Category, PiiMatch, is_word};

fn count(b: &[u8], at: usize, pred: impl Fn(u8) -> bool) -> usize {
    b.get(at..)
        .map_or(0, |rest| rest.iter().take_while(|&&c| pred(c)).count())
}

fn is_b64url(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'-' || c == b'_'
}

fn ends_clean(b: &[u8], end: usize, tail: impl Fn(u8) -> bool) -> Option<usize> {
    match b.get(end) {
        Some(&c) if tail(c) => None,
        _ => Some(end),
    }
}

/// A token-shaped secret starting at token start `i` (a letter); returns its end.
pub(super) fn token_at(b: &[u8], i: usize) -> Option<usize> {
    if i > 0 && b[i - 1] == b'-' {
        return None;
    }
    let rest = &b[i..];
    let upper_digit = |c: u8| c.is_ascii_uppercase() || c.is_ascii_digit();
    if rest.starts_with(b"AKIA") || rest.starts_with(b"ASIA") {
        let n = count(b, i + 4, upper_digit);
        return (n == 16).then_some(i + 20).and_then(|e| ends_clean(b, e, is_word));
    }
    if rest.len() > 4 && rest.starts_with(b"gh") && b"pousr".contains(&rest[2]) && rest[3] == b'_' {
        let n = count(b, i + 4, |c| c.is_ascii_alphanumeric());
        return (n >= 36).then_some(i + 4 + n).and_then(|e| ends_clean(b, e, is_word));
    }
    if rest.starts_with(b"github_pat_") {
        let n = count(b, i + 11, is_word);
        return (n >= 22).then_some(i + 11 + n);
    }
    if rest.len() > 5 && rest.starts_with(b"xox") && b"baprs".contains(&rest[3]) && rest[4] == b'-' {
        let n = count(b, i + 5, |c| c.is_ascii_alphanumeric() || c == b'-');
        return (n >= 10).then_some(i + 5 + n);
    }
    if rest.starts_with(b"sk_live_") || rest.starts_with(b"rk_live_") {
        let n = count(b, i + 8, |c| c.is_ascii_alphanumeric());
        return (n >= 16).then_some(i + 8 + n).and_then(|e| ends_clean(b, e, is_word));
    }
    if rest.starts_with(b"sk-") {
        let n = count(b, i + 3, is_b64url);
        return (n >= 32).then_some(i + 3 + n);
    }
    if rest.starts_with(b"AIza") {
        let n = count(b, i + 4, is_b64url);
        return (n == 35).then_some(i + 39);
    }
    if rest.starts_with(b"eyJ") {
        return jwt(b, i);
    }
    None
}

fn jwt(b: &[u8], i: usize) -> Option<usize> {
    let h = count(b, i, is_b64url);
    if h < 10 || b.get(i + h) != Some(&b'.') {
        return None;
    }
    let p0 = i + h + 1;
    if !b[p0..].starts_with(b"eyJ") {
        return None;
    }
    let p = count(b, p0, is_b64url);
    if p < 10 || b.get(p0 + p) != Some(&b'.') {
        return None;
    }
    let s0 = p0 + p + 1;
    let s = count(b, s0, is_b64url);
    let end = s0 + s;
    ends_clean(b, end, |c| c == b'.')
}

/// PEM private-key headers, found with a substring search.
pub(super) fn find_pem(text: &str, out: &mut Vec<PiiMatch>) {
    const HEAD: &str = "-----BEGIN ";
    const TAIL: &[u8] = b"PRIVATE KEY-----";
    let b = text.as_bytes();
    let mut from = 0usize;
    while let Some(off) = text.get(from..).and_then(|t| t.find(HEAD)) {
        let start = from + off;
        let mut j = start + HEAD.len();
        from = j;
        // Optional key type words: `RSA `, `EC `, `OPENSSH `, `ENCRYPTED `…
        let limit = (j + 32).min(b.len());
        while j < limit && (b[j].is_ascii_uppercase() || b[j].is_ascii_digit() || b[j] == b' ') {
            if b[j..].starts_with(TAIL) {
                break;
            }
            j += 1;
        }
        if b[j..].starts_with(TAIL) {
            let end = j + TAIL.len();
            out.push(PiiMatch {
                category: Category::Secret,
                start,
                end,
            });
            from = end;
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::pii::{Category, scan};

    fn secrets(text: &str) -> Vec<&str> {
        scan(text, &[Category::Secret])
            .into_iter()
            .map(|m| &text[m.start..m.end])
            .collect()
    }

    #[test]
    fn formats() {
        assert_eq!(secrets("key=AKIAIOSFODNN7EXAMPLE"), vec!["AKIAIOSFODNN7EXAMPLE"]);
        let gh = format!("ghp_{}", "a1B2".repeat(9));
        assert_eq!(secrets(&format!("token {gh} ok")), vec![gh.as_str()]);
        let pat = format!("github_pat_{}", "A1_b".repeat(6));
        assert_eq!(secrets(&pat), vec![pat.as_str()]);
        assert_eq!(
            secrets("xoxb-1234567890-abcdefghij"),
            vec!["xoxb-1234567890-abcdefghij"]
        );
        let stripe = format!("sk_live_{}", "4eC39HqLyjWDarjtT1zdp7dc");
        assert_eq!(secrets(&stripe), vec![stripe.as_str()]);
        let openai = format!("sk-proj-{}", "Ab3_".repeat(10));
        assert_eq!(secrets(&format!("\"{openai}\"")), vec![openai.as_str()]);
        let google = format!("AIza{}", "SyA-1234567890abcdefghijklmnopqrstu");
        assert_eq!(google.len(), 39);
        assert_eq!(secrets(&google), vec![google.as_str()]);
        let jwt = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U";
        assert_eq!(secrets(&format!("Bearer {jwt}")), vec![jwt]);
        let pem = "-----BEGIN RSA PRIVATE KEY-----\nMIIEow...\n-----END RSA PRIVATE KEY-----";
        assert_eq!(secrets(pem), vec!["-----BEGIN RSA PRIVATE KEY-----"]);
        assert_eq!(
            secrets("-----BEGIN PRIVATE KEY-----"),
            vec!["-----BEGIN PRIVATE KEY-----"]
        );
    }

    #[test]
    fn near_misses() {
        assert!(secrets("AKIAIOSFODNN7EXAMPL").is_empty(), "15 chars");
        assert!(secrets("AKIAIOSFODNN7EXAMPLEX").is_empty(), "17 chars");
        assert!(secrets("xAKIAIOSFODNN7EXAMPLE").is_empty());
        assert!(secrets("ghp_short").is_empty());
        assert!(secrets("task-sk-aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa").is_empty());
        assert!(secrets("sk-short").is_empty());
        assert!(
            secrets("sk_test_4eC39HqLyjWDarjtT1zdp7dc").is_empty(),
            "test keys are not live secrets"
        );
        assert!(secrets("-----BEGIN PUBLIC KEY-----").is_empty());
        assert!(secrets("-----BEGIN CERTIFICATE-----").is_empty());
        assert!(secrets("eyJhbGciOiJIUzI1NiJ9").is_empty(), "header alone");
    }
}
