//! Readers, alignment and preprocessing on the real files in `testdata/data`.
//!
//! Expected numbers come from outside this code: they were computed once with anndata 0.12,
//! h5py and scipy (PyPI) by `tools/reference/data_layer_refs.py`, or come from the authors'
//! PyTorch preprocessing stored in `testdata/fixtures/aido_cell/aido_cell_3m_random/cases.safetensors`.
#![allow(clippy::unwrap_used)]

use aido_tokenize::shared::testdata_path;
use aido_tokenize::{
    CellSource, EmptyCellPolicy, GeneIdMode, GeneVocab, NonIntegerPolicy, ObsColumn, ReadOptions,
    TokenizeError, TokenizeOptions, Tokenizer, open_source, read_all,
};

fn vocab() -> GeneVocab {
    GeneVocab::from_tsv(testdata_path("data/OS_scRNA_gene_index.19264.tsv")).unwrap()
}

fn tokenize_all(
    src: &mut dyn CellSource,
    vocab: &GeneVocab,
    opts: TokenizeOptions,
) -> (Vec<Vec<f32>>, Vec<u8>, Vec<f32>) {
    let mut tok = Tokenizer::new(src, vocab, opts).unwrap();
    let present = tok.alignment().present().to_vec();
    let mut rows = Vec::new();
    let mut totals = Vec::new();
    while let Some(b) = tok.next_batch(64).unwrap() {
        for r in b.values.rows() {
            rows.push(r.to_vec());
        }
        totals.extend(b.totals);
    }
    (rows, present, totals)
}

/// Exact-symbol alignment (`--gene-id exact`), the rule numpy's `var_names ∩ vocabulary` and
/// the authors' preprocessing apply.
fn exact() -> TokenizeOptions {
    let mut o = TokenizeOptions::default();
    o.align.gene_id = GeneIdMode::Exact;
    o
}

fn fixture_3m() -> safetensors::SafeTensors<'static> {
    let bytes = std::fs::read(testdata_path(
        "fixtures/aido_cell/aido_cell_3m_random/cases.safetensors",
    ))
    .unwrap();
    safetensors::SafeTensors::deserialize(Box::leak(bytes.into_boxed_slice())).unwrap()
}

fn f32s(t: &safetensors::tensor::TensorView<'_>) -> Vec<f32> {
    t.data()
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

#[test]
fn vocabulary_is_the_19264_gene_list_in_file_order() {
    let v = vocab();
    assert_eq!(v.len(), 19_264);
    assert_eq!(v.seq_len(), 19_266);
    // First rows of the file (DATA.md): file order, not sorted order.
    assert_eq!(v.names()[0], "A1BG");
    assert_eq!(v.names()[1], "A1CF");
    assert_eq!(v.position("A1CF"), Some(1));
}

#[test]
fn zheng68k_reads_like_anndata() {
    let path = testdata_path("data/zheng68k.h5ad");
    let mut src = open_source(&path, &ReadOptions::default()).unwrap();
    // anndata: 165 × 9621, nnz 96,500, sum 246,289, first/last obs names, first var name.
    assert_eq!(src.n_cells(), 165);
    assert_eq!(src.gene_names().len(), 9621);
    assert_eq!(src.gene_names()[0], "NOC2L");
    assert_eq!(src.obs().names[0], "GAATGCTGAGCCTA-8");
    assert_eq!(src.obs().names[164], "AGTGTTCTCACTGA-5");
    let cols: Vec<&str> = src.obs().columns.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(cols, ["celltype", "cell_type_ontology_term_id"]);
    assert_eq!(
        src.obs().column("celltype").unwrap().display(0),
        "CD8+ Cytotoxic T"
    );
    assert_eq!(
        src.obs()
            .column("cell_type_ontology_term_id")
            .unwrap()
            .display(0),
        "CL:0000546"
    );
    let all = read_all(src.as_mut()).unwrap();
    assert_eq!(all.data.len(), 96_500);
    let sum: f64 = all.data.iter().map(|&v| f64::from(v)).sum();
    assert_eq!(sum, 246_289.0);
    let row_totals: Vec<f32> = (0..3).map(|i| all.row(i).1.iter().sum()).collect();
    assert_eq!(row_totals, [1267.0, 1327.0, 1318.0]);
}

#[test]
fn zheng68k_tokens_match_the_authors_preprocessing() {
    let v = vocab();
    let mut src =
        open_source(testdata_path("data/zheng68k.h5ad"), &ReadOptions::default()).unwrap();
    // The authors' preprocessing aligns by exact symbol only.
    let mut tok = Tokenizer::new(src.as_mut(), &v, exact()).unwrap();
    let rep = tok.report().clone();
    // Alignment counts: numpy over var_names ∩ vocabulary; cells.json says 8,328 of 9,621.
    assert_eq!(
        (rep.matched, rep.dropped, rep.duplicated, rep.missing),
        (8328, 1293, 0, 19_264 - 8328)
    );
    let present = tok.alignment().present().to_vec();
    let batch = tok.next_batch(4).unwrap().unwrap();
    // The reference run on zheng68k obs 0 is case 1 of the 3M fixture.
    let fx = fixture_3m();
    let want_vals = f32s(&fx.tensor("input_values").unwrap());
    let want_mask = f32s(&fx.tensor("alignment_mask").unwrap());
    let want_counts = f32s(&fx.tensor("counts").unwrap());
    let (s, g) = (19_266, 19_264);
    let want = &want_vals[s..2 * s];
    let got = batch.values.row(0);
    let max_diff = got
        .iter()
        .zip(want)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    assert!(max_diff <= 1e-6, "max |Δ| = {max_diff}");
    for p in 0..g {
        assert_eq!(
            f32::from(present[p]),
            want_mask[g + p],
            "present mask at position {p}"
        );
    }
    assert_eq!(&present[g..], &[1, 1]);
    // The aligned total (genes dropped by alignment do not count): 1,114 per cells.json.
    assert_eq!(batch.totals[0], 1114.0);
    assert_eq!(want_counts[g..2 * g].iter().sum::<f32>(), 1114.0);
    // Cells 1 and 2: aligned totals from numpy.
    assert_eq!(&batch.totals[1..3], &[1211.0, 1208.0]);
    assert_eq!(batch.values.nrows(), 4);
}

#[test]
fn cellxgene_uses_feature_name_index_and_matches_numpy() {
    let v = vocab();
    let mut src = open_source(
        testdata_path("data/cellxgene.h5ad"),
        &ReadOptions::default(),
    )
    .unwrap();
    assert_eq!(src.gene_column(), "var/feature_name (index)");
    assert_eq!(src.n_cells(), 220);
    assert_eq!(src.obs().names[0], "decidua_111069");
    assert_eq!(
        src.obs().column("cell_type").unwrap().display(0),
        "stromal cell"
    );
    assert_eq!(src.obs().columns.len(), 6);
    let (rows, present, totals) = tokenize_all(src.as_mut(), &v, exact());
    assert_eq!(rows.len(), 220);
    assert_eq!(
        present.iter().map(|&p| p as usize).sum::<usize>(),
        14_878 + 2
    );
    assert_eq!(&totals[..3], &[5984.0, 7276.0, 7213.0]);
    // numpy float32 log1p((c / total) * 1e4) of cell 3 at its first non-zero positions.
    for (p, want) in [
        (15usize, 0.820_065_3f32),
        (16, 0.820_065_3),
        (27, 0.820_065_3),
    ] {
        assert!(
            (rows[3][p] - want).abs() <= 1e-6,
            "cell 3 position {p}: {} vs {want}",
            rows[3][p]
        );
    }
    // Typical cells (< 100k UMIs): both depth tokens are the floor, 5.0.
    assert!(rows.iter().all(|r| r[19_264] == 5.0 && r[19_265] == 5.0));
    // Same file, naming the column explicitly.
    let src2 = open_source(
        testdata_path("data/cellxgene.h5ad"),
        &ReadOptions {
            gene_column: Some("feature_name".into()),
            layer: None,
            raw: false,
        },
    )
    .unwrap();
    assert_eq!(src2.gene_names()[0], "A1BG");
}

#[test]
fn tenx_h5_and_mtx_folder_give_the_same_matrix() {
    let h5 = open_source(
        testdata_path("data/10x_v3_filtered_feature_bc_matrix.h5"),
        &ReadOptions::default(),
    );
    let mtx = open_source(
        testdata_path("data/10x_v3_filtered_feature_bc_matrix"),
        &ReadOptions::default(),
    );
    let (mut h5, mut mtx) = (h5.unwrap(), mtx.unwrap());
    assert_eq!((h5.n_cells(), h5.gene_names().len()), (1107, 507));
    assert_eq!((mtx.n_cells(), mtx.gene_names().len()), (1107, 507));
    assert_eq!(h5.gene_names(), mtx.gene_names());
    assert_eq!(h5.obs().names, mtx.obs().names);
    assert_eq!(h5.obs().names[0], "AAACCCAAGGAGAGTA-1");
    let a = read_all(h5.as_mut()).unwrap();
    let b = read_all(mtx.as_mut()).unwrap();
    // scipy: nnz 23,866, sum 41,549, first cell totals 36, 24, 23.
    assert_eq!(a.data.len(), 23_866);
    assert_eq!(b.data.len(), 23_866);
    assert_eq!(a.data.iter().map(|&x| f64::from(x)).sum::<f64>(), 41_549.0);
    let tot: Vec<f32> = (0..3).map(|i| a.row(i).1.iter().sum()).collect();
    assert_eq!(tot, [36.0, 24.0, 23.0]);
    assert_eq!(a.to_dense(507), b.to_dense(507));
    // Gene ids as the alternative column.
    let ids = open_source(
        testdata_path("data/10x_v3_filtered_feature_bc_matrix.h5"),
        &ReadOptions {
            gene_column: Some("id".into()),
            layer: None,
            raw: false,
        },
    )
    .unwrap();
    assert!(ids.gene_names()[0].starts_with("ENSG"));
}

#[test]
fn tenx_alignment_and_empty_cells() {
    let v = vocab();
    let mut src = open_source(
        testdata_path("data/10x_v3_filtered_feature_bc_matrix.h5"),
        &ReadOptions::default(),
    )
    .unwrap();
    let opts = TokenizeOptions {
        empty: EmptyCellPolicy::Skip,
        ..Default::default()
    };
    let mut tok = Tokenizer::new(src.as_mut(), &v, opts).unwrap();
    // numpy: 200 of the 507 feature names are in the vocabulary; the alias table adds renamed
    // symbols on top.
    let r = tok.report();
    assert_eq!(r.by_symbol, 200);
    assert!(r.by_alias > 0 && r.matched == 200 + r.by_alias, "{r}");
    let mut n = 0;
    while let Some(b) = tok.next_batch(100).unwrap() {
        n += b.values.nrows();
    }
    assert_eq!(n + tok.stats().cells_skipped_empty, 1107);
}

#[test]
fn sciplex3_log_normalized_values_are_flagged() {
    let v = vocab();
    let path = testdata_path("data/sciplex3.h5ad");
    let mut src = open_source(&path, &ReadOptions::default()).unwrap();
    let (rows, _, _) = tokenize_all(src.as_mut(), &v, TokenizeOptions::default());
    assert_eq!(rows.len(), 2247);
    let mut src = open_source(&path, &ReadOptions::default()).unwrap();
    let mut tok = Tokenizer::new(src.as_mut(), &v, TokenizeOptions::default()).unwrap();
    while tok.next_batch(512).unwrap().is_some() {}
    assert!(tok.stats().non_integer_values > 0);
    assert!(
        tok.stats()
            .non_integer_warning()
            .unwrap()
            .contains("normalized")
    );
    let mut src = open_source(&path, &ReadOptions::default()).unwrap();
    let strict = TokenizeOptions {
        non_integer: NonIntegerPolicy::Error,
        ..Default::default()
    };
    let mut tok = Tokenizer::new(src.as_mut(), &v, strict).unwrap();
    let err = tok.next_batch(16).unwrap_err();
    assert!(
        matches!(err, TokenizeError::NonIntegerCount { cell: 0, .. }),
        "{err}"
    );
    // Categorical codes stored as int16 (more than 127 categories) are read too.
    let src = open_source(&path, &ReadOptions::default()).unwrap();
    match src.obs().column("product_name").unwrap() {
        ObsColumn::Categorical { categories, .. } => assert_eq!(categories.len(), 188),
        other => panic!("product_name should be categorical, got {other:?}"),
    }
}
