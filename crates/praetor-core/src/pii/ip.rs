//! IP addresses: IPv4 dotted quads (four octets 0-255, not part of a longer dotted
//! number such as a 5-part version string), and IPv6 (any form `std::net::Ipv6Addr`
//! parses, found as maximal runs of hex digits, `:` and `.` holding at least two `:` and
//! one decimal digit, so that hex-looking words such as `dead::beef` are not reported).

use std::net::Ipv6Addr;

use super::{boundary_after, continued_number, continues_number, is_word};

/// Longest textual IPv6 address (with an embedded IPv4 tail).
const MAX_V6: usize = 45;

/// An IPv4 address starting at token start `i`; returns its end.
pub(super) fn v4_at(b: &[u8], i: usize) -> Option<usize> {
    if continued_number(b, i) {
        return None;
    }
    let mut j = i;
    for part in 0..4 {
        if part > 0 {
            if b.get(j) != Some(&b'.') {
                return None;
            }
            j += 1;
        }
        let s = j;
        let mut v = 0u32;
        while j < b.len() && b[j].is_ascii_digit() && j - s < 3 {
            v = v * 10 + u32::from(b[j] - b'0');
            j += 1;
        }
        if j == s || v > 255 || b.get(j).is_some_and(u8::is_ascii_digit) {
            return None;
        }
    }
    if !boundary_after(b, j) || continues_number(b, j) {
        return None;
    }
    Some(j)
}

/// An IPv6 address starting at token start `i`; returns its end.
pub(super) fn v6_at(text: &str, i: usize) -> Option<usize> {
    let b = text.as_bytes();
    // `a::b::c` is a path, not three addresses: a candidate never starts after a `:`.
    if i > 0 && b[i - 1] == b':' {
        return None;
    }
    let mut j = i;
    let mut colons = 0usize;
    while j < b.len() && (b[j].is_ascii_hexdigit() || b[j] == b':' || b[j] == b'.') && j - i <= MAX_V6 {
        colons += usize::from(b[j] == b':');
        j += 1;
    }
    if colons < 2 || j - i > MAX_V6 || (j < b.len() && is_word(b[j])) {
        return None;
    }
    let mut end = j;
    // A sentence may end right after the address.
    while end > i && b[end - 1] == b'.' {
        end -= 1;
    }
    let candidate = text.get(i..end)?;
    // Hex-only words such as `dead::beef` parse as addresses; real ones have a digit.
    if !candidate.bytes().any(|c| c.is_ascii_digit()) {
        return None;
    }
    candidate.parse::<Ipv6Addr>().ok().map(|_| end)
}

#[cfg(test)]
mod tests {
    use crate::pii::{Category, scan};

    fn ips(text: &str) -> Vec<&str> {
        scan(text, &[Category::IpAddress])
            .into_iter()
            .map(|m| &text[m.start..m.end])
            .collect()
    }

    #[test]
    fn ipv4() {
        assert_eq!(
            ips("from 10.0.0.1 to 192.168.1.254."),
            vec!["10.0.0.1", "192.168.1.254"]
        );
        assert_eq!(ips("host=255.255.255.255:80"), vec!["255.255.255.255"]);
        assert!(ips("256.1.1.1").is_empty());
        assert!(ips("1.2.3").is_empty());
        assert!(ips("1.2.3.4.5").is_empty(), "5-part version string");
        assert!(ips("v1.2.3.4").is_empty());
        assert!(ips("1234.1.1.1").is_empty());
    }

    #[test]
    fn ipv6() {
        assert_eq!(ips("addr 2001:db8::1 up"), vec!["2001:db8::1"]);
        assert_eq!(ips("[fe80::1ff:fe23:4567:890a]:443"), vec!["fe80::1ff:fe23:4567:890a"]);
        assert_eq!(ips("lo ::1."), vec!["::1"]);
        assert_eq!(ips("::ffff:192.0.2.1"), vec!["::ffff:192.0.2.1"]);
        assert!(ips("at 10:30:00").is_empty());
        assert!(ips("std::io::Result").is_empty());
        assert!(ips("a::b::c").is_empty());
        assert!(ips(" :: ").is_empty());
        assert!(ips("dead::beef").is_empty());
        assert!(ips("x = a::b").is_empty());
    }
}
