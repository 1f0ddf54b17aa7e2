//! burn-flex (CPU): the multithreaded SIMD flash-attention kernels of `aido-kernels`, forward
//! and backward, for contiguous f32 tensors; anything else (other dtypes, cross-attention
//! shapes) takes the generic implementation.
//!
//! A kernel that applies but reports an error (it should not: the shapes are checked first) is
//! not swallowed: the error is logged (`tracing::error!`, with the op and shape) and counted
//! ([`cpu_kernel_errors`]), and the generic implementation computes the result. The
//! `AttentionBackend` methods return tensors (they also run inside burn's autodiff backward,
//! which has no error channel), so logging plus a counter is the honest report here.

use std::sync::atomic::{AtomicUsize, Ordering};

use aido_kernels::{
    AttnShape, KernelError, KernelPath, f32_slice_to_bf16, flash_backward, flash_backward_bf16,
    flash_forward, flash_forward_bf16,
};
use burn::backend::Flex;
use burn::tensor::{DType, Shape, TensorMetadata, bf16};
use burn_flex::FlexTensor;
use half::slice::HalfFloatSliceExt;

use super::{Kernels, default_scale, fused_forward, tiled_backward, tiled_forward};

/// Whether bf16 q/k/v go to the bf16 kernels as they are: only where the CPU has a bf16 SIMD
/// path (AVX512-BF16). Elsewhere the portable bf16 path would be slower than rounding the
/// inputs up to f32 for the f32 SIMD kernels, which is what [`super::attention`] then does.
pub(crate) fn reads_bf16() -> bool {
    KernelPath::detect_bf16() != KernelPath::ScalarBf16
}

/// `[B, H, S, D]` and the shared dtype of a self-attention triple the kernels take (all f32,
/// or all bf16 where [`reads_bf16`]), or `None`.
fn kernel_shape(
    q: &FlexTensor,
    k: &FlexTensor,
    v: &FlexTensor,
) -> Option<(Shape, AttnShape, DType)> {
    let shape = q.shape();
    let dtype = q.dtype();
    let dtype_ok = dtype == DType::F32 || (dtype == DType::BF16 && reads_bf16());
    if shape.num_dims() != 4
        || k.shape() != shape
        || v.shape() != shape
        || !dtype_ok
        || [k, v].iter().any(|t| t.dtype() != dtype)
    {
        return None;
    }
    let (b, h, s, d) = (shape[0], shape[1], shape[2], shape[3]);
    if b * h * s * d == 0 {
        return None;
    }
    Some((
        shape.clone(),
        AttnShape {
            bh: b * h,
            seq: s,
            head_dim: d,
        },
        dtype,
    ))
}

/// Whether the tensor's elements lie in row-major order from its first element.
fn is_flat(t: &FlexTensor) -> bool {
    match t.dtype() {
        DType::BF16 => t.as_slice::<bf16>().is_some(),
        _ => t.as_slice::<f32>().is_some(),
    }
}

/// The tensor's elements in row-major order (a copy only when it is not contiguous).
fn contiguous(t: &FlexTensor) -> FlexTensor {
    if is_flat(t) {
        t.clone()
    } else {
        t.to_contiguous()
    }
}

fn values(t: &FlexTensor) -> &[f32] {
    t.as_slice::<f32>().unwrap_or(&[])
}

/// A contiguous bf16 tensor's elements as bit patterns, the kernels' bf16 input.
fn bits(t: &FlexTensor) -> &[u16] {
    t.as_slice::<bf16>()
        .map(|s| s.reinterpret_cast())
        .unwrap_or(&[])
}

/// A bf16 kernel input as bit patterns from a tensor that may be f32 (the gradient of an f32
/// kernel output) or bf16: a rounded copy, or the tensor's own bits.
fn bf16_bits(t: &FlexTensor) -> std::borrow::Cow<'_, [u16]> {
    match t.dtype() {
        DType::BF16 => std::borrow::Cow::Borrowed(bits(t)),
        _ => std::borrow::Cow::Owned(f32_slice_to_bf16(values(t))),
    }
}

/// An f32 kernel output as a tensor of `dtype` (bf16 gradients for bf16 inputs).
fn in_dtype(t: FlexTensor, dtype: DType) -> FlexTensor {
    if dtype != DType::BF16 {
        return t;
    }
    let mut out = FlexTensor::zeros(t.shape(), DType::BF16);
    out.storage_mut::<bf16>().convert_from_f32_slice(values(&t));
    out
}

static KERNEL_ERRORS: AtomicUsize = AtomicUsize::new(0);
static KERNEL_RUNS: AtomicUsize = AtomicUsize::new(0);
static BF16_KERNEL_RUNS: AtomicUsize = AtomicUsize::new(0);

/// How many CPU attention kernel calls (forward or backward) completed in this process: the
/// evidence that a backend's calls took the SIMD kernels rather than the generic path.
pub fn cpu_kernel_runs() -> usize {
    KERNEL_RUNS.load(Ordering::Relaxed)
}

/// How many of [`cpu_kernel_runs`] took bf16 inputs (the bf16 kernels of `aido-kernels`,
/// under [`crate::Precision::Bf16`] on a CPU with AVX512-BF16).
pub fn cpu_bf16_kernel_runs() -> usize {
    BF16_KERNEL_RUNS.load(Ordering::Relaxed)
}

/// How many times, in this process, a CPU attention kernel applied to its input but reported
/// an error (each time logged with `tracing::error!` and computed by the generic path
/// instead). Zero in a healthy run; tests and long jobs can assert it.
pub fn cpu_kernel_errors() -> usize {
    KERNEL_ERRORS.load(Ordering::Relaxed)
}

/// `true` when the kernel ran; on an error, logs and counts it.
fn kernel_ran(op: &str, ks: AttnShape, r: Result<(), KernelError>) -> bool {
    match r {
        Ok(()) => {
            KERNEL_RUNS.fetch_add(1, Ordering::Relaxed);
            true
        }
        Err(e) => {
            KERNEL_ERRORS.fetch_add(1, Ordering::Relaxed);
            tracing::error!(
                "CPU attention kernel {op} failed on [B·H {}, S {}, D {}]: {e}; the generic implementation computes this call instead",
                ks.bh,
                ks.seq,
                ks.head_dim
            );
            false
        }
    }
}

/// Runs the forward kernel (f32 or bf16 inputs; the output and log-sum-exp are f32); `None`
/// when the kernel does not apply or reports an error (logged and counted).
fn forward(
    q: &FlexTensor,
    k: &FlexTensor,
    v: &FlexTensor,
    scale: f32,
) -> Option<(FlexTensor, FlexTensor)> {
    let (shape, ks, dtype) = kernel_shape(q, k, v)?;
    let (q, k, v) = (contiguous(q), contiguous(k), contiguous(v));
    let mut out = FlexTensor::zeros(shape.clone(), DType::F32);
    let mut lse = FlexTensor::zeros(Shape::new([shape[0], shape[1], shape[2]]), DType::F32);
    let (o, l) = (out.storage_mut::<f32>(), lse.storage_mut::<f32>());
    let r = if dtype == DType::BF16 {
        BF16_KERNEL_RUNS.fetch_add(1, Ordering::Relaxed);
        flash_forward_bf16(bits(&q), bits(&k), bits(&v), ks, scale, o, l)
    } else {
        flash_forward(values(&q), values(&k), values(&v), ks, scale, o, l)
    };
    kernel_ran("forward", ks, r).then_some((out, lse))
}

impl Kernels for Flex {
    fn reads(dtype: DType) -> bool {
        dtype == DType::F32 || (dtype == DType::BF16 && reads_bf16())
    }

    fn attn(q: FlexTensor, k: FlexTensor, v: FlexTensor) -> FlexTensor {
        let scale = default_scale(q.shape()[3]);
        match forward(&q, &k, &v, scale) {
            Some((out, _)) => out,
            None => fused_forward::<Self>(q, k, v),
        }
    }

    fn attn_with_lse(
        q: FlexTensor,
        k: FlexTensor,
        v: FlexTensor,
        scale: f32,
    ) -> (FlexTensor, FlexTensor) {
        match forward(&q, &k, &v, scale) {
            Some(r) => r,
            None => tiled_forward::<Self>(q, k, v, scale),
        }
    }

    fn attn_backward(
        q: FlexTensor,
        k: FlexTensor,
        v: FlexTensor,
        out: FlexTensor,
        lse: FlexTensor,
        dout: FlexTensor,
        scale: f32,
    ) -> (FlexTensor, FlexTensor, FlexTensor) {
        let applies = kernel_shape(&q, &k, &v).filter(|(shape, _, dtype)| {
            out.shape() == *shape
                && dout.shape() == *shape
                && out.dtype() == DType::F32
                && (dout.dtype() == DType::F32 || dout.dtype() == *dtype)
                && lse.dtype() == DType::F32
                && lse.shape().num_elements() == shape[0] * shape[1] * shape[2]
        });
        if let Some((shape, ks, dtype)) = applies {
            let c: Vec<FlexTensor> = [&q, &k, &v, &out, &dout, &lse]
                .iter()
                .map(|t| contiguous(t))
                .collect();
            let mut dq = FlexTensor::zeros(shape.clone(), DType::F32);
            let mut dk = FlexTensor::zeros(shape.clone(), DType::F32);
            let mut dv = FlexTensor::zeros(shape, DType::F32);
            let (gq, gk, gv) = (
                dq.storage_mut::<f32>(),
                dk.storage_mut::<f32>(),
                dv.storage_mut::<f32>(),
            );
            let r = if dtype == DType::BF16 {
                // dO in bf16 like q, k, v (the output the loss saw was rounded to bf16).
                let dout16 = bf16_bits(&c[4]);
                BF16_KERNEL_RUNS.fetch_add(1, Ordering::Relaxed);
                flash_backward_bf16(
                    bits(&c[0]),
                    bits(&c[1]),
                    bits(&c[2]),
                    values(&c[3]),
                    &dout16,
                    values(&c[5]),
                    ks,
                    scale,
                    gq,
                    gk,
                    gv,
                )
            } else {
                flash_backward(
                    values(&c[0]),
                    values(&c[1]),
                    values(&c[2]),
                    values(&c[3]),
                    values(&c[4]),
                    values(&c[5]),
                    ks,
                    scale,
                    gq,
                    gk,
                    gv,
                )
            };
            if kernel_ran("backward", ks, r) {
                return (
                    in_dtype(dq, dtype),
                    in_dtype(dk, dtype),
                    in_dtype(dv, dtype),
                );
            }
        }
        tiled_backward::<Self>(q, k, v, out, lse, dout, scale)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_kernel_error_is_counted_not_swallowed() {
        let ks = AttnShape {
            bh: 1,
            seq: 4,
            head_dim: 8,
        };
        let before = cpu_kernel_errors();
        // q is one element short of [1, 4, 8]: the kernel refuses it.
        let (q, kv) = (vec![0.0f32; 31], vec![0.0f32; 32]);
        let (mut out, mut lse) = (vec![0.0f32; 32], vec![0.0f32; 4]);
        let r = flash_forward(&q, &kv, &kv, ks, 1.0, &mut out, &mut lse);
        assert!(r.is_err());
        assert!(!kernel_ran("forward", ks, r));
        assert!(cpu_kernel_errors() > before);
        assert!(kernel_ran("forward", ks, Ok(())));
    }
}
