//! `save_checkpoint` writes what the authors' files hold: every tensor of the fixture
//! checkpoints (`../shared/fixtures/aido_cell/*/model.safetensors`) is written back under the
//! same key with the same shape and values, and the folder loads again.
#![allow(clippy::unwrap_used)]

use aido_model::load::{LoadMode, load_checkpoint};
use aido_model::{AidoCellConfig, Cpu, save_checkpoint};
use aido_tokenize::shared::shared_path;

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
        let src = shared_path(&format!("fixtures/aido_cell/{case}"));
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
