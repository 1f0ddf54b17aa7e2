//! The small-panel alignment rule (`AlignOptions::for_vocab`), the one every consumer of a
//! checkpoint applies: a model pretrained on a 512-gene panel embeds a file that measures 300 of
//! its genes among 2,000, which the whole-transcriptome thresholds (≥ 1,000 genes matched)
//! refuse. It used to live in `aido-train` and the library's inference loop lacked it.
#![allow(clippy::unwrap_used)]

use std::path::Path;

use aido_tokenize::{AlignOptions, GeneAlignment, GeneVocab};

#[test]
fn a_panel_model_is_judged_against_its_panel() {
    let panel: Vec<String> = (0..512).map(|i| format!("PANEL{i}")).collect();
    let vocab = GeneVocab::from_names(panel.clone()).unwrap();
    let mut data: Vec<String> = panel[..300].to_vec();
    data.extend((0..1700).map(|i| format!("OTHER{i}")));
    let path = Path::new("cells.h5ad");
    let whole = AlignOptions::default();
    assert!(GeneAlignment::new(&vocab, &data, "var/_index", path, &whole).is_err());
    let rule = whole.for_vocab(&vocab);
    assert_eq!((rule.min_genes, rule.min_fraction), (256, 0.0));
    let a = GeneAlignment::new(&vocab, &data, "var/_index", path, &rule).unwrap();
    assert_eq!(a.report().matched, 300);
    // Fewer than half of the panel measured is still refused.
    assert!(GeneAlignment::new(&vocab, &data[200..], "var/_index", path, &rule).is_err());
    // A whole-transcriptome list keeps the given thresholds.
    let big = GeneVocab::from_names((0..19_264).map(|i| format!("G{i}")).collect()).unwrap();
    assert_eq!(whole.for_vocab(&big), whole);
}
