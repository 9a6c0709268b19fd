//! A prefilter for a bank of many content patterns: one pass over a text says which
//! patterns cannot match it, so that only the others read it.
//!
//! Each pattern read on its own costs a pass over the text (its own literal search,
//! then its regex), so a decision's cost grew with the number of patterns: 1.4 ms at
//! 1,000 on 1.5 KB. One `RegexSet` reads the text once, but sets of patterns with
//! Unicode classes overflow the lazy DFA's cache and fall back to a far slower engine
//! (BENCHMARKS "Session 30"). This reads the text once with one Aho-Corasick automaton
//! over the patterns' prefix literals instead, and the regex engine only runs where it
//! might match.
//!
//! Why it is sound: `regex_syntax`'s prefix extraction gives, for a pattern whose
//! sequence is finite, literals one of which begins every match (look-around assertions
//! are read as matching anywhere, which only adds candidates). A text with none of them
//! holds no match. The automaton compares ASCII letters without case, and literals are
//! cut to their first bytes (shorter still when a pattern has too many), which both only
//! add candidates. A pattern whose literals are unknown (an infinite sequence), too
//! short, or too many even at 2 bytes (`[0-9]{8}x`, say) is never ruled out.
//!
//! Costs: a field is screened only once a decision asked about more than a few patterns
//! in it (`content_pattern::FieldScreen`); the literals are read when a pattern goes into
//! force; the automaton is built
//! when the patterns in force change, or their order (sets after it share it while they
//! stay the same); a text is read once per field, stopping early once no
//! screened pattern is left to rule out, and reports at most one hit a byte per literal
//! length.

use aho_corasick::{AhoCorasick, MatchKind};
use regex_syntax::ParserBuilder;
use regex_syntax::hir::literal::Extractor;

/// Below this many patterns with literals, each pattern's own literal search is as
/// fast, so no prefilter is built (the six patterns of the realistic scenario, say).
pub(crate) const PREFILTER_FROM: usize = 16;
/// A pattern with more prefix literals than this (after ASCII case folding) is screened
/// with shorter prefixes of them, down to `MIN_LITERAL_LEN` bytes; one with more even
/// then, or with a literal shorter than that, is not screened.
const MAX_LITERALS: usize = 32;
const MIN_LITERAL_LEN: usize = 2;
/// Literals are cut to this many bytes (a prefix of a prefix still begins every match).
/// Longer ones barely rule out more, and make the automaton slower to build (at 32
/// bytes, 1,000 patterns of 32 literals took seconds in a debug build) and the overlapping
/// search report more hits a byte (at most one per literal length ending there).
const LITERAL_LEN: usize = 8;
/// How many literals the extraction may enumerate before it shortens them: enough for
/// the case variants of 8 ASCII letters (2 each), which ASCII folding then merges; words
/// heavy in `k` and `s` (3 variants each, `K` and `ſ` taking 3 bytes and 2) end with
/// shorter literals, cut mid-character at times (the search is over bytes: still sound).
const EXTRACT_TOTAL: usize = 1024;

/// The prefix literals one of which begins every match of `pattern` (ASCII lowercase,
/// without repeats), or `None` when they are unknown or not worth screening with.
pub(crate) fn prefixes(pattern: &str, case_insensitive: bool, nest_limit: u32) -> Option<Vec<Vec<u8>>> {
    let hir = ParserBuilder::new().case_insensitive(case_insensitive).nest_limit(nest_limit).build().parse(pattern).ok()?;
    let seq = Extractor::new().limit_literal_len(LITERAL_LEN).limit_total(EXTRACT_TOTAL).extract(&hir);
    let mut literals: Vec<Vec<u8>> = seq.literals()?.iter().map(|l| l.as_bytes().to_ascii_lowercase()).collect();
    if literals.is_empty() || literals.iter().any(|l| l.len() < MIN_LITERAL_LEN) {
        return None;
    }
    literals.sort_unstable();
    literals.dedup();
    // Too many: shorter prefixes of them (fewer once repeats merge) still begin every
    // match. Cutting a sorted list keeps it sorted, so counting the distinct prefixes of
    // a length is one pass; only the length chosen is copied.
    let len = (MIN_LITERAL_LEN..=LITERAL_LEN).rev().find(|len| distinct_prefixes(&literals, *len) <= MAX_LITERALS)?;
    let mut cut: Vec<Vec<u8>> = literals.iter().map(|l| l[..l.len().min(len)].to_vec()).collect();
    cut.dedup();
    Some(cut)
}

/// How many distinct prefixes of `len` bytes (or whole, if shorter) a sorted list holds.
fn distinct_prefixes(sorted: &[Vec<u8>], len: usize) -> usize {
    let cut = |l: &[u8]| -> usize { l.len().min(len) };
    1 + sorted.windows(2).filter(|w| w[0][..cut(&w[0])] != w[1][..cut(&w[1])]).count()
}

/// One automaton over the prefix literals of every screened pattern of a bank.
#[derive(Debug)]
pub(crate) struct Prefilter {
    automaton: AhoCorasick,
    /// Per literal of the automaton: the patterns (slots) it begins.
    owners: Vec<Vec<usize>>,
    /// Per pattern: is it screened (ruled out when none of its literals occurs)?
    screened: Vec<bool>,
    /// How many are.
    screened_count: usize,
}

impl Prefilter {
    /// A prefilter over `prefixes` (per slot, from [`prefixes`]), or `None` when too few
    /// patterns can be screened for it to pay.
    pub(crate) fn new(prefixes: &[Option<Vec<Vec<u8>>>]) -> Option<Prefilter> {
        if prefixes.iter().flatten().count() < PREFILTER_FROM {
            return None;
        }
        let mut ids: std::collections::HashMap<&[u8], usize> = std::collections::HashMap::new();
        let mut literals: Vec<&[u8]> = Vec::new();
        let mut owners: Vec<Vec<usize>> = Vec::new();
        for (slot, lits) in prefixes.iter().enumerate() {
            for lit in lits.iter().flatten() {
                let id = *ids.entry(lit).or_insert_with(|| {
                    literals.push(lit);
                    owners.push(Vec::new());
                    literals.len() - 1
                });
                owners[id].push(slot);
            }
        }
        let automaton = AhoCorasick::builder().ascii_case_insensitive(true).match_kind(MatchKind::Standard).build(&literals).ok()?;
        let screened: Vec<bool> = prefixes.iter().map(Option::is_some).collect();
        let screened_count = screened.iter().filter(|s| **s).count();
        Some(Prefilter { automaton, owners, screened, screened_count })
    }

    /// Per slot: may the pattern match `text`? At most one pass over the text: it
    /// stops once no screened pattern is left to rule out.
    pub(crate) fn candidates(&self, text: &str) -> Vec<bool> {
        let mut may = self.screened.iter().map(|s| !s).collect::<Vec<bool>>();
        let mut undecided = self.screened_count;
        let mut seen = vec![false; self.owners.len()];
        for m in self.automaton.find_overlapping_iter(text) {
            let id = m.pattern().as_usize();
            if std::mem::replace(&mut seen[id], true) {
                continue;
            }
            for &slot in &self.owners[id] {
                if !std::mem::replace(&mut may[slot], true) {
                    undecided -= 1;
                }
            }
            if undecided == 0 {
                break;
            }
        }
        may
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lits(p: &str, ci: bool) -> Option<Vec<String>> {
        prefixes(p, ci, 64).map(|v| v.into_iter().map(|l| String::from_utf8_lossy(&l).into_owned()).collect())
    }

    #[test]
    fn prefixes_are_read_from_the_pattern_when_they_are_few_and_long_enough() {
        assert_eq!(lits(r"drop\s+table", false), Some(vec!["drop".into()]));
        // Without case: ASCII letters fold in the automaton; other letters that fold to
        // them (`ſ` is an `s`, `K` a `k`) are literals of their own.
        assert_eq!(lits(r"(wire|swift)\s+funds", true), Some(vec!["swift".into(), "wire".into(), "ſwift".into()]));
        assert_eq!(lits(r"rm -rf /", false), Some(vec!["rm -rf /".into()]));
        // Cut to 8 bytes; a class too large to list ends them.
        assert_eq!(lits(r"codename7\b", true), Some(vec!["codename".into()]));
        assert_eq!(lits(r"AKIA[0-9A-Z]{16}", true), Some(vec!["akia".into(), "a\u{212a}ia".into()]));
        // Too many (36): cut shorter until few enough.
        let cut = lits(r"(foo|bar|baz|qux)(one|two|six|ten|eight|nine|four|five|seven)", false);
        assert_eq!(cut.map(|l| (l.len(), l.iter().all(|x| x.len() == 4))), Some((24, true)), "`fooo`, `foot`, `bare`…");
        // A class up front, a one-byte literal, or any text at all: not screened.
        assert_eq!(lits(r"\w+@example\.com", false), None);
        assert_eq!(lits(r"a|bc", false), None);
        assert_eq!(lits(r".*secret", false), None);
        assert_eq!(lits(r"(", false), None);
    }
}
