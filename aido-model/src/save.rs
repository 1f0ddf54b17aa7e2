//! Writing a checkpoint folder in the released layout (`config.json` + `model.safetensors`,
//! PyTorch key names and shapes), which [`crate::load_checkpoint`] — and the authors' code —
//! read back. Files are written under temporary names and renamed.

use std::collections::HashMap;
use std::path::Path;

use burn::nn::{Embedding, Linear};
use burn::tensor::Tensor;
use burn::tensor::backend::Backend;

use crate::config::{AidoCellConfig, NormKind};
use crate::model::{AidoCell, Norm};
use crate::{ModelError, Result};

type Named = Vec<(String, Vec<usize>, Vec<f32>)>;

fn host<B: Backend, const D: usize>(t: Tensor<B, D>) -> Result<(Vec<usize>, Vec<f32>)> {
    let dims = t.dims().to_vec();
    let v = t
        .into_data()
        .convert::<f32>()
        .into_vec::<f32>()
        .map_err(|e| ModelError::Device(format!("copying a parameter to the host: {e:?}")))?;
    Ok((dims, v))
}

/// burn's Linear weight is `[in, out]`; the checkpoint stores PyTorch's `[out, in]`.
fn linear<B: Backend>(out: &mut Named, key: &str, l: &Linear<B>) -> Result<()> {
    let (s, v) = host(l.weight.val().transpose())?;
    out.push((format!("{key}.weight"), s, v));
    if let Some(b) = &l.bias {
        let (s, v) = host(b.val())?;
        out.push((format!("{key}.bias"), s, v));
    }
    Ok(())
}

fn embedding<B: Backend>(out: &mut Named, key: &str, e: &Embedding<B>) -> Result<()> {
    let (s, v) = host(e.weight.val())?;
    out.push((format!("{key}.weight"), s, v));
    Ok(())
}

fn norm<B: Backend>(out: &mut Named, key: &str, n: &Norm<B>) -> Result<()> {
    let (gamma, beta) = match n {
        Norm::LayerNorm(l) => (l.gamma.val(), l.beta.as_ref().map(|b| b.val())),
        Norm::RmsNorm(r) => (r.gamma.val(), None),
    };
    let (s, v) = host(gamma)?;
    out.push((format!("{key}.weight"), s, v));
    if let Some(b) = beta {
        let (s, v) = host(b)?;
        out.push((format!("{key}.bias"), s, v));
    }
    Ok(())
}

/// Every parameter under its checkpoint key, in PyTorch layout.
pub fn checkpoint_tensors<B: Backend>(model: &AidoCell<B>) -> Result<Named> {
    let mut out = Named::new();
    let m = &model.bert;
    let ge = &m.gene_embedding;
    linear(&mut out, "bert.gene_embedding.linear1", &ge.linear1)?;
    linear(&mut out, "bert.gene_embedding.linear2", &ge.linear2)?;
    embedding(
        &mut out,
        "bert.gene_embedding.lookup_table",
        &ge.lookup_table,
    )?;
    embedding(
        &mut out,
        "bert.gene_embedding.mask_embedding",
        &ge.mask_embedding,
    )?;
    embedding(
        &mut out,
        "bert.gene_embedding.pad_embedding",
        &ge.pad_embedding,
    )?;
    embedding(&mut out, "bert.position_embedding", &m.position_embedding)?;
    for (i, l) in m.encoder.layer.iter().enumerate() {
        let p = format!("bert.encoder.layer.{i}");
        if l.attention.lora.is_some() {
            return Err(ModelError::Config(format!(
                "{p} has LoRA adapters: merge them into the weights first (aido_model::lora::merge)"
            )));
        }
        let a = &l.attention;
        norm(&mut out, &format!("{p}.attention.ln"), &a.ln)?;
        linear(
            &mut out,
            &format!("{p}.attention.self.query"),
            &a.self_attn.query,
        )?;
        linear(
            &mut out,
            &format!("{p}.attention.self.key"),
            &a.self_attn.key,
        )?;
        linear(
            &mut out,
            &format!("{p}.attention.self.value"),
            &a.self_attn.value,
        )?;
        linear(
            &mut out,
            &format!("{p}.attention.output.dense"),
            &a.output.dense,
        )?;
        norm(&mut out, &format!("{p}.ln"), &l.ln)?;
        linear(&mut out, &format!("{p}.mlp.up_proj"), &l.mlp.up_proj)?;
        linear(&mut out, &format!("{p}.mlp.gate_proj"), &l.mlp.gate_proj)?;
        linear(&mut out, &format!("{p}.mlp.down_proj"), &l.mlp.down_proj)?;
    }
    norm(&mut out, "bert.encoder.ln", &m.encoder.ln)?;
    if let Some(c) = &model.cls {
        let p = &c.predictions;
        linear(
            &mut out,
            "cls.predictions.transform.dense",
            &p.transform.dense,
        )?;
        norm(
            &mut out,
            "cls.predictions.transform.LayerNorm",
            &p.transform.layer_norm,
        )?;
        linear(&mut out, "cls.predictions.decoder", &p.decoder)?;
        let (s, v) = host(p.bias.val())?;
        out.push(("cls.predictions.bias".into(), s, v));
    }
    Ok(out)
}

/// The `config.json` of a configuration (the keys the released checkpoints use).
pub fn hf_config_json(cfg: &AidoCellConfig) -> serde_json::Value {
    serde_json::json!({
        "architectures": ["CellFoundationForMaskedLM"],
        "model_type": "cellfoundation",
        "max_position_embeddings": cfg.n_genes,
        "hidden_size": cfg.hidden_size,
        "num_hidden_layers": cfg.num_hidden_layers,
        "num_attention_heads": cfg.num_attention_heads,
        "intermediate_size": cfg.intermediate_size,
        "hidden_act": "swiglu",
        "normalization_type": match cfg.norm {
            NormKind::LayerNorm => "LayerNorm",
            NormKind::RmsNorm => "RMSNorm",
        },
        "add_linear_bias": cfg.add_linear_bias,
        "layer_norm_eps": cfg.layer_norm_eps,
        "bin_num": cfg.bin_num,
        "bin_alpha": cfg.bin_alpha,
        "mask_token_id": -1,
        "pad_token_id": -2,
        "position_embedding_type": "absolute",
    })
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> ModelError + '_ {
    move |source| ModelError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The safetensors metadata key under which [`save_checkpoint`] records the `config.json` the
/// weights were written with, so a loader can tell that the two files belong together.
pub const CONFIG_METADATA_KEY: &str = "aido_config_json";

/// Writes `dir/config.json` and `dir/model.safetensors` (creating `dir`) as a pair.
///
/// Both are written completely under temporary names first, then renamed (weights, then
/// config): a crash leaves each file either old or new, never torn. The weights also carry
/// the config they belong to (safetensors metadata [`CONFIG_METADATA_KEY`]), so the one
/// window between the two renames — new weights beside the old config — is detected by
/// [`load_checkpoint`](crate::load_checkpoint) as a typed error rather than loaded with the
/// wrong meaning.
pub fn save_checkpoint<B: Backend>(
    model: &AidoCell<B>,
    cfg: &AidoCellConfig,
    dir: &Path,
) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let tensors = checkpoint_tensors(model)?;
    let bytes: Vec<(String, Vec<usize>, Vec<u8>)> = tensors
        .into_iter()
        .map(|(k, s, v)| (k, s, v.iter().flat_map(|x| x.to_le_bytes()).collect()))
        .collect();
    let views = bytes
        .iter()
        .map(|(k, s, b)| {
            safetensors::tensor::TensorView::new(safetensors::Dtype::F32, s.clone(), b)
                .map(|v| (k.clone(), v))
                .map_err(|e| ModelError::Weights {
                    path: dir.join("model.safetensors"),
                    detail: e.to_string(),
                })
        })
        .collect::<Result<HashMap<_, _>>>()?;
    let config = hf_config_json(cfg);
    let text =
        serde_json::to_string_pretty(&config).map_err(|e| ModelError::Config(e.to_string()))?;
    let metadata = HashMap::from([
        ("format".to_string(), "pt".to_string()),
        (CONFIG_METADATA_KEY.to_string(), config.to_string()),
    ]);
    let st = dir.join("model.safetensors");
    let st_tmp = dir.join(".model.safetensors.tmp");
    let cj = dir.join("config.json");
    let cj_tmp = dir.join(".config.json.tmp");
    let staged = safetensors::serialize_to_file(views, Some(metadata), &st_tmp)
        .map_err(|e| ModelError::Weights {
            path: st.clone(),
            detail: e.to_string(),
        })
        .and_then(|()| std::fs::write(&cj_tmp, text + "\n").map_err(io(&cj)));
    if let Err(e) = staged {
        let _ = std::fs::remove_file(&st_tmp);
        let _ = std::fs::remove_file(&cj_tmp);
        return Err(e);
    }
    std::fs::rename(&st_tmp, &st).map_err(io(&st))?;
    std::fs::rename(&cj_tmp, &cj).map_err(io(&cj))?;
    Ok(())
}
