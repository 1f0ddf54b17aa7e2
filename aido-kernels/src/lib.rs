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
        }
    }
}

impl std::error::Error for KernelError {}

/// Which implementation to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KernelPath {
    /// Portable scalar code (correct on every target; slow).
    Scalar,
    /// x86-64 AVX2 + FMA microkernels (8 lanes).
    Avx2Fma,
    /// x86-64 AVX-512F microkernels (16 lanes).
    Avx512,
}

impl KernelPath {
    /// Whether this path can run on the current machine.
    pub fn is_supported(self) -> bool {
        match self {
            KernelPath::Scalar => true,
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
            #[cfg(not(target_arch = "x86_64"))]
            _ => false,
        }
    }

    /// The fastest path supported by the current machine.
    pub fn detect() -> KernelPath {
        [KernelPath::Avx512, KernelPath::Avx2Fma]
            .into_iter()
            .find(|p| p.is_supported())
            .unwrap_or(KernelPath::Scalar)
    }

    /// All paths supported by the current machine (always contains [`KernelPath::Scalar`]).
    pub fn supported() -> Vec<KernelPath> {
        [KernelPath::Scalar, KernelPath::Avx2Fma, KernelPath::Avx512]
            .into_iter()
            .filter(|p| p.is_supported())
            .collect()
    }
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
    if !path.is_supported() {
        return Err(KernelError::UnsupportedPath(path));
    }
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
    if !path.is_supported() {
        return Err(KernelError::UnsupportedPath(path));
    }
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
