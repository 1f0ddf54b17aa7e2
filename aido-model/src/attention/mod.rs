//! Dense bidirectional attention over the whole transcriptome: the model's one attention seam,
//! as a backend extension with a linear-memory backward.
//!
//! [`AttentionBackend`] is implemented for every backend we ship and for `Autodiff<B>`:
//!
//! - the forward returns the output and, when gradients are needed, the per-row log-sum-exp;
//! - the backward recomputes the scores tile by tile (FlashAttention-2), so no `S × S` matrix is
//!   ever stored, in inference or in training;
//! - [`tiled`] is the generic implementation built from burn tensor ops (it runs on any
//!   backend); burn-flex overrides it with the multithreaded SIMD kernels of `aido-kernels`;
//!   CUDA and wgpu use burn's fused (flash) forward for inference.
//!
//! Every block of the model calls [`attention`].

mod autodiff;
mod flex;
pub mod tiled;

use burn::tensor::backend::Backend;
use burn::tensor::ops::{AttentionModuleOptions, FloatTensor};
use burn::tensor::{Tensor, TensorPrimitive, module};

/// Tile sizes of the generic implementation (queries × keys per step).
pub const GENERIC_TILE: usize = 512;

/// A backend that runs AIDO.Cell attention: `softmax(q kᵀ · scale) v` per batch and head, no
/// mask, no bias. Shapes: `q, k, v, out, dout: [B, heads, S, head_dim]`, `lse: [B, heads, S]`.
///
/// The defaults are correct on every backend; backends with faster kernels override them.
pub trait AttentionBackend: Backend {
    /// Inference forward (no log-sum-exp). Default: burn's fused `module::attention` with
    /// `scale: None`, which takes the flash kernels of the CubeCL backends.
    fn aido_attention(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        let t = |x| Tensor::<Self, 4>::from_primitive(TensorPrimitive::Float(x));
        module::attention(
            t(q),
            t(k),
            t(v),
            None,
            None,
            AttentionModuleOptions::default(),
        )
        .into_primitive()
        .tensor()
    }

    /// Forward that also returns the natural log-sum-exp of each row of scaled scores
    /// (what the backward needs). Default: [`tiled::forward`].
    fn aido_attention_with_lse(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        scale: f32,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        let t = |x| Tensor::<Self, 4>::from_primitive(TensorPrimitive::Float(x));
        let (o, lse) = tiled::forward(t(q), t(k), t(v), scale, GENERIC_TILE, GENERIC_TILE);
        (o.into_primitive().tensor(), lse.into_primitive().tensor())
    }

    /// Gradients `(dq, dk, dv)` from the saved output and log-sum-exp, recomputing scores tile
    /// by tile. Default: [`tiled::backward`].
    #[allow(clippy::too_many_arguments)]
    fn aido_attention_backward(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        out: FloatTensor<Self>,
        lse: FloatTensor<Self>,
        dout: FloatTensor<Self>,
        scale: f32,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        let t = |x| Tensor::<Self, 4>::from_primitive(TensorPrimitive::Float(x));
        let lse = Tensor::<Self, 3>::from_primitive(TensorPrimitive::Float(lse));
        let (dq, dk, dv) = tiled::backward(
            t(q),
            t(k),
            t(v),
            t(out),
            lse,
            t(dout),
            scale,
            GENERIC_TILE,
            GENERIC_TILE,
        );
        (
            dq.into_primitive().tensor(),
            dk.into_primitive().tensor(),
            dv.into_primitive().tensor(),
        )
    }
}

#[cfg(feature = "cuda")]
impl AttentionBackend for crate::backend::Cuda {}

#[cfg(feature = "wgpu")]
impl AttentionBackend for crate::backend::Wgpu {}

/// The scale of AIDO.Cell attention, `1 / sqrt(head_dim)`.
pub fn default_scale(head_dim: usize) -> f32 {
    1.0 / (head_dim as f32).sqrt()
}

/// Dense bidirectional attention, scale `1/sqrt(head_dim)`, no mask, no bias.
///
/// `q, k, v: [B, heads, S, head_dim]` → `[B, heads, S, head_dim]`. Under `Autodiff<B>` the
/// backward is the linear-memory tiled one.
pub fn attention<B: AttentionBackend>(
    q: Tensor<B, 4>,
    k: Tensor<B, 4>,
    v: Tensor<B, 4>,
) -> Tensor<B, 4> {
    Tensor::from_primitive(TensorPrimitive::Float(B::aido_attention(
        q.into_primitive().tensor(),
        k.into_primitive().tensor(),
        v.into_primitive().tensor(),
    )))
}

/// Attention that also returns the log-sum-exp `[B, heads, S]` of each row of scaled scores.
pub fn attention_with_lse<B: AttentionBackend>(
    q: Tensor<B, 4>,
    k: Tensor<B, 4>,
    v: Tensor<B, 4>,
) -> (Tensor<B, 4>, Tensor<B, 3>) {
    let scale = default_scale(q.dims()[3]);
    let (o, lse) = B::aido_attention_with_lse(
        q.into_primitive().tensor(),
        k.into_primitive().tensor(),
        v.into_primitive().tensor(),
        scale,
    );
    (
        Tensor::from_primitive(TensorPrimitive::Float(o)),
        Tensor::from_primitive(TensorPrimitive::Float(lse)),
    )
}
