//! Gene identifiers: the compiled-in table and the alignment routes (symbol, Ensembl ID,
//! alias).
//!
//! Where the expectations come from:
//! - counts and links of org.Hs.eg.db 3.16.0, read with `sqlite3` from Debian's
//!   `r-bioc-org.hs.eg.db` 3.16.0-1 (`SELECT count(*) FROM genes` = 77,614; the `alias` and
//!   `ensembl` tables for the genes named below);
//! - HGNC's renaming of ARNTL to BMAL1 (2019) and NCBI's TP53 record (Ensembl
//!   ENSG00000141510);
//! - Cell Ranger's own id/name pairs in the 10x test matrix (`testdata/data`, GENCODE-based,
//!   not derived from org.Hs.eg.db).
#![allow(clippy::unwrap_used)]

use std::path::Path;

use aido_tokenize::gene_ids::{SymbolHit, looks_like_ensembl};
use aido_tokenize::shared::testdata_path;
use aido_tokenize::{
    AlignOptions, GeneAlignment, GeneIdMode, GeneIdTable, GeneVocab, ReadOptions, TokenizeError,
    open_source,
};

fn names(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

fn any_overlap(gene_id: GeneIdMode) -> AlignOptions {
    AlignOptions {
        min_fraction: 0.0,
        min_genes: 0,
        gene_id,
    }
}

fn align(vocab: &GeneVocab, data: &[&str], mode: GeneIdMode) -> GeneAlignment {
    GeneAlignment::new(
        vocab,
        &names(data),
        "test",
        Path::new("t"),
        &any_overlap(mode),
    )
    .unwrap()
}

#[test]
fn builtin_table_is_org_hs_eg_db() {
    let t = GeneIdTable::builtin();
    assert_eq!(t.len(), 77_614, "genes in org.Hs.eg.db 3.16.0");
    let SymbolHit::Official(tp53) = t.resolve_symbol("TP53") else {
        panic!("TP53 is an official symbol")
    };
    assert_eq!(t.resolve_ensembl("ENSG00000141510"), tp53);
    assert_eq!(
        t.resolve_ensembl("ENSG00000141510.17"),
        tp53,
        "version ignored"
    );
    // ARNTL was renamed BMAL1: the old symbol is an unambiguous alias.
    let SymbolHit::Alias(g) = t.resolve_symbol("ARNTL") else {
        panic!("ARNTL is an alias")
    };
    assert_eq!(t.symbol(g), "BMAL1");
    // ATP1A1 is listed as an alias of ATP1A3 and ATP1A4 too, but it is ATP1A1's own symbol.
    let SymbolHit::Official(rows) = t.resolve_symbol("ATP1A1") else {
        panic!("ATP1A1 is official")
    };
    assert_eq!(rows.len(), 1);
    assert_eq!(t.symbol(rows[0]), "ATP1A1");
    // 12-LOX is an alias of ALOX12 and of ALOX15: it resolves to neither.
    assert_eq!(t.resolve_symbol("12-LOX"), SymbolHit::Ambiguous(2));
    assert_eq!(t.resolve_symbol("NOT-A-GENE-XYZ"), SymbolHit::Unknown);
    assert!(t.resolve_ensembl("ENSG99999999999").is_empty());
}

#[test]
fn routes_and_precedence() {
    let vocab = GeneVocab::from_names(names(&["ARNTL", "TP53", "GAPDH", "ALOX12"])).unwrap();
    // A renamed symbol reaches the vocabulary's old name.
    let a = align(&vocab, &["BMAL1", "GAPDH"], GeneIdMode::Auto);
    assert_eq!(a.position(0), Some(0));
    let r = a.report();
    assert_eq!((r.by_symbol, r.by_alias, r.matched), (1, 1, 2));

    // The exact symbol wins over an alias that comes earlier in the column order.
    let a = align(&vocab, &["BMAL1", "ARNTL"], GeneIdMode::Symbol);
    assert_eq!((a.position(0), a.position(1)), (None, Some(0)));
    assert_eq!((a.report().duplicated, a.report().by_alias), (1, 0));

    // Ensembl ids: by their shape in auto mode, never in symbol mode.
    let data = ["ENSG00000141510.17", "GAPDH"];
    let a = align(&vocab, &data, GeneIdMode::Auto);
    assert_eq!((a.position(0), a.report().by_ensembl), (Some(1), 1));
    let a = align(&vocab, &data, GeneIdMode::Symbol);
    assert_eq!((a.position(0), a.report().dropped), (None, 1));
    // Ensembl mode drops names that are not Ensembl ids.
    let a = align(&vocab, &data, GeneIdMode::Ensembl);
    assert_eq!((a.position(0), a.position(1)), (Some(1), None));
    assert_eq!(a.report().dropped, 1);

    // An ambiguous alias maps nowhere and is counted as such.
    let a = align(&vocab, &["12-LOX", "TP53"], GeneIdMode::Auto);
    assert_eq!((a.position(0), a.report().ambiguous), (None, 1));

    // Two data ids of one vocabulary gene: the first is kept.
    let a = align(
        &vocab,
        &["ENSG00000141510.1", "ENSG00000141510.2"],
        GeneIdMode::Auto,
    );
    assert_eq!((a.position(0), a.position(1)), (Some(1), None));
    let r = a.report();
    assert_eq!(
        r.matched + r.duplicated + r.ambiguous + r.dropped,
        r.n_data_genes
    );
    assert!(r.gene_id.contains("Ensembl"), "{}", r.gene_id);
}

#[test]
fn forced_symbol_mode_on_ensembl_names_says_what_to_do() {
    let vocab = GeneVocab::from_tsv(testdata_path("data/OS_scRNA_gene_index.19264.tsv")).unwrap();
    let src = open_source(
        testdata_path("data/10x_v3_filtered_feature_bc_matrix.h5"),
        &ReadOptions {
            gene_column: Some("id".into()),
            layer: None,
            raw: false,
        },
    )
    .unwrap();
    let opts = AlignOptions {
        gene_id: GeneIdMode::Symbol,
        ..AlignOptions::default()
    };
    let err = GeneAlignment::new(
        &vocab,
        src.gene_names(),
        src.gene_column(),
        src.path(),
        &opts,
    )
    .unwrap_err();
    let TokenizeError::TooLittleOverlap { hint, .. } = &err else {
        panic!("{err}")
    };
    // A library names its options (the CLI shows them as flags: --gene-id).
    assert!(
        hint.contains("`gene_id` ensembl") && !hint.contains("--"),
        "{err}"
    );
}

/// The Cell Ranger matrix names each feature both ways: the Ensembl route on `id` must place
/// about as many genes as the symbol route on `name`, and the same genes at the same positions.
#[test]
fn ensembl_route_matches_symbol_route_on_10x_features() {
    let vocab = GeneVocab::from_tsv(testdata_path("data/OS_scRNA_gene_index.19264.tsv")).unwrap();
    let open = |col: &str| {
        open_source(
            testdata_path("data/10x_v3_filtered_feature_bc_matrix.h5"),
            &ReadOptions {
                gene_column: Some(col.into()),
                layer: None,
                raw: false,
            },
        )
        .unwrap()
    };
    let (by_id, by_name) = (open("id"), open("name"));
    assert!(by_id.gene_names().iter().all(|g| looks_like_ensembl(g)));
    let opts = AlignOptions::default();
    let ids = GeneAlignment::new(
        &vocab,
        by_id.gene_names(),
        by_id.gene_column(),
        by_id.path(),
        &opts,
    )
    .unwrap();
    let syms = GeneAlignment::new(
        &vocab,
        by_name.gene_names(),
        by_name.gene_column(),
        by_name.path(),
        &opts,
    )
    .unwrap();
    let (ri, rs) = (ids.report(), syms.report());
    eprintln!("{ri}\n{rs}");
    assert_eq!(ri.by_symbol + ri.by_alias, 0);
    assert_eq!(ri.by_ensembl, ri.matched);
    // numpy: 200 of the 507 feature names are vocabulary symbols.
    assert_eq!(rs.by_symbol, 200);
    let (mi, ms) = (ri.matched as f64, rs.matched as f64);
    assert!(
        (mi - ms).abs() <= 0.05 * ms,
        "Ensembl route {mi} vs symbol route {ms}"
    );
    let n = by_id.gene_names().len();
    let both = (0..n)
        .filter(|&j| ids.position(j).is_some() && syms.position(j).is_some())
        .count();
    let same = (0..n)
        .filter(|&j| ids.position(j).is_some() && ids.position(j) == syms.position(j))
        .count();
    assert!(both as f64 >= 0.95 * ms, "{both} of {ms} matched by both");
    assert_eq!(same, both, "a gene matched both ways lands at one position");
}

#[test]
fn whole_vocabulary_through_its_ensembl_ids() {
    // Every vocabulary symbol that is the official symbol of a gene with exactly one Ensembl id
    // (and that id of no other gene), renamed to that id, comes back to its own position.
    use std::io::Read;
    let vocab = GeneVocab::from_tsv(testdata_path("data/OS_scRNA_gene_index.19264.tsv")).unwrap();
    let t = GeneIdTable::builtin();
    let gz =
        std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("data/gene_ids.tsv.gz")).unwrap();
    let mut text = String::new();
    flate2::read::GzDecoder::new(&gz[..])
        .read_to_string(&mut text)
        .unwrap();
    let mut ids_of: std::collections::HashMap<&str, Vec<&str>> = Default::default();
    for line in text.lines().skip(1) {
        let f: Vec<&str> = line.split('\t').collect();
        ids_of
            .entry(f[1])
            .or_default()
            .extend(f[2].split('|').filter(|s| !s.is_empty()));
    }
    let (mut data, mut expect) = (Vec::new(), Vec::new());
    for (p, g) in vocab.names().iter().enumerate() {
        if let Some(ids) = ids_of.get(g.as_str())
            && ids.len() == 1
            && t.resolve_ensembl(ids[0]).len() == 1
        {
            data.push(ids[0].to_string());
            expect.push(Some(p as u32));
        }
    }
    let a = GeneAlignment::new(
        &vocab,
        &data,
        "ids",
        Path::new("t"),
        &AlignOptions::default(),
    )
    .unwrap();
    let got: Vec<Option<u32>> = (0..data.len()).map(|j| a.position(j)).collect();
    assert_eq!(got, expect);
    eprintln!("{}", a.report());
    assert!(
        data.len() > 17_000,
        "{} vocabulary genes with one id",
        data.len()
    );
}
