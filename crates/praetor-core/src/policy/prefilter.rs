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
//! holds no match. The automaton compares ASCII letters without case, which also only
//! adds candidates. A pattern whose literals are unknown (an infinite sequence), too
//! short, or too many, is never ruled out.

use aho_corasick::{AhoCorasick, MatchKind};
use regex_syntax::ParserBuilder;
use regex_syntax::hir::literal::Extractor;

/// Below this many patterns with literals, each pattern's own literal search is as
/// fast, so no prefilter is built (the six patterns of the realistic scenario, say).
pub(crate) const PREFILTER_FROM: usize = 16;
/// A pattern with more prefix literals than this (after ASCII case folding), or one
/// shorter than `MIN_LITERAL_LEN`, is not screened.
const MAX_LITERALS: usize = 32;
const MIN_LITERAL_LEN: usize = 2;

/// The prefix literals one of which begins every match of `pattern` (ASCII lowercase,
/// without repeats), or `None` when they are unknown or not worth screening with.
pub(crate) fn prefixes(pattern: &str, case_insensitive: bool, nest_limit: u32) -> Option<Vec<Vec<u8>>> {
    let hir = ParserBuilder::new().case_insensitive(case_insensitive).nest_limit(nest_limit).build().parse(pattern).ok()?;
    let seq = Extractor::new().limit_literal_len(32).limit_total(4 * MAX_LITERALS).extract(&hir);
    let mut out: Vec<Vec<u8>> = seq.literals()?.iter().map(|l| l.as_bytes().to_ascii_lowercase()).collect();
    out.sort_unstable();
    out.dedup();
    let usable = !out.is_empty() && out.len() <= MAX_LITERALS && out.iter().all(|l| l.len() >= MIN_LITERAL_LEN);
    usable.then_some(out)
}

/// One automaton over the prefix literals of every screened pattern of a bank.
#[derive(Debug)]
pub(crate) struct Prefilter {
    automaton: AhoCorasick,
    /// Per literal of the automaton: the patterns (slots) it begins.
    owners: Vec<Vec<usize>>,
    /// Per pattern: is it screened (ruled out when none of its literals occurs)?
    screened: Vec<bool>,
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
        Some(Prefilter { automaton, owners, screened: prefixes.iter().map(Option::is_some).collect() })
    }

    /// Per slot: may the pattern match `text`? One pass over the text.
    pub(crate) fn candidates(&self, text: &str) -> Vec<bool> {
        let mut may = self.screened.iter().map(|s| !s).collect::<Vec<bool>>();
        let mut seen = vec![false; self.owners.len()];
        for m in self.automaton.find_overlapping_iter(text) {
            let id = m.pattern().as_usize();
            if !std::mem::replace(&mut seen[id], true) {
                for &slot in &self.owners[id] {
                    may[slot] = true;
                }
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
        // A class up front, a one-byte literal, or any text at all: not screened.
        assert_eq!(lits(r"\w+@example\.com", false), None);
        assert_eq!(lits(r"a|bc", false), None);
        assert_eq!(lits(r".*secret", false), None);
        assert_eq!(lits(r"(", false), None);
    }
}
