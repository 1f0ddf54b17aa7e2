//! Model configuration: presets, and Hugging Face `config.json` of a checkpoint.

use std::path::Path;

use burn::config::Config;
use serde::{Deserialize, Serialize};

use crate::error::{ModelError, Result};

/// Which normalization the blocks, the final norm and the head use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum NormKind {
    /// LayerNorm (weight + bias).
    LayerNorm,
    /// RMSNorm (weight only).
    RmsNorm,
}

/// Compute precision of the encoder blocks (not a property of the checkpoint: the weights stay
/// in f32 either way).
///
/// `Bf16` is mixed precision in the way of PyTorch autocast, as AIDO.Cell was trained: the
/// q/k/v/output and SwiGLU projections take bf16 inputs and bf16 copies of the f32 weights;
/// attention reads bf16 q/k/v and computes scores, softmax statistics and accumulation in f32;
/// the residual stream, every norm, the value embedding, the pretraining head and the loss stay
/// in f32. Under `Autodiff` the gradients reach the f32 master weights through the casts, so
/// optimizer state is f32 too.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    /// Everything in f32.
    #[default]
    F32,
    /// bf16 projections, f32 everything else (see the type's docs).
    Bf16,
}

impl Precision {
    /// The float dtype the projections compute in.
    pub fn dtype(self) -> burn::tensor::DType {
        match self {
            Precision::F32 => burn::tensor::DType::F32,
            Precision::Bf16 => burn::tensor::DType::BF16,
        }
    }

    /// `"f32"` or `"bf16"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Precision::F32 => "f32",
            Precision::Bf16 => "bf16",
        }
    }
}

impl std::fmt::Display for Precision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Precision {
    type Err = ModelError;

    fn from_str(s: &str) -> Result<Self> {
        match s {
            "f32" => Ok(Precision::F32),
            "bf16" => Ok(Precision::Bf16),
            other => Err(ModelError::Config(format!(
                "unknown precision '{other}' (expected f32 or bf16)"
            ))),
        }
    }
}

/// The shape and constants of an AIDO.Cell model (SPEC-model §3–5).
#[derive(Config, Debug, PartialEq)]
pub struct AidoCellConfig {
    /// Number of genes `G` (`max_position_embeddings`); the sequence is `G + 2` long.
    pub n_genes: usize,
    /// Hidden size `H`.
    pub hidden_size: usize,
    /// Number of blocks `L`.
    pub num_hidden_layers: usize,
    /// Attention heads (must divide `H`).
    pub num_attention_heads: usize,
    /// SwiGLU width `I`.
    pub intermediate_size: usize,
    /// Norm kind.
    #[config(default = "NormKind::LayerNorm")]
    pub norm: NormKind,
    /// Whether q/k/v/out/up/gate/down have biases.
    #[config(default = false)]
    pub add_linear_bias: bool,
    /// Norm epsilon.
    #[config(default = 1e-5)]
    pub layer_norm_eps: f64,
    /// Auto-discretization bins.
    #[config(default = 100)]
    pub bin_num: usize,
    /// Residual weight of the bin logits.
    #[config(default = 1.0)]
    pub bin_alpha: f64,
}

/// The 19,264-gene vocabulary size of the released models.
pub const N_GENES: usize = 19_264;

impl AidoCellConfig {
    /// Sequence length `G + 2`.
    pub fn seq_len(&self) -> usize {
        self.n_genes + 2
    }

    /// Head dimension.
    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_attention_heads
    }

    /// AIDO.Cell-3M: 6 layers, H 128, 4 heads, I 320.
    pub fn aido_3m() -> Self {
        AidoCellConfig::new(N_GENES, 128, 6, 4, 320)
    }
    /// AIDO.Cell-10M: 8 layers, H 256, 8 heads, I 640.
    pub fn aido_10m() -> Self {
        AidoCellConfig::new(N_GENES, 256, 8, 8, 640)
    }
    /// AIDO.Cell-100M: 18 layers, H 640 (the model card's 650 is a typo), 20 heads, I 1664.
    pub fn aido_100m() -> Self {
        AidoCellConfig::new(N_GENES, 640, 18, 20, 1664)
    }
    /// AIDO.Cell-650M (announced): 32 layers, H 1280, 20 heads of 64, I 3392.
    pub fn aido_650m() -> Self {
        AidoCellConfig::new(N_GENES, 1280, 32, 20, 3392)
    }

    /// Checks internal consistency.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(ModelError::Config(m));
        if self.num_attention_heads == 0
            || !self.hidden_size.is_multiple_of(self.num_attention_heads)
        {
            return bad(format!(
                "hidden_size {} is not divisible by num_attention_heads {}",
                self.hidden_size, self.num_attention_heads
            ));
        }
        if self.n_genes == 0
            || self.num_hidden_layers == 0
            || self.intermediate_size == 0
            || self.bin_num == 0
        {
            return bad(
                "n_genes, num_hidden_layers, intermediate_size and bin_num must be positive".into(),
            );
        }
        if self.layer_norm_eps <= 0.0 {
            return bad(format!(
                "layer_norm_eps must be positive, is {}",
                self.layer_norm_eps
            ));
        }
        Ok(())
    }

    /// Reads a checkpoint's `config.json` (Hugging Face `cellfoundation` keys; unknown keys are
    /// ignored). `normalization_type` and `add_linear_bias` are read but the loader overrides
    /// them from the keys present in the weights.
    pub fn from_hf_json(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| ModelError::Io {
            path: path.to_path_buf(),
            source: e,
        })?;
        let v: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| ModelError::ConfigFile {
                path: path.to_path_buf(),
                detail: e.to_string(),
            })?;
        let need = |k: &str| -> Result<usize> {
            v.get(k)
                .and_then(serde_json::Value::as_u64)
                .map(|x| x as usize)
                .ok_or_else(|| ModelError::ConfigFile {
                    path: path.to_path_buf(),
                    detail: format!("missing or non-integer key '{k}'"),
                })
        };
        let f64_or = |k: &str, d: f64| v.get(k).and_then(serde_json::Value::as_f64).unwrap_or(d);
        let norm = match v
            .get("normalization_type")
            .and_then(serde_json::Value::as_str)
        {
            Some("RMSNorm") => NormKind::RmsNorm,
            _ => NormKind::LayerNorm,
        };
        let cfg = AidoCellConfig::new(
            need("max_position_embeddings")?,
            need("hidden_size")?,
            need("num_hidden_layers")?,
            need("num_attention_heads")?,
            need("intermediate_size")?,
        )
        .with_norm(norm)
        .with_add_linear_bias(
            v.get("add_linear_bias")
                .and_then(serde_json::Value::as_bool)
                .unwrap_or(false),
        )
        .with_layer_norm_eps(f64_or("layer_norm_eps", 1e-5))
        .with_bin_num(
            v.get("bin_num")
                .and_then(serde_json::Value::as_u64)
                .unwrap_or(100) as usize,
        )
        .with_bin_alpha(f64_or("bin_alpha", 1.0));
        cfg.validate()?;
        Ok(cfg)
    }
}
