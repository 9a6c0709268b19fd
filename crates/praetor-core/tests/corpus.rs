//! Runs the language-neutral decision corpus (`tests/corpus/*.json` at the workspace
//! root) through the engine (`praetor_core::cases`), and fails on any mismatch or when
//! the corpus is missing.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use praetor_core::cases::{CorpusFile, run};

fn corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/corpus")
}

#[test]
fn decision_corpus() {
    let dir = corpus_dir();
    let mut files: Vec<PathBuf> = match std::fs::read_dir(&dir) {
        Ok(rd) => rd
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "json"))
            .collect(),
        Err(e) => panic!("corpus folder {} is missing: {e}", dir.display()),
    };
    files.sort();
    assert!(!files.is_empty(), "corpus folder {} has no *.json files", dir.display());

    let mut total = 0usize;
    let mut failures = Vec::new();
    let mut names = BTreeSet::new();
    for path in &files {
        let file = path
            .file_name()
            .map(|f| f.to_string_lossy().into_owned())
            .unwrap_or_default();
        let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{file}: {e}"));
        let corpus: CorpusFile = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{file}: invalid corpus: {e}"));
        assert!(!corpus.cases.is_empty(), "{file} has no cases");
        for case in &corpus.cases {
            total += 1;
            if !names.insert(case.name.clone()) {
                failures.push(format!("{file}: duplicate case name `{}`", case.name));
            }
            if let Err(why) = run(case) {
                failures.push(format!("{file}: `{}`:\n    {why}", case.name));
            }
        }
    }
    println!("decision corpus: {total} cases in {} files", files.len());
    assert!(total > 0, "the corpus has no cases");
    assert!(
        failures.is_empty(),
        "{} of {total} corpus cases failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
