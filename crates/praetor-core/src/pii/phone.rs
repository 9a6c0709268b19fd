//! Telephone numbers, in two shapes:
//! - international: `+` then 8-15 digits in groups separated by single spaces, dots or
//!   dashes, with optional parenthesised groups (`+44 20 7946 0958`, `+1 (555) 123-4567`,
//!   `+4915123456789`);
//! - North American: `NXX-NXX-XXXX` with `-`, `.` or space separators, or `(NXX) NXX-XXXX`,
//!   optionally led by `1-`/`1 `; the area code starts with 2-9.
//!
//! Bare digit runs without a `+` or separators are not reported in text: order numbers
//! and timestamps look the same. A whole metadata value (`whole`) that is a North
//! American number written bare (`5551234567`, `15551234567`) is, since a phone number
//! sent as a JSON integer cannot carry separators; an international number sent so
//! cannot be told from a timestamp and is not.

use super::{boundary_after, continued_number, continues_number};

fn digits(b: &[u8], at: usize, n: usize) -> bool {
    at + n <= b.len() && b[at..at + n].iter().all(u8::is_ascii_digit)
}

fn is_sep(c: u8) -> bool {
    matches!(c, b'-' | b'.' | b' ')
}

/// A phone number starting at token start `i`; returns its end.
pub(super) fn at(b: &[u8], i: usize) -> Option<usize> {
    match b[i] {
        b'+' => international(b, i),
        b'(' => nanp(b, i),
        b'1' if i + 2 < b.len() && matches!(b[i + 1], b'-' | b' ') && !continued_number(b, i) => {
            nanp(b, i + 2).or_else(|| nanp(b, i))
        }
        c if c.is_ascii_digit() => {
            if continued_number(b, i) {
                None
            } else {
                nanp(b, i)
            }
        }
        _ => None,
    }
}

fn international(b: &[u8], i: usize) -> Option<usize> {
    if i > 0 && b[i - 1] == b'+' {
        return None;
    }
    let mut j = i + 1;
    if !b.get(j).is_some_and(|c| c.is_ascii_digit() && *c != b'0') {
        return None;
    }
    let mut count = 0usize;
    let mut best = None;
    loop {
        if j < b.len() && b[j].is_ascii_digit() {
            while j < b.len() && b[j].is_ascii_digit() {
                j += 1;
                count += 1;
            }
        } else if j < b.len() && b[j] == b'(' {
            let k0 = j + 1;
            let mut k = k0;
            while k < b.len() && b[k].is_ascii_digit() && k - k0 < 4 {
                k += 1;
            }
            if k == k0 || b.get(k) != Some(&b')') {
                break;
            }
            count += k - k0;
            j = k + 1;
        } else {
            break;
        }
        if count > 15 {
            break;
        }
        // The longest prefix of whole groups that is a number on its own wins:
        // `+44 20 7946 0958 4111…` is the phone number, then something else.
        if count >= 8 && boundary_after(b, j) && !continues_number(b, j) {
            best = Some(j);
        }
        // A single separator continues the number only when a digit or `(` follows.
        // Groups may touch a parenthesised group: `+1(555)1234567`.
        if j < b.len() && (b[j] == b'(' || (b[j - 1] == b')' && b[j].is_ascii_digit())) {
            continue;
        }
        if j + 1 < b.len() && is_sep(b[j]) && (b[j + 1].is_ascii_digit() || b[j + 1] == b'(') {
            j += 1;
        } else {
            break;
        }
    }
    best
}

/// True when all of `b` is a bare North American number: ten digits with an area code
/// of 2-9, optionally led by `1`.
pub(super) fn whole(b: &[u8]) -> bool {
    let national = b.strip_prefix(b"1").filter(|rest| rest.len() == 10).unwrap_or(b);
    national.len() == 10 && digits(national, 0, 10) && (b'2'..=b'9').contains(&national[0])
}

fn nanp(b: &[u8], i: usize) -> Option<usize> {
    let mut j = i;
    if b.get(j) == Some(&b'(') {
        if !digits(b, j + 1, 3) || b.get(j + 4) != Some(&b')') {
            return None;
        }
        if !(b'2'..=b'9').contains(&b[j + 1]) {
            return None;
        }
        j += 5;
        if b.get(j).is_some_and(|c| is_sep(*c)) {
            j += 1;
        }
    } else {
        if !digits(b, j, 3) || !(b'2'..=b'9').contains(&b[j]) || !b.get(j + 3).is_some_and(|c| is_sep(*c)) {
            return None;
        }
        j += 4;
    }
    if !digits(b, j, 3) || !b.get(j + 3).is_some_and(|c| is_sep(*c)) || !digits(b, j + 4, 4) {
        return None;
    }
    let end = j + 8;
    if !boundary_after(b, end) || continues_number(b, end) {
        return None;
    }
    Some(end)
}

#[cfg(test)]
mod tests {
    use crate::pii::{Category, scan};

    fn phones(text: &str) -> Vec<&str> {
        scan(text, &[Category::Phone])
            .into_iter()
            .map(|m| &text[m.start..m.end])
            .collect()
    }

    #[test]
    fn international() {
        assert_eq!(phones("call +44 20 7946 0958 today"), vec!["+44 20 7946 0958"]);
        assert_eq!(phones("tel:+4915123456789"), vec!["+4915123456789"]);
        assert_eq!(phones("+1 (555) 123-4567"), vec!["+1 (555) 123-4567"]);
        assert_eq!(phones("+33.1.23.45.67.89"), vec!["+33.1.23.45.67.89"]);
        assert_eq!(phones("+1(555)1234567"), vec!["+1(555)1234567"]);
        assert_eq!(phones("+44 20 7946 0958 4111111111111111"), vec!["+44 20 7946 0958"]);
    }

    #[test]
    fn north_american() {
        assert_eq!(phones("555-123-4567"), vec!["555-123-4567"]);
        assert_eq!(phones("(555) 123-4567"), vec!["(555) 123-4567"]);
        assert_eq!(phones("555.123.4567!"), vec!["555.123.4567"]);
        assert_eq!(phones("1-800-555-0199"), vec!["1-800-555-0199"]);
    }

    #[test]
    fn bare_north_american_only_as_a_whole_value() {
        assert!(super::whole(b"5551234567"));
        assert!(super::whole(b"14155552671"));
        assert!(!super::whole(b"1767787200"), "a timestamp: area code 176");
        assert!(!super::whole(b"442079460958"));
        assert!(!super::whole(b"555123456"));
    }

    #[test]
    fn not_phones() {
        assert!(phones("+12345").is_empty(), "too short");
        assert!(phones("+1234567890123456").is_empty(), "too long");
        assert!(phones("5551234567").is_empty(), "bare digits");
        assert!(phones("155-123-4567").is_empty(), "area code starts with 1");
        assert!(phones("2026-01-07").is_empty());
        assert!(phones("123-45-6789").is_empty(), "ssn shape");
        assert!(phones("555-123-45678").is_empty());
        assert!(phones("x555-123-4567").is_empty());
        assert!(phones("10.555.123.4567").is_empty());
        assert!(phones("4111 1111 1111 1111").is_empty());
    }
}
