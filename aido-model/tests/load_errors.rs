//! Bad checkpoints give typed errors naming the key or the file.
#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::path::Path;

use aido_model::{Cpu, LoadMode, ModelError, load_checkpoint};
use aido_tokenize::shared::testdata_path;

/// Copies the tiny LayerNorm checkpoint into `dir`, editing its tensors with `edit`.
fn variant(
    dir: &Path,
    edit: impl FnOnce(&mut HashMap<String, (Vec<usize>, Vec<u8>)>),
    config: Option<&str>,
) {
    let src = testdata_path("fixtures/aido_cell/tiny_ln_nobias");
    let bytes = std::fs::read(src.join("model.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut t: HashMap<String, (Vec<usize>, Vec<u8>)> = st
        .tensors()
        .into_iter()
        .map(|(n, v)| (n, (v.shape().to_vec(), v.data().to_vec())))
        .collect();
    edit(&mut t);
    let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = t
        .iter()
        .map(|(n, (s, d))| {
            (
                n.clone(),
                safetensors::tensor::TensorView::new(safetensors::Dtype::F32, s.clone(), d)
                    .unwrap(),
            )
        })
        .collect();
    let out = safetensors::serialize(views, None).unwrap();
    std::fs::write(dir.join("model.safetensors"), out).unwrap();
    let cfg = std::fs::read_to_string(src.join("config.json")).unwrap();
    std::fs::write(
        dir.join("config.json"),
        config.map(str::to_string).unwrap_or(cfg),
    )
    .unwrap();
}

fn load(dir: &Path, mode: LoadMode) -> Result<(), ModelError> {
    load_checkpoint::<Cpu>(dir, mode, &Default::default()).map(|_| ())
}

#[test]
fn missing_key_is_named() {
    let d = tempfile::tempdir().unwrap();
    variant(
        d.path(),
        |t| drop(t.remove("bert.encoder.layer.1.mlp.up_proj.weight")),
        None,
    );
    let e = load(d.path(), LoadMode::EncoderOnly).unwrap_err();
    assert!(
        matches!(&e, ModelError::MissingKey { key, .. } if key == "bert.encoder.layer.1.mlp.up_proj.weight"),
        "{e}"
    );
}

#[test]
fn unexpected_key_is_named_but_cls_is_fine_for_encoder_only() {
    let d = tempfile::tempdir().unwrap();
    variant(
        d.path(),
        |t| drop(t.insert("bert.extra.weight".into(), (vec![1], vec![0; 4]))),
        None,
    );
    let e = load(d.path(), LoadMode::EncoderOnly).unwrap_err();
    assert!(
        matches!(&e, ModelError::UnexpectedKey { key, .. } if key == "bert.extra.weight"),
        "{e}"
    );
    let d = tempfile::tempdir().unwrap();
    variant(
        d.path(),
        |t| drop(t.remove("cls.predictions.transform.dense.weight")),
        None,
    );
    load(d.path(), LoadMode::EncoderOnly).unwrap();
    let e = load(d.path(), LoadMode::Full).unwrap_err();
    assert!(
        matches!(&e, ModelError::MissingKey { key, .. } if key == "cls.predictions.transform.dense.weight"),
        "{e}"
    );
}

#[test]
fn shape_and_config_disagreements() {
    let d = tempfile::tempdir().unwrap();
    variant(
        d.path(),
        |t| {
            drop(t.insert(
                "bert.encoder.layer.0.attention.self.key.weight".into(),
                (vec![32, 16], vec![0; 32 * 16 * 4]),
            ))
        },
        None,
    );
    let e = load(d.path(), LoadMode::EncoderOnly).unwrap_err();
    assert!(
        matches!(&e, ModelError::Shape { key, .. } if key == "bert.encoder.layer.0.attention.self.key.weight"),
        "{e}"
    );
    let cfg = std::fs::read_to_string(testdata_path(
        "fixtures/aido_cell/tiny_ln_nobias/config.json",
    ))
    .unwrap();
    let d = tempfile::tempdir().unwrap();
    variant(
        d.path(),
        |_| {},
        Some(&cfg.replace("\"hidden_size\": 32", "\"hidden_size\": 64")),
    );
    let e = load(d.path(), LoadMode::EncoderOnly).unwrap_err();
    assert!(e.to_string().contains("hidden_size"), "{e}");
}

#[test]
fn truncated_weights_and_missing_files() {
    let d = tempfile::tempdir().unwrap();
    variant(d.path(), |_| {}, None);
    let p = d.path().join("model.safetensors");
    let b = std::fs::read(&p).unwrap();
    std::fs::write(&p, &b[..b.len() / 2]).unwrap();
    let e = load(d.path(), LoadMode::EncoderOnly).unwrap_err();
    assert!(matches!(e, ModelError::Weights { .. }), "{e}");
    let empty = tempfile::tempdir().unwrap();
    let e = load(empty.path(), LoadMode::EncoderOnly).unwrap_err();
    assert!(matches!(e, ModelError::NoWeights(_)), "{e}");
    std::fs::remove_file(d.path().join("config.json")).unwrap();
    let e = load(d.path(), LoadMode::EncoderOnly).unwrap_err();
    assert!(e.to_string().contains("config.json"), "{e}");
}
