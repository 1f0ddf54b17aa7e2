//! The masked-value regression loss.

use aido_model::burn::tensor::Tensor;
use aido_model::burn::tensor::backend::Backend;

/// `L = (1/|M|) Σ_{i∈M} (ŷ_i − y_i)²` over the masked positions of the whole batch
/// (SPEC-rda-training §1.6): `pred, target, weight: [B, S, 1]`, `weight` 1 at masked positions
/// and 0 elsewhere, `n_masked = Σ weight > 0` (see [`crate::RdaBatch`]). Returns `[1]`.
pub fn masked_mse<B: Backend>(
    pred: Tensor<B, 3>,
    target: Tensor<B, 3>,
    weight: Tensor<B, 3>,
    n_masked: usize,
) -> Tensor<B, 1> {
    let d = pred - target;
    (d.clone() * d * weight).sum() / n_masked.max(1) as f32
}
