//! Multithreaded CPU FlashAttention-2 kernels (forward and backward) on raw `f32` slices.
//!
//! All tensors are row-major and contiguous: `q`, `k`, `v`, `out`, `dout`, `dq`, `dk`, `dv`
//! are `[bh, seq, head_dim]`, `lse` is `[bh, seq]`. Attention is dense and bidirectional
//! (no mask, no bias).
//!
//! The kernels never materialise the `seq × seq` score matrix: scores are recomputed tile by
//! tile, and the extra memory is `O(tile sizes × threads)` plus one `[bh, seq]` vector of
//! row statistics in the backward pass.
//!
//! Three code paths exist, chosen at run time (see [`KernelPath`]): AVX-512F, AVX2+FMA and a
//! portable scalar fallback. All of them run the same tiled algorithm and are parallelised
//! with rayon.
//!
//! # bf16 inputs
//!
//! [`flash_forward_bf16`] and [`flash_backward_bf16`] take `q`, `k`, `v` (and `dout`) as
//! bf16, stored as `u16` bit patterns (the upper half of an `f32`, see [`f32_to_bf16`] and
//! [`bf16_to_f32`]), and write f32 `out`, `lse`, `dq`, `dk`, `dv`. They run the same tiled
//! FlashAttention-2 algorithm; scores, softmax statistics and all accumulators are f32.
//! Exactly two intermediate quantities are rounded to bf16, because they are operands of
//! bf16 matrix products, as in the FlashAttention bf16 kernels (PyTorch's CPU flash attention
//! also rounds `P` to bf16 before `P·V` under bf16):
//! * the probabilities `P` (the f32 values are summed into the softmax denominator; the
//!   rounded ones multiply `V` in the forward and `dO` in `dV = Pᵀ dO`);
//! * `dS = P ∘ (dP − D)`, which multiplies `K` in `dQ` and `Q` in `dK`.
//!
//! Two bf16 paths exist: [`KernelPath::Avx512Bf16`] (x86-64 AVX512-BF16, `VDPBF16PS`) and
//! the portable [`KernelPath::ScalarBf16`], which performs the same roundings and the same
//! f32 operations in plain Rust on any CPU and serves as the reference for the fast path.
//! There is no AMX path (the machine this crate was developed on has no AMX, so such a path
//! could not be tested).
#![deny(unsafe_code)]
#![warn(missing_docs)]

mod simd;

use std::fmt;

/// Problem shape: `bh` independent (batch × head) slices of `seq` rows of `head_dim` floats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AttnShape {
    /// Number of independent (batch, head) pairs.
    pub bh: usize,
    /// Sequence length (queries and keys have the same length).
    pub seq: usize,
    /// Head dimension.
    pub head_dim: usize,
}

/// Names one of the buffers passed to the kernels (used in [`KernelError`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Buffer {
    /// Queries.
    Q,
    /// Keys.
    K,
    /// Values.
    V,
    /// Attention output.
    Out,
    /// Log-sum-exp of the scaled scores.
    Lse,
    /// Gradient of the output.
    DOut,
    /// Gradient of the queries.
    Dq,
    /// Gradient of the keys.
    Dk,
    /// Gradient of the values.
    Dv,
}

impl fmt::Display for Buffer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self {
            Buffer::Q => "q",
            Buffer::K => "k",
            Buffer::V => "v",
            Buffer::Out => "out",
            Buffer::Lse => "lse",
            Buffer::DOut => "dout",
            Buffer::Dq => "dq",
            Buffer::Dk => "dk",
            Buffer::Dv => "dv",
        };
        f.write_str(name)
    }
}

/// Errors reported by the kernels. No kernel panics on bad input lengths.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KernelError {
    /// A buffer does not have the length implied by the [`AttnShape`].
    LengthMismatch {
        /// Which buffer.
        buffer: Buffer,
        /// Length implied by the shape.
        expected: usize,
        /// Length actually passed.
        actual: usize,
    },
    /// `bh * seq * head_dim` overflows `usize`.
    ShapeOverflow,
    /// The requested [`KernelPath`] is not supported by this CPU / target.
    UnsupportedPath(KernelPath),
    /// A bf16 path was passed to an f32 function, or an f32 path to a bf16 function.
    PrecisionMismatch(KernelPath),
}

impl fmt::Display for KernelError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KernelError::LengthMismatch {
                buffer,
                expected,
                actual,
            } => write!(
                f,
                "buffer `{buffer}` has length {actual}, expected {expected}"
            ),
            KernelError::ShapeOverflow => f.write_str("attention shape overflows usize"),
            KernelError::UnsupportedPath(p) => {
                write!(f, "kernel path {p:?} is not supported on this machine")
            }
            KernelError::PrecisionMismatch(p) => {
                let (takes, other) = if p.is_bf16() {
                    ("bf16", "f32")
                } else {
                    ("f32", "bf16")
                };
                write!(
                    f,
                    "kernel path {p:?} takes {takes} inputs and cannot run the {other} kernels"
                )
            }
        }
    }
}

impl std::error::Error for KernelError {}

/// Which implementation to run.
///
/// `Scalar`, `Avx2Fma` and `Avx512` run the f32 kernels ([`flash_forward_with`],
/// [`flash_backward_with`]); `Avx512Bf16` and `ScalarBf16` run the bf16 kernels
/// ([`flash_forward_bf16_with`], [`flash_backward_bf16_with`]). Passing a path to the
/// functions of the other precision gives [`KernelError::PrecisionMismatch`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KernelPath {
    /// Portable scalar code (correct on every target; slow).
    Scalar,
    /// x86-64 AVX2 + FMA microkernels (8 lanes).
    Avx2Fma,
    /// x86-64 AVX-512F microkernels (16 lanes).
    Avx512,
    /// bf16 inputs: x86-64 AVX-512F + AVX512-BF16 microkernels; every product runs on
    /// `VDPBF16PS` (16 f32 lanes, each accumulating a pair of bf16 products).
    Avx512Bf16,
    /// bf16 inputs: portable reference in plain Rust (any CPU), performing the same bf16
    /// roundings and the same f32 operations, in the same order, as [`KernelPath::Avx512Bf16`].
    ScalarBf16,
}

impl fmt::Display for KernelPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            KernelPath::Scalar => "scalar",
            KernelPath::Avx2Fma => "avx2+fma",
            KernelPath::Avx512 => "avx512",
            KernelPath::Avx512Bf16 => "avx512-bf16",
            KernelPath::ScalarBf16 => "scalar-bf16",
        })
    }
}

impl KernelPath {
    /// Whether this path can run on the current machine.
    pub fn is_supported(self) -> bool {
        match self {
            KernelPath::Scalar | KernelPath::ScalarBf16 => true,
            #[cfg(target_arch = "x86_64")]
            KernelPath::Avx2Fma => {
                std::arch::is_x86_feature_detected!("avx2")
                    && std::arch::is_x86_feature_detected!("fma")
            }
            #[cfg(target_arch = "x86_64")]
            KernelPath::Avx512 => {
                std::arch::is_x86_feature_detected!("avx512f")
                    && std::arch::is_x86_feature_detected!("fma")
            }
            #[cfg(target_arch = "x86_64")]
            KernelPath::Avx512Bf16 => {
                std::arch::is_x86_feature_detected!("avx512f")
                    && std::arch::is_x86_feature_detected!("avx512bf16")
                    && std::arch::is_x86_feature_detected!("fma")
            }
            #[cfg(not(target_arch = "x86_64"))]
            _ => false,
        }
    }

    /// Whether this path runs the bf16 kernels (rather than the f32 ones).
    pub fn is_bf16(self) -> bool {
        matches!(self, KernelPath::Avx512Bf16 | KernelPath::ScalarBf16)
    }

    /// The fastest f32 path supported by the current machine.
    pub fn detect() -> KernelPath {
        [KernelPath::Avx512, KernelPath::Avx2Fma]
            .into_iter()
            .find(|p| p.is_supported())
            .unwrap_or(KernelPath::Scalar)
    }

    /// All f32 paths supported by the current machine (always contains
    /// [`KernelPath::Scalar`]).
    pub fn supported() -> Vec<KernelPath> {
        [KernelPath::Scalar, KernelPath::Avx2Fma, KernelPath::Avx512]
            .into_iter()
            .filter(|p| p.is_supported())
            .collect()
    }

    /// The fastest bf16 path supported by the current machine ([`KernelPath::Avx512Bf16`]
    /// when the CPU has AVX-512F, AVX512-BF16 and FMA, else [`KernelPath::ScalarBf16`]).
    pub fn detect_bf16() -> KernelPath {
        if KernelPath::Avx512Bf16.is_supported() {
            KernelPath::Avx512Bf16
        } else {
            KernelPath::ScalarBf16
        }
    }

    /// All bf16 paths supported by the current machine (always contains
    /// [`KernelPath::ScalarBf16`]).
    pub fn supported_bf16() -> Vec<KernelPath> {
        [KernelPath::ScalarBf16, KernelPath::Avx512Bf16]
            .into_iter()
            .filter(|p| p.is_supported())
            .collect()
    }
}

/// Checks that `path` runs kernels of the requested precision and is supported here.
fn check_path(path: KernelPath, bf16: bool) -> Result<(), KernelError> {
    if path.is_bf16() != bf16 {
        return Err(KernelError::PrecisionMismatch(path));
    }
    if !path.is_supported() {
        return Err(KernelError::UnsupportedPath(path));
    }
    Ok(())
}

/// Rounds an `f32` to bf16 (returned as its `u16` bit pattern): round to nearest, ties to
/// even. NaN stays NaN (sign and the top payload bits kept, made quiet); infinities and
/// zeros keep their sign; subnormals are rounded like any other value (not flushed), and
/// values above the largest finite bf16 (≈3.39e38) round to infinity.
pub fn f32_to_bf16(x: f32) -> u16 {
    let b = x.to_bits();
    if x.is_nan() {
        ((b >> 16) as u16) | 0x0040
    } else {
        let lsb = (b >> 16) & 1;
        (b.wrapping_add(0x7fff + lsb) >> 16) as u16
    }
}

/// The `f32` value of a bf16 bit pattern (exact: bf16 is the upper half of an `f32`).
pub fn bf16_to_f32(x: u16) -> f32 {
    f32::from_bits((x as u32) << 16)
}

/// [`f32_to_bf16`] of every element.
pub fn f32_slice_to_bf16(x: &[f32]) -> Vec<u16> {
    x.iter().map(|&v| f32_to_bf16(v)).collect()
}

/// [`bf16_to_f32`] of every element.
pub fn bf16_slice_to_f32(x: &[u16]) -> Vec<f32> {
    x.iter().map(|&v| bf16_to_f32(v)).collect()
}

fn check_len(buffer: Buffer, actual: usize, expected: usize) -> Result<(), KernelError> {
    if actual == expected {
        Ok(())
    } else {
        Err(KernelError::LengthMismatch {
            buffer,
            expected,
            actual,
        })
    }
}

/// Returns `(bh*seq*head_dim, bh*seq)`.
fn sizes(shape: AttnShape) -> Result<(usize, usize), KernelError> {
    let rows = shape
        .bh
        .checked_mul(shape.seq)
        .ok_or(KernelError::ShapeOverflow)?;
    let elems = rows
        .checked_mul(shape.head_dim)
        .ok_or(KernelError::ShapeOverflow)?;
    Ok((elems, rows))
}

/// Dense bidirectional attention (no mask, no bias): `out = softmax(scale * q kᵀ) v` per (b,h),
/// `lse[i] = ln Σ_j exp(scale * q_i·k_j)` (natural log, of the SCALED scores).
///
/// Uses the fastest path available on this machine ([`KernelPath::detect`]).
pub fn flash_forward(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    shape: AttnShape,
    scale: f32,
    out: &mut [f32],
    lse: &mut [f32],
) -> Result<(), KernelError> {
    flash_forward_with(KernelPath::detect(), q, k, v, shape, scale, out, lse)
}

/// [`flash_forward`] on an explicitly chosen [`KernelPath`] (mainly for testing).
#[allow(clippy::too_many_arguments)]
pub fn flash_forward_with(
    path: KernelPath,
    q: &[f32],
    k: &[f32],
    v: &[f32],
    shape: AttnShape,
    scale: f32,
    out: &mut [f32],
    lse: &mut [f32],
) -> Result<(), KernelError> {
    let (elems, rows) = sizes(shape)?;
    check_len(Buffer::Q, q.len(), elems)?;
    check_len(Buffer::K, k.len(), elems)?;
    check_len(Buffer::V, v.len(), elems)?;
    check_len(Buffer::Out, out.len(), elems)?;
    check_len(Buffer::Lse, lse.len(), rows)?;
    check_path(path, false)?;
    if rows == 0 {
        return Ok(());
    }
    if shape.head_dim == 0 {
        // All scores are 0: uniform softmax, empty output rows.
        lse.fill((shape.seq as f32).ln());
        return Ok(());
    }
    simd::forward(path, q, k, v, shape, scale, out, lse);
    Ok(())
}

/// Gradients given `dout`, using `out` and `lse` saved from the forward; recomputes scores tile
/// by tile. Memory beyond inputs/outputs is `O(tile sizes × threads)` plus one `[bh, seq]`
/// vector (`D_i = dout_i · out_i`), never `O(seq²)`.
///
/// `dq`, `dk`, `dv` are overwritten (not accumulated into). `dk` and `dv` are bitwise
/// deterministic; `dq` sums the contributions of the key blocks in scheduling order, so its
/// last bits may differ between runs.
///
/// Uses the fastest path available on this machine ([`KernelPath::detect`]).
#[allow(clippy::too_many_arguments)]
pub fn flash_backward(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    out: &[f32],
    dout: &[f32],
    lse: &[f32],
    shape: AttnShape,
    scale: f32,
    dq: &mut [f32],
    dk: &mut [f32],
    dv: &mut [f32],
) -> Result<(), KernelError> {
    flash_backward_with(
        KernelPath::detect(),
        q,
        k,
        v,
        out,
        dout,
        lse,
        shape,
        scale,
        dq,
        dk,
        dv,
    )
}

/// [`flash_backward`] on an explicitly chosen [`KernelPath`] (mainly for testing).
#[allow(clippy::too_many_arguments)]
pub fn flash_backward_with(
    path: KernelPath,
    q: &[f32],
    k: &[f32],
    v: &[f32],
    out: &[f32],
    dout: &[f32],
    lse: &[f32],
    shape: AttnShape,
    scale: f32,
    dq: &mut [f32],
    dk: &mut [f32],
    dv: &mut [f32],
) -> Result<(), KernelError> {
    let (elems, rows) = sizes(shape)?;
    check_len(Buffer::Q, q.len(), elems)?;
    check_len(Buffer::K, k.len(), elems)?;
    check_len(Buffer::V, v.len(), elems)?;
    check_len(Buffer::Out, out.len(), elems)?;
    check_len(Buffer::DOut, dout.len(), elems)?;
    check_len(Buffer::Lse, lse.len(), rows)?;
    check_len(Buffer::Dq, dq.len(), elems)?;
    check_len(Buffer::Dk, dk.len(), elems)?;
    check_len(Buffer::Dv, dv.len(), elems)?;
    check_path(path, false)?;
    if elems == 0 {
        return Ok(());
    }
    simd::backward(
        path,
        simd::BwdInputs {
            q,
            k,
            v,
            out,
            dout,
            lse,
        },
        shape,
        scale,
        dq,
        dk,
        dv,
    );
    Ok(())
}

/// bf16 attention forward: [`flash_forward`] with `q`, `k`, `v` given as bf16 bit patterns
/// (`[bh, seq, head_dim]`, see [`f32_to_bf16`]); `out` (`[bh, seq, head_dim]`) and `lse`
/// (`[bh, seq]`, natural log of the scaled scores) are f32. See the crate docs for which
/// intermediates are rounded to bf16 (the probabilities `P` before `P·V`).
///
/// Uses the fastest bf16 path available on this machine ([`KernelPath::detect_bf16`]).
pub fn flash_forward_bf16(
    q: &[u16],
    k: &[u16],
    v: &[u16],
    shape: AttnShape,
    scale: f32,
    out: &mut [f32],
    lse: &mut [f32],
) -> Result<(), KernelError> {
    flash_forward_bf16_with(KernelPath::detect_bf16(), q, k, v, shape, scale, out, lse)
}

/// [`flash_forward_bf16`] on an explicitly chosen bf16 [`KernelPath`] (`Avx512Bf16` or
/// `ScalarBf16`; an f32 path gives [`KernelError::PrecisionMismatch`]).
#[allow(clippy::too_many_arguments)]
pub fn flash_forward_bf16_with(
    path: KernelPath,
    q: &[u16],
    k: &[u16],
    v: &[u16],
    shape: AttnShape,
    scale: f32,
    out: &mut [f32],
    lse: &mut [f32],
) -> Result<(), KernelError> {
    let (elems, rows) = sizes(shape)?;
    check_len(Buffer::Q, q.len(), elems)?;
    check_len(Buffer::K, k.len(), elems)?;
    check_len(Buffer::V, v.len(), elems)?;
    check_len(Buffer::Out, out.len(), elems)?;
    check_len(Buffer::Lse, lse.len(), rows)?;
    check_path(path, true)?;
    if rows == 0 {
        return Ok(());
    }
    if shape.head_dim == 0 {
        // All scores are 0: uniform softmax, empty output rows.
        lse.fill((shape.seq as f32).ln());
        return Ok(());
    }
    simd::bf16::forward_bf16(path, q, k, v, shape, scale, out, lse);
    Ok(())
}

/// bf16 attention backward: [`flash_backward`] with `q`, `k`, `v` and `dout` given as bf16
/// bit patterns; `out` and `lse` are the f32 outputs of [`flash_forward_bf16`]; `dq`, `dk`,
/// `dv` are f32 and overwritten. See the crate docs for which intermediates are rounded to
/// bf16 (`P` before `Pᵀ·dO`, `dS` before `dS·K` and `dSᵀ·Q`).
///
/// Determinism as for [`flash_backward`]: `dk`, `dv` bitwise deterministic, `dq`'s last bits
/// depend on the order in which the key blocks' contributions are added.
///
/// Uses the fastest bf16 path available on this machine ([`KernelPath::detect_bf16`]).
#[allow(clippy::too_many_arguments)]
pub fn flash_backward_bf16(
    q: &[u16],
    k: &[u16],
    v: &[u16],
    out: &[f32],
    dout: &[u16],
    lse: &[f32],
    shape: AttnShape,
    scale: f32,
    dq: &mut [f32],
    dk: &mut [f32],
    dv: &mut [f32],
) -> Result<(), KernelError> {
    flash_backward_bf16_with(
        KernelPath::detect_bf16(),
        q,
        k,
        v,
        out,
        dout,
        lse,
        shape,
        scale,
        dq,
        dk,
        dv,
    )
}

/// [`flash_backward_bf16`] on an explicitly chosen bf16 [`KernelPath`] (`Avx512Bf16` or
/// `ScalarBf16`; an f32 path gives [`KernelError::PrecisionMismatch`]).
#[allow(clippy::too_many_arguments)]
pub fn flash_backward_bf16_with(
    path: KernelPath,
    q: &[u16],
    k: &[u16],
    v: &[u16],
    out: &[f32],
    dout: &[u16],
    lse: &[f32],
    shape: AttnShape,
    scale: f32,
    dq: &mut [f32],
    dk: &mut [f32],
    dv: &mut [f32],
) -> Result<(), KernelError> {
    let (elems, rows) = sizes(shape)?;
    check_len(Buffer::Q, q.len(), elems)?;
    check_len(Buffer::K, k.len(), elems)?;
    check_len(Buffer::V, v.len(), elems)?;
    check_len(Buffer::Out, out.len(), elems)?;
    check_len(Buffer::DOut, dout.len(), elems)?;
    check_len(Buffer::Lse, lse.len(), rows)?;
    check_len(Buffer::Dq, dq.len(), elems)?;
    check_len(Buffer::Dk, dk.len(), elems)?;
    check_len(Buffer::Dv, dv.len(), elems)?;
    check_path(path, true)?;
    if elems == 0 {
        return Ok(());
    }
    simd::bf16::backward_bf16(
        path,
        simd::bf16::BwdInputs16 {
            q,
            k,
            v,
            out,
            dout,
            lse,
        },
        shape,
        scale,
        dq,
        dk,
        dv,
    );
    Ok(())
}

/// `x[i] = 2^x[i]` with the exponential the kernels of `path` use in their softmax (the
/// same instructions; accurate to ~2e-7 relative for `x ≤ 127`, `-inf` → 0). For benchmarks
/// that measure the exponential's share of the attention time
/// (`examples/bf16_attention_bench`); the kernels do not call it.
pub fn exp2_in_place(path: KernelPath, x: &mut [f32]) -> Result<(), KernelError> {
    if !path.is_supported() {
        return Err(KernelError::UnsupportedPath(path));
    }
    simd::exp2_in_place(path, x);
    Ok(())
}
