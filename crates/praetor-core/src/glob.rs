//! Action-type globs: a small compiled matcher, not a path glob.
//!
//! Action types are matched ignoring ASCII case (`Glob::action_type`, and every
//! `GlobList`): `db.DROP_table` names the same action as `db.drop_table` to most tools,
//! so a denial of `db.drop*` must catch both. Only ASCII letters fold; other letters
//! stay as written. Globs over other names (webhook event types) keep case
//! (`Glob::new`). Folding is compiled into the matcher, never done per decision.
//!
//! An action type, and an action-type glob, must be spelled visibly (`spelling`): no
//! invisible characters (`crate::fold::is_invisible`: Unicode category Cf, such as the
//! zero-width space, bidi marks, BOM, soft hyphen and tags, and the other
//! default-ignorable ones), line or paragraph separators, control characters, or whitespace at
//! either end. Each would let one action go by two spellings that look the same.
//!
//! Syntax (always matched against the whole action type):
//! - `*` matches any run of characters, including none and including `.`, `:` and `/`
//!   (there is no path separator: `tool.*` matches `tool.search.web`);
//! - `?` matches exactly one character;
//! - `[abc]`, `[a-z]`, `[!a-z]` / `[^a-z]` match one character in (or not in) a class;
//!   a `]` right after the opening `[` (or `[!`) is literal, and so is a `-` first or last;
//! - `\x` matches `x` literally (`\*`, `\?`, `\[`).
//!
//! Brace alternation (`{a,b}`) is not supported: `{` and `}` are literal. The empty
//! pattern is rejected, since no action type is empty.
//!
//! Globs are parsed once (`Glob::new`) and the common shapes (`*`, a literal,
//! `prefix*`, `*suffix`, `*infix*`) are matched without the general algorithm.

use unicode_properties::{GeneralCategory, UnicodeGeneralCategory};

use crate::policy::PolicyError;

/// Longest glob accepted, in bytes.
pub const MAX_GLOB_LEN: usize = 512;

/// One compiled glob.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Glob {
    source: String,
    matcher: Matcher,
    /// Match ignoring ASCII case.
    fold: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Matcher {
    Any,
    Exact(String),
    Prefix(String),
    Suffix(String),
    Contains(String),
    Tokens(Vec<Tok>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Tok {
    Char(char),
    One,
    Star,
    Class { negated: bool, ranges: Vec<(char, char)> },
}

impl Tok {
    fn matches_char(&self, c: char, fold: bool) -> bool {
        match self {
            Tok::Char(x) if fold => x.eq_ignore_ascii_case(&c),
            Tok::Char(x) => *x == c,
            Tok::One => true,
            Tok::Star => false,
            Tok::Class { negated, ranges } => {
                let within = |c: char| ranges.iter().any(|&(lo, hi)| lo <= c && c <= hi);
                let inside = within(c) || (fold && (within(c.to_ascii_lowercase()) || within(c.to_ascii_uppercase())));
                inside != *negated
            }
        }
    }
}

/// Byte-wise equality, ignoring ASCII case when `fold`. Folding keeps lengths, and a
/// non-ASCII byte only equals itself, so equal bytes are equal texts.
#[inline]
fn same(a: &[u8], b: &[u8], fold: bool) -> bool {
    if fold { a.eq_ignore_ascii_case(b) } else { a == b }
}

impl Glob {
    /// Parse a glob. On error the returned `PolicyError` has an empty `field`; callers
    /// name the field (`action_types[2]`).
    /// Case-sensitive: for names that are not action types (webhook events).
    pub fn new(pattern: &str) -> Result<Glob, PolicyError> {
        Glob::compile(pattern, false)
    }

    /// A glob over action types: matched ignoring ASCII case.
    pub fn action_type(pattern: &str) -> Result<Glob, PolicyError> {
        Glob::compile(pattern, true)
    }

    fn compile(pattern: &str, fold: bool) -> Result<Glob, PolicyError> {
        let toks = parse(pattern).map_err(|m| PolicyError::new("", m))?;
        Ok(Glob {
            source: pattern.to_owned(),
            matcher: simplify(toks),
            fold,
        })
    }

    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// Whole-string match (ignoring ASCII case for an action-type glob).
    pub fn is_match(&self, text: &str) -> bool {
        let (t, fold) = (text.as_bytes(), self.fold);
        match &self.matcher {
            Matcher::Any => true,
            Matcher::Exact(s) => same(t, s.as_bytes(), fold),
            Matcher::Prefix(p) => t.len() >= p.len() && same(&t[..p.len()], p.as_bytes(), fold),
            Matcher::Suffix(s) => t.len() >= s.len() && same(&t[t.len() - s.len()..], s.as_bytes(), fold),
            Matcher::Contains(s) if fold => t.windows(s.len()).any(|w| w.eq_ignore_ascii_case(s.as_bytes())),
            Matcher::Contains(s) => text.contains(s.as_str()),
            Matcher::Tokens(toks) => match_tokens(toks, text, fold),
        }
    }
}

/// Is `text` spelled visibly, as an action type or an action-type glob must be? The
/// error says what is wrong, for the caller to prefix with the field.
pub fn spelling(text: &str) -> Result<(), String> {
    if text.trim() != text {
        return Err("must not begin or end with whitespace".to_owned());
    }
    let invisible = |c: char| {
        c.is_control()
            || crate::fold::is_invisible(c)
            || matches!(c.general_category(), GeneralCategory::LineSeparator | GeneralCategory::ParagraphSeparator)
    };
    match text.chars().find(|&c| invisible(c)) {
        Some(c) => Err(format!("must not contain control, invisible or separator characters (found U+{:04X})", u32::from(c))),
        None => Ok(()),
    }
}

/// A list of globs, matching when any one matches. An empty list matches nothing; the
/// caller decides what "no globs" means (for a policy scope: every action).
///
/// A list holds action-type globs (`Glob::action_type`): it matches ignoring ASCII case.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GlobList {
    globs: Vec<Glob>,
    /// The field the globs came from, for `spelling`.
    field: String,
}

impl GlobList {
    /// Compile `patterns`; an error names `field[i]` (e.g. `action_types[1]`).
    pub fn new<S: AsRef<str>>(patterns: &[S], field: &str) -> Result<GlobList, PolicyError> {
        let mut globs = Vec::with_capacity(patterns.len());
        for (i, p) in patterns.iter().enumerate() {
            let g = Glob::action_type(p.as_ref()).map_err(|e| e.at(format!("{field}[{i}]")))?;
            globs.push(g);
        }
        Ok(GlobList { globs, field: field.to_owned() })
    }

    /// Check every glob's `spelling`, naming `field[i]`. Not part of `new`: stored
    /// definitions from before the rule still load, new ones are refused.
    pub fn spelling(&self) -> Result<(), PolicyError> {
        for (i, g) in self.globs.iter().enumerate() {
            spelling(g.as_str()).map_err(|m| PolicyError::new(format!("{}[{i}]", self.field), m))?;
        }
        Ok(())
    }

    pub fn is_empty(&self) -> bool {
        self.globs.is_empty()
    }

    pub fn len(&self) -> usize {
        self.globs.len()
    }

    /// The first glob that matches `text`.
    pub fn find(&self, text: &str) -> Option<&Glob> {
        self.globs.iter().find(|g| g.is_match(text))
    }

    pub fn is_match(&self, text: &str) -> bool {
        self.find(text).is_some()
    }

    pub fn iter(&self) -> impl Iterator<Item = &Glob> {
        self.globs.iter()
    }
}

/// Check a new action-type glob without keeping it (agent scopes and boundaries,
/// roles, windows, grants): it compiles and is spelled visibly.
pub fn validate(pattern: &str) -> Result<(), PolicyError> {
    Glob::action_type(pattern)?;
    spelling(pattern).map_err(|m| PolicyError::new("", m))
}

fn unclosed(pattern: &str) -> String {
    format!("unclosed `[` in `{pattern}`")
}

fn parse(pattern: &str) -> Result<Vec<Tok>, String> {
    if pattern.is_empty() {
        return Err("empty glob".to_owned());
    }
    if pattern.len() > MAX_GLOB_LEN {
        return Err(format!("glob longer than {MAX_GLOB_LEN} bytes"));
    }
    let mut toks = Vec::new();
    let mut chars = pattern.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '*' => {
                // `**` is the same as `*`: keep one.
                if toks.last() != Some(&Tok::Star) {
                    toks.push(Tok::Star);
                }
            }
            '?' => toks.push(Tok::One),
            '\\' => match chars.next() {
                Some(e) => toks.push(Tok::Char(e)),
                None => return Err(format!("dangling `\\` at the end of `{pattern}`")),
            },
            '[' => {
                let mut negated = false;
                if matches!(chars.peek(), Some('!') | Some('^')) {
                    negated = true;
                    chars.next();
                }
                let mut ranges: Vec<(char, char)> = Vec::new();
                let mut first = true;
                let mut closed = false;
                while let Some(c) = chars.next() {
                    let lo = match c {
                        ']' if !first => {
                            closed = true;
                            break;
                        }
                        '\\' => chars.next().ok_or_else(|| unclosed(pattern))?,
                        other => other,
                    };
                    first = false;
                    // A range `lo-hi`, unless the `-` is the last character of the class.
                    let mut look = chars.clone();
                    if look.next() == Some('-') && matches!(look.next(), Some(h) if h != ']') {
                        chars.next();
                        let hi = match chars.next() {
                            Some('\\') => chars.next().ok_or_else(|| unclosed(pattern))?,
                            Some(h) => h,
                            None => return Err(unclosed(pattern)),
                        };
                        if hi < lo {
                            return Err(format!("invalid range `{lo}-{hi}` in `{pattern}`"));
                        }
                        ranges.push((lo, hi));
                    } else {
                        ranges.push((lo, lo));
                    }
                }
                if !closed {
                    return Err(unclosed(pattern));
                }
                toks.push(Tok::Class { negated, ranges });
            }
            other => toks.push(Tok::Char(other)),
        }
    }
    Ok(toks)
}

fn literal(toks: &[Tok]) -> Option<String> {
    toks.iter()
        .map(|t| match t {
            Tok::Char(c) => Some(*c),
            _ => None,
        })
        .collect()
}

fn simplify(toks: Vec<Tok>) -> Matcher {
    let n = toks.len();
    if n == 1 && toks[0] == Tok::Star {
        return Matcher::Any;
    }
    if let Some(s) = literal(&toks) {
        return Matcher::Exact(s);
    }
    let starts = toks.first() == Some(&Tok::Star);
    let ends = toks.last() == Some(&Tok::Star);
    if ends && !starts
        && let Some(s) = literal(&toks[..n - 1])
    {
        return Matcher::Prefix(s);
    }
    if starts && !ends
        && let Some(s) = literal(&toks[1..])
    {
        return Matcher::Suffix(s);
    }
    if starts && ends && n >= 3
        && let Some(s) = literal(&toks[1..n - 1])
    {
        return Matcher::Contains(s);
    }
    Matcher::Tokens(toks)
}

/// Greedy match with backtracking to the last `*` only: correct because every other
/// token consumes exactly one character. Linear in practice, O(n·m) at worst.
fn match_tokens(toks: &[Tok], text: &str, fold: bool) -> bool {
    let (mut ti, mut si) = (0usize, 0usize);
    // (token index after the star, text position where the star's run ends)
    let mut star: Option<(usize, usize)> = None;
    loop {
        if ti < toks.len() {
            if toks[ti] == Tok::Star {
                star = Some((ti + 1, si));
                ti += 1;
                continue;
            }
            if let Some(c) = text[si..].chars().next()
                && toks[ti].matches_char(c, fold)
            {
                ti += 1;
                si += c.len_utf8();
                continue;
            }
        } else if si == text.len() {
            return true;
        }
        // Mismatch: let the last star swallow one more character, if any.
        let Some((sti, ssi)) = star else { return false };
        let Some(c) = text[ssi..].chars().next() else {
            return false;
        };
        let next = ssi + c.len_utf8();
        star = Some((sti, next));
        ti = sti;
        si = next;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(p: &str, t: &str) -> bool {
        Glob::new(p).unwrap().is_match(t)
    }

    #[test]
    fn star_alone_matches_everything() {
        assert!(m("*", "anything.at:all/x"));
        assert!(m("*", "x"));
        assert!(m("**", "x"));
    }

    #[test]
    fn prefix_is_whole_string() {
        assert!(m("delete_*", "delete_user"));
        assert!(m("delete_*", "delete_"));
        assert!(!m("delete_*", "undelete_x"));
        assert!(!m("delete_*", "Delete_user"), "`Glob::new` (webhook events) is case-sensitive");
    }

    #[test]
    fn action_type_globs_ignore_ascii_case_in_every_shape() {
        let ci = |p: &str, t: &str| Glob::action_type(p).unwrap().is_match(t);
        assert!(ci("delete_*", "Delete_user"));
        assert!(ci("db.drop*", "db.DROP_table"));
        assert!(ci("db.read", "DB.Read"));
        assert!(ci("*_USER", "delete_user"));
        assert!(ci("*DROP*", "db.drop_table"));
        assert!(ci("db.[r]e?d", "db.READ"));
        assert!(ci("db.[A-Z]*", "db.read"));
        assert!(!ci("db.[!r]*", "db.Read"), "a negated class ignores case too");
        assert!(ci("*d*r*o*p", "xDxRxOxP"));
        // Only ASCII folds: other letters stay as written.
        assert!(!ci("é", "É"));
        assert!(!ci("straße", "STRASSE"));
        // Webhook event globs (not action types) keep case.
        assert!(!m("decision.block", "Decision.Block"));
    }

    #[test]
    fn spelling_refuses_invisible_and_edge_whitespace() {
        for bad in ["r.delete\u{200b}_user", " r.delete", "r.delete ", "\u{feff}r.delete", "r.\u{ad}delete",
                    "r.\u{200f}delete", "r.delete\u{2028}", "r.\u{2029}x", "a\u{e0041}", "\u{a0}x", "x\n", "a\u{1343f}",
                    "db.drop\u{fe0f}_table", "db.\u{34f}drop", "db\u{3164}.drop", "a\u{e0002}", "a\u{fff0}", "a\u{2065}"] {
            assert!(spelling(bad).is_err(), "{bad:?}");
        }
        assert!(spelling("tool.search web:v2/é").is_ok());
        let err = GlobList::new(&["ok", "x\u{200b}"], "action_types").unwrap().spelling().unwrap_err();
        assert_eq!(err.field, "action_types[1]");
    }

    #[test]
    fn star_crosses_dots_and_colons() {
        assert!(m("tool.*", "tool.search"));
        assert!(m("tool.*", "tool.search.web:v2"));
        assert!(!m("tool.*", "tool"));
        assert!(m("*:write", "db:users:write"));
        assert!(m("*.read*", "db.read_all"));
    }

    #[test]
    fn literal_dots_are_literal() {
        assert!(m("db.read", "db.read"));
        assert!(!m("db.read", "dbxread"));
        assert!(!m("db.read", "db.read2"));
    }

    #[test]
    fn question_mark_is_one_char() {
        assert!(m("v?", "v1"));
        assert!(!m("v?", "v"));
        assert!(!m("v?", "v12"));
        assert!(m("v?", "vé"), "one character, not one byte");
    }

    #[test]
    fn classes() {
        assert!(m("db.[rw]*", "db.read"));
        assert!(m("db.[rw]*", "db.write"));
        assert!(!m("db.[rw]*", "db.delete"));
        assert!(m("x[0-9]", "x7"));
        assert!(!m("x[!0-9]", "x7"));
        assert!(m("x[^0-9]", "xa"));
        assert!(m("x[]]", "x]"));
        assert!(m("x[a-]", "x-"));
    }

    #[test]
    fn escapes() {
        assert!(m(r"a\*", "a*"));
        assert!(!m(r"a\*", "ab"));
        assert!(m(r"\?", "?"));
    }

    #[test]
    fn general_backtracking() {
        assert!(m("a*b*c", "aXbYbZc"));
        assert!(!m("a*b*c", "aXbYbZ"));
        assert!(m("*a?c*", "zzabczz"));
        assert!(m("*_[0-9]", "user_delete_7"));
        assert!(!m("*_[0-9]", "user_delete_x"));
        assert!(m("*x*", "x"));
        assert!(m("send_*@*", "send_mail@host"));
    }

    #[test]
    fn invalid_globs() {
        assert!(Glob::new("").is_err());
        assert!(Glob::new("[abc").is_err());
        assert!(Glob::new("a\\").is_err());
        assert!(Glob::new("[z-a]").is_err());
        assert!(Glob::new(&"a".repeat(MAX_GLOB_LEN + 1)).is_err());
    }

    #[test]
    fn list_names_the_field() {
        let err = GlobList::new(&["ok", "[bad"], "action_types").unwrap_err();
        assert_eq!(err.field, "action_types[1]");
        let empty = GlobList::new::<&str>(&[], "action_types").unwrap();
        assert!(empty.is_empty());
        assert!(!empty.is_match("x"));
    }

    #[test]
    fn find_returns_the_matching_glob() {
        let l = GlobList::new(&["read_*", "delete_*"], "action_types").unwrap();
        assert_eq!(l.find("delete_user").map(Glob::as_str), Some("delete_*"));
        assert!(l.find("update").is_none());
    }

    proptest::proptest! {
        #[test]
        fn literal_glob_matches_itself(s in "[a-z_.:]{1,20}") {
            proptest::prop_assert!(m(&s, &s));
            let (prefix, suffix) = (format!("{s}*"), format!("*{s}"));
            let (tail, head) = (format!("{s}tail"), format!("head{s}"));
            proptest::prop_assert!(m(&prefix, &tail));
            proptest::prop_assert!(m(&suffix, &head));
        }

        #[test]
        fn general_matcher_agrees_with_fast_paths(a in "[a-c]{0,4}", t in "[a-c.]{0,8}") {
            // `{a}*[a-c.]` goes through the general matcher; for texts longer than the
            // prefix it must agree with the `{a}*` fast path.
            let fast = m(&format!("{a}*"), &t);
            let general = m(&format!("{a}*[a-c.]"), &t);
            if t.len() > a.len() {
                proptest::prop_assert_eq!(fast, general);
            }
        }
    }
}
