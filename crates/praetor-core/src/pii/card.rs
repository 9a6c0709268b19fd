//! Payment card numbers (PAN): 13-19 digits, optionally in groups separated by single
//! spaces or dashes (or, between groups of 3-6 digits, by a dot, an underscore, or two
//! or three spaces with at most one dash among them; see `separator_len`), first digit
//! 2-6 (Mastercard 2-series and 5, Amex/Diners/JCB 3,
//! Visa 4, Discover/UnionPay/Maestro 6), Luhn-valid and not all zeros.
//!
//! A run such as `12 4111 1111 1111 1111 99` is read as groups; any span of whole
//! groups may be a card. A span of several groups needs every group to have 3-6 digits
//! (4-4-4-4, 4-6-5, 4-4-4-4-3); a single group is 13-19 digits. A span must start and
//! end on a word boundary, so digits inside a longer number are never reported.
//! 16 digits that fail the Luhn check are not a card.

use super::{boundary_after, continued_number, continues_number};

/// Most groups looked back over from one end; more than enough for 19 digits.
const WINDOW: usize = 20;

/// Scan the digit run that starts at `start` (a token start holding a digit), calling
/// `on_match(start, end)` for each card found, left to right and non-overlapping.
/// Returns the end of the run: no card can start inside it after this call.
pub(super) fn find_in_run(b: &[u8], start: usize, mut on_match: impl FnMut(usize, usize)) -> usize {
    // Fast path: most numbers in text are short. Measure the run first.
    let (run_end, digits) = measure(b, start);
    if digits < 13 {
        return run_end;
    }
    // Ring buffer of the most recent groups: (start, end) byte offsets.
    let mut groups = [(0usize, 0usize); WINDOW];
    let mut n = 0usize;
    let mut i = start;
    // `1.4111…` is a decimal number, not a card: none starts at the run's first group
    // then. (A later group may start one: `12.50 4111 1111 1111 1111`.)
    let mut taken_until = if continued_number(b, start) { start + 1 } else { start };
    loop {
        let gs = i;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        let ge = i;
        groups[n % WINDOW] = (gs, ge);
        n += 1;
        let separator = separator_len(b, gs, i);
        let more = separator.is_some();
        let end_ok = more || (boundary_after(b, ge) && !continues_number(b, ge));
        if end_ok
            && let Some(s) = best_start(b, &groups, n, taken_until)
        {
            on_match(s, ge);
            taken_until = ge;
        }
        match separator {
            Some(len) => i += len,
            None => return ge,
        }
    }
}

/// The end of the digit run starting at `start` and the number of digits in it.
fn measure(b: &[u8], start: usize) -> (usize, usize) {
    let mut i = start;
    let mut digits = 0usize;
    loop {
        let group = i;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
            digits += 1;
        }
        match separator_len(b, group, i) {
            Some(len) => i += len,
            None => return (i, digits),
        }
    }
}

/// The length of what separates the group of digits `start..end` from another group of
/// the same run, if something does. A single space or dash always does. Between groups
/// of 3-6 digits, the card groups' size, so does a dot or an underscore
/// (`4111.1111.1111.1111`), or two or three spaces with at most one dash among them
/// (`4111  1111`, `4111 - 1111`), so that a decimal (`4111111111111111.5`) stays one
/// number. Tabs, line breaks, slashes, colons and commas never do: columns and lists of
/// numbers (ZIP codes, years, amounts) are not read as cards.
fn separator_len(b: &[u8], start: usize, end: usize) -> Option<usize> {
    let len = b[end..].iter().take(4).take_while(|c| matches!(c, b' ' | b'-' | b'.' | b'_')).count();
    if len == 0 || len > 3 || !b.get(end + len).is_some_and(u8::is_ascii_digit) {
        return None;
    }
    let separator = &b[end..end + len];
    if separator == b" " || separator == b"-" {
        return Some(1);
    }
    let spaced_dash = len > 1 && separator.iter().all(|c| matches!(c, b' ' | b'-')) && separator.iter().filter(|&&c| c == b'-').count() <= 1;
    if !(spaced_dash || separator == b"." || separator == b"_") {
        return None;
    }
    let next = b[end + len..].iter().take(7).take_while(|c| c.is_ascii_digit()).count();
    ((3..=6).contains(&(end - start)) && (3..=6).contains(&next)).then_some(len)
}

/// Walk back from the newest group, feeding digits right to left into the Luhn sum,
/// and return the earliest group start that makes a valid card ending at that group.
fn best_start(b: &[u8], groups: &[(usize, usize); WINDOW], n: usize, taken_until: usize) -> Option<usize> {
    let mut sum = 0u32;
    let mut digits = 0usize;
    let mut best = None;
    for k in 0..n.min(WINDOW) {
        let (gs, ge) = groups[(n - 1 - k) % WINDOW];
        if gs < taken_until {
            break;
        }
        let len = ge - gs;
        // In a multi-group span every group has 3-6 digits.
        if k > 0 && !(3..=6).contains(&len) {
            break;
        }
        if k == 1 {
            let (fs, fe) = groups[(n - 1) % WINDOW];
            if !(3..=6).contains(&(fe - fs)) {
                break;
            }
        }
        for &d in b[gs..ge].iter().rev() {
            let mut v = u32::from(d - b'0');
            if digits % 2 == 1 {
                v *= 2;
                if v > 9 {
                    v -= 9;
                }
            }
            sum += v;
            digits += 1;
        }
        if digits > 19 {
            break;
        }
        if digits >= 13 && sum.is_multiple_of(10) && (b'2'..=b'6').contains(&b[gs]) {
            best = Some(gs);
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use crate::pii::{Category, scan};

    fn cards(text: &str) -> Vec<&str> {
        scan(text, &[Category::CreditCard])
            .into_iter()
            .map(|m| &text[m.start..m.end])
            .collect()
    }

    #[test]
    fn common_formats() {
        assert_eq!(cards("4111111111111111"), vec!["4111111111111111"]);
        assert_eq!(cards("pay 4111 1111 1111 1111 now"), vec!["4111 1111 1111 1111"]);
        assert_eq!(cards("4111-1111-1111-1111."), vec!["4111-1111-1111-1111"]);
        assert_eq!(cards("amex 3782 822463 10005"), vec!["3782 822463 10005"]);
        assert_eq!(cards("mc:5555555555554444;"), vec!["5555555555554444"]);
        assert_eq!(cards("disc 6011000990139424"), vec!["6011000990139424"]);
        assert_eq!(cards("visa13 4222222222222"), vec!["4222222222222"]);
    }

    #[test]
    fn dots_and_underscores_separate_groups_of_card_size() {
        assert_eq!(cards("card 4111.1111.1111.1111 ok"), vec!["4111.1111.1111.1111"]);
        assert_eq!(cards("card_4111_1111_1111_1111"), Vec::<&str>::new(), "inside a word");
        assert_eq!(cards("card: 4111_1111_1111_1111."), vec!["4111_1111_1111_1111"]);
        assert_eq!(cards("amex 3782.822463.10005"), vec!["3782.822463.10005"]);
        assert_eq!(cards("4111.1111-1111 1111"), vec!["4111.1111-1111 1111"]);
        // Decimals and dotted numbers are not groups.
        assert!(cards("4111111111111111.5").is_empty());
        assert!(cards("4111.11111111111111").is_empty());
        assert!(cards("v10.20.30.40").is_empty());
        assert!(cards("4111.1111.1111.1112").is_empty(), "Luhn still applies");
    }

    #[test]
    fn groups_apart_by_a_few_spaces_or_a_spaced_dash() {
        for written in ["4111  1111  1111  1111", "4111 - 1111 - 1111 - 1111", "4111   1111 -1111- 1111"] {
            assert_eq!(cards(&format!("card {written} ok")), vec![written], "{written:?}");
        }
        // A card stays found beside other numbers on other lines or in other columns.
        assert_eq!(cards("4111 1111 1111 1111\n5555 5555 5555 4444"), vec!["4111 1111 1111 1111", "5555 5555 5555 4444"]);
        assert_eq!(cards("card 4111 1111 1111 1111\n123"), vec!["4111 1111 1111 1111"]);
        assert_eq!(cards("ref 1234\n4111 1111 1111 1111"), vec!["4111 1111 1111 1111"]);
        assert_eq!(cards("Ann\t4111 1111 1111 1111\t123\t12/28"), vec!["4111 1111 1111 1111"]);
        assert_eq!(cards("4111-1111-1111-1111 / 1234"), vec!["4111-1111-1111-1111"]);
        // Tabs, line breaks, slashes, colons, commas, four spaces or two dashes never join
        // groups: columns and lists of numbers are not cards.
        for list in ["94105\n10001\n60601\n30301\n20001", "2023\n2024\n2025\n2026", "415 555 0132\n415 555 0199", "415-555-0132 / 415-555-0199", "4111\t1111\t1111\t1111", "4111/1111/1111/1111", "years 2019,2020,2021,2022", "4111    1111    1111    1111", "4111 -- 1111 -- 1111 -- 1111", "at 2026/01/07 12:30:45"] {
            assert!(cards(list).is_empty(), "{list:?}");
        }
        assert_eq!(cards("4111111111111111/12"), vec!["4111111111111111"], "an expiry after a slash is not a group of the card");
    }

    #[test]
    fn a_decimal_before_a_card_does_not_hide_it() {
        assert_eq!(cards("paid 12.50 4111 1111 1111 1111"), vec!["4111 1111 1111 1111"]);
        assert_eq!(cards("ip 10.0.0.1 4111.1111.1111.1111"), vec!["4111.1111.1111.1111"]);
        assert_eq!(cards("build 1.234_567 4111 1111 1111 1111"), vec!["4111 1111 1111 1111"]);
        // The decimal itself never starts one.
        assert!(cards("1.4111111111111111").is_empty());
        assert!(cards("1.4111 1111 1111 1111").is_empty());
    }

    #[test]
    fn luhn_failure_is_not_a_card() {
        assert!(cards("4111111111111112").is_empty());
        assert!(cards("4111 1111 1111 1121").is_empty());
    }

    #[test]
    fn not_inside_longer_runs_or_words() {
        assert!(cards("x4111111111111111").is_empty());
        assert!(cards("4111111111111111y").is_empty());
        assert!(cards("99994111111111111111").is_empty());
        assert!(cards("1.4111111111111111").is_empty());
        assert!(cards("4111111111111111.5").is_empty());
    }

    #[test]
    fn card_inside_a_run_of_groups() {
        assert_eq!(cards("ref 12 4111 1111 1111 1111"), vec!["4111 1111 1111 1111"]);
        assert_eq!(cards("4111 1111 1111 1111 123"), vec!["4111 1111 1111 1111"]);
        assert_eq!(
            cards("4111111111111111 5555555555554444"),
            vec!["4111111111111111", "5555555555554444"]
        );
    }

    #[test]
    fn other_numbers_are_not_cards() {
        // epoch milliseconds: 13 digits starting with 1
        assert!(cards("ts=1736251200000").is_empty());
        assert!(cards("0000 0000 0000 0000").is_empty());
        assert!(cards("1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6").is_empty());
        assert!(cards("2026-01-07").is_empty());
    }

    #[test]
    fn long_runs_are_linear() {
        let text = "1 ".repeat(50_000);
        assert!(cards(&text).is_empty());
        let text = "4".repeat(100_000);
        assert!(cards(&text).is_empty());
    }
}
