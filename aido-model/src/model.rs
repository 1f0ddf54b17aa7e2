//! The AIDO.Cell modules (SPEC-model §3–5), named after the checkpoint's key tree so that
//! loading is a renaming table: `bert.gene_embedding.linear1.weight` is
//! `bert.gene_embedding.linear1.weight` here, except `attention.self` (a Rust keyword) →
//! `attention.self_attn`, `LayerNorm` → `layer_norm`, and norm `weight`/`bias` → `gamma`/`beta`.

use burn::config::Config;
use burn::module::{Module, Param};
use burn::nn::{
    Embedding, EmbeddingConfig, LayerNorm, LayerNormConfig, Linear, LinearConfig, RmsNorm,
    RmsNormConfig,
};
use burn::tensor::activation::{gelu, leaky_relu, silu, softmax};
use burn::tensor::backend::Backend;
use burn::tensor::{Bool, Tensor};

use crate::attention::attention;
use crate::config::{AidoCellConfig, NormKind, Precision};
use crate::error::{ModelError, Result};

/// LayerNorm or RMSNorm, as the checkpoint says. `[.., H] → [.., H]`.
#[derive(Module, Debug)]
pub enum Norm<B: Backend> {
    /// `(x - mean) / sqrt(var + eps) · γ + β` (β optional).
    LayerNorm(LayerNorm<B>),
    /// `x · rsqrt(mean(x²) + eps) · γ`.
    RmsNorm(RmsNorm<B>),
}

impl<B: Backend> Norm<B> {
    /// A norm of width `h`.
    pub fn new(kind: NormKind, h: usize, eps: f64, device: &B::Device) -> Self {
        match kind {
            NormKind::LayerNorm => {
                Norm::LayerNorm(LayerNormConfig::new(h).with_epsilon(eps).init(device))
            }
            NormKind::RmsNorm => {
                Norm::RmsNorm(RmsNormConfig::new(h).with_epsilon(eps).init(device))
            }
        }
    }

    /// Normalizes over the last dimension.
    pub fn forward<const D: usize>(&self, x: Tensor<B, D>) -> Tensor<B, D> {
        match self {
            Norm::LayerNorm(n) => n.forward(x),
            Norm::RmsNorm(n) => n.forward(x),
        }
    }
}

/// Configuration of a [`GeneEmbedding`].
#[derive(Config, Debug)]
pub struct GeneEmbeddingConfig {
    /// Hidden size `H`.
    pub hidden_size: usize,
    /// Number of bins of the auto-discretization (`bin_num`; 100 in the released models, as
    /// [`AidoCellConfig`] says).
    #[config(default = 100)]
    pub bin_num: usize,
    /// `bin_alpha`: weight of the leaky-ReLU branch in the bin logits.
    #[config(default = 1.0)]
    pub bin_alpha: f64,
}

impl GeneEmbeddingConfig {
    /// A randomly initialized value embedding.
    pub fn init<B: Backend>(&self, device: &B::Device) -> GeneEmbedding<B> {
        let (nb, h) = (self.bin_num, self.hidden_size);
        GeneEmbedding {
            linear1: linear(1, nb, true, device),
            linear2: linear(nb, nb, true, device),
            lookup_table: EmbeddingConfig::new(nb, h).init(device),
            mask_embedding: EmbeddingConfig::new(1, h).init(device),
            pad_embedding: EmbeddingConfig::new(1, h).init(device),
            bin_alpha: self.bin_alpha,
        }
    }
}

/// The auto-discretization value embedding plus the mask/pad vectors (§3 steps 1–6).
#[derive(Module, Debug)]
pub struct GeneEmbedding<B: Backend> {
    /// `1 → n_bins`, with bias.
    pub linear1: Linear<B>,
    /// `n_bins → n_bins`, with bias.
    pub linear2: Linear<B>,
    /// The bin table `[n_bins, H]`.
    pub lookup_table: Embedding<B>,
    /// The learned mask vector `[1, H]`.
    pub mask_embedding: Embedding<B>,
    /// The learned pad vector `[1, H]`.
    pub pad_embedding: Embedding<B>,
    /// `bin_alpha`.
    pub bin_alpha: f64,
}

impl<B: Backend> GeneEmbedding<B> {
    /// `values: [B, S]` → `[B, S, H]`.
    pub fn forward(&self, values: Tensor<B, 2>) -> Tensor<B, 3> {
        let [b, s] = values.dims();
        let v = values.clone().reshape([b, s, 1]);
        let a = leaky_relu(self.linear1.forward(v), 0.1);
        let r = self.linear2.forward(a.clone());
        let w = softmax(a * self.bin_alpha + r, 2);
        let table = self.lookup_table.weight.val();
        let [n_bins, h] = table.dims();
        let e = w.matmul(table.reshape([1, n_bins, h]));
        let mask_vec = self
            .mask_embedding
            .weight
            .val()
            .reshape([1, 1, h])
            .expand([b, s, h]);
        let pad_vec = self
            .pad_embedding
            .weight
            .val()
            .reshape([1, 1, h])
            .expand([b, s, h]);
        let is_mask: Tensor<B, 3, Bool> = values
            .clone()
            .equal_elem(-1.0)
            .reshape([b, s, 1])
            .expand([b, s, h]);
        let is_pad: Tensor<B, 3, Bool> =
            values.equal_elem(-2.0).reshape([b, s, 1]).expand([b, s, h]);
        e.mask_where(is_mask, mask_vec).mask_where(is_pad, pad_vec)
    }
}

/// Query/key/value projections (`attention.self` in the checkpoint).
#[derive(Module, Debug)]
pub struct SelfAttention<B: Backend> {
    /// `H → H`.
    pub query: Linear<B>,
    /// `H → H`.
    pub key: Linear<B>,
    /// `H → H`.
    pub value: Linear<B>,
    /// Number of heads.
    pub num_heads: usize,
}

/// The attention output projection (`attention.output`).
#[derive(Module, Debug)]
pub struct AttentionOutput<B: Backend> {
    /// `H → H`.
    pub dense: Linear<B>,
}

/// Pre-norm attention sub-block: `Wo · Attn(Norm1(h))` (the residual is added by the layer).
#[derive(Module, Debug)]
pub struct Attention<B: Backend> {
    /// Norm1.
    pub ln: Norm<B>,
    /// Q, K, V.
    pub self_attn: SelfAttention<B>,
    /// Output projection.
    pub output: AttentionOutput<B>,
    /// Low-rank adapters on q/k/v/out (fine-tuning; absent in checkpoints, see [`crate::lora`]).
    pub lora: Option<crate::lora::AttentionLora<B>>,
}

impl<B: Backend> Attention<B> {
    /// `[B, S, H] → [B, S, H]`, all in f32.
    pub fn forward(&self, h: Tensor<B, 3>) -> Tensor<B, 3> {
        self.forward_in(h, Precision::F32)
    }

    /// `[B, S, H] → [B, S, H]` at a [`Precision`]: Norm1 in `h`'s dtype, then the projections
    /// and attention in `precision` (the output is in `precision`'s dtype).
    pub fn forward_in(&self, h: Tensor<B, 3>, precision: Precision) -> Tensor<B, 3> {
        let [b, s, hidden] = h.dims();
        let nh = self.self_attn.num_heads;
        let hd = hidden / nh;
        let x = self.ln.forward(h).cast(precision.dtype());
        let split = |t: Tensor<B, 3>| t.reshape([b, s, nh, hd]).swap_dims(1, 2);
        let sa = &self.self_attn;
        let lora = self.lora.as_ref();
        let q = split(crate::lora::project(
            &sa.query,
            lora.map(|l| &l.query),
            x.clone(),
        ));
        let k = split(crate::lora::project(
            &sa.key,
            lora.map(|l| &l.key),
            x.clone(),
        ));
        let v = split(crate::lora::project(&sa.value, lora.map(|l| &l.value), x));
        let ctx = attention(q, k, v).swap_dims(1, 2).reshape([b, s, hidden]);
        crate::lora::project(&self.output.dense, lora.map(|l| &l.output), ctx)
    }
}

/// Configuration of an [`Mlp`].
#[derive(Config, Debug)]
pub struct MlpConfig {
    /// Hidden size `H`.
    pub hidden_size: usize,
    /// Intermediate size `I`.
    pub intermediate_size: usize,
    /// Biases on the three projections (`add_linear_bias`).
    #[config(default = false)]
    pub bias: bool,
}

impl MlpConfig {
    /// A randomly initialized SwiGLU block.
    pub fn init<B: Backend>(&self, device: &B::Device) -> Mlp<B> {
        let (h, i, bias) = (self.hidden_size, self.intermediate_size, self.bias);
        Mlp {
            up_proj: linear(h, i, bias, device),
            gate_proj: linear(h, i, bias, device),
            down_proj: linear(i, h, bias, device),
        }
    }
}

/// SwiGLU feed-forward: `down(SiLU(gate x) ⊙ up x)`.
#[derive(Module, Debug)]
pub struct Mlp<B: Backend> {
    /// `H → I`.
    pub up_proj: Linear<B>,
    /// `H → I`.
    pub gate_proj: Linear<B>,
    /// `I → H`.
    pub down_proj: Linear<B>,
}

impl<B: Backend> Mlp<B> {
    /// `[.., H] → [.., H]` (no norm, no residual: the [`Layer`] adds those), computed in `x`'s
    /// float dtype (bf16 input: bf16 copies of the weights, see [`linear_in`]).
    pub fn forward<const D: usize>(&self, x: Tensor<B, D>) -> Tensor<B, D> {
        let gate = silu(linear_in(&self.gate_proj, x.clone()));
        linear_in(&self.down_proj, gate * linear_in(&self.up_proj, x))
    }
}

/// `x W (+ b)` computed in `x`'s float dtype: the weights (kept in their own dtype, f32 for the
/// master copy) are cast to it when they differ — the mixed-precision rule of [`Precision`].
/// Under `Autodiff` the cast is differentiated, so the gradient reaches the weights in their
/// dtype. `[.., in] → [.., out]`.
pub fn linear_in<B: Backend, const D: usize>(l: &Linear<B>, x: Tensor<B, D>) -> Tensor<B, D> {
    let dtype = x.dtype();
    let w = l.weight.val();
    if w.dtype() == dtype {
        return l.forward(x);
    }
    burn::tensor::module::linear(
        x,
        w.cast(dtype),
        l.bias.as_ref().map(|b| b.val().cast(dtype)),
    )
}

/// Configuration of one pre-norm block ([`Layer`]).
#[derive(Config, Debug)]
pub struct LayerConfig {
    /// Hidden size `H`.
    pub hidden_size: usize,
    /// SwiGLU intermediate size `I`.
    pub intermediate_size: usize,
    /// Attention heads (`H` must be a multiple).
    pub num_attention_heads: usize,
    /// LayerNorm or RMSNorm.
    #[config(default = "NormKind::LayerNorm")]
    pub norm: NormKind,
    /// Norm epsilon.
    #[config(default = 1e-5)]
    pub layer_norm_eps: f64,
    /// Biases on the attention and SwiGLU projections (`add_linear_bias`).
    #[config(default = false)]
    pub bias: bool,
    /// Compute precision of the block ([`Precision`]; the weights are f32 either way).
    #[config(default = "Precision::F32")]
    pub precision: Precision,
}

impl LayerConfig {
    /// A randomly initialized block (no LoRA adapters).
    pub fn init<B: Backend>(&self, device: &B::Device) -> Layer<B> {
        let (h, bias) = (self.hidden_size, self.bias);
        let norm = || Norm::new(self.norm, h, self.layer_norm_eps, device);
        Layer {
            attention: Attention {
                ln: norm(),
                self_attn: SelfAttention {
                    query: linear(h, h, bias, device),
                    key: linear(h, h, bias, device),
                    value: linear(h, h, bias, device),
                    num_heads: self.num_attention_heads,
                },
                output: AttentionOutput {
                    dense: linear(h, h, bias, device),
                },
                lora: None,
            },
            ln: norm(),
            mlp: MlpConfig::new(h, self.intermediate_size)
                .with_bias(bias)
                .init(device),
            precision: self.precision,
        }
    }
}

/// One pre-norm block.
#[derive(Module, Debug)]
pub struct Layer<B: Backend> {
    /// Attention sub-block (holds Norm1).
    pub attention: Attention<B>,
    /// Norm2.
    pub ln: Norm<B>,
    /// SwiGLU.
    pub mlp: Mlp<B>,
    /// Compute precision of the projections and attention; the residual stream and the norms
    /// stay in the dtype of the input (f32).
    pub precision: Precision,
}

impl<B: Backend> Layer<B> {
    /// `[B, S, H] → [B, S, H]`, in `h`'s dtype (the sub-blocks in [`Layer::precision`]).
    pub fn forward(&self, h: Tensor<B, 3>) -> Tensor<B, 3> {
        let (dtype, low) = (h.dtype(), self.precision.dtype());
        let h = h.clone() + self.attention.forward_in(h, self.precision).cast(dtype);
        let x = self.ln.forward(h.clone()).cast(low);
        h + self.mlp.forward(x).cast(dtype)
    }
}

/// The block stack and the final norm.
#[derive(Module, Debug)]
pub struct Encoder<B: Backend> {
    /// Blocks `0..L`.
    pub layer: Vec<Layer<B>>,
    /// Final norm.
    pub ln: Norm<B>,
}

/// The backbone (`bert.*`): embeddings and encoder.
#[derive(Module, Debug)]
pub struct AidoCellModel<B: Backend> {
    /// Value embedding.
    pub gene_embedding: GeneEmbedding<B>,
    /// Learned position table `[G + 2, H]`.
    pub position_embedding: Embedding<B>,
    /// Encoder.
    pub encoder: Encoder<B>,
}

/// What a backbone forward returns.
#[derive(Debug, Clone)]
pub struct EncoderOutput<B: Backend> {
    /// `[B, S, H]` after the final norm.
    pub last_hidden_state: Tensor<B, 3>,
    /// With `output_hidden_states`: `L + 1` tensors `[B, S, H]` — the embedding output, the raw
    /// residual stream after blocks `1..L-1`, and `last_hidden_state` (the reference's convention).
    pub hidden_states: Option<Vec<Tensor<B, 3>>>,
}

impl<B: Backend> AidoCellModel<B> {
    /// Positions of the model: the rows of the position table (`G + 2`).
    pub fn seq_len(&self) -> usize {
        self.position_embedding.weight.dims()[0]
    }

    /// Hidden size `H`.
    pub fn hidden_size(&self) -> usize {
        self.position_embedding.weight.dims()[1]
    }

    /// The compute precision of the blocks (f32 for a model without blocks).
    pub fn precision(&self) -> Precision {
        self.encoder
            .layer
            .first()
            .map_or(Precision::F32, |l| l.precision)
    }

    /// Sets the compute precision of every block. A backend or device that cannot compute in
    /// the precision's dtype (burn's `supports_dtype`; wgpu has no bf16, WGSL lacking the type)
    /// is an error naming it: never a silent f32 run.
    pub fn set_precision(&mut self, precision: Precision) -> Result<()> {
        let device = self.position_embedding.weight.device();
        if !B::supports_dtype(&device, precision.dtype()) {
            return Err(ModelError::Device(format!(
                "the {} backend cannot compute in {precision} on {device:?}; use `precision` f32{}",
                B::name(&device),
                if precision == Precision::Bf16 {
                    " (bf16 runs on the CPU and CUDA backends)"
                } else {
                    ""
                }
            )));
        }
        for l in &mut self.encoder.layer {
            l.precision = precision;
        }
        Ok(())
    }

    /// The embedding output `h0 = e + P`: `values [B, S]` → `[B, S, H]`. `S` must equal the
    /// position table's length (`G + 2`: the genes, then the two depth tokens); anything else
    /// is an error — a `[B, G]` input without depth tokens would otherwise run with a wrong
    /// meaning.
    pub fn embed(&self, values: Tensor<B, 2>) -> Result<Tensor<B, 3>> {
        let [_, s] = values.dims();
        let table = self.position_embedding.weight.val();
        let [rows, h] = table.dims();
        if s != rows {
            return Err(ModelError::Input(format!(
                "the input has {s} positions per cell, the model {rows} ({} genes + 2 depth tokens){}",
                rows.saturating_sub(2),
                if s + 2 == rows {
                    ": the two read-depth tokens are missing (aido-tokenize appends them)"
                } else {
                    ""
                }
            )));
        }
        Ok(self.gene_embedding.forward(values) + table.reshape([1, s, h]))
    }
}

impl<B: Backend> AidoCellModel<B> {
    /// The residual stream entering block `start` (`0 ≤ start ≤ L`): the embedding output
    /// followed by blocks `0..start`. `values [B, S]` → `[B, S, H]`. With
    /// [`forward_suffix`](Self::forward_suffix) it splits [`forward`](Self::forward) in two
    /// (the same operations in the same order), so a frozen prefix can be computed once.
    pub fn forward_prefix(&self, values: Tensor<B, 2>, start: usize) -> Result<Tensor<B, 3>> {
        let mut h = self.embed(values)?;
        for layer in &self.encoder.layer[..start.min(self.encoder.layer.len())] {
            h = layer.forward(h);
        }
        Ok(h)
    }

    /// Blocks `start..L` and the final norm: the residual stream entering block `start`
    /// `[B, S, H]` → `last_hidden_state [B, S, H]`.
    pub fn forward_suffix(&self, h: Tensor<B, 3>, start: usize) -> Tensor<B, 3> {
        let mut h = h;
        for layer in &self.encoder.layer[start.min(self.encoder.layer.len())..] {
            h = layer.forward(h);
        }
        self.encoder.ln.forward(h)
    }

    /// `values [B, S]` (preprocessed, `S = G + 2`) → encoder output; a wrong `S` is an error
    /// ([`embed`](Self::embed)).
    pub fn forward(
        &self,
        values: Tensor<B, 2>,
        output_hidden_states: bool,
    ) -> Result<EncoderOutput<B>> {
        let mut h = self.embed(values)?;
        let mut states = output_hidden_states.then(Vec::new);
        for layer in &self.encoder.layer {
            // Before block i: h0 for i = 0, else the raw residual stream after block i.
            if let Some(st) = states.as_mut() {
                st.push(h.clone());
            }
            h = layer.forward(h);
        }
        let last = self.encoder.ln.forward(h);
        if let Some(st) = states.as_mut() {
            st.push(last.clone());
        }
        Ok(EncoderOutput {
            last_hidden_state: last,
            hidden_states: states,
        })
    }
}

/// `cls.predictions.transform`.
#[derive(Module, Debug)]
pub struct Transform<B: Backend> {
    /// `H → H`, with bias.
    pub dense: Linear<B>,
    /// The head norm (named `LayerNorm` in the checkpoint even when it is an RMSNorm).
    pub layer_norm: Norm<B>,
}

/// `cls.predictions`: the masked-value regression head.
#[derive(Module, Debug)]
pub struct Predictions<B: Backend> {
    /// dense → GELU → norm.
    pub transform: Transform<B>,
    /// `H → 1`, no bias of its own.
    pub decoder: Linear<B>,
    /// The scalar output bias `[1]`.
    pub bias: Param<Tensor<B, 1>>,
}

/// `cls`.
#[derive(Module, Debug)]
pub struct Cls<B: Backend> {
    /// The head.
    pub predictions: Predictions<B>,
}

impl<B: Backend> Cls<B> {
    /// `[B, S, H] → [B, S, 1]`: predicted `ln(1 + count/total·1e4)` per position.
    pub fn forward(&self, h: Tensor<B, 3>) -> Tensor<B, 3> {
        let p = &self.predictions;
        let x = p
            .transform
            .layer_norm
            .forward(gelu(p.transform.dense.forward(h)));
        p.decoder.forward(x) + p.bias.val().reshape([1, 1, 1])
    }
}

/// The whole checkpoint: backbone plus (optionally) the pretraining head.
#[derive(Module, Debug)]
pub struct AidoCell<B: Backend> {
    /// The backbone.
    pub bert: AidoCellModel<B>,
    /// The masked-value head (absent for an encoder-only load).
    pub cls: Option<Cls<B>>,
}

impl<B: Backend> AidoCell<B> {
    /// Head output for `values [B, S]`: `[B, S, 1]`, or `None` without a head.
    pub fn head(&self, last_hidden_state: Tensor<B, 3>) -> Option<Tensor<B, 3>> {
        self.cls.as_ref().map(|c| c.forward(last_hidden_state))
    }
}

fn linear<B: Backend>(i: usize, o: usize, bias: bool, device: &B::Device) -> Linear<B> {
    LinearConfig::new(i, o).with_bias(bias).init(device)
}

impl AidoCellConfig {
    /// The configuration of one of this model's blocks.
    pub fn layer_config(&self) -> LayerConfig {
        LayerConfig::new(
            self.hidden_size,
            self.intermediate_size,
            self.num_attention_heads,
        )
        .with_norm(self.norm)
        .with_layer_norm_eps(self.layer_norm_eps)
        .with_bias(self.add_linear_bias)
    }

    /// The configuration of this model's value embedding.
    pub fn gene_embedding_config(&self) -> GeneEmbeddingConfig {
        GeneEmbeddingConfig::new(self.hidden_size)
            .with_bin_num(self.bin_num)
            .with_bin_alpha(self.bin_alpha)
    }

    /// The configuration of one of this model's SwiGLU blocks.
    pub fn mlp_config(&self) -> MlpConfig {
        MlpConfig::new(self.hidden_size, self.intermediate_size).with_bias(self.add_linear_bias)
    }

    /// Random-initialized model of this configuration (head included when `with_head`).
    pub fn init<B: Backend>(&self, with_head: bool, device: &B::Device) -> AidoCell<B> {
        let h = self.hidden_size;
        let norm = |d: &B::Device| Norm::new(self.norm, h, self.layer_norm_eps, d);
        let layer = self.layer_config();
        let layers = (0..self.num_hidden_layers)
            .map(|_| layer.init(device))
            .collect();
        let bert = AidoCellModel {
            gene_embedding: self.gene_embedding_config().init(device),
            position_embedding: EmbeddingConfig::new(self.seq_len(), h).init(device),
            encoder: Encoder {
                layer: layers,
                ln: norm(device),
            },
        };
        let cls = with_head.then(|| Cls {
            predictions: Predictions {
                transform: Transform {
                    dense: linear(h, h, true, device),
                    layer_norm: norm(device),
                },
                decoder: linear(h, 1, false, device),
                bias: Param::from_tensor(Tensor::zeros([1], device)),
            },
        });
        AidoCell { bert, cls }
    }
}
