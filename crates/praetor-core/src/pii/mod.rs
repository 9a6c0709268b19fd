//! PII detectors: hand-written scanners, one module per category, run in one pass.
//!
//! What a detector is: a validator of a textual shape with a checksum where one exists
//! (Luhn for cards, mod-97 for IBANs, the SSA rules for SSNs), bounded by word
//! boundaries so that a number inside a longer digit run or word is not reported. What
//! it is not: a data-loss-prevention product. Names, addresses and free-form secrets are
//! out of scope; formats are the common ones listed on each detector.
//!
//! `scan` returns byte offsets only. Callers must never log the matched text: decision
//! reasons say the category and the location (`pii: credit_card at content[10..29]`).
//!
//! Cost: one pass over the bytes that dispatches at token starts (the first byte of a
//! word, or a `+`, `(`, `:` after a non-word byte) and jumps over the rest of each word,
//! plus a `memchr` walk for `@` (e-mail) and one for `-----BEGIN`
//! (private keys). Every detector looks at a bounded window, so a scan is linear in
//! the text's length.

mod card;
mod email;
mod iban;
mod ip;
mod phone;
mod secret;
mod ssn;

use serde::{Deserialize, Serialize};

/// A PII category, as written in `pii` policy conditions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Category {
    Email,
    Phone,
    CreditCard,
    Ssn,
    Iban,
    IpAddress,
    Secret,
}

impl Category {
    pub const ALL: [Category; 7] = [
        Category::Email,
        Category::Phone,
        Category::CreditCard,
        Category::Ssn,
        Category::Iban,
        Category::IpAddress,
        Category::Secret,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Category::Email => "email",
            Category::Phone => "phone",
            Category::CreditCard => "credit_card",
            Category::Ssn => "ssn",
            Category::Iban => "iban",
            Category::IpAddress => "ip_address",
            Category::Secret => "secret",
        }
    }

    pub fn parse(s: &str) -> Option<Category> {
        Category::ALL.into_iter().find(|c| c.as_str() == s)
    }

    fn bit(self) -> u8 {
        1 << (self as u8)
    }
}

impl std::fmt::Display for Category {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A set of categories (a bit set).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct CategorySet(u8);

impl CategorySet {
    pub const fn empty() -> CategorySet {
        CategorySet(0)
    }

    pub fn all() -> CategorySet {
        Category::ALL.into_iter().collect()
    }

    pub fn insert(&mut self, c: Category) {
        self.0 |= c.bit();
    }

    pub fn contains(self, c: Category) -> bool {
        self.0 & c.bit() != 0
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    pub fn union(self, other: CategorySet) -> CategorySet {
        CategorySet(self.0 | other.0)
    }

    pub fn intersection(self, other: CategorySet) -> CategorySet {
        CategorySet(self.0 & other.0)
    }

    pub fn iter(self) -> impl Iterator<Item = Category> {
        Category::ALL.into_iter().filter(move |c| self.contains(*c))
    }
}

impl FromIterator<Category> for CategorySet {
    fn from_iter<I: IntoIterator<Item = Category>>(iter: I) -> Self {
        let mut s = CategorySet::empty();
        for c in iter {
            s.insert(c);
        }
        s
    }
}

/// The categories a plain number can hold (a JSON number in metadata is read for these
/// only): a card, an SSN or a phone number is often sent as an integer.
pub const NUMBER_CATEGORIES: CategorySet =
    CategorySet((1 << Category::CreditCard as u8) | (1 << Category::Ssn as u8) | (1 << Category::Phone as u8));

/// One detected item: its category and byte range in the scanned text. The matched
/// value itself is deliberately not part of the match.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct PiiMatch {
    pub category: Category,
    pub start: usize,
    pub end: usize,
}

/// Scan `text` for the given categories. Matches are sorted by start offset (then
/// category). Overlapping matches of one category are reported once.
pub fn scan(text: &str, categories: &[Category]) -> Vec<PiiMatch> {
    let mut out = Vec::new();
    scan_into(text, categories.iter().copied().collect(), &mut out);
    out
}

/// `scan` into a caller-owned vector (appended; the new matches are sorted among
/// themselves).
pub fn scan_into(text: &str, cats: CategorySet, out: &mut Vec<PiiMatch>) {
    if cats.is_empty() || text.is_empty() {
        return;
    }
    let first = out.len();
    let b = text.as_bytes();
    if cats.contains(Category::Email) {
        email::find_all(text, out);
    }
    if cats.contains(Category::Secret) {
        secret::find_pem(text, out);
    }
    let mut s = Scanner {
        b,
        text,
        cats,
        skip_until: [0; 7],
        out,
    };
    s.run();
    out[first..].sort_unstable_by_key(|m| (m.start, m.category, m.end));
}

/// `scan_into` for a whole metadata value (a string, or a number's digits). Besides
/// what `scan_into` finds, bare digits that are the whole value are an SSN (nine) or a
/// North American phone number (ten, or eleven led by `1`): in free text they are not
/// (see `ssn` and `phone`), but a number sent as a JSON integer cannot be written
/// any other way.
pub fn scan_value_into(text: &str, cats: CategorySet, out: &mut Vec<PiiMatch>) {
    let first = out.len();
    scan_into(text, cats, out);
    let b = text.as_bytes();
    for (category, whole) in [(Category::Ssn, ssn::whole(b)), (Category::Phone, phone::whole(b))] {
        if whole && cats.contains(category) && !out[first..].iter().any(|m| m.category == category) {
            out.push(PiiMatch { category, start: 0, end: text.len() });
        }
    }
    out[first..].sort_unstable_by_key(|m| (m.start, m.category, m.end));
}

/// An SSN sent as a JSON integer under a key that names one (`{"ssn": 78051120}`), into
/// `out`. An integer has no leading zeros, so an SSN whose area is `001`-`099` arrives
/// with 7 or 8 digits, which `scan_value_into` does not read as nine. Only under such a
/// key: read anywhere, every 8-digit number (an order id, an amount in cents) would be
/// one.
pub fn scan_ssn_number_into(digits: &str, key: &str, out: &mut Vec<PiiMatch>) {
    if !(7..9).contains(&digits.len()) || !names_an_ssn(key) {
        return;
    }
    let mut padded = [b'0'; 9];
    padded[9 - digits.len()..].copy_from_slice(digits.as_bytes());
    if ssn::whole(&padded) && !out.iter().any(|m| m.category == Category::Ssn && m.end == digits.len()) {
        out.push(PiiMatch { category: Category::Ssn, start: 0, end: digits.len() });
    }
}

/// `ssn`, `SSN`, `customer_ssn`, `customerSSN`, `SSNLast4`, `customerssn`, `SSNs`,
/// `socialSecurityNumber`, `social_security_no`, `socialsecuritynumber`: a word that
/// starts or ends with `ssn` (or ends with `ssns`), or holds `socialsecurity`, or
/// `social` then `security`, in snake, kebab or camel case or run together. Not a key
/// that only holds the letters inside a word (`businessNumber`, `className`,
/// `crossnet_id`).
fn names_an_ssn(key: &str) -> bool {
    let words = key_words(key);
    words.iter().any(|w| w.starts_with("ssn") || w.ends_with("ssn") || w.ends_with("ssns") || w.contains("socialsecurity"))
        || words.windows(2).any(|w| w[0] == "social" && w[1] == "security")
}

/// The words of a key, lowercase: split at every character that is not a letter or a
/// digit, and before an uppercase letter that follows a lowercase one (an acronym and
/// the word after it stay one: `SSNLast4` is `ssnlast4`).
fn key_words(key: &str) -> Vec<String> {
    let mut words: Vec<String> = Vec::new();
    let mut word = String::new();
    let mut after_lower = false;
    for c in key.chars() {
        if (!c.is_alphanumeric() || (c.is_uppercase() && after_lower)) && !word.is_empty() {
            words.push(std::mem::take(&mut word));
        }
        if c.is_alphanumeric() {
            word.extend(c.to_lowercase());
        }
        after_lower = c.is_lowercase();
    }
    if !word.is_empty() {
        words.push(word);
    }
    words
}

/// Bytes that make up a "word" for boundary purposes: ASCII letters, digits and `_`.
/// Non-ASCII bytes count as non-word, so text in other scripts still separates numbers.
#[inline]
pub(crate) fn is_word(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

/// True when position `i` starts a token: the text starts there or the previous byte
/// is not a word byte.
#[inline]
pub(crate) fn boundary_before(b: &[u8], i: usize) -> bool {
    i == 0 || !is_word(b[i - 1])
}

/// True when position `end` ends a token.
#[inline]
pub(crate) fn boundary_after(b: &[u8], end: usize) -> bool {
    end >= b.len() || !is_word(b[end])
}

/// True when a digit sequence ending at `end` continues as a longer number
/// (`…-12` or `….12`): such a candidate is part of something else.
#[inline]
pub(crate) fn continues_number(b: &[u8], end: usize) -> bool {
    end + 1 < b.len() && matches!(b[end], b'-' | b'.') && b[end + 1].is_ascii_digit()
}

/// True when a digit sequence starting at `start` continues a longer number before it.
#[inline]
pub(crate) fn continued_number(b: &[u8], start: usize) -> bool {
    start >= 2 && matches!(b[start - 1], b'-' | b'.') && b[start - 2].is_ascii_digit()
}

struct Scanner<'a, 'o> {
    b: &'a [u8],
    text: &'a str,
    cats: CategorySet,
    /// Per category: candidates starting before this offset were already covered.
    skip_until: [usize; 7],
    out: &'o mut Vec<PiiMatch>,
}

impl Scanner<'_, '_> {
    fn wants(&self, c: Category, at: usize) -> bool {
        self.cats.contains(c) && at >= self.skip_until[c as usize]
    }

    fn push(&mut self, category: Category, start: usize, end: usize) {
        self.skip_until[category as usize] = end;
        self.out.push(PiiMatch { category, start, end });
    }

    /// Visit every token start once. Inside a run of word bytes only the first byte can
    /// start a token, so the loop jumps over the rest of the run.
    fn run(&mut self) {
        let b = self.b;
        let n = b.len();
        let mut i = 0;
        while i < n {
            let c = b[i];
            if is_word(c) {
                // Reached only at the start of a word run: the byte before is not a word byte.
                self.token(i, c);
                i += 1;
                while i < n && is_word(b[i]) {
                    i += 1;
                }
            } else {
                if matches!(c, b'+' | b'(' | b':') && boundary_before(b, i) {
                    self.token(i, c);
                }
                i += 1;
            }
        }
    }

    /// Try every wanted detector that can start with byte `c` at token start `i`.
    fn token(&mut self, i: usize, c: u8) {
        let b = self.b;
        if c.is_ascii_digit() {
            if self.wants(Category::CreditCard, i) {
                let out = &mut *self.out;
                let run_end = card::find_in_run(b, i, |start, end| {
                    out.push(PiiMatch {
                        category: Category::CreditCard,
                        start,
                        end,
                    });
                });
                // Every candidate inside this run has been considered.
                self.skip_until[Category::CreditCard as usize] = run_end;
            }
            if self.wants(Category::Ssn, i)
                && let Some(e) = ssn::at(b, i)
            {
                self.push(Category::Ssn, i, e);
            }
            if self.wants(Category::IpAddress, i)
                && let Some(e) = ip::v4_at(b, i)
            {
                self.push(Category::IpAddress, i, e);
            }
        }
        if (c.is_ascii_digit() || matches!(c, b'+' | b'(')) && self.wants(Category::Phone, i)
            && let Some(e) = phone::at(b, i)
        {
            self.push(Category::Phone, i, e);
        }
        if c.is_ascii_uppercase() && self.wants(Category::Iban, i)
            && let Some(e) = iban::at(b, i)
        {
            self.push(Category::Iban, i, e);
        }
        if (c.is_ascii_hexdigit() || c == b':') && self.wants(Category::IpAddress, i)
            && let Some(e) = ip::v6_at(self.text, i)
        {
            self.push(Category::IpAddress, i, e);
        }
        if matches!(c, b'A' | b'g' | b'x' | b's' | b'r' | b'e') && self.wants(Category::Secret, i)
            && let Some(e) = secret::token_at(b, i)
        {
            self.push(Category::Secret, i, e);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cats(text: &str) -> Vec<Category> {
        scan(text, &Category::ALL).into_iter().map(|m| m.category).collect()
    }

    #[test]
    fn category_names_round_trip() {
        for c in Category::ALL {
            assert_eq!(Category::parse(c.as_str()), Some(c));
        }
        assert_eq!(Category::parse("cc"), None);
    }

    #[test]
    fn category_set() {
        let s: CategorySet = [Category::Email, Category::Iban].into_iter().collect();
        assert!(s.contains(Category::Email));
        assert!(!s.contains(Category::Phone));
        assert_eq!(s.iter().count(), 2);
        assert_eq!(CategorySet::all().iter().count(), 7);
    }

    #[test]
    fn offsets_point_at_the_value() {
        let text = "card: 4111 1111 1111 1111, mail bob@example.com";
        let m = scan(text, &Category::ALL);
        assert_eq!(m.len(), 2, "{m:?}");
        assert_eq!(&text[m[0].start..m[0].end], "4111 1111 1111 1111");
        assert_eq!(m[0].category, Category::CreditCard);
        assert_eq!(&text[m[1].start..m[1].end], "bob@example.com");
    }

    #[test]
    fn only_requested_categories() {
        let text = "bob@example.com 4111111111111111";
        assert_eq!(scan(text, &[Category::CreditCard]).len(), 1);
        assert_eq!(scan(text, &[Category::Phone]).len(), 0);
        assert!(scan(text, &[]).is_empty());
        assert!(scan("", &Category::ALL).is_empty());
    }

    #[test]
    fn plain_prose_is_clean() {
        let text = "On 2026-01-07 at 12:30 the agent read 3 rows from table users (v1.2) \
                    and wrote report #12345 for order 987654321; total 1,234.56 EUR.";
        assert!(cats(text).is_empty(), "{:?}", scan(text, &Category::ALL));
    }

    #[test]
    fn non_ascii_text_around_values() {
        let text = "Kontonummer: DE89 3704 0044 0532 0130 00 — überwiesen an jörg@example.de";
        assert_eq!(cats(text), vec![Category::Iban, Category::Email]);
    }

    #[test]
    fn one_of_each() {
        let text = "a@b.io +44 20 7946 0958 4111111111111111 078-05-1120 \
                    GB82WEST12345698765432 10.0.0.1 AKIAIOSFODNN7EXAMPLE";
        let mut got = cats(text);
        got.sort();
        assert_eq!(got, Category::ALL.to_vec());
    }

    proptest::proptest! {
        #[test]
        fn scan_never_panics_and_offsets_are_char_boundaries(s in "\\PC{0,200}") {
            for m in scan(&s, &Category::ALL) {
                proptest::prop_assert!(m.start < m.end && m.end <= s.len());
                proptest::prop_assert!(s.is_char_boundary(m.start) && s.is_char_boundary(m.end));
            }
        }

        #[test]
        fn scan_never_panics_on_digit_soup(s in "[0-9 .:+()A-Fa-f@-]{0,300}") {
            for m in scan(&s, &Category::ALL) {
                proptest::prop_assert!(m.start < m.end && m.end <= s.len());
            }
        }
    }
}
