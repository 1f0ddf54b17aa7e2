//! The one attention seam of the model. Every block calls [`attention`]; replacing the kernel
//! (e.g. with an op that has a linear-memory backward) means changing this function only.

use burn::tensor::Tensor;
use burn::tensor::backend::Backend;
use burn::tensor::module;
use burn::tensor::ops::AttentionModuleOptions;

/// Dense bidirectional attention, scale `1/sqrt(head_dim)`, no mask, no bias.
///
/// `q, k, v: [B, heads, S, head_dim]` → `[B, heads, S, head_dim]`.
///
/// Wraps burn's fused `module::attention` with `scale: None` so that the backends' flash kernels
/// are eligible: on burn-flex sequences with `S² > 262,144` (S > 512) take a tiled
/// online-softmax path whose memory is linear in `S`; shorter ones take its direct path.
pub fn attention<B: Backend>(q: Tensor<B, 4>, k: Tensor<B, 4>, v: Tensor<B, 4>) -> Tensor<B, 4> {
    module::attention(q, k, v, None, None, AttentionModuleOptions::default())
}
