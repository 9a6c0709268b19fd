//! Unicode folding for detection: what content and PII policies also read, besides the
//! text as sent.
//!
//! Text that a person or a downstream program reads the same way can be written with
//! different code points: fullwidth `ｒｍ －ｒｆ` or `４１１１`, a zero-width space inside
//! a card number, an NBSP between its groups, `＠` in an e-mail address, Arabic-Indic
//! digits (which Python's `int()` reads as digits). A detector written for the usual
//! form misses them all. Folding maps each character to the form detectors expect:
//!
//! - invisible characters (`is_invisible`: general category Cf, such as zero-width
//!   spaces and joiners, direction marks, the BOM and the soft hyphen, and the other
//!   default-ignorable code points) are dropped;
//! - compatibility forms are decomposed (NFKD: fullwidth, ligatures, superscripts,
//!   circled digits) and combining marks dropped (`é` reads as `e`);
//! - every space separator (NBSP, thin space, ideographic space, ...) and the line and
//!   paragraph separators read as an ASCII space;
//! - every decimal digit reads as its ASCII digit;
//! - control characters other than tab and line breaks are dropped (those that are
//!   whitespace, such as the form feed and U+0085, and the information separators
//!   U+001C-U+001F read as a space).
//!
//! - a letter of another script that looks like a Latin letter (a Cyrillic `е` for `e`,
//!   by Unicode's confusables) reads as that letter.
//!
//! Policies match the folded text *as well as* the text as sent, so folding only adds
//! matches. Text of printable ASCII, tabs and line breaks is never folded, so the
//! common case costs one pass over its bytes.

use unicode_normalization::char::decompose_compatible;
use unicode_properties::{GeneralCategory, UnicodeGeneralCategory};

/// A folded text, and for each of its bytes where in the original text the character
/// it came from starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Folded {
    pub text: String,
    origin: Vec<u32>,
}

impl Folded {
    /// The range of `original` (the text this was folded from) that folded bytes
    /// `start..end` came from: from the start of the first one's character to the end
    /// of the last one's.
    pub fn original_range(&self, original: &str, start: usize, end: usize) -> (usize, usize) {
        let first = self.origin.get(start).map_or(original.len(), |&o| o as usize);
        let last = end.checked_sub(1).and_then(|i| self.origin.get(i)).map_or(first, |&o| o as usize);
        let last_end = original.get(last..).and_then(|rest| rest.chars().next()).map_or(last, |c| last + c.len_utf8());
        (first, last_end.max(first))
    }
}

/// Characters that show as nothing (or as a blank) and are not whitespace: format
/// characters (general category Cf: zero-width spaces and joiners, direction marks, the
/// BOM, the soft hyphen, tags), and the other default-ignorable code points a sender
/// can slip into a word (the combining grapheme joiner, Hangul fillers, Khmer inherent
/// vowels, Mongolian variation selectors, variation selectors, and the unassigned code
/// points Unicode reserves as default-ignorable, which renderers show as nothing) and
/// the blank Braille pattern. Folding drops them, and an action type may not contain
/// them.
pub fn is_invisible(c: char) -> bool {
    matches!(
        c,
        '\u{034F}' | '\u{115F}' | '\u{1160}' | '\u{17B4}' | '\u{17B5}' | '\u{180B}'..='\u{180F}' | '\u{2065}' | '\u{2800}'
            | '\u{3164}' | '\u{FE00}'..='\u{FE0F}' | '\u{FFA0}' | '\u{FFF0}'..='\u{FFF8}' | '\u{E0000}'..='\u{E0FFF}'
    ) || c.general_category() == GeneralCategory::Format
}

/// `text` folded, or `None` when folding would not change it (all ASCII, or nothing to
/// fold). The folded text is never longer than `text`: a character whose folded form
/// would be longer (U+FDFA decomposes into 18 characters) is kept as it is, so that no
/// input can make folding allocate more than a few times its own size.
pub fn fold(text: &str) -> Option<Folded> {
    if plain_ascii(text) {
        return None;
    }
    let mut out = Folded { text: String::with_capacity(text.len()), origin: Vec::with_capacity(text.len()) };
    let mut changed = false;
    let mut one = String::new();
    for (at, c) in text.char_indices() {
        one.clear();
        if c.is_control() && !matches!(c, '\t' | '\n' | '\r') {
            // Other control characters show as nothing or a box, and a sender can slip
            // one into a word; those that break lines or pages, and the information
            // separators (which Python's `str.split()` splits on), read as a space.
            if c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c) {
                one.push(' ');
            }
        } else if c.is_ascii() {
            one.push(c);
        } else if !is_invisible(c) {
            fold_char(c, &mut one);
            if one.len() > c.len_utf8() {
                one.clear();
                one.push(c);
            }
        }
        changed |= one.len() != c.len_utf8() || !one.starts_with(c);
        out.text.push_str(&one);
        out.origin.extend(std::iter::repeat_n(at as u32, one.len()));
    }
    changed.then_some(out)
}

/// Whether `text` is printable ASCII, tabs and line breaks only: nothing to fold. (One
/// pass without an early exit, which the compiler vectorises: this runs on every text
/// of every request.)
fn plain_ascii(text: &str) -> bool {
    text.bytes().fold(true, |plain, b| plain & matches!(b, b' '..=b'~' | b'\t' | b'\n' | b'\r'))
}

/// The folded form of one non-ASCII, visible character, into `out`.
fn fold_char(c: char, out: &mut String) {
    match c.general_category() {
        GeneralCategory::SpaceSeparator | GeneralCategory::LineSeparator | GeneralCategory::ParagraphSeparator => out.push(' '),
        // Hyphens and dashes (the en dash word processors put between digit groups, the
        // non-breaking hyphen of phone numbers, the figure dash) and the minus sign read
        // as `-` to a person, and so they do to the detectors.
        GeneralCategory::DashPunctuation => out.push('-'),
        _ if c == '\u{2212}' => out.push('-'),
        GeneralCategory::DecimalNumber if first_ascii(c).is_none() => out.push(digit_value(c)),
        _ => decompose_compatible(c, |d| {
            if !matches!(d.general_category(), GeneralCategory::NonspacingMark | GeneralCategory::EnclosingMark) && !is_invisible(d) {
                out.push(latin_look_alike(d).unwrap_or(d));
            }
        }),
    }
}

/// The Latin letter that letter `c` of another script looks like (Cyrillic `а`, `е`,
/// `о`, `р`, `с`, `ѕ`, Greek `ο`, `ν`, Cherokee `ꮁ`, Canadian syllabics `ᗞ`), by
/// Unicode's confusables (the UTS #39 skeleton); none for an ASCII character, or one
/// that looks like no single Latin letter. Letters that look like digits (Cyrillic `З`)
/// are left alone: folded text is scanned for numbers too. The skeleton gives `l` for
/// every letter shaped like a capital I, which reads as `I` (Cyrillic `І` in `АDMІN`).
fn latin_look_alike(c: char) -> Option<char> {
    if c.is_ascii() {
        return None;
    }
    let table = look_alikes();
    table.binary_search_by_key(&c, |&(from, _)| from).ok().map(|i| table[i].1)
}

/// Every letter whose skeleton is one Latin letter, sorted, with that letter (about
/// 1,300 of them, in every script). `unicode-security` does not publish its table, so
/// this asks it for the skeleton of each letter, once per process (about 30 ms): a
/// lookup is then one binary search, whatever the script, where the skeleton of each
/// letter of a long text made folding it several times slower.
fn look_alikes() -> &'static [(char, char)] {
    static TABLE: std::sync::OnceLock<Vec<(char, char)>> = std::sync::OnceLock::new();
    TABLE.get_or_init(|| ('\u{80}'..=char::MAX).filter(|c| c.is_alphabetic()).filter_map(|c| Some((c, skeleton_letter(c)?))).collect())
}

/// The Latin letter `c`'s skeleton is, if it is one.
fn skeleton_letter(c: char) -> Option<char> {
    let mut buf = [0; 4];
    let mut skeleton = unicode_security::skeleton(c.encode_utf8(&mut buf));
    let first = skeleton.next()?;
    if skeleton.next().is_some() || !first.is_ascii_alphabetic() {
        return None;
    }
    Some(if first == 'l' && c.is_uppercase() { 'I' } else { first })
}

/// Build the look-alike table now (the server does at start, on a thread of its own),
/// so that the first request with such text does not wait for it.
pub fn prepare() {
    look_alikes();
}

/// The ASCII digit of decimal digit `c`. Unicode encodes each script's decimal digits
/// as a block of ten code points, zero first, and blocks that follow each other (the
/// mathematical digits) are each ten long: a digit's value is its place in the run of
/// digit code points it belongs to, counted from the run's start, modulo ten.
fn digit_value(c: char) -> char {
    let mut place = 0u32;
    let mut at = c as u32;
    while let Some(before) = at.checked_sub(1).and_then(char::from_u32)
        && before.general_category() == GeneralCategory::DecimalNumber
    {
        place += 1;
        at -= 1;
    }
    char::from(b'0' + (place % 10) as u8)
}

/// The ASCII character `c` decomposes to, if it decomposes to exactly one.
fn first_ascii(c: char) -> Option<char> {
    let mut only = None;
    let mut count = 0;
    decompose_compatible(c, |d| {
        count += 1;
        only = Some(d);
    });
    only.filter(|d| count == 1 && d.is_ascii())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn folded(s: &str) -> String {
        fold(s).map(|f| f.text).unwrap_or_else(|| s.to_owned())
    }

    #[test]
    fn ascii_and_plain_text_are_not_folded() {
        assert_eq!(fold("rm -rf /"), None);
        assert_eq!(fold("Grüße aus Köln"), Some(Folded { text: "Gruße aus Koln".into(), origin: fold("Grüße aus Köln").unwrap().origin }));
        assert_eq!(fold("日本語"), None, "text with nothing to fold is left alone");
    }

    #[test]
    fn invisible_and_compatibility_forms_fold() {
        assert_eq!(folded("ｒｍ －ｒｆ"), "rm -rf");
        assert_eq!(folded("rm\u{200b} -rf"), "rm -rf");
        assert_eq!(folded("4111\u{a0}1111\u{2009}1111\u{200b}1111"), "4111 1111 11111111");
        assert_eq!(folded("bob＠example.com"), "bob@example.com");
        assert_eq!(folded("\u{feff}\u{200f}db.drop\u{ad}_table"), "db.drop_table");
        assert_eq!(folded("r\u{301}m"), "rm", "combining marks are dropped");
        assert_eq!(folded("①２³"), "123");
    }

    #[test]
    fn folding_never_lengthens_the_text() {
        let long = "\u{FDFA}".repeat(1000);
        assert_eq!(fold(&long), None, "a character whose folded form is longer is kept");
        let mixed = "\u{FDFA}ｒｍ\u{FE0F}";
        let f = fold(mixed).unwrap();
        assert_eq!(f.text, "\u{FDFA}rm");
        assert!(f.text.len() <= mixed.len() && f.origin.len() == f.text.len());
        assert_eq!(folded("db.drop\u{FE0F}_table\u{3164}"), "db.drop_table", "variation selectors and Hangul fillers are dropped");
    }

    #[test]
    fn letters_that_look_latin_read_as_latin() {
        assert_eq!(folded("p\u{430}ssword"), "password", "Cyrillic a");
        assert_eq!(folded("\u{410}DM\u{406}N"), "ADMIN", "Cyrillic A and I");
        assert_eq!(folded("\u{455}\u{435}\u{441}r\u{435}t"), "secret", "Cyrillic dze, ie, es");
        assert_eq!(folded("t\u{3bf}ken"), "token", "Greek omicron");
        assert_eq!(folded("r\u{43c} -rf"), "r\u{43c} -rf", "Cyrillic em looks like no Latin letter");
        assert_eq!(folded("\u{417}\u{431}"), "\u{417}\u{431}", "letters that look like digits stay");
        assert_eq!(fold("Привет, мир"), Some(Folded { text: "Пpивeт, миp".into(), origin: fold("Привет, мир").unwrap().origin }), "a Cyrillic text gains its Latin look-alikes");
        assert_eq!(folded("\u{13A0}\u{A4D0}"), "DB", "Cherokee and Lisu letters");
        assert_eq!(fold("한국어 日本語"), None, "scripts without look-alikes fold to themselves");
        assert_eq!(folded("\u{ab81}m -rf"), "rm -rf", "Cherokee Supplement small letter");
        assert_eq!(folded("\u{15de}\u{1587}\u{39f}\u{146d} TABLE"), "DROP TABLE", "Canadian syllabics and Greek");
        assert_eq!(folded("pa\u{abaa}\u{abaa}word"), "password");
        assert_eq!(folded("\u{2d54}\u{16c1}"), "Ol", "Tifinagh and Runic");
        assert_eq!(folded("\u{fe}"), "p", "Latin-1 thorn");
        assert!(look_alikes().windows(2).all(|w| w[0].0 < w[1].0), "sorted, for the binary search");
    }

    #[test]
    fn control_characters_are_dropped() {
        assert_eq!(folded("r\u{80}m -rf /"), "rm -rf /", "C1 control");
        assert_eq!(folded("pass\u{9f}word"), "password");
        for c in ['\0', '\u{8}', '\u{1b}', '\u{7f}'] {
            assert_eq!(folded(&format!("pass{c}word")), "password", "ASCII text with a control ({:?}) is folded", c);
        }
        assert_eq!(folded("pass\u{c}word\u{85}x"), "pass word x", "form feed and next line read as spaces");
        assert_eq!(folded("rm\u{1f}-rf\u{1c}/"), "rm -rf /", "information separators read as spaces");
        assert_eq!(folded("acct 4111111111\u{1f}111111"), "acct 4111111111 111111");
        assert_eq!(fold("tab\tand\r\nlines"), None, "tabs and line breaks stay");
    }

    #[test]
    fn hyphens_dashes_and_minus_read_as_hyphen_minus() {
        assert_eq!(folded("4111\u{2013}1111\u{2011}1111\u{2012}1111"), "4111-1111-1111-1111", "en dash, non-breaking hyphen, figure dash");
        assert_eq!(folded("078\u{2010}05\u{2212}1120"), "078-05-1120", "hyphen, minus sign");
        assert_eq!(folded("a\u{2014}b\u{fe63}c"), "a-b-c", "em dash, small hyphen-minus");
    }

    #[test]
    fn digits_of_any_script_read_as_ascii() {
        assert_eq!(folded("٤١١١"), "4111", "Arabic-Indic");
        assert_eq!(folded("۰۱۲۳۴۵۶۷۸۹"), "0123456789", "extended Arabic-Indic");
        assert_eq!(folded("०९"), "09", "Devanagari");
        assert_eq!(folded("𝟎𝟗𝟘𝟡"), "0909", "mathematical digits, blocks of ten in a row");
    }

    #[test]
    fn folded_ranges_point_into_the_original() {
        let text = "card: ４１１１ x";
        let f = fold(text).unwrap();
        let start = f.text.find("4111").unwrap();
        let (a, b) = f.original_range(text, start, start + 4);
        assert_eq!(&text[a..b], "４１１１");
        let dropped = "a\u{200b}b";
        assert_eq!(fold(dropped).unwrap().original_range(dropped, 1, 2), (4, 5), "the `b` after the dropped zero-width space");
    }
}
