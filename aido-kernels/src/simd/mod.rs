//! Tiled FlashAttention-2 drivers and SIMD microkernels.
//!
//! This module (and its children) is the only place in the crate that uses `unsafe`: the
//! microkernels work on raw pointers into tile buffers, and the x86 paths call `std::arch`
//! intrinsics inside functions compiled with `#[target_feature]`.
//!
//! Structure:
//! * [`Simd`] abstracts one vector register (16 lanes AVX-512, 8 lanes AVX2, 1 lane scalar).
//! * [`dot_tile`] computes an `R × (C·W)` register tile of `A · Bᵀ`: `R` rows of `A` are
//!   broadcast, `Bᵀ` is packed in panels of `C·W` columns (so the products vectorise over
//!   those columns).
//! * [`acc_tile`] accumulates `out[R × (C·W)] (+)= P · B` with `P` broadcast (arbitrary row
//!   and column strides, so `Pᵀ` works too) and `B` rows vectorised over head_dim.
//! * `fwd_task` (one block of 128 queries of one (b,h)): `Q' = Q·scale·log2 e` is packed
//!   transposed in 32-query panels once; for each 128-key tile, `Sᵀ = K Q'ᵀ` is computed in
//!   8-key × 32-query register tiles with K read in place, the online softmax runs
//!   vertically (queries are vector lanes, base-2 exponentials), and `O += P V` runs with
//!   queries as tile rows.
//! * `bwd_task` (one block of 256 keys of one (b,h)): `K'ᵀ` and `Vᵀ` are packed once; for
//!   each 64-query tile it recomputes `P = 2^(Q K'ᵀ - lse·log2 e)`, `dP = dO Vᵀ`,
//!   `dS = P ∘ (dP - D)`, accumulates `dV += Pᵀ dO` and `dK += dSᵀ Q` locally and adds
//!   `scale · dS K` into that query tile of dQ under the tile's mutex (no atomics, no
//!   recomputation pass, extra memory O(tile × threads)).
//! * Both drivers are generic over [`Simd`] and register-blocking constants and are
//!   instantiated inside `#[target_feature]` wrappers (with `head_dim` 32 and 64 as
//!   compile-time constants).
//! * `bf16` holds the same two drivers for bf16 inputs, generic over `bf16::Bf16Simd`
//!   (AVX512-BF16 `VDPBF16PS` pair products, or the portable reference in `portable`).
#![allow(unsafe_code)]

#[cfg(target_arch = "x86_64")]
mod avx2;
#[cfg(target_arch = "x86_64")]
mod avx512;
pub(crate) mod bf16;
mod portable;
mod scalar;

use crate::{AttnShape, KernelPath};
use rayon::prelude::*;
use std::sync::Mutex;

const LOG2E: f32 = std::f32::consts::LOG2_E;
const LN2: f32 = std::f32::consts::LN_2;
const NEG_INF: f32 = f32::NEG_INFINITY;

/// Forward: query rows per task.
const FWD_BQ: usize = 128;
/// Forward: keys per K/V tile.
const FWD_BK: usize = 128;
/// Backward: keys per task.
const BWD_BK: usize = 256;
/// Backward: query rows per tile (and per dQ lock).
const BWD_BQ: usize = 64;
/// Row padding (floats) of score tiles, to avoid cache-set aliasing of power-of-two strides.
const LD_PAD: usize = 16;

/// Coefficients of a degree-5 polynomial approximating `2^f` on `[-0.5, 0.5]`
/// (Chebyshev-node interpolation; max relative error ≈ 1.0e-7 before f32 rounding).
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
pub(crate) const EXP2_C: [f32; 6] = [
    1.000_000_1,
    std::f32::consts::LN_2, // fitted 0.693_147_188, same f32
    0.240_221_07,
    0.055_503_57,
    0.009_676_032,
    0.001_339_086_3,
];

/// One SIMD register of `W` f32 lanes.
///
/// # Safety
/// Every method may use instructions of the implementing ISA; callers must only invoke them
/// when that ISA is available (guaranteed by [`KernelPath::is_supported`] checks before
/// dispatch). Pointer arguments must be valid for `W` consecutive floats.
pub(crate) trait Simd: Copy {
    const W: usize;
    type V: Copy;
    unsafe fn splat(x: f32) -> Self::V;
    unsafe fn zero() -> Self::V;
    unsafe fn load(p: *const f32) -> Self::V;
    unsafe fn store(p: *mut f32, v: Self::V);
    /// `a * b + c`
    unsafe fn fma(a: Self::V, b: Self::V, c: Self::V) -> Self::V;
    unsafe fn add(a: Self::V, b: Self::V) -> Self::V;
    unsafe fn sub(a: Self::V, b: Self::V) -> Self::V;
    unsafe fn mul(a: Self::V, b: Self::V) -> Self::V;
    unsafe fn max(a: Self::V, b: Self::V) -> Self::V;
    /// `2^x` for `x ≤ 127` (and `-inf` → 0), relative error ~2e-7.
    unsafe fn exp2(x: Self::V) -> Self::V;
    /// Lanes `>= n` are replaced by `fill`.
    unsafe fn keep_first(v: Self::V, n: usize, fill: f32) -> Self::V;
}

#[inline(always)]
fn round_up(x: usize, m: usize) -> usize {
    x.div_ceil(m) * m
}

/// Register-blocked `A · Bᵀ` tile.
///
/// Returns `acc[r][c] = Σ_{kk<d} a[r*lda + kk] * bt[kk*ldb + c*W .. +W]`.
///
/// # Safety
/// `a` readable for `(R-1)*lda + d` floats, `bt` readable for `(d-1)*ldb + C*W` floats, and
/// the ISA of `S` available.
#[inline(always)]
unsafe fn dot_tile<S: Simd, const R: usize, const C: usize>(
    a: *const f32,
    lda: usize,
    bt: *const f32,
    ldb: usize,
    d: usize,
) -> [[S::V; C]; R] {
    // SAFETY: all reads are within the ranges promised by the caller (see doc comment);
    // the ISA requirement is forwarded to the caller.
    unsafe {
        let mut acc = [[S::zero(); C]; R];
        for kk in 0..d {
            let brow = bt.add(kk * ldb);
            let mut b = [S::zero(); C];
            for (c, bv) in b.iter_mut().enumerate() {
                *bv = S::load(brow.add(c * S::W));
            }
            for (r, accr) in acc.iter_mut().enumerate() {
                let av = S::splat(*a.add(r * lda + kk));
                for (x, &bv) in accr.iter_mut().zip(b.iter()) {
                    *x = S::fma(av, bv, *x);
                }
            }
        }
        acc
    }
}

/// How [`acc_tile`] initialises its accumulators.
#[derive(Clone, Copy)]
enum Init<'a> {
    /// `out += P·B`
    Load,
    /// `out = alpha[r] * out + P·B`
    Scale(&'a [f32]),
    /// `out = P·B` (previous contents ignored)
    Zero,
}

/// Register-blocked accumulation `out = init(out) + P · B` over an `R × (C·W)` block:
/// `out[r*ldo + c*W ..] = init(out[..]) + Σ_{t<n} p[r*prs + t*pcs] * b[t*ldb + c*W ..]`.
///
/// # Safety
/// `p` readable at every `r*prs + t*pcs` (r<R, t<n); `b` readable for `(n-1)*ldb + C*W`
/// floats; `out` readable/writable for `(R-1)*ldo + C*W` floats and not aliasing `p`/`b`;
/// `Init::Scale(alpha)` has at least `R` entries; the ISA of `S` available.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
unsafe fn acc_tile<S: Simd, const R: usize, const C: usize>(
    p: *const f32,
    prs: usize,
    pcs: usize,
    b: *const f32,
    ldb: usize,
    n: usize,
    out: *mut f32,
    ldo: usize,
    init: Init<'_>,
) {
    // SAFETY: all accesses are within the ranges promised by the caller (see doc comment).
    unsafe {
        let mut acc = [[S::zero(); C]; R];
        for (r, accr) in acc.iter_mut().enumerate() {
            for (c, x) in accr.iter_mut().enumerate() {
                *x = match init {
                    Init::Load => S::load(out.add(r * ldo + c * S::W)),
                    Init::Scale(a) => S::mul(S::load(out.add(r * ldo + c * S::W)), S::splat(a[r])),
                    Init::Zero => S::zero(),
                };
            }
        }
        for t in 0..n {
            let brow = b.add(t * ldb);
            let mut bv = [S::zero(); C];
            for (c, v) in bv.iter_mut().enumerate() {
                *v = S::load(brow.add(c * S::W));
            }
            for (r, accr) in acc.iter_mut().enumerate() {
                let pv = S::splat(*p.add(r * prs + t * pcs));
                for (x, &v) in accr.iter_mut().zip(bv.iter()) {
                    *x = S::fma(pv, v, *x);
                }
            }
        }
        for (r, accr) in acc.iter().enumerate() {
            for (c, &x) in accr.iter().enumerate() {
                S::store(out.add(r * ldo + c * S::W), x);
            }
        }
    }
}

/// `out[rows × dp] (+)= P[rows × n] · B[n × dp]` for `rows` a multiple of `RP`, walking the
/// columns in chunks of `CP·W` then `W`.
///
/// # Safety
/// As [`acc_tile`] for every block; `dp` is a multiple of `S::W`.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
unsafe fn acc_rows<S: Simd, const RP: usize, const CP: usize>(
    rows: usize,
    p: *const f32,
    prs: usize,
    pcs: usize,
    b: *const f32,
    ldb: usize,
    n: usize,
    out: *mut f32,
    ldo: usize,
    dp: usize,
    init: Init<'_>,
) {
    // SAFETY: forwarded contract; each block stays inside `rows × dp` of `out` and the
    // `n × dp` panel of `b`.
    unsafe {
        for r0 in (0..rows).step_by(RP) {
            let pr = p.add(r0 * prs);
            let or = out.add(r0 * ldo);
            let al = match init {
                Init::Scale(a) => Init::Scale(&a[r0..r0 + RP]),
                other => other,
            };
            let mut c0 = 0;
            while c0 + CP * S::W <= dp {
                acc_tile::<S, RP, CP>(pr, prs, pcs, b.add(c0), ldb, n, or.add(c0), ldo, al);
                c0 += CP * S::W;
            }
            while c0 < dp {
                acc_tile::<S, RP, 1>(pr, prs, pcs, b.add(c0), ldb, n, or.add(c0), ldo, al);
                c0 += S::W;
            }
        }
    }
}

/// Packs rows `src[j*d .. j*d+d]` (`j < n`), multiplied by `mul`, transposed into panels
/// of `kc` rows: `dst[(j/kc)*d*kc + kk*kc + j%kc] = mul * src[j*d + kk]`; rows `n..n_eff`
/// are zero.
fn pack_panels(
    src: &[f32],
    d: usize,
    n: usize,
    n_eff: usize,
    kc: usize,
    mul: f32,
    dst: &mut [f32],
) {
    for (pi, panel) in dst[..n_eff * d].chunks_exact_mut(d * kc).enumerate() {
        let j0 = pi * kc;
        for (kk, prow) in panel.chunks_exact_mut(kc).enumerate() {
            for (jj, o) in prow.iter_mut().enumerate() {
                let j = j0 + jj;
                *o = if j < n { src[j * d + kk] * mul } else { 0.0 };
            }
        }
    }
}

/// Copies `n` rows of width `d` into rows of width `dp` (zero padded), rows `n..n_eff` zero,
/// multiplying by `mul`.
fn pack_rows(src: &[f32], d: usize, dp: usize, n: usize, n_eff: usize, mul: f32, dst: &mut [f32]) {
    for (j, row) in dst[..n_eff * dp].chunks_exact_mut(dp).enumerate() {
        if j < n {
            for (x, &y) in row[..d].iter_mut().zip(&src[j * d..(j + 1) * d]) {
                *x = y * mul;
            }
            row[d..].fill(0.0);
        } else {
            row.fill(0.0);
        }
    }
}

/// `n` rows of width `d` as (pointer, row stride) usable for `n_eff` rows of width `dp`:
/// the original slice when no padding is needed, else a zero-padded copy in `buf`.
fn rows_or_pad(
    src: &[f32],
    d: usize,
    dp: usize,
    n: usize,
    n_eff: usize,
    buf: &mut [f32],
) -> (*const f32, usize) {
    if d == dp && n == n_eff {
        (src.as_ptr(), d)
    } else {
        pack_rows(src, d, dp, n, n_eff, 1.0, buf);
        (buf.as_ptr(), dp)
    }
}

/// Per-thread scratch buffers, reused across tasks.
#[derive(Default)]
pub(crate) struct Workspace {
    bufs: [Vec<f32>; 10],
}

impl Workspace {
    /// Returns `N` disjoint scratch slices of the requested lengths (contents unspecified).
    fn slices<const N: usize>(&mut self, lens: [usize; N]) -> [&mut [f32]; N] {
        let mut it = self.bufs.iter_mut();
        std::array::from_fn(|i| {
            let v = it.next().expect("Workspace has too few buffers");
            if v.len() < lens[i] {
                v.resize(lens[i], 0.0);
            }
            &mut v[..lens[i]]
        })
    }
}

// ---------------------------------------------------------------------------------------
// Forward
// ---------------------------------------------------------------------------------------

/// One forward task: a block of query rows of one (b, h).
pub(crate) struct FwdTask<'a> {
    q: &'a [f32],
    k: &'a [f32],
    v: &'a [f32],
    seq: usize,
    d: usize,
    /// First query row of the block.
    q0: usize,
    /// `scale * log2(e)`: scores are computed in base 2.
    scale2: f32,
}

/// Forward over one query block: writes `out` (`rows × d`) and `lse` (`rows`).
///
/// Scores are computed transposed (`Sᵀ = K Q'ᵀ`, keys as tile rows, queries as vector
/// lanes), so K and V are used in place (no per-tile packing) and the online-softmax
/// statistics (row max, row sum, rescale factor) are plain vertical vector operations.
///
/// # Safety
/// The ISA of `S` must be available; `D` is 0 or equal to `t.d`; `FWD_BK % RQ == 0` and
/// `(CQ*W) % RP == 0`.
#[inline(always)]
unsafe fn fwd_task<
    S: Simd,
    const RQ: usize,
    const CQ: usize,
    const RP: usize,
    const CP: usize,
    const D: usize,
>(
    t: &FwdTask<'_>,
    out: &mut [f32],
    lse: &mut [f32],
    ws: &mut Workspace,
) {
    let d = if D != 0 { D } else { t.d };
    let w = S::W;
    let qc = CQ * w;
    let dp = round_up(d, w);
    let rows = lse.len();
    let rows_eff = round_up(rows, qc);
    let bk = FWD_BK;
    debug_assert!(bk.is_multiple_of(RQ) && qc.is_multiple_of(RP) && out.len() == rows * d);

    let [qt, ob, m, l, kb, vb, st, al] = ws.slices([
        rows_eff * d,
        rows_eff * dp,
        rows_eff,
        rows_eff,
        bk * dp,
        bk * dp,
        bk * qc,
        qc,
    ]);
    // Q' = Q · scale · log2(e), transposed into panels of `qc` queries.
    pack_panels(
        &t.q[t.q0 * d..(t.q0 + rows) * d],
        d,
        rows,
        rows_eff,
        qc,
        t.scale2,
        qt,
    );
    ob.fill(0.0);
    m.fill(NEG_INF);
    l.fill(0.0);

    let mut k0 = 0;
    while k0 < t.seq {
        let n = bk.min(t.seq - k0);
        let n_eff = round_up(n, RQ);
        let kr = k0 * d..(k0 + n) * d;
        let (kp, ldk) = rows_or_pad(&t.k[kr.clone()], d, dp, n, n_eff, kb);
        let (vp, ldv) = rows_or_pad(&t.v[kr], d, dp, n, n_eff, vb);
        for c0 in (0..rows_eff).step_by(qc) {
            // SAFETY: kp/vp point to n_eff rows of stride ldk/ldv ≥ d (≥ dp for vp) floats
            // (rows_or_pad); qt holds rows_eff/qc panels of d×qc floats; st has n_eff ≤ bk
            // rows of qc floats; m, l have rows_eff ≥ c0 + qc entries and al has qc; ob has
            // rows_eff rows of dp floats. The ISA of S is guaranteed by the caller.
            unsafe {
                let qpanel = qt.as_ptr().add(c0 * d);
                let sp = st.as_mut_ptr();
                // Sᵀ for n_eff keys × qc queries, tracking the per-query maximum.
                let mut vmax = [S::splat(NEG_INF); CQ];
                for j0 in (0..n_eff).step_by(RQ) {
                    let acc = dot_tile::<S, RQ, CQ>(kp.add(j0 * ldk), ldk, qpanel, qc, d);
                    for (r, accr) in acc.iter().enumerate() {
                        let valid = j0 + r < n;
                        for (c, (&x, vm)) in accr.iter().zip(vmax.iter_mut()).enumerate() {
                            let x = if valid { x } else { S::splat(NEG_INF) };
                            *vm = S::max(*vm, x);
                            S::store(sp.add((j0 + r) * qc + c * w), x);
                        }
                    }
                }
                // Online softmax statistics, vectorised over queries.
                let mp = m.as_mut_ptr().add(c0);
                let lp = l.as_mut_ptr().add(c0);
                let ap = al.as_mut_ptr();
                let mut mnew = [S::zero(); CQ];
                for (c, (mn, &vm)) in mnew.iter_mut().zip(vmax.iter()).enumerate() {
                    let mo = S::load(mp.add(c * w));
                    *mn = S::max(mo, vm);
                    S::store(ap.add(c * w), S::exp2(S::sub(mo, *mn)));
                    S::store(mp.add(c * w), *mn);
                }
                // P = 2^(Sᵀ - m), in place, with per-query sums.
                let mut sum = [S::zero(); CQ];
                for j in 0..n_eff {
                    let row = sp.add(j * qc);
                    for (c, (s, &mn)) in sum.iter_mut().zip(mnew.iter()).enumerate() {
                        let p = S::exp2(S::sub(S::load(row.add(c * w)), mn));
                        S::store(row.add(c * w), p);
                        *s = S::add(*s, p);
                    }
                }
                for (c, &s) in sum.iter().enumerate() {
                    let lv = S::load(lp.add(c * w));
                    S::store(lp.add(c * w), S::fma(lv, S::load(ap.add(c * w)), s));
                }
                // O = alpha ∘ O + P V (queries as tile rows: p(i, j) = st[j*qc + i]).
                acc_rows::<S, RP, CP>(
                    qc,
                    sp,
                    1,
                    qc,
                    vp,
                    ldv,
                    n_eff,
                    ob.as_mut_ptr().add(c0 * dp),
                    dp,
                    dp,
                    Init::Scale(&al[..]),
                );
            }
        }
        k0 += bk;
    }

    for i in 0..rows {
        let inv = 1.0 / l[i];
        for (o, &x) in out[i * d..(i + 1) * d]
            .iter_mut()
            .zip(&ob[i * dp..i * dp + d])
        {
            *o = x * inv;
        }
        lse[i] = (m[i] + l[i].log2()) * LN2;
    }
}

type FwdFn = unsafe fn(&FwdTask<'_>, &mut [f32], &mut [f32], &mut Workspace);

fn fwd_scalar(t: &FwdTask<'_>, out: &mut [f32], lse: &mut [f32], ws: &mut Workspace) {
    // SAFETY: the scalar "ISA" is always available; constants satisfy fwd_task's contract.
    unsafe { fwd_task::<scalar::Scalar, 4, 4, 4, 4, 0>(t, out, lse, ws) }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn fwd_avx2<const D: usize>(
    t: &FwdTask<'_>,
    out: &mut [f32],
    lse: &mut [f32],
    ws: &mut Workspace,
) {
    // SAFETY: this function is only called after checking AVX2+FMA support.
    unsafe { fwd_task::<avx2::Avx2, 4, 2, 4, 2, D>(t, out, lse, ws) }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,fma")]
unsafe fn fwd_avx512<const D: usize>(
    t: &FwdTask<'_>,
    out: &mut [f32],
    lse: &mut [f32],
    ws: &mut Workspace,
) {
    // SAFETY: this function is only called after checking AVX-512F+FMA support.
    unsafe { fwd_task::<avx512::Avx512, 8, 2, 8, 2, D>(t, out, lse, ws) }
}

#[cfg_attr(
    not(target_arch = "x86_64"),
    allow(unused_variables, clippy::match_single_binding)
)]
fn select_fwd(path: KernelPath, d: usize) -> FwdFn {
    match path {
        #[cfg(target_arch = "x86_64")]
        KernelPath::Avx512 => match d {
            32 => fwd_avx512::<32>,
            64 => fwd_avx512::<64>,
            _ => fwd_avx512::<0>,
        },
        #[cfg(target_arch = "x86_64")]
        KernelPath::Avx2Fma => match d {
            32 => fwd_avx2::<32>,
            64 => fwd_avx2::<64>,
            _ => fwd_avx2::<0>,
        },
        _ => fwd_scalar,
    }
}

/// Forward entry point. Lengths were validated by the caller, `path` is supported,
/// `head_dim ≥ 1`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn forward(
    path: KernelPath,
    q: &[f32],
    k: &[f32],
    v: &[f32],
    shape: AttnShape,
    scale: f32,
    out: &mut [f32],
    lse: &mut [f32],
) {
    let AttnShape {
        seq, head_dim: d, ..
    } = shape;
    let kern = select_fwd(path, d);
    let plane = seq * d;
    let mut tasks = Vec::new();
    for (b, (ob, lb)) in out.chunks_mut(plane).zip(lse.chunks_mut(seq)).enumerate() {
        for (qi, (oc, lc)) in ob
            .chunks_mut(FWD_BQ * d)
            .zip(lb.chunks_mut(FWD_BQ))
            .enumerate()
        {
            tasks.push((b, qi * FWD_BQ, oc, lc));
        }
    }
    tasks
        .into_par_iter()
        .for_each_init(Workspace::default, |ws, (b, q0, oc, lc)| {
            let r = b * plane..(b + 1) * plane;
            let t = FwdTask {
                q: &q[r.clone()],
                k: &k[r.clone()],
                v: &v[r],
                seq,
                d,
                q0,
                scale2: scale * LOG2E,
            };
            // SAFETY: `kern` matches `path`, whose ISA support the caller checked.
            unsafe { kern(&t, oc, lc, ws) }
        });
}

// ---------------------------------------------------------------------------------------
// Backward
// ---------------------------------------------------------------------------------------

/// Read-only backward inputs (full `[bh, seq, d]` / `[bh, seq]` buffers).
pub(crate) struct BwdInputs<'a> {
    pub q: &'a [f32],
    pub k: &'a [f32],
    pub v: &'a [f32],
    pub out: &'a [f32],
    pub dout: &'a [f32],
    pub lse: &'a [f32],
}

/// Backward inputs restricted to one (b, h).
pub(crate) struct BwdCtx<'a> {
    q: &'a [f32],
    k: &'a [f32],
    v: &'a [f32],
    dout: &'a [f32],
    lse: &'a [f32],
    /// `D_i = dout_i · out_i`.
    delta: &'a [f32],
    /// dQ of this (b, h), split into blocks of `BWD_BQ` rows, each behind its own lock.
    dq: &'a [Mutex<&'a mut [f32]>],
    seq: usize,
    d: usize,
    /// `scale * log2(e)`.
    scale2: f32,
    scale: f32,
}

/// Loads one query block's `lse·log2e` (padded with +inf so padded rows get P = 0) and `D`
/// (padded with 0); `l2.len() == dd.len()` is the padded row count.
fn load_stats(c: &BwdCtx<'_>, q0: usize, rows: usize, l2: &mut [f32], dd: &mut [f32]) {
    for (i, (l, x)) in l2.iter_mut().zip(dd.iter_mut()).enumerate() {
        if i < rows {
            *l = c.lse[q0 + i] * LOG2E;
            *x = c.delta[q0 + i];
        } else {
            *l = f32::INFINITY;
            *x = 0.0;
        }
    }
}

/// Computes, for `RQ` query rows × `n_eff` keys: `P = 2^(Q K'ᵀ - lse2)` (zero beyond `n`)
/// into `pb` and `dS = P ∘ (dO Vᵀ - D)` into `dsb`. `K' = K · scale · log2 e` is packed.
///
/// # Safety
/// `qa`/`doa` readable for `RQ` rows of stride `lda` (≥ d); `kt`/`vt` hold `n_eff/kc`
/// panels of `d*kc` floats; `pb`/`dsb` writable for `RQ` rows of stride `ldp ≥ n_eff`;
/// `l2`/`dd` have `RQ` entries; ISA of `S` available.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
unsafe fn p_ds_rows<S: Simd, const RQ: usize, const CQ: usize>(
    qa: *const f32,
    doa: *const f32,
    lda: usize,
    kt: *const f32,
    vt: *const f32,
    d: usize,
    n: usize,
    n_eff: usize,
    l2: &[f32],
    dd: &[f32],
    pb: *mut f32,
    dsb: *mut f32,
    ldp: usize,
) {
    let w = S::W;
    let kc = CQ * w;
    // SAFETY: forwarded contract.
    unsafe {
        let l2v: [S::V; RQ] = std::array::from_fn(|r| S::splat(l2[r]));
        let ddv: [S::V; RQ] = std::array::from_fn(|r| S::splat(dd[r]));
        for c0 in (0..n_eff).step_by(kc) {
            let s = dot_tile::<S, RQ, CQ>(qa, lda, kt.add(c0 * d), kc, d);
            for (r, sr) in s.iter().enumerate() {
                for (c, &x) in sr.iter().enumerate() {
                    let col = c0 + c * w;
                    let x = S::exp2(S::sub(x, l2v[r]));
                    let x = if col + w > n {
                        S::keep_first(x, n.saturating_sub(col), 0.0)
                    } else {
                        x
                    };
                    S::store(pb.add(r * ldp + col), x);
                }
            }
            let dpt = dot_tile::<S, RQ, CQ>(doa, lda, vt.add(c0 * d), kc, d);
            for (r, dr) in dpt.iter().enumerate() {
                for (c, &x) in dr.iter().enumerate() {
                    let col = c0 + c * w;
                    let pv = S::load(pb.add(r * ldp + col));
                    S::store(dsb.add(r * ldp + col), S::mul(pv, S::sub(x, ddv[r])));
                }
            }
        }
    }
}

/// Backward for one block of keys `k0 .. k0 + n` of one (b, h), looping over all query
/// blocks: accumulates dK and dV for the key block in registers/tile buffers and adds the
/// block's contribution `scale · dS K` to each query block of dQ under that block's lock.
///
/// Layout: queries as tile rows, keys as vector lanes (`K'ᵀ`, `Vᵀ` packed once per task);
/// Q and dO are used in place when no padding is needed.
///
/// # Safety
/// ISA of `S` available; `D` is 0 or `c.d`; `BWD_BK % (CQ*W) == 0`, `(CQ*W) % RP == 0`,
/// `BWD_BQ % RQ == 0`, `RQ % RP == 0`.
#[inline(always)]
unsafe fn bwd_task<
    S: Simd,
    const RQ: usize,
    const CQ: usize,
    const RP: usize,
    const CP: usize,
    const D: usize,
>(
    c: &BwdCtx<'_>,
    k0: usize,
    dk: &mut [f32],
    dv: &mut [f32],
    ws: &mut Workspace,
) {
    let d = if D != 0 { D } else { c.d };
    let w = S::W;
    let kc = CQ * w;
    let dp = round_up(d, w);
    let n = dk.len() / d;
    let n_eff = round_up(n, kc);
    let ldp = BWD_BK + LD_PAD;
    let bq = BWD_BQ;
    debug_assert!(BWD_BK.is_multiple_of(kc) && n_eff.is_multiple_of(RP) && dv.len() == n * d);

    let [kt, vt, kb, qb, dob, l2, dd, pb, dsb, acc] = ws.slices([
        n_eff * d,
        n_eff * d,
        n_eff * dp,
        bq * dp,
        bq * dp,
        bq,
        bq,
        bq * ldp,
        bq * ldp,
        // dK, dV and one dQ tile accumulators.
        2 * n_eff * dp + bq * dp,
    ]);
    let (dka, rest) = acc.split_at_mut(n_eff * dp);
    let (dva, dqt) = rest.split_at_mut(n_eff * dp);
    let kr = k0 * d..(k0 + n) * d;
    pack_panels(&c.k[kr.clone()], d, n, n_eff, kc, c.scale2, kt);
    pack_panels(&c.v[kr.clone()], d, n, n_eff, kc, 1.0, vt);
    let (kp, ldk) = rows_or_pad(&c.k[kr], d, dp, n, n_eff, kb);
    dka.fill(0.0);
    dva.fill(0.0);

    // Start at the diagonal block so concurrent tasks of one (b, h) rarely want the same
    // dQ lock at the same time.
    let nq = c.dq.len();
    let start = (k0 / BWD_BK) % nq;
    for qi in (start..nq).chain(0..start) {
        let q0 = qi * bq;
        let rows = bq.min(c.seq - q0);
        let rows_eff = round_up(rows, RQ);
        let r = q0 * d..(q0 + rows) * d;
        // Same padding decision for both, so both strides are equal.
        let (qp, ld) = rows_or_pad(&c.q[r.clone()], d, dp, rows, rows_eff, qb);
        let (dop, _) = rows_or_pad(&c.dout[r], d, dp, rows, rows_eff, dob);
        load_stats(c, q0, rows, &mut l2[..rows_eff], &mut dd[..rows_eff]);
        for g0 in (0..rows_eff).step_by(RQ) {
            // SAFETY: qp/dop have rows_eff ≥ g0+RQ rows of stride ld ≥ d; kt/vt hold
            // n_eff/kc panels; pb/dsb have bq ≥ rows_eff rows of ldp ≥ n_eff floats.
            unsafe {
                p_ds_rows::<S, RQ, CQ>(
                    qp.add(g0 * ld),
                    dop.add(g0 * ld),
                    ld,
                    kt.as_ptr(),
                    vt.as_ptr(),
                    d,
                    n,
                    n_eff,
                    &l2[g0..g0 + RQ],
                    &dd[g0..g0 + RQ],
                    pb.as_mut_ptr().add(g0 * ldp),
                    dsb.as_mut_ptr().add(g0 * ldp),
                    ldp,
                );
            }
        }
        // SAFETY: p/ds element (query t, key j) lives at t*ldp + j with j < n_eff ≤ ldp,
        // t < rows_eff ≤ bq; dop/qp have rows_eff rows of stride ld ≥ dp (ld == d only when
        // d == dp); kp has n_eff rows of stride ldk ≥ dp; dka/dva have n_eff rows and dqt
        // bq ≥ rows_eff rows of dp floats.
        unsafe {
            // dV += Pᵀ dO, dK += dSᵀ Q (rows = keys, reduction over the queries).
            acc_rows::<S, RP, CP>(
                n_eff,
                pb.as_ptr(),
                1,
                ldp,
                dop,
                ld,
                rows_eff,
                dva.as_mut_ptr(),
                dp,
                dp,
                Init::Load,
            );
            acc_rows::<S, RP, CP>(
                n_eff,
                dsb.as_ptr(),
                1,
                ldp,
                qp,
                ld,
                rows_eff,
                dka.as_mut_ptr(),
                dp,
                dp,
                Init::Load,
            );
            // dQ tile = dS K (rows = queries, reduction over the keys).
            acc_rows::<S, RP, CP>(
                rows_eff,
                dsb.as_ptr(),
                ldp,
                1,
                kp,
                ldk,
                n_eff,
                dqt.as_mut_ptr(),
                dp,
                dp,
                Init::Zero,
            );
        }
        let mut guard = c.dq[qi].lock().unwrap_or_else(|e| e.into_inner());
        for (orow, trow) in guard.chunks_exact_mut(d).zip(dqt.chunks_exact(dp)) {
            for (o, &x) in orow.iter_mut().zip(trow) {
                *o += x * c.scale;
            }
        }
    }
    // dK = scale · dSᵀ Q.
    for j in 0..n {
        for (o, &x) in dk[j * d..(j + 1) * d]
            .iter_mut()
            .zip(&dka[j * dp..j * dp + d])
        {
            *o = x * c.scale;
        }
        dv[j * d..(j + 1) * d].copy_from_slice(&dva[j * dp..j * dp + d]);
    }
}

type BwdFn = unsafe fn(&BwdCtx<'_>, usize, &mut [f32], &mut [f32], &mut Workspace);

fn bwd_scalar(c: &BwdCtx<'_>, k0: usize, dk: &mut [f32], dv: &mut [f32], ws: &mut Workspace) {
    // SAFETY: the scalar "ISA" is always available; constants satisfy bwd_task's contract.
    unsafe { bwd_task::<scalar::Scalar, 4, 4, 4, 4, 0>(c, k0, dk, dv, ws) }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn bwd_avx2<const D: usize>(
    c: &BwdCtx<'_>,
    k0: usize,
    dk: &mut [f32],
    dv: &mut [f32],
    ws: &mut Workspace,
) {
    // SAFETY: only called after checking AVX2+FMA support.
    unsafe { bwd_task::<avx2::Avx2, 4, 2, 4, 2, D>(c, k0, dk, dv, ws) }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,fma")]
unsafe fn bwd_avx512<const D: usize>(
    c: &BwdCtx<'_>,
    k0: usize,
    dk: &mut [f32],
    dv: &mut [f32],
    ws: &mut Workspace,
) {
    // SAFETY: only called after checking AVX-512F+FMA support.
    unsafe { bwd_task::<avx512::Avx512, 8, 2, 8, 2, D>(c, k0, dk, dv, ws) }
}

#[cfg_attr(
    not(target_arch = "x86_64"),
    allow(unused_variables, clippy::match_single_binding)
)]
fn select_bwd(path: KernelPath, d: usize) -> BwdFn {
    match path {
        #[cfg(target_arch = "x86_64")]
        KernelPath::Avx512 => match d {
            32 => bwd_avx512::<32>,
            64 => bwd_avx512::<64>,
            _ => bwd_avx512::<0>,
        },
        #[cfg(target_arch = "x86_64")]
        KernelPath::Avx2Fma => match d {
            32 => bwd_avx2::<32>,
            64 => bwd_avx2::<64>,
            _ => bwd_avx2::<0>,
        },
        _ => bwd_scalar,
    }
}

/// Backward entry point. Lengths were validated by the caller, `path` is supported,
/// `bh * seq * head_dim > 0`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn backward(
    path: KernelPath,
    inp: BwdInputs<'_>,
    shape: AttnShape,
    scale: f32,
    dq: &mut [f32],
    dk: &mut [f32],
    dv: &mut [f32],
) {
    let AttnShape {
        seq, head_dim: d, ..
    } = shape;
    let plane = seq * d;
    let kern = select_bwd(path, d);

    // D_i = dO_i · O_i  (O(bh·seq) extra memory).
    let mut delta = vec![0.0f32; inp.lse.len()];
    delta
        .par_chunks_mut(seq)
        .zip(inp.out.par_chunks(plane).zip(inp.dout.par_chunks(plane)))
        .for_each(|(dl, (o, g))| {
            for ((x, orow), grow) in dl.iter_mut().zip(o.chunks_exact(d)).zip(g.chunks_exact(d)) {
                *x = orow.iter().zip(grow).map(|(a, b)| a * b).sum();
            }
        });

    // dQ is accumulated block-wise by all key-block tasks of its (b, h).
    dq.par_chunks_mut(1 << 16).for_each(|c| c.fill(0.0));
    let dq_blocks: Vec<Vec<Mutex<&mut [f32]>>> = dq
        .chunks_mut(plane)
        .map(|p| p.chunks_mut(BWD_BQ * d).map(Mutex::new).collect())
        .collect();

    let ctx = |b: usize| {
        let r = b * plane..(b + 1) * plane;
        BwdCtx {
            q: &inp.q[r.clone()],
            k: &inp.k[r.clone()],
            v: &inp.v[r.clone()],
            dout: &inp.dout[r],
            lse: &inp.lse[b * seq..(b + 1) * seq],
            delta: &delta[b * seq..(b + 1) * seq],
            dq: &dq_blocks[b],
            seq,
            d,
            scale2: scale * LOG2E,
            scale,
        }
    };

    // Parallel over (bh × key blocks).
    let mut tasks = Vec::new();
    for (b, (dkb, dvb)) in dk.chunks_mut(plane).zip(dv.chunks_mut(plane)).enumerate() {
        for (ki, (dkc, dvc)) in dkb
            .chunks_mut(BWD_BK * d)
            .zip(dvb.chunks_mut(BWD_BK * d))
            .enumerate()
        {
            tasks.push((b, ki * BWD_BK, dkc, dvc));
        }
    }
    tasks
        .into_par_iter()
        .for_each_init(Workspace::default, |ws, (b, k0, dkc, dvc)| {
            let c = ctx(b);
            // SAFETY: `kern` matches `path`, whose ISA support the caller checked.
            unsafe { kern(&c, k0, dkc, dvc, ws) }
        });
}

// ---------------------------------------------------------------------------------------
// The softmax exponential alone (for measuring its share of the kernels' time)
// ---------------------------------------------------------------------------------------

/// `x[i] = 2^x[i]` by `S::exp2`, `W` lanes at a time (the tail through a zero-padded vector).
///
/// # Safety
/// The ISA of `S` available.
#[inline(always)]
unsafe fn exp2_lanes<S: Simd>(x: &mut [f32]) {
    let mut chunks = x.chunks_exact_mut(S::W);
    for c in &mut chunks {
        // SAFETY: `c` holds exactly W floats; ISA forwarded.
        unsafe { S::store(c.as_mut_ptr(), S::exp2(S::load(c.as_ptr()))) }
    }
    let tail = chunks.into_remainder();
    if !tail.is_empty() {
        let mut buf = vec![0.0f32; S::W];
        buf[..tail.len()].copy_from_slice(tail);
        // SAFETY: `buf` holds W floats; ISA forwarded.
        unsafe { S::store(buf.as_mut_ptr(), S::exp2(S::load(buf.as_ptr()))) }
        tail.copy_from_slice(&buf[..tail.len()]);
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,fma")]
unsafe fn exp2_avx512(x: &mut [f32]) {
    // SAFETY: only called after checking AVX-512F and FMA support.
    unsafe { exp2_lanes::<avx512::Avx512>(x) }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn exp2_avx2(x: &mut [f32]) {
    // SAFETY: only called after checking AVX2 and FMA support.
    unsafe { exp2_lanes::<avx2::Avx2>(x) }
}

/// The exponential of `path`'s softmax over `x`, in place. `path` is supported (checked by
/// the caller).
pub(crate) fn exp2_in_place(path: KernelPath, x: &mut [f32]) {
    match path {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: the caller checked the path's ISA (AVX-512F + FMA for both AVX-512 paths).
        KernelPath::Avx512 | KernelPath::Avx512Bf16 => unsafe { exp2_avx512(x) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: as above, AVX2 + FMA.
        KernelPath::Avx2Fma => unsafe { exp2_avx2(x) },
        // SAFETY: the portable and scalar backends need no ISA.
        KernelPath::ScalarBf16 => unsafe { exp2_lanes::<portable::Portable>(x) },
        _ => unsafe { exp2_lanes::<scalar::Scalar>(x) },
    }
}
