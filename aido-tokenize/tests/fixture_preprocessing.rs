//! Preprocessing against the authors' own `preprocess_counts`, whose outputs are stored in the
//! parity fixtures (`testdata/fixtures/aido_cell/*/cases.safetensors`: `counts` → `input_values`).
#![allow(clippy::unwrap_used)]

use aido_tokenize::shared::testdata_path;
use aido_tokenize::{GeneVocab, PreprocessConfig};

fn load(rel: &str) -> (Vec<usize>, std::collections::HashMap<String, Vec<f32>>) {
    let bytes = std::fs::read(testdata_path(rel)).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut m = std::collections::HashMap::new();
    let mut shape = vec![];
    for (name, t) in st.tensors() {
        if name == "counts" {
            shape = t.shape().to_vec();
        }
        let v: Vec<f32> = t
            .data()
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        m.insert(name, v);
    }
    (shape, m)
}

fn check_case(folder: &str) {
    let (shape, t) = load(&format!("fixtures/aido_cell/{folder}/cases.safetensors"));
    let (n, g) = (shape[0], shape[1]);
    let cfg = PreprocessConfig::default();
    let mut worst = 0.0f32;
    for i in 0..n {
        let counts = &t["counts"][i * g..(i + 1) * g];
        let got = cfg.dense_row(counts).unwrap();
        let want = &t["input_values"][i * (g + 2)..(i + 1) * (g + 2)];
        for (a, b) in got.iter().zip(want) {
            worst = worst.max((a - b).abs());
        }
    }
    // Rust's libm may differ from torch by 1 ulp (fixtures README §5).
    assert!(worst <= 1e-6, "{folder}: max |Δ| = {worst}");
}

#[test]
fn tiny_cases_match_reference_preprocessing() {
    check_case("tiny_ln_nobias");
    check_case("tiny_rms_bias");
}

#[test]
fn full_length_cases_match_reference_preprocessing() {
    check_case("aido_cell_3m_random");
}

#[test]
fn depth_floor_applies_only_below_1e5() {
    let (_, t) = load("fixtures/aido_cell/tiny_ln_nobias/cases.safetensors");
    // Cell 0 has 640,593 UMIs: depth log10(640593) = 5.806582 (README §6), not the floor.
    let d = t["input_values"][64];
    assert!((d - 5.806_582).abs() < 1e-6, "{d}");
    assert!((PreprocessConfig::default().depth_value(640_593.0) - d).abs() < 1e-6);
    // Without a floor, a 10-UMI cell has depth 1.
    let none = PreprocessConfig {
        depth_floor: None,
        ..Default::default()
    };
    assert_eq!(none.depth_value(10.0), 1.0);
    assert_eq!(PreprocessConfig::default().depth_value(10.0), 5.0);
    // The clip at 20 is part of the spec even though gene values never reach it.
    assert_eq!(
        PreprocessConfig::default().gene_value(1.0, 1.0),
        (1.0f32 + 1.0e4).ln()
    );
    // An all-zero cell has no defined value: never NaN.
    assert!(PreprocessConfig::default().dense_row(&[0.0; 8]).is_none());
}

#[test]
fn tiny_genes_tsv_is_a_64_gene_panel() {
    let v =
        GeneVocab::from_tsv(testdata_path("fixtures/aido_cell/tiny_ln_nobias/genes.tsv")).unwrap();
    assert_eq!(v.len(), 64);
    assert_eq!(v.names()[63], "ABCD2");
}
