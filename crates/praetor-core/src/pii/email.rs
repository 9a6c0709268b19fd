//! E-mail addresses: `local@domain.tld`. The local part is 1-64 characters of
//! `A-Za-z0-9._%+-` (not starting or ending with `.`); the domain has at least two
//! labels of `A-Za-z0-9-` (no label starts or ends with `-`) and an alphabetic top-level
//! label of 2+ letters. A trailing `.` (end of a sentence) is not part of the address.

use super::{Category, PiiMatch, is_word};

const MAX_LOCAL: usize = 64;
const MAX_DOMAIN: usize = 253;

fn is_local(c: u8) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b'%' | b'+' | b'-')
}

fn is_domain(c: u8) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, b'.' | b'-')
}

/// Find every address, walking the `@` signs (a `memchr` search).
pub(super) fn find_all(text: &str, out: &mut Vec<PiiMatch>) {
    let b = text.as_bytes();
    let mut from = 0usize;
    let mut last_end = 0usize;
    while let Some(off) = text.get(from..).and_then(|t| t.find('@')) {
        let at = from + off;
        from = at + 1;
        if at < last_end {
            continue;
        }
        if let Some((s, e)) = around(b, at)
            && s >= last_end
        {
            out.push(PiiMatch {
                category: Category::Email,
                start: s,
                end: e,
            });
            last_end = e;
        }
    }
}

fn around(b: &[u8], at: usize) -> Option<(usize, usize)> {
    // Local part, leftwards.
    let mut s = at;
    while s > 0 && is_local(b[s - 1]) && at - s < MAX_LOCAL + 1 {
        s -= 1;
    }
    if at - s > MAX_LOCAL || (s > 0 && is_local(b[s - 1])) {
        return None;
    }
    while s < at && b[s] == b'.' {
        s += 1;
    }
    if s == at || b[at - 1] == b'.' {
        return None;
    }
    // Domain, rightwards.
    let mut e = at + 1;
    while e < b.len() && is_domain(b[e]) && e - at <= MAX_DOMAIN {
        e += 1;
    }
    if e - at - 1 > MAX_DOMAIN {
        return None;
    }
    while e > at + 1 && matches!(b[e - 1], b'.' | b'-') {
        e -= 1;
    }
    if e < b.len() && (is_word(b[e]) || b[e] == b'@') {
        return None;
    }
    let domain = &b[at + 1..e];
    let mut labels = 0usize;
    let mut tld: &[u8] = &[];
    for label in domain.split(|&c| c == b'.') {
        if label.is_empty() || label[0] == b'-' || label[label.len() - 1] == b'-' || label.len() > 63 {
            return None;
        }
        labels += 1;
        tld = label;
    }
    if labels < 2 || tld.len() < 2 || !tld.iter().all(u8::is_ascii_alphabetic) {
        return None;
    }
    Some((s, e))
}

#[cfg(test)]
mod tests {
    use crate::pii::{Category, scan};

    fn emails(text: &str) -> Vec<&str> {
        scan(text, &[Category::Email])
            .into_iter()
            .map(|m| &text[m.start..m.end])
            .collect()
    }

    #[test]
    fn addresses() {
        assert_eq!(emails("mail bob@example.com."), vec!["bob@example.com"]);
        assert_eq!(
            emails("<first.last+tag@mail.example.co.uk>"),
            vec!["first.last+tag@mail.example.co.uk"]
        );
        assert_eq!(emails("a@b.io, c_d@e-f.org"), vec!["a@b.io", "c_d@e-f.org"]);
        assert_eq!(emails("to=\"x@y.dev\""), vec!["x@y.dev"]);
    }

    #[test]
    fn not_addresses() {
        assert!(emails("@handle").is_empty());
        assert!(emails("user@localhost").is_empty());
        assert!(emails("user@host.c").is_empty());
        assert!(emails("user@-bad.com").is_empty());
        assert!(emails("user@bad..com").is_empty());
        assert!(emails("a@b@c.com").is_empty() || emails("a@b@c.com") == vec!["b@c.com"]);
        assert!(emails("user.@example.com").is_empty());
        assert!(emails("price @ 5.00").is_empty());
        assert!(emails("user@example.123").is_empty());
    }

    #[test]
    fn many_at_signs_are_linear() {
        let text = "@".repeat(100_000);
        assert!(emails(&text).is_empty());
        let text = "a".repeat(100_000) + "@example.com";
        assert!(emails(&text).is_empty(), "local part too long");
    }
}
