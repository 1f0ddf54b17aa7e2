//! Loading Hugging Face-style checkpoint folders: `config.json` plus `model.safetensors` or
//! `pytorch_model.bin` (how the released 3M/10M/100M checkpoints ship), and burn's own format.
//!
//! The norm kind and the presence of linear biases are decided from the keys in the weights
//! file; `config.json` is trusted for `num_attention_heads` and `layer_norm_eps` (they cannot be
//! read off shapes). Every other size comes from, and is checked against, the tensors.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use burn::tensor::backend::Backend;
use burn_store::{
    BurnpackStore, ModuleSnapshot, ModuleStore, PyTorchToBurnAdapter, PytorchStore,
    SafetensorsStore,
};

use crate::config::{AidoCellConfig, NormKind};
use crate::error::{ModelError, Result};
use crate::model::AidoCell;

/// Which part of a checkpoint to load.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoadMode {
    /// Backbone only; `cls.*` keys are ignored.
    EncoderOnly,
    /// Backbone and the masked-value head.
    Full,
}

/// The weights file of a checkpoint folder (safetensors preferred).
pub fn weights_file(dir: &Path) -> Result<PathBuf> {
    for name in ["model.safetensors", "pytorch_model.bin"] {
        let p = dir.join(name);
        if p.is_file() {
            return Ok(p);
        }
    }
    Err(ModelError::NoWeights(dir.to_path_buf()))
}

/// The `config.json` a weights file was saved with ([`crate::save::CONFIG_METADATA_KEY`] in its
/// safetensors metadata), if it records one. Reads only the header (its length is bounded).
pub fn embedded_config(weights: &Path) -> Result<Option<serde_json::Value>> {
    use std::io::Read;
    if weights.extension().is_none_or(|e| e != "safetensors") {
        return Ok(None);
    }
    let err = |detail: String| ModelError::Weights {
        path: weights.to_path_buf(),
        detail,
    };
    let mut f = std::fs::File::open(weights).map_err(|source| ModelError::Io {
        path: weights.to_path_buf(),
        source,
    })?;
    let mut len = [0u8; 8];
    f.read_exact(&mut len)
        .map_err(|e| err(format!("reading the header length: {e}")))?;
    let n = u64::from_le_bytes(len);
    let file_len = f.metadata().map(|m| m.len()).unwrap_or(0);
    if n > 100 << 20 || n + 8 > file_len {
        return Err(err(format!(
            "header of {n} bytes in a file of {file_len} bytes"
        )));
    }
    let mut header = vec![0u8; n as usize];
    f.read_exact(&mut header)
        .map_err(|e| err(format!("reading the header: {e}")))?;
    let v: serde_json::Value =
        serde_json::from_slice(&header).map_err(|e| err(format!("the header is not JSON: {e}")))?;
    let Some(text) = v
        .get("__metadata__")
        .and_then(|m| m.get(crate::save::CONFIG_METADATA_KEY))
        .and_then(serde_json::Value::as_str)
    else {
        return Ok(None);
    };
    serde_json::from_str(text)
        .map(Some)
        .map_err(|e| err(format!("its recorded config is not JSON: {e}")))
}

/// Refuses a `config.json` that is not the one its weights were saved with (e.g. an export
/// interrupted between the two renames): every recorded key must be present with the same
/// value (keys added by hand are fine). Weights without a recorded config (the released
/// checkpoints) are not checked.
fn check_pair(cfg_path: &Path, weights: &Path) -> Result<()> {
    let Some(recorded) = embedded_config(weights)? else {
        return Ok(());
    };
    let text = std::fs::read_to_string(cfg_path).map_err(|source| ModelError::Io {
        path: cfg_path.to_path_buf(),
        source,
    })?;
    let on_disk: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| ModelError::ConfigFile {
            path: cfg_path.to_path_buf(),
            detail: e.to_string(),
        })?;
    let differs: Vec<String> = recorded
        .as_object()
        .into_iter()
        .flatten()
        .filter(|(k, v)| on_disk.get(k.as_str()) != Some(*v))
        .map(|(k, v)| {
            let here = on_disk
                .get(k.as_str())
                .map_or("absent".into(), |x| x.to_string());
            format!("{k} (weights: {v}, config.json: {here})")
        })
        .collect();
    if differs.is_empty() {
        return Ok(());
    }
    Err(ModelError::ConfigFile {
        path: cfg_path.to_path_buf(),
        detail: format!(
            "does not belong to {}: the weights were saved with a different config ({}); an export was probably interrupted — export again",
            weights.display(),
            differs.join(", ")
        ),
    })
}

fn read_shapes(path: &Path) -> Result<BTreeMap<String, Vec<usize>>> {
    let err = |e: String| ModelError::Weights {
        path: path.to_path_buf(),
        detail: e,
    };
    let is_st = path.extension().is_some_and(|e| e == "safetensors");
    let snaps = if is_st {
        let mut s = SafetensorsStore::from_file(path);
        s.get_all_snapshots()
            .map_err(|e| err(e.to_string()))?
            .iter()
            .map(|(k, v)| (k.clone(), v.shape.to_vec()))
            .collect()
    } else {
        let mut s = PytorchStore::from_file(path);
        s.get_all_snapshots()
            .map_err(|e| err(e.to_string()))?
            .iter()
            .map(|(k, v)| (k.clone(), v.shape.to_vec()))
            .collect()
    };
    Ok(snaps)
}

/// Every checkpoint key of a configuration with its PyTorch shape.
pub fn expected_keys(cfg: &AidoCellConfig, mode: LoadMode) -> Vec<(String, Vec<usize>)> {
    let (h, i, nb) = (cfg.hidden_size, cfg.intermediate_size, cfg.bin_num);
    let ln = cfg.norm == NormKind::LayerNorm;
    let mut k: Vec<(String, Vec<usize>)> = vec![
        ("bert.gene_embedding.linear1.weight".into(), vec![nb, 1]),
        ("bert.gene_embedding.linear1.bias".into(), vec![nb]),
        ("bert.gene_embedding.linear2.weight".into(), vec![nb, nb]),
        ("bert.gene_embedding.linear2.bias".into(), vec![nb]),
        (
            "bert.gene_embedding.lookup_table.weight".into(),
            vec![nb, h],
        ),
        (
            "bert.gene_embedding.mask_embedding.weight".into(),
            vec![1, h],
        ),
        (
            "bert.gene_embedding.pad_embedding.weight".into(),
            vec![1, h],
        ),
        (
            "bert.position_embedding.weight".into(),
            vec![cfg.seq_len(), h],
        ),
    ];
    let norm = |k: &mut Vec<(String, Vec<usize>)>, p: &str| {
        k.push((format!("{p}.weight"), vec![h]));
        if ln {
            k.push((format!("{p}.bias"), vec![h]));
        }
    };
    let lin = |k: &mut Vec<(String, Vec<usize>)>, p: &str, o: usize, inp: usize, bias: bool| {
        k.push((format!("{p}.weight"), vec![o, inp]));
        if bias {
            k.push((format!("{p}.bias"), vec![o]));
        }
    };
    for l in 0..cfg.num_hidden_layers {
        let p = format!("bert.encoder.layer.{l}");
        norm(&mut k, &format!("{p}.attention.ln"));
        for q in ["query", "key", "value"] {
            lin(
                &mut k,
                &format!("{p}.attention.self.{q}"),
                h,
                h,
                cfg.add_linear_bias,
            );
        }
        lin(
            &mut k,
            &format!("{p}.attention.output.dense"),
            h,
            h,
            cfg.add_linear_bias,
        );
        norm(&mut k, &format!("{p}.ln"));
        lin(
            &mut k,
            &format!("{p}.mlp.up_proj"),
            i,
            h,
            cfg.add_linear_bias,
        );
        lin(
            &mut k,
            &format!("{p}.mlp.gate_proj"),
            i,
            h,
            cfg.add_linear_bias,
        );
        lin(
            &mut k,
            &format!("{p}.mlp.down_proj"),
            h,
            i,
            cfg.add_linear_bias,
        );
    }
    norm(&mut k, "bert.encoder.ln");
    if mode == LoadMode::Full {
        lin(&mut k, "cls.predictions.transform.dense", h, h, true);
        norm(&mut k, "cls.predictions.transform.LayerNorm");
        lin(&mut k, "cls.predictions.decoder", 1, h, false);
        k.push(("cls.predictions.bias".into(), vec![1]));
    }
    k
}

/// Key renames from the checkpoint tree to the module tree.
fn remaps(has_head_bias: bool) -> Vec<(&'static str, &'static str)> {
    let mut r = vec![
        (r"\.attention\.self\.", ".attention.self_attn."),
        (r"\.LayerNorm\.weight$", ".layer_norm.gamma"),
        (r"\.LayerNorm\.bias$", ".layer_norm.beta"),
        (r"\.ln\.weight$", ".ln.gamma"),
        (r"\.ln\.bias$", ".ln.beta"),
    ];
    if !has_head_bias {
        r.push((r"^cls\.predictions\.decoder\.bias$", "cls.predictions.bias"));
    }
    r
}

/// Loads a checkpoint folder (`config.json` + `model.safetensors` or `pytorch_model.bin`).
pub fn load_checkpoint<B: Backend>(
    dir: &Path,
    mode: LoadMode,
    device: &B::Device,
) -> Result<(AidoCell<B>, AidoCellConfig)> {
    load_weights(&dir.join("config.json"), &weights_file(dir)?, mode, device)
}

/// Loads a given weights file (`.safetensors`, or a torch pickle `.bin`/`.pt`) with its
/// `config.json`.
pub fn load_weights<B: Backend>(
    cfg_path: &Path,
    weights: &Path,
    mode: LoadMode,
    device: &B::Device,
) -> Result<(AidoCell<B>, AidoCellConfig)> {
    let cfg_path = cfg_path.to_path_buf();
    let weights = weights.to_path_buf();
    let mut cfg = AidoCellConfig::from_hf_json(&cfg_path)?;
    check_pair(&cfg_path, &weights)?;
    let shapes = read_shapes(&weights)?;
    // Norm kind and biases from the keys present.
    cfg.norm = if shapes.contains_key("bert.encoder.ln.bias") {
        NormKind::LayerNorm
    } else {
        NormKind::RmsNorm
    };
    cfg.add_linear_bias = shapes.contains_key("bert.encoder.layer.0.attention.self.query.bias");
    // Sizes from the tensors, checked against config.json.
    let from_tensor = |key: &str, dim: usize| shapes.get(key).and_then(|s| s.get(dim).copied());
    let checks = [
        (
            "bert.position_embedding.weight",
            1,
            cfg.hidden_size,
            "hidden_size",
        ),
        (
            "bert.position_embedding.weight",
            0,
            cfg.seq_len(),
            "max_position_embeddings + 2",
        ),
        (
            "bert.encoder.layer.0.mlp.up_proj.weight",
            0,
            cfg.intermediate_size,
            "intermediate_size",
        ),
        (
            "bert.gene_embedding.linear2.weight",
            0,
            cfg.bin_num,
            "bin_num",
        ),
    ];
    for (key, dim, want, what) in checks {
        match from_tensor(key, dim) {
            None => {
                return Err(ModelError::MissingKey {
                    path: weights.clone(),
                    key: key.into(),
                });
            }
            Some(got) if got != want => {
                return Err(ModelError::ConfigFile {
                    path: cfg_path.clone(),
                    detail: format!(
                        "{what} = {want} disagrees with key '{key}' of {} (dimension {dim} is {got})",
                        weights.display()
                    ),
                });
            }
            Some(_) => {}
        }
    }
    let n_layers = shapes
        .keys()
        .filter_map(|k| {
            k.strip_prefix("bert.encoder.layer.")?
                .split('.')
                .next()?
                .parse::<usize>()
                .ok()
        })
        .max()
        .map_or(0, |m| m + 1);
    if n_layers != cfg.num_hidden_layers {
        return Err(ModelError::ConfigFile {
            path: cfg_path,
            detail: format!(
                "num_hidden_layers = {} but {} holds {n_layers} layers",
                cfg.num_hidden_layers,
                weights.display()
            ),
        });
    }
    // Every expected key with its shape; nothing unexpected outside cls.*.
    let has_head_bias = shapes.contains_key("cls.predictions.bias");
    let mut expected = expected_keys(&cfg, mode);
    if mode == LoadMode::Full && !has_head_bias {
        for e in &mut expected {
            if e.0 == "cls.predictions.bias" {
                e.0 = "cls.predictions.decoder.bias".into();
            }
        }
    }
    for (key, shape) in &expected {
        match shapes.get(key) {
            None => {
                return Err(ModelError::MissingKey {
                    path: weights.clone(),
                    key: key.clone(),
                });
            }
            Some(s) if s != shape => {
                return Err(ModelError::Shape {
                    path: weights.clone(),
                    key: key.clone(),
                    expected: shape.clone(),
                    found: s.clone(),
                });
            }
            Some(_) => {}
        }
    }
    let known: std::collections::HashSet<&str> = expected.iter().map(|(k, _)| k.as_str()).collect();
    for key in shapes.keys() {
        let head_alias = key == "cls.predictions.decoder.bias";
        if !known.contains(key.as_str()) && !key.starts_with("cls.") && !head_alias {
            return Err(ModelError::UnexpectedKey {
                path: weights.clone(),
                key: key.clone(),
            });
        }
        if mode == LoadMode::Full
            && key.starts_with("cls.")
            && !known.contains(key.as_str())
            && !head_alias
        {
            return Err(ModelError::UnexpectedKey {
                path: weights.clone(),
                key: key.clone(),
            });
        }
    }
    let mut model = cfg.init::<B>(mode == LoadMode::Full, device);
    let err = |e: String| ModelError::Weights {
        path: weights.clone(),
        detail: e,
    };
    let result = if weights.extension().is_some_and(|e| e == "safetensors") {
        let mut store = SafetensorsStore::from_file(&weights)
            .with_from_adapter(PyTorchToBurnAdapter)
            .skip_enum_variants(true)
            .allow_partial(true);
        for (a, b) in remaps(has_head_bias) {
            store = store.with_key_remapping(a, b);
        }
        model
            .load_from(&mut store)
            .map_err(|e| err(e.to_string()))?
    } else {
        let mut store = PytorchStore::from_file(&weights)
            .skip_enum_variants(true)
            .allow_partial(true);
        for (a, b) in remaps(has_head_bias) {
            store = store.with_key_remapping(a, b);
        }
        model
            .load_from(&mut store)
            .map_err(|e| err(e.to_string()))?
    };
    if !result.errors.is_empty() || !result.missing.is_empty() {
        return Err(err(format!("{result}")));
    }
    Ok((model, cfg))
}

/// Saves a model in burn's own format (`.bpk`).
pub fn save_burnpack<B: Backend>(model: &AidoCell<B>, path: &Path) -> Result<()> {
    let mut store = BurnpackStore::from_file(path).overwrite(true);
    model
        .save_into(&mut store)
        .map_err(|e| ModelError::Weights {
            path: path.to_path_buf(),
            detail: e.to_string(),
        })
}

/// Loads burn-format weights into a model built from `cfg`.
pub fn load_burnpack<B: Backend>(
    cfg: &AidoCellConfig,
    with_head: bool,
    path: &Path,
    device: &B::Device,
) -> Result<AidoCell<B>> {
    let mut model = cfg.init::<B>(with_head, device);
    let mut store = BurnpackStore::from_file(path);
    let r = model
        .load_from(&mut store)
        .map_err(|e| ModelError::Weights {
            path: path.to_path_buf(),
            detail: e.to_string(),
        })?;
    if !r.errors.is_empty() || !r.missing.is_empty() {
        return Err(ModelError::Weights {
            path: path.to_path_buf(),
            detail: format!("{r}"),
        });
    }
    Ok(model)
}
