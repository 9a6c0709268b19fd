//! JSON number literals that a JSON number cannot carry exactly.
//!
//! serde_json reads a number that is not an integer of 64 bits as a 64-bit float, and
//! the engine compares the decimal that float prints as (`metadata::number_to_decimal`):
//! `0.1` is one tenth (serde_json reads floats correctly rounded: its `float_roundtrip`
//! feature, so a float printed shortest, as ryu, Python and JavaScript print it, reads
//! back as itself). A literal
//! that no float holds (`10000.0000000000001`, `1.00000000000000001`, 20-digit
//! integers past 2^64) would be compared rounded, possibly
//! into compliance with a policy (`amount > 10000`) or a budget. Such a literal is read
//! as the string of its text instead (`as_strings`): a numeric comparison never rounds
//! a string (one too precise for a decimal is an evaluation error, which fails closed),
//! a budget parses it exactly, and a typed field refuses it, naming the field.

/// `body` with every number literal that a float does not hold written as a string of
/// its text, and those literals; `None` when every number is exact (nearly every
/// body). Only literals outside strings that follow JSON's number grammar are touched:
/// malformed JSON is the parser's to report.
pub fn as_strings(body: &[u8]) -> Option<(Vec<u8>, Vec<String>)> {
    let mut inexact: Vec<(usize, usize)> = Vec::new();
    let mut at = 0;
    while let Some(&b) = body.get(at) {
        match b {
            b'"' => match crate::extract::string_end(body, at) {
                Some(end) => at = end + 1,
                None => break,
            },
            b'-' | b'0'..=b'9' => match number_len(&body[at..]) {
                Some(len) => {
                    // The grammar admits only ASCII, so the literal is UTF-8.
                    let literal = std::str::from_utf8(&body[at..at + len]).unwrap_or_default();
                    if !float_holds(literal) {
                        inexact.push((at, at + len));
                    }
                    at += len;
                }
                // Outside strings, valid JSON has only whole number literals: this body
                // is malformed, and the parser will say so. (Stepping one byte on would
                // read the same digits again from each: quadratic in a run of them.)
                None => return None,
            },
            _ => at += 1,
        }
    }
    if inexact.is_empty() {
        return None;
    }
    let mut out = Vec::with_capacity(body.len() + 2 * inexact.len());
    let mut literals = Vec::with_capacity(inexact.len());
    let mut copied = 0;
    for (start, end) in inexact {
        let literal = String::from_utf8_lossy(&body[start..end]).into_owned();
        out.extend_from_slice(&body[copied..start]);
        out.push(b'"');
        out.extend_from_slice(plain(&literal).as_deref().unwrap_or(&literal).as_bytes());
        out.push(b'"');
        literals.push(literal);
        copied = end;
    }
    out.extend_from_slice(&body[copied..]);
    Some((out, literals))
}

/// `literal` written without an exponent (`1.00000000000000001e5` as
/// `100000.000000000001`), the form a numeric string takes (`-?[0-9]+(\.[0-9]+)?`), if it
/// has an exponent and that form adds at most 64 zeros to its digits; `None` otherwise
/// (the literal is then kept as written: a string no comparison reads as a number,
/// which fails closed). Any exponent a body can carry is handled, without overflow.
fn plain(literal: &str) -> Option<String> {
    const ZEROS_MAX: i128 = 64;
    if !literal.contains(['e', 'E']) {
        return None;
    }
    let (negative, digits, power) = decimal_parts(literal)?;
    if digits.is_empty() {
        return Some("0".to_owned());
    }
    let sign = if negative { "-" } else { "" };
    let (len, power) = (digits.len() as i128, i128::from(power));
    let point = len + power; // where the decimal point falls, counted from the first digit
    let text = if power >= 0 {
        (power <= ZEROS_MAX).then(|| format!("{sign}{digits}{}", "0".repeat(power as usize)))?
    } else if point > 0 {
        format!("{sign}{}.{}", &digits[..point as usize], &digits[point as usize..])
    } else {
        (-point <= ZEROS_MAX).then(|| format!("{sign}0.{}{digits}", "0".repeat((-point) as usize)))?
    };
    Some(text)
}

/// The length of the JSON number literal at the start of `s`
/// (`-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?`), if one is there.
fn number_len(s: &[u8]) -> Option<usize> {
    let digits = |from: usize| s[from.min(s.len())..].iter().take_while(|b| b.is_ascii_digit()).count();
    let mut at = usize::from(s.first() == Some(&b'-'));
    match s.get(at) {
        Some(b'0') => at += 1,
        Some(b'1'..=b'9') => at += digits(at),
        _ => return None,
    }
    if s.get(at) == Some(&b'.') {
        let n = digits(at + 1);
        if n == 0 {
            return None;
        }
        at += 1 + n;
    }
    if matches!(s.get(at), Some(b'e' | b'E')) {
        let sign = usize::from(matches!(s.get(at + 1), Some(b'+' | b'-')));
        let n = digits(at + 1 + sign);
        if n == 0 {
            return None;
        }
        at += 1 + sign + n;
    }
    Some(at)
}

/// Whether the number `literal` means is what serde_json's reading of it gives the
/// engine: an integer of 64 bits (kept as one), or a float whose printed decimal is
/// the literal's value.
fn float_holds(literal: &str) -> bool {
    let exponent = literal.contains(['e', 'E']);
    if !exponent && !literal.contains('.') && (literal.parse::<i64>().is_ok() || literal.parse::<u64>().is_ok()) {
        return true;
    }
    // At most 15 digits and no exponent: the digits fit a float's 53 bits and the power
    // of ten is exact, so serde_json's reading is correctly rounded, and every decimal
    // of 15 significant digits comes back from its nearest float.
    if !exponent && literal.len() <= 16 {
        return true;
    }
    let Ok(float) = serde_json::from_str::<f64>(literal) else { return false };
    let Some(read) = serde_json::Number::from_f64(float) else { return false };
    match (decimal_parts(literal), decimal_parts(&read.to_string())) {
        (Some(written), Some(read)) => written == read,
        _ => false,
    }
}

/// A decimal literal (with or without an exponent) as its sign, its significant digits
/// and the power of ten of the last one: `0.0120` and `1.2e-2` are both `(+, "12", -3)`.
/// Zero is `(+, "", 0)` whatever its sign. `None` for an exponent past 64 bits.
fn decimal_parts(text: &str) -> Option<(bool, String, i64)> {
    let (negative, text) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    let mantissa = text.split_once(['e', 'E']).map_or(text, |(m, _)| m);
    // Zero is zero whatever its exponent, even one past 64 bits.
    if !mantissa.bytes().any(|b| matches!(b, b'1'..=b'9')) {
        return Some((false, String::new(), 0));
    }
    let exponent = match text.split_once(['e', 'E']) {
        Some((_, e)) => e.strip_prefix('+').unwrap_or(e).parse::<i64>().ok()?,
        None => 0,
    };
    let (whole, fraction) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    let digits = format!("{whole}{fraction}");
    let digits = digits.trim_start_matches('0');
    let significant = digits.trim_end_matches('0');
    if significant.is_empty() {
        return Some((false, String::new(), 0));
    }
    let power = exponent.checked_sub(i64::try_from(fraction.len()).ok()?)?.checked_add(i64::try_from(digits.len() - significant.len()).ok()?)?;
    Some((negative, significant.to_owned(), power))
}

#[cfg(test)]
mod tests {
    use super::{as_strings, decimal_parts, float_holds, number_len, plain};

    #[test]
    fn literals_a_float_does_not_hold_are_found() {
        for exact in ["0", "-0", "12", "-12.5", "0.1", "10000.5", "9223372036854775807", "18446744073709551615", "1e20", "1.5e3", "123456789012345", "0.30000000000000004", "1e2"] {
            assert!(float_holds(exact), "{exact}");
        }
        for inexact in ["10000.0000000000001", "1.00000000000000001", "18446744073709551617", "100000000000000000001", "0.1000000000000000055511151231257827", "1e400", "1e-400", "-1e999999999999999999999"] {
            assert!(!float_holds(inexact), "{inexact}");
        }
    }

    /// The shortcuts (64-bit integers, and literals of 16 characters or fewer without an
    /// exponent) claim that serde_json reads the literal to exactly its value: checked
    /// against its reading on random literals of every shape they cover.
    #[test]
    fn the_shortcuts_agree_with_serde_jsons_reading() {
        let mut r = crate::test_rng::Rng(0x9e37_79b9_7f4a_7c15);
        let mut below = |n: u64| r.next() % n;
        for _ in 0..200_000 {
            let digits: String = (0..1 + below(15)).map(|_| char::from(b'0' + below(10) as u8)).collect();
            let digits = digits.trim_start_matches('0');
            let digits = if digits.is_empty() { "0" } else { digits };
            let point = below(digits.len() as u64 + 1) as usize;
            let mut literal = if point == 0 || point == digits.len() { digits.to_owned() } else { format!("{}.{}", &digits[..point], &digits[point..]) };
            if below(4) == 0 && !literal.starts_with("0.") && literal.contains('.') {
                literal = format!("0.{}", literal.replace('.', ""));
            }
            if below(2) == 0 {
                literal.insert(0, '-');
            }
            if literal.len() > 16 || !float_holds(&literal) {
                continue;
            }
            let read: serde_json::Number = serde_json::from_str(&literal).unwrap();
            assert_eq!(decimal_parts(&literal), decimal_parts(&read.to_string()), "{literal} read as {read}");
        }
    }

    /// Every float a client prints shortest (Python's `json.dumps`, JavaScript's
    /// `JSON.stringify`, serde_json) reads back as itself, so none is turned into a
    /// string: this needs serde_json's correctly rounded parsing (`float_roundtrip`).
    #[test]
    fn floats_printed_shortest_are_held() {
        let mut r = crate::test_rng::Rng(0x2545_f491_4f6c_dd1d);
        let mut next = || r.next();
        let python = |text: String| match text.split_once('e') {
            // Python writes `1e-09` and `1e+16` where Rust writes `1e-9` and `1e16`.
            Some((m, e)) => match e.strip_prefix('-') {
                Some(e) => format!("{m}e-{e:0>2}"),
                None => format!("{m}e+{e:0>2}"),
            },
            None => text,
        };
        for i in 0..300_000u64 {
            let x = match i % 3 {
                0 => f64::from_bits(next() >> 2), // any positive float
                1 => (next() % 1_000_000) as f64 * 1e-9 * ((next() % 1000) as f64),
                _ => (next() % 100_000) as f64 / 100.0 * (next() % 1000) as f64 * 0.01,
            };
            if !x.is_finite() {
                continue;
            }
            let shortest = serde_json::to_string(&x).unwrap();
            assert!(float_holds(&shortest), "{shortest}");
            let python = python(shortest);
            assert!(float_holds(&python), "{python}");
        }
        for sent in ["28633.671000000002", "0.44999999999999996", "3.0000000000000004e-09", "1e+16", "0.30000000000000004"] {
            assert!(float_holds(sent), "{sent}");
        }
    }

    #[test]
    fn decimals_compare_by_value() {
        assert_eq!(decimal_parts("0.0120"), decimal_parts("1.2e-2"));
        assert_eq!(decimal_parts("1200"), Some((false, "12".into(), 2)));
        assert_eq!(decimal_parts("-0.000"), decimal_parts("0e5"));
        assert_ne!(decimal_parts("1.2"), decimal_parts("-1.2"));
        assert_eq!(decimal_parts("1e99999999999999999999"), None);
    }

    #[test]
    fn number_literals_follow_the_json_grammar() {
        assert_eq!(number_len(b"-12.5e+3,"), Some(8));
        assert_eq!(number_len(b"0123"), Some(1), "a leading zero ends the literal");
        assert_eq!(number_len(b"1."), None);
        assert_eq!(number_len(b"1e"), None);
        assert_eq!(number_len(b"-x"), None);
        assert_eq!(number_len(b".5"), None);
    }

    #[test]
    fn inexact_literals_become_strings_of_their_text_and_nothing_else_changes() {
        assert_eq!(as_strings(br#"{"amount": 10000.5, "n": [1, 2e3], "s": "1.00000000000000001"}"#), None);
        let body = br#"{"a":10000.0000000000001,"s":"x\"1.00000000000000001","b":[1.00000000000000001, 7],"c":-1.00000000000000001e-5,"d":1e-29,"e":1e400}"#;
        let (out, literals) = as_strings(body).expect("four inexact literals");
        // An exponent is written out, as a numeric string is spelled, when that is short.
        assert_eq!(
            String::from_utf8(out).unwrap(),
            r#"{"a":"10000.0000000000001","s":"x\"1.00000000000000001","b":["1.00000000000000001", 7],"c":"-0.0000100000000000000001","d":1e-29,"e":"1e400"}"#
        );
        assert_eq!(literals, ["10000.0000000000001", "1.00000000000000001", "-1.00000000000000001e-5", "1e400"]);
        // Exponents at the ends of 64 bits: kept as written, without overflow.
        for extreme in ["1e9223372036854775807", "-1e-9223372036854775808", "1.5e-9223372036854775808", "12e9223372036854775807"] {
            assert_eq!(plain(extreme), None, "{extreme}");
            let body = format!(r#"{{"a":{extreme}}}"#);
            let (out, _) = as_strings(body.as_bytes()).expect("inexact");
            assert_eq!(String::from_utf8(out).unwrap(), format!(r#"{{"a":"{extreme}"}}"#));
        }
        assert_eq!(plain("1e64").as_deref(), Some(format!("1{}", "0".repeat(64)).as_str()));
        assert_eq!(plain("1e65"), None);
        assert_eq!(plain("-12.5e-67"), None);
        assert_eq!(plain("-12.5e-66").as_deref(), Some(format!("-0.{}125", "0".repeat(64)).as_str()));
        assert_eq!(plain("-0e7").as_deref(), Some("0"));
        // Malformed JSON is left for the parser to report, at once: a long run of digits
        // that is no number (it took minutes, stepping a byte at a time).
        assert_eq!(as_strings(b"{\"a\": 1.}"), None);
        assert_eq!(as_strings(b"{\"a\": -}"), None);
        let mut run = vec![b'1'; 1 << 20];
        run.push(b'e');
        assert_eq!(as_strings(&run), None);
        assert_eq!(as_strings(format!("{{\"a\": 1e400, \"b\": {}e}}", "9".repeat(1 << 16)).as_bytes()), None);
        // A zero is exact whatever its exponent.
        assert!(float_holds("0.0e99999999999999999999"));
        assert_eq!(decimal_parts("-0.000e-99999999999999999999"), Some((false, String::new(), 0)));
    }
}
