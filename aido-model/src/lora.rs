//! Low-rank adaptation (LoRA, Hu et al. 2021) of the attention projections.
//!
//! A projection `y = x W (+ b)` with `W: [in, out]` (burn's `Linear` layout) becomes
//! `y = x W (+ b) + (α / r) · x A B`, `A: [in, r]`, `B: [r, out]`. `A` starts uniform in
//! `±1/√in`, `B` at zero, so an adapted model starts exactly equal to the base model. Adapters go
//! on q, k, v and the attention output of every block ([`add`]); after training, [`merge`]
//! folds `(α / r) · A B` into `W` and removes them, giving a plain model that saves in the
//! released checkpoint layout.

use burn::config::Config;
use burn::module::{Module, Param};
use burn::nn::Linear;
use burn::tensor::backend::Backend;
use burn::tensor::{Distribution, Tensor};

use crate::model::AidoCellModel;

/// Rank and scaling of the adapters.
#[derive(Config, Debug, PartialEq)]
pub struct LoraConfig {
    /// Rank `r` (8–16 is usual).
    #[config(default = 8)]
    pub rank: usize,
    /// `α`: the update is scaled by `α / r`.
    #[config(default = 16.0)]
    pub alpha: f64,
}

/// One adapter: `x ↦ (α / r) · x A B`.
#[derive(Module, Debug)]
pub struct LoraAdapter<B: Backend> {
    /// `A: [in, r]`.
    pub a: Param<Tensor<B, 2>>,
    /// `B: [r, out]`.
    pub b: Param<Tensor<B, 2>>,
    /// `α / r`.
    pub scale: f64,
}

impl<B: Backend> LoraAdapter<B> {
    /// A zero-initialized update for a `[d_in, d_out]` projection.
    pub fn new(cfg: &LoraConfig, d_in: usize, d_out: usize, device: &B::Device) -> Self {
        let bound = 1.0 / (d_in as f64).sqrt();
        LoraAdapter {
            a: Param::from_tensor(Tensor::random(
                [d_in, cfg.rank],
                Distribution::Uniform(-bound, bound),
                device,
            )),
            b: Param::from_tensor(Tensor::zeros([cfg.rank, d_out], device)),
            scale: cfg.alpha / cfg.rank as f64,
        }
    }

    /// `[B, S, in] → [B, S, out]`, in `x`'s float dtype (the factors cast to it when they
    /// differ, as [`crate::model::linear_in`]).
    pub fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        let [b, s, d] = x.dims();
        let out = self.b.dims()[1];
        let dtype = x.dtype();
        x.reshape([b * s, d])
            .matmul(self.a.val().cast(dtype))
            .matmul(self.b.val().cast(dtype))
            .mul_scalar(self.scale)
            .reshape([b, s, out])
    }

    /// `(α / r) · A B`: `[in, out]`.
    pub fn delta(&self) -> Tensor<B, 2> {
        self.a.val().matmul(self.b.val()).mul_scalar(self.scale)
    }
}

/// The adapters of one block's attention.
#[derive(Module, Debug)]
pub struct AttentionLora<B: Backend> {
    /// On the query projection.
    pub query: LoraAdapter<B>,
    /// On the key projection.
    pub key: LoraAdapter<B>,
    /// On the value projection.
    pub value: LoraAdapter<B>,
    /// On the attention output projection.
    pub output: LoraAdapter<B>,
}

/// `x W (+ b)`, plus the adapter's update when there is one, in `x`'s float dtype.
pub fn project<B: Backend>(
    linear: &Linear<B>,
    lora: Option<&LoraAdapter<B>>,
    x: Tensor<B, 3>,
) -> Tensor<B, 3> {
    match lora {
        None => crate::model::linear_in(linear, x),
        Some(l) => crate::model::linear_in(linear, x.clone()) + l.forward(x),
    }
}

/// Adds fresh adapters to every block (replacing any there).
pub fn add<B: Backend>(
    mut model: AidoCellModel<B>,
    cfg: &LoraConfig,
    device: &B::Device,
) -> AidoCellModel<B> {
    let h = model.hidden_size();
    for l in &mut model.encoder.layer {
        l.attention.lora = Some(AttentionLora {
            query: LoraAdapter::new(cfg, h, h, device),
            key: LoraAdapter::new(cfg, h, h, device),
            value: LoraAdapter::new(cfg, h, h, device),
            output: LoraAdapter::new(cfg, h, h, device),
        });
    }
    model
}

fn fold<B: Backend>(mut linear: Linear<B>, adapter: &LoraAdapter<B>) -> Linear<B> {
    let w = linear.weight.val() + adapter.delta();
    linear.weight = Param::initialized(linear.weight.id, w);
    linear
}

/// Folds every adapter into its projection's weight and removes the adapters. The merged
/// model computes the same function (up to float rounding) with no extra parameters.
pub fn merge<B: Backend>(mut model: AidoCellModel<B>) -> AidoCellModel<B> {
    for l in &mut model.encoder.layer {
        let Some(lora) = l.attention.lora.take() else {
            continue;
        };
        let a = &mut l.attention;
        a.self_attn.query = fold(a.self_attn.query.clone(), &lora.query);
        a.self_attn.key = fold(a.self_attn.key.clone(), &lora.key);
        a.self_attn.value = fold(a.self_attn.value.clone(), &lora.value);
        a.output.dense = fold(a.output.dense.clone(), &lora.output);
    }
    model
}

/// Whether any block carries adapters.
pub fn has_adapters<B: Backend>(model: &AidoCellModel<B>) -> bool {
    model
        .encoder
        .layer
        .iter()
        .any(|l| l.attention.lora.is_some())
}
