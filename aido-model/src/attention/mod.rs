//! Dense bidirectional attention over the whole transcriptome: the model's one attention seam,
//! as a backend extension with a linear-memory backward.
//!
//! [`AttentionBackend`] is implemented for **every** burn `Backend` (one blanket impl, so the
//! encoder runs on any backend a user brings, e.g. `NdArray`, without the orphan rule in the
//! way). Each call picks, by the backend's type:
//!
//! - burn-flex (`Cpu`): the multithreaded SIMD kernels of `aido-kernels`, forward and backward;
//! - CUDA and wgpu (features `cuda`, `wgpu`): the FlashAttention-2 forward (with its
//!   log-sum-exp when training) and the fused backward written once in CubeCL (`cube.rs`;
//!   `cube_kernel_runs` counts the calls);
//! - `Autodiff<_>` over any of these: the forward with its log-sum-exp, registered as one op
//!   whose backward recomputes the scores tile by tile (FlashAttention-2), so no `S × S` matrix
//!   is ever stored;
//! - any other backend: the generic implementation from burn tensor ops (burn's
//!   `module::attention` for inference, [`tiled`] forward/backward). Under `Autodiff` of such a
//!   backend, burn differentiates it op by op: correct, but training memory grows as `S²`.
//!
//! Every block of the model calls [`attention`]. Where to add a backend's kernels: implement
//! the crate's `Kernels` trait for it and add it to `for_each_kernel_backend!`.

mod autodiff;
#[cfg(any(feature = "cuda", feature = "wgpu"))]
mod cube;
#[cfg(any(feature = "cuda", feature = "wgpu"))]
pub use cube::cube_kernel_runs;
mod flex;
pub use flex::{cpu_bf16_kernel_runs, cpu_kernel_errors, cpu_kernel_runs};
pub mod reference;
pub mod tiled;

use std::any::{Any, TypeId};

use burn::tensor::backend::Backend;
use burn::tensor::ops::{AttentionModuleOptions, FloatTensor};
use burn::tensor::{DType, Tensor, TensorPrimitive, module};

/// Tile sizes of the generic implementation (queries × keys per step).
pub const GENERIC_TILE: usize = 512;

/// A backend that runs AIDO.Cell attention: `softmax(q kᵀ · scale) v` per batch and head, no
/// mask, no bias. Shapes: `q, k, v, out, dout: [B, heads, S, head_dim]`, `lse: [B, heads, S]`.
///
/// Implemented for every [`Backend`]; see the [module docs](self) for which kernels run where.
pub trait AttentionBackend: Backend {
    /// Whether this backend's attention takes inputs of `dtype` as they are; otherwise
    /// [`attention`] hands it f32 copies. `F32` always; `BF16` on the CPU backend where the
    /// CPU has AVX512-BF16 (the bf16 kernels of `aido-kernels`).
    fn aido_attention_reads(dtype: DType) -> bool;

    /// Inference forward (no log-sum-exp).
    fn aido_attention(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
    ) -> FloatTensor<Self>;

    /// Forward that also returns the natural log-sum-exp of each row of scaled scores
    /// (what the backward needs).
    fn aido_attention_with_lse(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        scale: f32,
    ) -> (FloatTensor<Self>, FloatTensor<Self>);

    /// Gradients `(dq, dk, dv)` from the saved output and log-sum-exp, recomputing scores tile
    /// by tile.
    #[allow(clippy::too_many_arguments)]
    fn aido_attention_backward(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        out: FloatTensor<Self>,
        lse: FloatTensor<Self>,
        dout: FloatTensor<Self>,
        scale: f32,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>);
}

/// The backends with their own attention paths. The defaults are the generic implementation;
/// a backend overrides what it has kernels for.
pub(crate) trait Kernels: Backend {
    /// See [`AttentionBackend::aido_attention_reads`].
    fn reads(dtype: DType) -> bool {
        dtype == DType::F32
    }

    fn attn(q: FloatTensor<Self>, k: FloatTensor<Self>, v: FloatTensor<Self>) -> FloatTensor<Self> {
        fused_forward::<Self>(q, k, v)
    }

    fn attn_with_lse(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        scale: f32,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        tiled_forward::<Self>(q, k, v, scale)
    }

    #[allow(clippy::too_many_arguments)]
    fn attn_backward(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        out: FloatTensor<Self>,
        lse: FloatTensor<Self>,
        dout: FloatTensor<Self>,
        scale: f32,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        tiled_backward::<Self>(q, k, v, out, lse, dout, scale)
    }
}

/// Whether `B` is exactly `K`.
fn is<B: 'static, K: 'static>() -> bool {
    TypeId::of::<B>() == TypeId::of::<K>()
}

/// `x` as the type it is (checked by [`is`] before every call).
fn cast<A: 'static, T: 'static>(x: A) -> T {
    let b: Box<dyn Any> = Box::new(x);
    *b.downcast::<T>()
        .expect("attention dispatch: the backend type was checked")
}

/// Runs `$m!(K)` for every backend type `K` with its own [`Kernels`].
macro_rules! for_each_kernel_backend {
    ($m:ident) => {
        $m!(burn::backend::Flex);
        $m!(burn::backend::Autodiff<burn::backend::Flex>);
        #[cfg(feature = "cuda")]
        $m!(crate::backend::Cuda);
        #[cfg(feature = "cuda")]
        $m!(burn::backend::Autodiff<crate::backend::Cuda>);
        #[cfg(feature = "wgpu")]
        $m!(crate::backend::Wgpu);
        #[cfg(feature = "wgpu")]
        $m!(burn::backend::Autodiff<crate::backend::Wgpu>);
    };
}

impl<B: Backend> AttentionBackend for B {
    fn aido_attention_reads(dtype: DType) -> bool {
        macro_rules! try_backend {
            ($K:ty) => {
                if is::<B, $K>() {
                    return <$K as Kernels>::reads(dtype);
                }
            };
        }
        for_each_kernel_backend!(try_backend);
        dtype == DType::F32
    }

    fn aido_attention(q: FloatTensor<B>, k: FloatTensor<B>, v: FloatTensor<B>) -> FloatTensor<B> {
        macro_rules! try_backend {
            ($K:ty) => {
                if is::<B, $K>() {
                    return cast(<$K as Kernels>::attn(cast(q), cast(k), cast(v)));
                }
            };
        }
        for_each_kernel_backend!(try_backend);
        fused_forward::<B>(q, k, v)
    }

    fn aido_attention_with_lse(
        q: FloatTensor<B>,
        k: FloatTensor<B>,
        v: FloatTensor<B>,
        scale: f32,
    ) -> (FloatTensor<B>, FloatTensor<B>) {
        macro_rules! try_backend {
            ($K:ty) => {
                if is::<B, $K>() {
                    let (o, lse) = <$K as Kernels>::attn_with_lse(cast(q), cast(k), cast(v), scale);
                    return (cast(o), cast(lse));
                }
            };
        }
        for_each_kernel_backend!(try_backend);
        tiled_forward::<B>(q, k, v, scale)
    }

    fn aido_attention_backward(
        q: FloatTensor<B>,
        k: FloatTensor<B>,
        v: FloatTensor<B>,
        out: FloatTensor<B>,
        lse: FloatTensor<B>,
        dout: FloatTensor<B>,
        scale: f32,
    ) -> (FloatTensor<B>, FloatTensor<B>, FloatTensor<B>) {
        macro_rules! try_backend {
            ($K:ty) => {
                if is::<B, $K>() {
                    let (dq, dk, dv) = <$K as Kernels>::attn_backward(
                        cast(q),
                        cast(k),
                        cast(v),
                        cast(out),
                        cast(lse),
                        cast(dout),
                        scale,
                    );
                    return (cast(dq), cast(dk), cast(dv));
                }
            };
        }
        for_each_kernel_backend!(try_backend);
        tiled_backward::<B>(q, k, v, out, lse, dout, scale)
    }
}

fn t4<B: Backend>(x: FloatTensor<B>) -> Tensor<B, 4> {
    Tensor::from_primitive(TensorPrimitive::Float(x))
}

/// burn's fused `module::attention` (`scale: None`, no mask or bias): the inference path of
/// backends without kernels of their own here (the CubeCL backends use `cube` instead: burn's
/// autotune set there includes a fallback that materializes the `S × S` scores).
pub fn fused_forward<B: Backend>(
    q: FloatTensor<B>,
    k: FloatTensor<B>,
    v: FloatTensor<B>,
) -> FloatTensor<B> {
    module::attention(
        t4::<B>(q),
        t4(k),
        t4(v),
        None,
        None,
        AttentionModuleOptions::default(),
    )
    .into_primitive()
    .tensor()
}

/// [`tiled::forward`] on primitives with [`GENERIC_TILE`] tiles.
pub fn tiled_forward<B: Backend>(
    q: FloatTensor<B>,
    k: FloatTensor<B>,
    v: FloatTensor<B>,
    scale: f32,
) -> (FloatTensor<B>, FloatTensor<B>) {
    let (o, lse) = tiled::forward(t4::<B>(q), t4(k), t4(v), scale, GENERIC_TILE, GENERIC_TILE);
    (o.into_primitive().tensor(), lse.into_primitive().tensor())
}

/// [`tiled::backward`] on primitives with [`GENERIC_TILE`] tiles.
pub fn tiled_backward<B: Backend>(
    q: FloatTensor<B>,
    k: FloatTensor<B>,
    v: FloatTensor<B>,
    out: FloatTensor<B>,
    lse: FloatTensor<B>,
    dout: FloatTensor<B>,
    scale: f32,
) -> (FloatTensor<B>, FloatTensor<B>, FloatTensor<B>) {
    let lse = Tensor::<B, 3>::from_primitive(TensorPrimitive::Float(lse));
    let (dq, dk, dv) = tiled::backward(
        t4::<B>(q),
        t4(k),
        t4(v),
        t4(out),
        lse,
        t4(dout),
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

/// The fused (flash) forward for the output, and the log-sum-exp from a tiled pass without the
/// `P·V` products: the CubeCL backends' flash kernel does not return it.
pub fn fused_forward_with_lse<B: Backend>(
    q: FloatTensor<B>,
    k: FloatTensor<B>,
    v: FloatTensor<B>,
    scale: f32,
) -> (FloatTensor<B>, FloatTensor<B>) {
    let lse = tiled::logsumexp(
        t4::<B>(q.clone()),
        t4(k.clone()),
        scale,
        GENERIC_TILE,
        GENERIC_TILE,
    );
    (fused_forward::<B>(q, k, v), lse.into_primitive().tensor())
}

/// The CubeCL backends (CUDA and wgpu): the FlashAttention-2 forward (with its log-sum-exp
/// when training) and the fused backward of `cube`, written once for both. Not burn's
/// `module::attention` on these backends: its autotune set includes a fallback that
/// materializes the `S × S` scores (1 GiB at S = 8,192 for 4 heads), which on lavapipe failed
/// to allocate and returned wrong outputs (max |Δ| 1.0 at S = 8,192 and 19,266; 2026-12-04).
#[cfg(any(feature = "cuda", feature = "wgpu"))]
macro_rules! cube_kernels {
    ($backend:ty) => {
        impl Kernels for $backend {
            fn attn(
                q: FloatTensor<Self>,
                k: FloatTensor<Self>,
                v: FloatTensor<Self>,
            ) -> FloatTensor<Self> {
                let scale = default_scale(q.meta.shape()[3]);
                cube::forward(q, k, v, scale).0
            }

            fn attn_with_lse(
                q: FloatTensor<Self>,
                k: FloatTensor<Self>,
                v: FloatTensor<Self>,
                scale: f32,
            ) -> (FloatTensor<Self>, FloatTensor<Self>) {
                cube::forward(q, k, v, scale)
            }

            fn attn_backward(
                q: FloatTensor<Self>,
                k: FloatTensor<Self>,
                v: FloatTensor<Self>,
                out: FloatTensor<Self>,
                lse: FloatTensor<Self>,
                dout: FloatTensor<Self>,
                scale: f32,
            ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
                cube::backward(q, k, v, out, lse, dout, scale)
            }
        }
    };
}
#[cfg(feature = "cuda")]
cube_kernels!(crate::backend::Cuda);
#[cfg(feature = "wgpu")]
cube_kernels!(crate::backend::Wgpu);

/// Whether `B` is the CPU backend (burn-flex, or autodiff over it), whose attention runs on the
/// SIMD kernels of `aido-kernels` and whose threads are rayon's.
pub fn is_cpu_backend<B: Backend>() -> bool {
    is::<B, burn::backend::Flex>() || is::<B, burn::backend::Autodiff<burn::backend::Flex>>()
}

/// Which attention `B` runs at `precision`, for reports: the CPU kernel path (`avx512`,
/// `avx512-bf16`, …, [`aido_kernels::KernelPath`]), the CubeCL flash kernels on CUDA and wgpu,
/// or the generic implementation from burn tensor ops.
pub fn attention_path<B: Backend>(precision: crate::Precision) -> String {
    if is_cpu_backend::<B>() {
        let bf16 = precision == crate::Precision::Bf16 && flex::reads_bf16();
        let path = if bf16 {
            aido_kernels::KernelPath::detect_bf16()
        } else {
            aido_kernels::KernelPath::detect()
        };
        return format!("{path} kernels");
    }
    #[cfg(feature = "cuda")]
    if is::<B, crate::backend::Cuda>() || is::<B, burn::backend::Autodiff<crate::backend::Cuda>>() {
        return "CubeCL flash kernels".into();
    }
    #[cfg(feature = "wgpu")]
    if is::<B, crate::backend::Wgpu>() || is::<B, burn::backend::Autodiff<crate::backend::Wgpu>>() {
        return "CubeCL flash kernels".into();
    }
    "generic (burn tensor ops)".into()
}

/// The scale of AIDO.Cell attention, `1 / sqrt(head_dim)`.
pub fn default_scale(head_dim: usize) -> f32 {
    1.0 / (head_dim as f32).sqrt()
}

/// `x` as the backend's attention reads it: as it is where the backend takes its dtype
/// ([`AttentionBackend::aido_attention_reads`]: f32, and bf16 on AVX512-BF16 CPUs), else an
/// f32 copy. Scores, softmax statistics and accumulation are f32 either way.
fn kernel_input<B: AttentionBackend>(x: Tensor<B, 4>) -> FloatTensor<B> {
    if B::aido_attention_reads(x.dtype()) {
        x.into_primitive().tensor()
    } else {
        x.cast(DType::F32).into_primitive().tensor()
    }
}

/// Dense bidirectional attention, scale `1/sqrt(head_dim)`, no mask, no bias.
///
/// `q, k, v: [B, heads, S, head_dim]` → `[B, heads, S, head_dim]`, in `q`'s dtype. bf16
/// inputs go to the bf16 kernels where the backend has them (the CPU backend on AVX512-BF16:
/// bf16 products, f32 softmax and accumulation), else are read into f32; the f32 output is
/// rounded back to `q`'s dtype. Under `Autodiff<B>` the backward is the linear-memory tiled one.
pub fn attention<B: AttentionBackend>(
    q: Tensor<B, 4>,
    k: Tensor<B, 4>,
    v: Tensor<B, 4>,
) -> Tensor<B, 4> {
    let dtype = q.dtype();
    Tensor::<B, 4>::from_primitive(TensorPrimitive::Float(B::aido_attention(
        kernel_input(q),
        kernel_input(k),
        kernel_input(v),
    )))
    .cast(dtype)
}

/// Attention that also returns the log-sum-exp `[B, heads, S]` (f32) of each row of scaled
/// scores; the output in `q`'s dtype, as [`attention`].
pub fn attention_with_lse<B: AttentionBackend>(
    q: Tensor<B, 4>,
    k: Tensor<B, 4>,
    v: Tensor<B, 4>,
) -> (Tensor<B, 4>, Tensor<B, 3>) {
    let scale = default_scale(q.dims()[3]);
    let dtype = q.dtype();
    let (o, lse) =
        B::aido_attention_with_lse(kernel_input(q), kernel_input(k), kernel_input(v), scale);
    (
        Tensor::<B, 4>::from_primitive(TensorPrimitive::Float(o)).cast(dtype),
        Tensor::from_primitive(TensorPrimitive::Float(lse)),
    )
}
