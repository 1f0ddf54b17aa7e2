//! FlashAttention-2 forward (with log-sum-exp) and backward written once in CubeCL, the kernel
//! language under burn's CUDA and wgpu backends (Dao 2023, Algorithms 1 and 2).
//!
//! Layout: `q, k, v, out, dout, dq, dk, dv: [B, heads, S, D]` contiguous (made so on entry),
//! `lse, delta: [B, heads, S]`; f32 (the seam casts other dtypes to f32 first).
//!
//! - [`forward`]: one cube per (block of query rows, batch × head), one unit per query row.
//!   The units load a tile of K and V rows into shared memory together, then each unit scores
//!   its row against the tile, keeps the running maximum and sum (rescaled once per tile) and
//!   accumulates `P·V` in registers. It writes the output and `lse = m + ln l`: no `S × S`
//!   matrix, no second pass for the log-sum-exp.
//! - [`backward`]: two kernels that recompute the probabilities from `lse` tile by tile.
//!   The first (one unit per query row) forms `delta = rowsum(dO ∘ O)` and
//!   `dQ = scale · Σ_j P_ij (dP_ij − delta_i) K_j`; the second (one unit per key row) forms
//!   `dV = Σ_i P_ij dO_i` and `dK = scale · Σ_i P_ij (dP_ij − delta_i) Q_i`, so no unit writes
//!   where another does (no atomics).
//!
//! Scores, exponentials and sums are in the kernel's float type (f32). WGSL has no `-inf`
//! literal, so the running maximum starts at `-1e30`.

use burn::tensor::Shape;
use burn_cubecl::CubeRuntime;
use burn_cubecl::kernel::into_contiguous;
use burn_cubecl::ops::numeric::empty_device_dtype;
use burn_cubecl::tensor::CubeTensor;
use cubecl::prelude::*;
use std::sync::atomic::{AtomicU64, Ordering};

static FORWARD_RUNS: AtomicU64 = AtomicU64::new(0);
static BACKWARD_RUNS: AtomicU64 = AtomicU64::new(0);

/// Calls of the CubeCL FlashAttention-2 `(forward, backward)` in this process (the checks
/// use it to prove the dispatch reached the kernels).
pub fn cube_kernel_runs() -> (u64, u64) {
    (
        FORWARD_RUNS.load(Ordering::Relaxed),
        BACKWARD_RUNS.load(Ordering::Relaxed),
    )
}

/// The starting running maximum (WGSL rejects an infinite literal).
const NEG_BIG: f32 = -1.0e30;

/// Rows per tile for head dim `d`: the K and V tiles (or Q and dO) take `2 · block · d` f32s of
/// shared memory, kept at 16 KiB, between 8 and 64 rows.
pub(crate) fn block_rows(d: usize) -> usize {
    (2048 / d.max(1)).clamp(8, 64)
}

#[cube(launch)]
#[allow(clippy::too_many_arguments)]
fn flash_forward_kernel<F: Float>(
    q: &Tensor<F>,
    k: &Tensor<F>,
    v: &Tensor<F>,
    out: &mut Tensor<F>,
    lse: &mut Tensor<F>,
    seq: u32,
    scale: f32,
    #[comptime] dim: usize,
    #[comptime] block: usize,
    #[define(F)] _dtype: StorageType,
) {
    let s = seq as usize;
    let bh = CUBE_POS_Y as usize;
    let u = UNIT_POS_X as usize;
    let row = CUBE_POS_X as usize * block + u;
    let base = bh * s * dim;
    let scale = F::cast_from(scale);
    let zero = F::new(0.0);

    let mut k_tile = SharedMemory::<F>::new(block * dim);
    let mut v_tile = SharedMemory::<F>::new(block * dim);
    let mut qr = Array::<F>::new(dim);
    let mut acc = Array::<F>::new(dim);
    let mut sc = Array::<F>::new(block);
    #[unroll]
    for d in 0..dim {
        qr[d] = zero;
        acc[d] = zero;
    }
    if row < s {
        #[unroll]
        for d in 0..dim {
            qr[d] = q[base + row * dim + d];
        }
    }
    let mut m = F::new(NEG_BIG);
    let mut l = zero;
    let mut j0 = 0usize;
    while j0 < s {
        let kr = j0 + u;
        if kr < s {
            #[unroll]
            for d in 0..dim {
                k_tile[u * dim + d] = k[base + kr * dim + d];
                v_tile[u * dim + d] = v[base + kr * dim + d];
            }
        }
        sync_cube();
        let mut n = s - j0;
        if n > block {
            n = block;
        }
        let mut tile_max = F::new(NEG_BIG);
        for jj in 0..n {
            let mut dot = zero;
            #[unroll]
            for d in 0..dim {
                dot += qr[d] * k_tile[jj * dim + d];
            }
            let sv = dot * scale;
            sc[jj] = sv;
            if sv > tile_max {
                tile_max = sv;
            }
        }
        let mut m_new = m;
        if tile_max > m {
            m_new = tile_max;
        }
        let corr = (m - m_new).exp();
        l *= corr;
        #[unroll]
        for d in 0..dim {
            acc[d] *= corr;
        }
        for jj in 0..n {
            let p = (sc[jj] - m_new).exp();
            l += p;
            #[unroll]
            for d in 0..dim {
                acc[d] += p * v_tile[jj * dim + d];
            }
        }
        m = m_new;
        sync_cube();
        j0 += block;
    }
    if row < s {
        let inv = F::new(1.0) / l;
        #[unroll]
        for d in 0..dim {
            out[base + row * dim + d] = acc[d] * inv;
        }
        lse[bh * s + row] = m + l.ln();
    }
}

#[cube(launch)]
#[allow(clippy::too_many_arguments)]
fn flash_backward_dq_kernel<F: Float>(
    q: &Tensor<F>,
    k: &Tensor<F>,
    v: &Tensor<F>,
    out: &Tensor<F>,
    dout: &Tensor<F>,
    lse: &Tensor<F>,
    dq: &mut Tensor<F>,
    delta: &mut Tensor<F>,
    seq: u32,
    scale: f32,
    #[comptime] dim: usize,
    #[comptime] block: usize,
    #[define(F)] _dtype: StorageType,
) {
    let s = seq as usize;
    let bh = CUBE_POS_Y as usize;
    let u = UNIT_POS_X as usize;
    let row = CUBE_POS_X as usize * block + u;
    let base = bh * s * dim;
    let scale = F::cast_from(scale);
    let zero = F::new(0.0);

    let mut k_tile = SharedMemory::<F>::new(block * dim);
    let mut v_tile = SharedMemory::<F>::new(block * dim);
    let mut qr = Array::<F>::new(dim);
    let mut dor = Array::<F>::new(dim);
    let mut acc = Array::<F>::new(dim);
    let mut di = zero;
    let mut li = zero;
    #[unroll]
    for d in 0..dim {
        qr[d] = zero;
        dor[d] = zero;
        acc[d] = zero;
    }
    if row < s {
        #[unroll]
        for d in 0..dim {
            qr[d] = q[base + row * dim + d];
            dor[d] = dout[base + row * dim + d];
            di += dor[d] * out[base + row * dim + d];
        }
        li = lse[bh * s + row];
    }
    let mut j0 = 0usize;
    while j0 < s {
        let kr = j0 + u;
        if kr < s {
            #[unroll]
            for d in 0..dim {
                k_tile[u * dim + d] = k[base + kr * dim + d];
                v_tile[u * dim + d] = v[base + kr * dim + d];
            }
        }
        sync_cube();
        let mut n = s - j0;
        if n > block {
            n = block;
        }
        for jj in 0..n {
            let mut dot = zero;
            let mut dp = zero;
            #[unroll]
            for d in 0..dim {
                dot += qr[d] * k_tile[jj * dim + d];
                dp += dor[d] * v_tile[jj * dim + d];
            }
            let p = (dot * scale - li).exp();
            let ds = p * (dp - di);
            #[unroll]
            for d in 0..dim {
                acc[d] += ds * k_tile[jj * dim + d];
            }
        }
        sync_cube();
        j0 += block;
    }
    if row < s {
        #[unroll]
        for d in 0..dim {
            dq[base + row * dim + d] = acc[d] * scale;
        }
        delta[bh * s + row] = di;
    }
}

#[cube(launch)]
#[allow(clippy::too_many_arguments)]
fn flash_backward_dkdv_kernel<F: Float>(
    q: &Tensor<F>,
    k: &Tensor<F>,
    v: &Tensor<F>,
    dout: &Tensor<F>,
    lse: &Tensor<F>,
    delta: &Tensor<F>,
    dk: &mut Tensor<F>,
    dv: &mut Tensor<F>,
    seq: u32,
    scale: f32,
    #[comptime] dim: usize,
    #[comptime] block: usize,
    #[define(F)] _dtype: StorageType,
) {
    let s = seq as usize;
    let bh = CUBE_POS_Y as usize;
    let u = UNIT_POS_X as usize;
    let col = CUBE_POS_X as usize * block + u;
    let base = bh * s * dim;
    let scale = F::cast_from(scale);
    let zero = F::new(0.0);

    let mut q_tile = SharedMemory::<F>::new(block * dim);
    let mut do_tile = SharedMemory::<F>::new(block * dim);
    let mut l_tile = SharedMemory::<F>::new(block);
    let mut d_tile = SharedMemory::<F>::new(block);
    let mut kr = Array::<F>::new(dim);
    let mut vr = Array::<F>::new(dim);
    let mut dka = Array::<F>::new(dim);
    let mut dva = Array::<F>::new(dim);
    #[unroll]
    for d in 0..dim {
        kr[d] = zero;
        vr[d] = zero;
        dka[d] = zero;
        dva[d] = zero;
    }
    if col < s {
        #[unroll]
        for d in 0..dim {
            kr[d] = k[base + col * dim + d];
            vr[d] = v[base + col * dim + d];
        }
    }
    let mut i0 = 0usize;
    while i0 < s {
        let qi = i0 + u;
        if qi < s {
            #[unroll]
            for d in 0..dim {
                q_tile[u * dim + d] = q[base + qi * dim + d];
                do_tile[u * dim + d] = dout[base + qi * dim + d];
            }
            l_tile[u] = lse[bh * s + qi];
            d_tile[u] = delta[bh * s + qi];
        }
        sync_cube();
        let mut n = s - i0;
        if n > block {
            n = block;
        }
        for ii in 0..n {
            let mut dot = zero;
            let mut dp = zero;
            #[unroll]
            for d in 0..dim {
                dot += q_tile[ii * dim + d] * kr[d];
                dp += do_tile[ii * dim + d] * vr[d];
            }
            let p = (dot * scale - l_tile[ii]).exp();
            let ds = p * (dp - d_tile[ii]);
            #[unroll]
            for d in 0..dim {
                dva[d] += p * do_tile[ii * dim + d];
                dka[d] += ds * q_tile[ii * dim + d];
            }
        }
        sync_cube();
        i0 += block;
    }
    if col < s {
        #[unroll]
        for d in 0..dim {
            dk[base + col * dim + d] = dka[d] * scale;
            dv[base + col * dim + d] = dva[d];
        }
    }
}

/// `[B, heads, S, D]` of a rank-4 tensor.
fn dims4<R: CubeRuntime>(t: &CubeTensor<R>) -> [usize; 4] {
    let s = t.meta.shape();
    [s[0], s[1], s[2], s[3]]
}

/// The launch grid: `(⌈S / block⌉, B · heads)` cubes of `block` units.
fn grid(s: usize, bh: usize, block: usize) -> (CubeCount, CubeDim) {
    (
        CubeCount::Static(s.div_ceil(block) as u32, bh as u32, 1),
        CubeDim::new_1d(block as u32),
    )
}

/// FlashAttention-2 forward: `(out [B, heads, S, D], lse [B, heads, S])`.
pub(crate) fn forward<R: CubeRuntime>(
    q: CubeTensor<R>,
    k: CubeTensor<R>,
    v: CubeTensor<R>,
    scale: f32,
) -> (CubeTensor<R>, CubeTensor<R>) {
    let (q, k, v) = (into_contiguous(q), into_contiguous(k), into_contiguous(v));
    let [b, h, s, d] = dims4(&q);
    let (client, device, dtype) = (q.client.clone(), q.device.clone(), q.dtype);
    let out = empty_device_dtype(
        client.clone(),
        device.clone(),
        Shape::new([b, h, s, d]),
        dtype,
    );
    let lse = empty_device_dtype(client.clone(), device, Shape::new([b, h, s]), dtype);
    if b * h * s * d == 0 {
        return (out, lse);
    }
    FORWARD_RUNS.fetch_add(1, Ordering::Relaxed);
    let block = block_rows(d);
    let (count, cube_dim) = grid(s, b * h, block);
    flash_forward_kernel::launch::<R>(
        &client,
        count,
        cube_dim,
        q.into_tensor_arg(),
        k.into_tensor_arg(),
        v.into_tensor_arg(),
        out.clone().into_tensor_arg(),
        lse.clone().into_tensor_arg(),
        s as u32,
        scale,
        d,
        block,
        dtype.into(),
    );
    (out, lse)
}

/// FlashAttention-2 backward: `(dq, dk, dv)`, each `[B, heads, S, D]`, from the forward's output
/// and log-sum-exp.
#[allow(clippy::too_many_arguments)]
pub(crate) fn backward<R: CubeRuntime>(
    q: CubeTensor<R>,
    k: CubeTensor<R>,
    v: CubeTensor<R>,
    out: CubeTensor<R>,
    lse: CubeTensor<R>,
    dout: CubeTensor<R>,
    scale: f32,
) -> (CubeTensor<R>, CubeTensor<R>, CubeTensor<R>) {
    let (q, k, v) = (into_contiguous(q), into_contiguous(k), into_contiguous(v));
    let (out, lse, dout) = (
        into_contiguous(out),
        into_contiguous(lse),
        into_contiguous(dout),
    );
    let [b, h, s, d] = dims4(&q);
    let (client, device, dtype) = (q.client.clone(), q.device.clone(), q.dtype);
    let new = |shape: Shape| empty_device_dtype(client.clone(), device.clone(), shape, dtype);
    let (dq, dk, dv) = (
        new(Shape::new([b, h, s, d])),
        new(Shape::new([b, h, s, d])),
        new(Shape::new([b, h, s, d])),
    );
    if b * h * s * d == 0 {
        return (dq, dk, dv);
    }
    BACKWARD_RUNS.fetch_add(1, Ordering::Relaxed);
    let delta = new(Shape::new([b, h, s]));
    let block = block_rows(d);
    let (count, cube_dim) = grid(s, b * h, block);
    flash_backward_dq_kernel::launch::<R>(
        &client,
        count.clone(),
        cube_dim,
        q.clone().into_tensor_arg(),
        k.clone().into_tensor_arg(),
        v.clone().into_tensor_arg(),
        out.into_tensor_arg(),
        dout.clone().into_tensor_arg(),
        lse.clone().into_tensor_arg(),
        dq.clone().into_tensor_arg(),
        delta.clone().into_tensor_arg(),
        s as u32,
        scale,
        d,
        block,
        dtype.into(),
    );
    flash_backward_dkdv_kernel::launch::<R>(
        &client,
        count,
        cube_dim,
        q.into_tensor_arg(),
        k.into_tensor_arg(),
        v.into_tensor_arg(),
        dout.into_tensor_arg(),
        lse.into_tensor_arg(),
        delta.into_tensor_arg(),
        dk.clone().into_tensor_arg(),
        dv.clone().into_tensor_arg(),
        s as u32,
        scale,
        d,
        block,
        dtype.into(),
    );
    (dq, dk, dv)
}
