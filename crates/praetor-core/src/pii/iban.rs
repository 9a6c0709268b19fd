//! International Bank Account Numbers (ISO 13616): two upper-case letters (country),
//! two check digits, then the BBAN; written compact or in groups separated by single
//! spaces. The mod-97 checksum (ISO 7064) must equal 1. For the countries in `LENGTHS`
//! the length must be the country's; for others any length 15-34 that ends on a word
//! boundary is tried, longest first.

use super::boundary_after;

const MAX_LEN: usize = 34;
const MIN_LEN: usize = 15;

/// IBAN lengths of the countries most often seen (SWIFT IBAN registry).
const LENGTHS: &[(&[u8; 2], usize)] = &[
    (b"AD", 24),
    (b"AE", 23),
    (b"AL", 28),
    (b"AT", 20),
    (b"AZ", 28),
    (b"BA", 20),
    (b"BE", 16),
    (b"BG", 22),
    (b"BH", 22),
    (b"BR", 29),
    (b"CH", 21),
    (b"CR", 22),
    (b"CY", 28),
    (b"CZ", 24),
    (b"DE", 22),
    (b"DK", 18),
    (b"DO", 28),
    (b"EE", 20),
    (b"EG", 29),
    (b"ES", 24),
    (b"FI", 18),
    (b"FO", 18),
    (b"FR", 27),
    (b"GB", 22),
    (b"GE", 22),
    (b"GI", 23),
    (b"GL", 18),
    (b"GR", 27),
    (b"GT", 28),
    (b"HR", 21),
    (b"HU", 28),
    (b"IE", 22),
    (b"IL", 23),
    (b"IS", 26),
    (b"IT", 27),
    (b"JO", 30),
    (b"KW", 30),
    (b"KZ", 20),
    (b"LB", 28),
    (b"LI", 21),
    (b"LT", 20),
    (b"LU", 20),
    (b"LV", 21),
    (b"MC", 27),
    (b"MD", 24),
    (b"ME", 22),
    (b"MK", 19),
    (b"MR", 27),
    (b"MT", 31),
    (b"MU", 30),
    (b"NL", 18),
    (b"NO", 15),
    (b"PK", 24),
    (b"PL", 28),
    (b"PS", 29),
    (b"PT", 25),
    (b"QA", 29),
    (b"RO", 24),
    (b"RS", 22),
    (b"SA", 24),
    (b"SE", 24),
    (b"SI", 19),
    (b"SK", 24),
    (b"SM", 27),
    (b"TN", 24),
    (b"TR", 26),
    (b"UA", 29),
    (b"VG", 24),
    (b"XK", 20),
];

fn country_len(cc: &[u8]) -> Option<usize> {
    LENGTHS.iter().find(|(c, _)| c.as_slice() == cc).map(|(_, n)| *n)
}

/// An IBAN starting at token start `i`; returns its end.
pub(super) fn at(b: &[u8], i: usize) -> Option<usize> {
    if i + 4 > b.len()
        || !b[i].is_ascii_uppercase()
        || !b[i + 1].is_ascii_uppercase()
        || !b[i + 2].is_ascii_digit()
        || !b[i + 3].is_ascii_digit()
    {
        return None;
    }
    // Gather up to 34 alphanumerics, skipping single spaces between groups.
    let mut chars = [0u8; MAX_LEN];
    let mut ends = [0usize; MAX_LEN];
    let mut n = 0usize;
    let mut j = i;
    while n < MAX_LEN && j < b.len() {
        let c = b[j];
        if c.is_ascii_alphanumeric() {
            chars[n] = c.to_ascii_uppercase();
            ends[n] = j + 1;
            n += 1;
            j += 1;
        } else if c == b' ' && j + 1 < b.len() && b[j + 1].is_ascii_alphanumeric() && n >= 4 {
            j += 1;
        } else {
            break;
        }
    }
    let valid = |len: usize| len <= n && boundary_after(b, ends[len - 1]) && mod97(&chars[..len]) == 1;
    match country_len(&b[i..i + 2]) {
        Some(len) => valid(len).then(|| ends[len - 1]),
        None => (MIN_LEN..=n).rev().find(|&len| valid(len)).map(|len| ends[len - 1]),
    }
}

/// ISO 7064 MOD 97-10 over the rearranged IBAN (BBAN, then country and check digits),
/// letters as 10-35.
fn mod97(iban: &[u8]) -> u32 {
    let (head, bban) = iban.split_at(4);
    bban.iter().chain(head).fold(0u32, |rem, &c| {
        if c.is_ascii_digit() {
            (rem * 10 + u32::from(c - b'0')) % 97
        } else {
            (rem * 100 + u32::from(c - b'A') + 10) % 97
        }
    })
}

#[cfg(test)]
mod tests {
    use crate::pii::{Category, scan};

    fn ibans(text: &str) -> Vec<&str> {
        scan(text, &[Category::Iban])
            .into_iter()
            .map(|m| &text[m.start..m.end])
            .collect()
    }

    #[test]
    fn valid_ibans() {
        assert_eq!(ibans("GB82WEST12345698765432"), vec!["GB82WEST12345698765432"]);
        assert_eq!(
            ibans("to GB82 WEST 1234 5698 7654 32 please"),
            vec!["GB82 WEST 1234 5698 7654 32"]
        );
        assert_eq!(
            ibans("DE89 3704 0044 0532 0130 00."),
            vec!["DE89 3704 0044 0532 0130 00"]
        );
        assert_eq!(
            ibans("FR1420041010050500013M02606"),
            vec!["FR1420041010050500013M02606"]
        );
        assert_eq!(ibans("NL91ABNA0417164300"), vec!["NL91ABNA0417164300"]);
        assert_eq!(ibans("NO9386011117947"), vec!["NO9386011117947"]);
        assert_eq!(ibans("GB82WEST12345698765432 AND MORE"), vec!["GB82WEST12345698765432"]);
    }

    #[test]
    fn checksum_failures() {
        assert!(ibans("GB83WEST12345698765432").is_empty());
        assert!(ibans("DE89 3704 0044 0532 0130 01").is_empty());
        assert!(ibans("GB82WEST1234569876543").is_empty(), "wrong length for GB");
    }

    #[test]
    fn not_ibans() {
        assert!(ibans("XGB82WEST12345698765432").is_empty());
        assert!(ibans("GB82WEST12345698765432X").is_empty());
        assert!(ibans("AB12").is_empty());
        assert!(ibans("HTTP2023 STATUS").is_empty());
    }
}
