//! `save_checkpoint` writes what the authors' files hold: every tensor of the fixture
//! checkpoints (`testdata/fixtures/aido_cell/*/model.safetensors`) is written back under the
//! same key with the same shape and values, and the folder loads again.
#![allow(clippy::unwrap_used)]

use aido_model::load::{LoadMode, load_checkpoint};
use aido_model::{AidoCellConfig, Cpu, save_checkpoint};
use aido_tokenize::shared::testdata_path;

fn tensors(path: &std::path::Path) -> Vec<(String, Vec<usize>, Vec<u8>)> {
    let bytes = std::fs::read(path).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut v: Vec<_> = st
        .tensors()
        .into_iter()
        .map(|(k, t)| (k, t.shape().to_vec(), t.data().to_vec()))
        .collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

#[test]
fn saved_checkpoints_equal_the_fixture_files_and_load_again() {
    for case in ["tiny_ln_nobias", "tiny_rms_bias"] {
        let src = testdata_path(&format!("fixtures/aido_cell/{case}"));
        let dev = Default::default();
        let (model, cfg) = load_checkpoint::<Cpu>(&src, LoadMode::Full, &dev).unwrap();
        let dir = tempfile::tempdir().unwrap();
        save_checkpoint(&model, &cfg, dir.path()).unwrap();
        // The fixture stores the head bias twice (`cls.predictions.bias` and its alias
        // `cls.predictions.decoder.bias`); we write it once.
        let want: Vec<_> = tensors(&src.join("model.safetensors"))
            .into_iter()
            .filter(|t| t.0 != "cls.predictions.decoder.bias")
            .collect();
        let got = tensors(&dir.path().join("model.safetensors"));
        assert_eq!(
            got.iter().map(|t| &t.0).collect::<Vec<_>>(),
            want.iter().map(|t| &t.0).collect::<Vec<_>>(),
            "{case}: key sets"
        );
        for (g, w) in got.iter().zip(&want) {
            assert_eq!(g.1, w.1, "{case}: shape of {}", g.0);
            assert_eq!(g.2, w.2, "{case}: values of {}", g.0);
        }
        let again = AidoCellConfig::from_hf_json(&dir.path().join("config.json")).unwrap();
        let (_, cfg2) = load_checkpoint::<Cpu>(dir.path(), LoadMode::Full, &dev).unwrap();
        assert_eq!(cfg2, cfg, "{case}");
        assert_eq!(
            (again.n_genes, again.hidden_size, again.num_attention_heads),
            (cfg.n_genes, cfg.hidden_size, cfg.num_attention_heads)
        );
    }
}

/// Weights and `config.json` are a pair: weights saved with one config beside another config
/// of the same tensor shapes (what an export interrupted between its two renames leaves) are
/// refused, naming the field; the released checkpoints (no recorded config) load as before.
#[test]
fn weights_beside_a_foreign_config_are_refused() {
    let src = testdata_path("fixtures/aido_cell/tiny_ln_nobias");
    let dev = Default::default();
    let (model, cfg) = load_checkpoint::<Cpu>(&src, LoadMode::Full, &dev).unwrap();
    assert!(
        aido_model::load::embedded_config(&src.join("model.safetensors"))
            .unwrap()
            .is_none()
    );
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    save_checkpoint(&model, &cfg, a.path()).unwrap();
    let recorded = aido_model::load::embedded_config(&a.path().join("model.safetensors"))
        .unwrap()
        .unwrap();
    assert_eq!(recorded["hidden_size"], cfg.hidden_size);
    // Same shapes, another meaning: a different head count.
    let mut other = cfg.clone();
    other.num_attention_heads = if cfg.num_attention_heads == 1 { 2 } else { 1 };
    assert_eq!(cfg.hidden_size % other.num_attention_heads, 0);
    save_checkpoint(&model, &other, b.path()).unwrap();
    std::fs::copy(
        b.path().join("model.safetensors"),
        a.path().join("model.safetensors"),
    )
    .unwrap();
    let err = load_checkpoint::<Cpu>(a.path(), LoadMode::Full, &dev)
        .map(|_| ())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("config.json") && err.contains("num_attention_heads"),
        "{err}"
    );
    // A key added by hand to config.json is not a mismatch.
    let cj = b.path().join("config.json");
    let mut v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&cj).unwrap()).unwrap();
    v["architectures"] = serde_json::json!(["CellFoundationForMaskedLM"]);
    std::fs::write(&cj, v.to_string()).unwrap();
    load_checkpoint::<Cpu>(b.path(), LoadMode::Full, &dev).unwrap();
    // Nothing is left under a temporary name.
    let names: Vec<String> = std::fs::read_dir(b.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(names.iter().all(|n| !n.ends_with(".tmp")), "{names:?}");
}
