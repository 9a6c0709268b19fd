//! US Social Security numbers: `AAA-GG-SSSS`, or the same with spaces, dots, slashes or
//! underscores (one kind in both places). Not valid (so
//! not reported): area `000`, `666` or `900`-`999`; group `00`; serial `0000`. Nine
//! digits without separators are not reported in text (too many other numbers look like
//! that), only as a whole metadata value (`whole`): a field that is nine digits and
//! nothing else, such as an SSN sent as a JSON integer, which cannot carry separators.

use super::{boundary_after, continued_number, continues_number};

fn digits(b: &[u8], at: usize, n: usize) -> bool {
    at + n <= b.len() && b[at..at + n].iter().all(u8::is_ascii_digit)
}

fn num(b: &[u8]) -> u32 {
    b.iter().fold(0, |acc, d| acc * 10 + u32::from(d - b'0'))
}

/// An SSN starting at token start `i`; returns its end.
pub(super) fn at(b: &[u8], i: usize) -> Option<usize> {
    if !digits(b, i, 3) || continued_number(b, i) {
        return None;
    }
    let sep = *b.get(i + 3)?;
    if !matches!(sep, b'-' | b' ' | b'.' | b'/' | b'_') || !digits(b, i + 4, 2) || b.get(i + 6) != Some(&sep) || !digits(b, i + 7, 4) {
        return None;
    }
    let end = i + 11;
    if !boundary_after(b, end) || continues_number(b, end) {
        return None;
    }
    // `/640/48/1024.jpg` is a path, not an SSN written with slashes.
    if sep == b'/' && (i.checked_sub(1).is_some_and(|p| b[p] == b'/') || b.get(end) == Some(&b'/')) {
        return None;
    }
    valid(&b[i..i + 3], &b[i + 4..i + 6], &b[i + 7..end]).then_some(end)
}

/// True when all of `b` is nine digits that make a valid SSN.
pub(super) fn whole(b: &[u8]) -> bool {
    b.len() == 9 && digits(b, 0, 9) && valid(&b[..3], &b[3..5], &b[5..])
}

fn valid(area: &[u8], group: &[u8], serial: &[u8]) -> bool {
    let area = num(area);
    area != 0 && area != 666 && area < 900 && num(group) != 0 && num(serial) != 0
}

#[cfg(test)]
mod tests {
    use crate::pii::{Category, scan};

    fn ssns(text: &str) -> Vec<&str> {
        scan(text, &[Category::Ssn])
            .into_iter()
            .map(|m| &text[m.start..m.end])
            .collect()
    }

    #[test]
    fn nine_bare_digits_only_as_a_whole_value() {
        assert!(ssns("123456789").is_empty());
        assert!(super::whole(b"123456789"));
        assert!(!super::whole(b"000456789"));
        assert!(!super::whole(b"1234567890"));
    }

    #[test]
    fn valid_forms() {
        assert_eq!(ssns("ssn 123-45-6789."), vec!["123-45-6789"]);
        assert_eq!(ssns("ssn: 123 45 6789"), vec!["123 45 6789"]);
        assert_eq!(ssns("(078-05-1120)"), vec!["078-05-1120"]);
        for written in ["078.05.1120", "078/05/1120", "078_05_1120"] {
            assert_eq!(ssns(&format!("id {written} ok")), vec![written]);
        }
        assert!(ssns("078.05/1120").is_empty(), "two kinds of separator");
        assert!(ssns("GET /img/640/48/1024.jpg").is_empty(), "path segments");
        assert!(ssns("/shard/512/17/2048/part-0").is_empty());
    }

    #[test]
    fn invalid_numbers() {
        assert!(ssns("000-12-3456").is_empty());
        assert!(ssns("666-12-3456").is_empty());
        assert!(ssns("900-12-3456").is_empty());
        assert!(ssns("999-12-3456").is_empty());
        assert!(ssns("123-00-4567").is_empty());
        assert!(ssns("123-45-0000").is_empty());
    }

    #[test]
    fn shapes_that_are_not_ssns() {
        assert!(ssns("123456789").is_empty());
        assert!(ssns("123-45 6789").is_empty(), "mixed separators");
        assert!(ssns("1123-45-6789").is_empty());
        assert!(ssns("123-45-67890").is_empty());
        assert!(ssns("9-123-45-6789").is_empty());
        assert!(ssns("123-45-6789-1").is_empty());
        assert!(ssns("a123-45-6789").is_empty());
    }
}
