//! bf16-input FlashAttention-2 drivers (forward and backward).
//!
//! Same tiling, task split and online softmax as the f32 drivers in the parent module; only
//! the operand types of the matrix products change. bf16 values travel as `u16` bit
//! patterns. Every product is computed by [`Bf16Simd::dot2`], which multiplies *pairs* of
//! bf16 values and accumulates both products into one f32 lane (the semantics of
//! `VDPBF16PS`: `acc += a.hi·b.hi`, then `acc += a.lo·b.lo`, each product exact in f32, each
//! sum rounded to f32). So one operand of every product is laid out as "pair panels": lane
//! `i` of a vector holds the two bf16 values that are adjacent along the reduction axis.
//!
//! Which operands are bf16 (everything else is f32):
//! * `S = Q Kᵀ` and `dP = dO Vᵀ`: the inputs themselves (pairs along head_dim). Scores are
//!   f32 and are multiplied by `scale·log2 e` in f32 after the product (Q is NOT pre-scaled
//!   as in the f32 path, which would add a rounding of Q).
//! * `O += P V` (forward) and `dV += Pᵀ dO` (backward): `P = 2^(s - m)` is computed in f32,
//!   its f32 value goes into the softmax row sum `l`, and it is rounded to bf16 only as the
//!   left operand of the product (as the FlashAttention bf16 kernels and PyTorch's CPU flash
//!   attention do: the second GEMM runs on the low-precision `P`).
//! * `dK += dSᵀ Q` and `dQ += dS K`: `dS = P ∘ (dP − D)` is computed in f32 (with `D` from
//!   the f32 `out`) and rounded to bf16 as the left operand of both products.
//! * Statistics (`m`, `l`, `lse`, `D`) and all accumulators are f32.
//!
//! The roundings of `P` and `dS` use round-to-nearest-even and flush subnormal results to
//! zero, which is what `VCVTNEPS2BF16` does; the portable implementation mirrors that
//! (and treats subnormal bf16 operands of a product as zero, as `VDPBF16PS` does), so the two
//! implementations run the same arithmetic.

use super::{
    BWD_BK, BWD_BQ, FWD_BK, FWD_BQ, Init, LD_PAD, LN2, LOG2E, NEG_INF, Simd, portable, round_up,
};
use crate::{AttnShape, KernelPath, bf16_to_f32};
use rayon::prelude::*;
use std::sync::Mutex;

/// A [`Simd`] backend that also multiplies bf16 pairs.
///
/// # Safety
/// As [`Simd`]; for the AVX-512 implementation the methods additionally need AVX512-BF16.
/// Pair pointers are `u16` pointers with no alignment requirement beyond that of `u16`.
pub(crate) trait Bf16Simd: Simd {
    /// `W` lanes of 32 bits, each holding two bf16 (element 0 in the low half).
    type P: Copy;
    /// Loads `W` pairs (`2W` consecutive `u16`).
    unsafe fn load_pairs(p: *const u16) -> Self::P;
    /// Broadcasts the pair `p[0], p[1]` to every lane.
    unsafe fn splat_pair(p: *const u16) -> Self::P;
    /// Per lane: `acc + a.hi·b.hi`, rounded, then `+ a.lo·b.lo`, rounded (`VDPBF16PS`).
    unsafe fn dot2(acc: Self::V, a: Self::P, b: Self::P) -> Self::V;
    /// Rounds `lo` and `hi` to bf16 and stores `W` pairs: `p[2i] = lo[i]`, `p[2i+1] = hi[i]`.
    unsafe fn store_pairs(p: *mut u16, lo: Self::V, hi: Self::V);
    /// Rounds to bf16 and stores `W` consecutive `u16`.
    unsafe fn store_bf16(p: *mut u16, x: Self::V);
}

/// Register tile of `A · Bᵀ` over bf16 pairs: returns
/// `acc[r][c] = Σ_{p<dh} dot2(a[r*lda + 2p ..+2], bt[p*ldb + c*2W ..])`.
///
/// # Safety
/// `a` readable for `(R-1)*lda + 2*dh` `u16`, `bt` readable for `(dh-1)*ldb + 2*C*W` `u16`;
/// the ISA of `S` available.
#[inline(always)]
unsafe fn dot2_tile<S: Bf16Simd, const R: usize, const C: usize>(
    a: *const u16,
    lda: usize,
    bt: *const u16,
    ldb: usize,
    dh: usize,
) -> [[S::V; C]; R] {
    // SAFETY: reads stay in the ranges promised by the caller; ISA forwarded.
    unsafe {
        let mut acc = [[S::zero(); C]; R];
        for p in 0..dh {
            let brow = bt.add(p * ldb);
            let b: [S::P; C] = std::array::from_fn(|c| S::load_pairs(brow.add(c * 2 * S::W)));
            for (r, accr) in acc.iter_mut().enumerate() {
                let av = S::splat_pair(a.add(r * lda + 2 * p));
                for (x, &bv) in accr.iter_mut().zip(b.iter()) {
                    *x = S::dot2(*x, av, bv);
                }
            }
        }
        acc
    }
}

/// `out[R × C·W] = init(out) + Σ_{t<np} dot2(p(r, t), b[t*ldb + c*2W ..])`, where the pair
/// `p(r, t)` is read at `p + r*prs + t*pcs` (two `u16`).
///
/// # Safety
/// Every `p + r*prs + t*pcs` (r<R, t<np) readable for 2 `u16`; `b` readable for
/// `(np-1)*ldb + 2*C*W` `u16`; `out` readable/writable for `(R-1)*ldo + C*W` floats;
/// `Init::Scale(alpha)` has at least `R` entries; the ISA of `S` available.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
unsafe fn acc2_tile<S: Bf16Simd, const R: usize, const C: usize>(
    p: *const u16,
    prs: usize,
    pcs: usize,
    b: *const u16,
    ldb: usize,
    np: usize,
    out: *mut f32,
    ldo: usize,
    init: Init<'_>,
) {
    // SAFETY: accesses stay in the ranges promised by the caller; ISA forwarded.
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
        for t in 0..np {
            let brow = b.add(t * ldb);
            let bv: [S::P; C] = std::array::from_fn(|c| S::load_pairs(brow.add(c * 2 * S::W)));
            for (r, accr) in acc.iter_mut().enumerate() {
                let pv = S::splat_pair(p.add(r * prs + t * pcs));
                for (x, &v) in accr.iter_mut().zip(bv.iter()) {
                    *x = S::dot2(*x, pv, v);
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

/// [`acc2_tile`] over `rows` (a multiple of `RP`) × `dp` (a multiple of `W`) outputs.
///
/// # Safety
/// As [`acc2_tile`] for every block.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
unsafe fn acc2_rows<S: Bf16Simd, const RP: usize, const CP: usize>(
    rows: usize,
    p: *const u16,
    prs: usize,
    pcs: usize,
    b: *const u16,
    ldb: usize,
    np: usize,
    out: *mut f32,
    ldo: usize,
    dp: usize,
    init: Init<'_>,
) {
    // SAFETY: forwarded contract; each block stays inside `rows × dp` of `out` and the
    // `np` pair rows of `b`.
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
                acc2_tile::<S, RP, CP>(pr, prs, pcs, b.add(2 * c0), ldb, np, or.add(c0), ldo, al);
                c0 += CP * S::W;
            }
            while c0 < dp {
                acc2_tile::<S, RP, 1>(pr, prs, pcs, b.add(2 * c0), ldb, np, or.add(c0), ldo, al);
                c0 += S::W;
            }
        }
    }
}

/// Packs rows `src[j*d ..+d]` (`j < n`) into panels of `lanes` rows with pairs along the row:
/// `dst[((j/lanes)*dh + p)*2*lanes + 2*(j%lanes) + e] = src[j*d + 2p + e]` (`dh = ⌈d/2⌉`),
/// zero beyond `d` and for rows `n..n_eff`.
fn pack_pair_panels(src: &[u16], d: usize, n: usize, n_eff: usize, lanes: usize, dst: &mut [u16]) {
    let dh = d.div_ceil(2);
    for (pi, panel) in dst[..n_eff * 2 * dh]
        .chunks_exact_mut(2 * dh * lanes)
        .enumerate()
    {
        for (p, prow) in panel.chunks_exact_mut(2 * lanes).enumerate() {
            for (jj, pair) in prow.chunks_exact_mut(2).enumerate() {
                let j = pi * lanes + jj;
                for (e, o) in pair.iter_mut().enumerate() {
                    let kk = 2 * p + e;
                    *o = if j < n && kk < d { src[j * d + kk] } else { 0 };
                }
            }
        }
    }
}

/// Packs rows pairwise: `dst[(t*dp + c)*2 + e] = src[(2t+e)*d + c]` for `t < n_eff/2`,
/// `c < dp`; zero for `c ≥ d` or rows `≥ n`. (Pairs along the rows, for products that reduce
/// over the rows.)
fn pack_row_pairs(src: &[u16], d: usize, dp: usize, n: usize, n_eff: usize, dst: &mut [u16]) {
    for (t, out) in dst[..n_eff * dp].chunks_exact_mut(2 * dp).enumerate() {
        let (j0, j1) = (2 * t, 2 * t + 1);
        let r0 = if j0 < n {
            &src[j0 * d..j0 * d + d]
        } else {
            &[][..]
        };
        let r1 = if j1 < n {
            &src[j1 * d..j1 * d + d]
        } else {
            &[][..]
        };
        for (c, pair) in out.chunks_exact_mut(2).enumerate() {
            pair[0] = r0.get(c).copied().unwrap_or(0);
            pair[1] = r1.get(c).copied().unwrap_or(0);
        }
    }
}

/// `n` rows of `d` bf16 as (pointer, row stride) readable as `n_eff` rows of `d2 ≥ d`: the
/// original slice when no padding is needed, else a zero-padded copy in `buf`.
fn rows_or_pad16(
    src: &[u16],
    d: usize,
    d2: usize,
    n: usize,
    n_eff: usize,
    buf: &mut [u16],
) -> (*const u16, usize) {
    if d == d2 && n == n_eff {
        return (src.as_ptr(), d);
    }
    for (j, row) in buf[..n_eff * d2].chunks_exact_mut(d2).enumerate() {
        if j < n {
            row[..d].copy_from_slice(&src[j * d..(j + 1) * d]);
            row[d..].fill(0);
        } else {
            row.fill(0);
        }
    }
    (buf.as_ptr(), d2)
}

/// Per-thread scratch buffers of the bf16 drivers, reused across tasks.
#[derive(Default)]
pub(crate) struct Workspace16 {
    f: [Vec<f32>; 6],
    h: [Vec<u16>; 11],
}

impl Workspace16 {
    /// `N` f32 and `M` u16 disjoint scratch slices of the requested lengths.
    fn slices<const N: usize, const M: usize>(
        &mut self,
        fl: [usize; N],
        hl: [usize; M],
    ) -> ([&mut [f32]; N], [&mut [u16]; M]) {
        let mut fi = self.f.iter_mut();
        let f = std::array::from_fn(|i| {
            let v = fi.next().expect("Workspace16 has too few f32 buffers");
            if v.len() < fl[i] {
                v.resize(fl[i], 0.0);
            }
            &mut v[..fl[i]]
        });
        let mut hi = self.h.iter_mut();
        let h = std::array::from_fn(|i| {
            let v = hi.next().expect("Workspace16 has too few u16 buffers");
            if v.len() < hl[i] {
                v.resize(hl[i], 0);
            }
            &mut v[..hl[i]]
        });
        (f, h)
    }
}

// ---------------------------------------------------------------------------------------
// Forward
// ---------------------------------------------------------------------------------------

/// Lanes of both bf16 paths (`S::W` of the AVX-512 and the portable backends): the width the
/// forward's V panels are packed to, once per (b, h), before the tasks start.
const BF16_W: usize = 16;

/// Rows of V packed ahead: `round_up(seq, V_ROWS)` covers every key block's `n_eff`
/// (`FWD_BK` and the tasks' `RQ` divide it).
const V_ROWS: usize = 8;

/// One bf16 forward task: a block of query rows of one (b, h).
pub(crate) struct FwdTask16<'a> {
    q: &'a [u16],
    k: &'a [u16],
    /// V of this (b, h) as key-pair rows ([`pack_row_pairs`] with `dp = round_up(d, BF16_W)`,
    /// `round_up(seq, V_ROWS)` rows, zero-padded): shared by every query block of the head.
    vp: &'a [u16],
    seq: usize,
    d: usize,
    q0: usize,
    /// `scale * log2(e)`, applied to the f32 scores.
    scale2: f32,
}

/// bf16 forward over one query block (same structure as the f32 `fwd_task`: `Sᵀ = K Qᵀ`
/// with keys as tile rows and queries as lanes, K read in place).
///
/// # Safety
/// The ISA of `S` available; `D` is 0 or `t.d`; `RQ` even, `FWD_BK % RQ == 0`,
/// `(CQ*W) % RP == 0`.
#[inline(always)]
unsafe fn fwd_task16<
    S: Bf16Simd,
    const RQ: usize,
    const CQ: usize,
    const RP: usize,
    const CP: usize,
    const D: usize,
>(
    t: &FwdTask16<'_>,
    out: &mut [f32],
    lse: &mut [f32],
    ws: &mut Workspace16,
) {
    let d = if D != 0 { D } else { t.d };
    let w = S::W;
    let qc = CQ * w;
    let dp = round_up(d, w);
    let dh = d.div_ceil(2);
    let d2 = 2 * dh;
    let rows = lse.len();
    let rows_eff = round_up(rows, qc);
    let bk = FWD_BK;
    debug_assert!(RQ.is_multiple_of(2) && bk.is_multiple_of(RQ) && qc.is_multiple_of(RP));
    debug_assert!(w == BF16_W && V_ROWS.is_multiple_of(RQ) && bk.is_multiple_of(V_ROWS));
    debug_assert!(t.vp.len() >= round_up(t.seq, V_ROWS) * dp);

    let ([ob, m, l, st, al], [qt, kb, pt]) = ws.slices(
        [rows_eff * dp, rows_eff, rows_eff, bk * qc, qc],
        [rows_eff * d2, bk * d2, bk * qc],
    );
    pack_pair_panels(&t.q[t.q0 * d..(t.q0 + rows) * d], d, rows, rows_eff, qc, qt);
    ob.fill(0.0);
    m.fill(NEG_INF);
    l.fill(0.0);

    let mut k0 = 0;
    while k0 < t.seq {
        let n = bk.min(t.seq - k0);
        let n_eff = round_up(n, RQ);
        let kr = k0 * d..(k0 + n) * d;
        let (kp, ldk) = rows_or_pad16(&t.k[kr], d, d2, n, n_eff, kb);
        // This block's pair rows of the pre-packed V (k0 is even).
        let vt = &t.vp[k0 * dp..];
        for c0 in (0..rows_eff).step_by(qc) {
            // SAFETY: kp has n_eff rows of stride ldk ≥ d2 u16; qt holds rows_eff/qc panels
            // of dh·2qc u16; vt holds n_eff/2 pair rows of 2dp u16 (vp is padded to
            // round_up(seq, V_ROWS) ≥ k0 + n_eff rows); st has n_eff ≤ bk rows of
            // qc floats and pt n_eff/2 rows of 2qc u16; m, l have rows_eff ≥ c0 + qc entries,
            // al has qc; ob has rows_eff rows of dp floats. ISA of S guaranteed by the caller.
            unsafe {
                let qpanel = qt.as_ptr().add(c0 * d2);
                let sp = st.as_mut_ptr();
                let sc = S::splat(t.scale2);
                let mut vmax = [S::splat(NEG_INF); CQ];
                for j0 in (0..n_eff).step_by(RQ) {
                    let acc = dot2_tile::<S, RQ, CQ>(kp.add(j0 * ldk), ldk, qpanel, 2 * qc, dh);
                    for (r, accr) in acc.iter().enumerate() {
                        let valid = j0 + r < n;
                        for (c, (&x, vm)) in accr.iter().zip(vmax.iter_mut()).enumerate() {
                            let x = if valid {
                                S::mul(x, sc)
                            } else {
                                S::splat(NEG_INF)
                            };
                            *vm = S::max(*vm, x);
                            S::store(sp.add((j0 + r) * qc + c * w), x);
                        }
                    }
                }
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
                // P = 2^(Sᵀ - m) in f32 (summed into l), stored as bf16 pairs of keys.
                let mut sum = [S::zero(); CQ];
                let ptp = pt.as_mut_ptr();
                for tp in 0..n_eff / 2 {
                    let r0 = sp.add(2 * tp * qc);
                    let r1 = sp.add((2 * tp + 1) * qc);
                    for (c, (s, &mn)) in sum.iter_mut().zip(mnew.iter()).enumerate() {
                        let p0 = S::exp2(S::sub(S::load(r0.add(c * w)), mn));
                        let p1 = S::exp2(S::sub(S::load(r1.add(c * w)), mn));
                        *s = S::add(S::add(*s, p0), p1);
                        S::store_pairs(ptp.add(2 * (tp * qc + c * w)), p0, p1);
                    }
                }
                for (c, &s) in sum.iter().enumerate() {
                    let lv = S::load(lp.add(c * w));
                    S::store(lp.add(c * w), S::fma(lv, S::load(ap.add(c * w)), s));
                }
                // O = alpha ∘ O + bf16(P) V: pair (query i, key pair tp) at pt[2(tp·qc + i)].
                acc2_rows::<S, RP, CP>(
                    qc,
                    pt.as_ptr(),
                    2,
                    2 * qc,
                    vt.as_ptr(),
                    2 * dp,
                    n_eff / 2,
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

type FwdFn16 = unsafe fn(&FwdTask16<'_>, &mut [f32], &mut [f32], &mut Workspace16);

fn fwd16_portable(t: &FwdTask16<'_>, out: &mut [f32], lse: &mut [f32], ws: &mut Workspace16) {
    // SAFETY: the portable backend needs no ISA; the constants satisfy the contract.
    unsafe { fwd_task16::<portable::Portable, 4, 1, 4, 1, 0>(t, out, lse, ws) }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bf16,fma")]
unsafe fn fwd16_avx512<const D: usize>(
    t: &FwdTask16<'_>,
    out: &mut [f32],
    lse: &mut [f32],
    ws: &mut Workspace16,
) {
    // SAFETY: only called after checking AVX-512F, AVX512-BF16 and FMA support.
    unsafe { fwd_task16::<super::avx512::Avx512, 8, 2, 8, 2, D>(t, out, lse, ws) }
}

#[cfg_attr(
    not(target_arch = "x86_64"),
    allow(unused_variables, clippy::match_single_binding)
)]
fn select_fwd16(path: KernelPath, d: usize) -> FwdFn16 {
    match path {
        #[cfg(target_arch = "x86_64")]
        KernelPath::Avx512Bf16 => match d {
            32 => fwd16_avx512::<32>,
            64 => fwd16_avx512::<64>,
            _ => fwd16_avx512::<0>,
        },
        _ => fwd16_portable,
    }
}

/// bf16 forward entry point. Lengths were validated by the caller, `path` is a supported
/// bf16 path, `head_dim ≥ 1`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn forward_bf16(
    path: KernelPath,
    q: &[u16],
    k: &[u16],
    v: &[u16],
    shape: AttnShape,
    scale: f32,
    out: &mut [f32],
    lse: &mut [f32],
) {
    let AttnShape {
        seq, head_dim: d, ..
    } = shape;
    let kern = select_fwd16(path, d);
    let plane = seq * d;
    // V as key-pair rows, packed once per (b, h) rather than by every query block.
    let dp = round_up(d, BF16_W);
    let vplane = round_up(seq, V_ROWS) * dp;
    let mut vp = vec![0u16; shape.bh * vplane];
    vp.par_chunks_mut(vplane)
        .zip(v.par_chunks(plane))
        .for_each(|(dst, src)| pack_row_pairs(src, d, dp, seq, round_up(seq, V_ROWS), dst));
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
        .for_each_init(Workspace16::default, |ws, (b, q0, oc, lc)| {
            let r = b * plane..(b + 1) * plane;
            let t = FwdTask16 {
                q: &q[r.clone()],
                k: &k[r],
                vp: &vp[b * vplane..(b + 1) * vplane],
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

/// Read-only bf16 backward inputs (full buffers).
pub(crate) struct BwdInputs16<'a> {
    pub q: &'a [u16],
    pub k: &'a [u16],
    pub v: &'a [u16],
    pub out: &'a [f32],
    pub dout: &'a [u16],
    pub lse: &'a [f32],
}

/// bf16 backward inputs restricted to one (b, h).
pub(crate) struct BwdCtx16<'a> {
    q: &'a [u16],
    k: &'a [u16],
    v: &'a [u16],
    dout: &'a [u16],
    lse: &'a [f32],
    /// `D_i = dout_i · out_i` (f32).
    delta: &'a [f32],
    /// Q and dO of this (b, h) as query-pair rows ([`pack_row_pairs`], `dp = round_up(d,
    /// BF16_W)`, `round_up(seq, V_ROWS)` rows, zero-padded), packed once for every key block.
    qrp: &'a [u16],
    dorp: &'a [u16],
    /// dQ of this (b, h) in blocks of `BWD_BQ` rows, each behind its own lock.
    dq: &'a [Mutex<&'a mut [f32]>],
    seq: usize,
    d: usize,
    scale2: f32,
    scale: f32,
}

/// For `RQ` query rows × `n_eff` keys: `P = 2^(scale2·Q Kᵀ - l2)` (zero beyond key `n`) and
/// `dS = P ∘ (dO Vᵀ - D)` in f32, stored as bf16: `P` and `dS` as pairs of query rows
/// (`pp`/`dsp`, pair row `t` at `2t·ldp`, key `j` at `+2j`) and `dS` as plain rows (`dsr`,
/// row `r` at `r·ldp`).
///
/// # Safety
/// `qa`/`doa` readable for `RQ` rows of stride `lda ≥ 2⌈d/2⌉`; `kt`/`vt` hold `n_eff/kc`
/// pair panels; `pp`/`dsp`/`dsr` writable for `RQ` rows of `ldp ≥ n_eff` u16 (as laid out
/// above); `l2`/`dd` have `RQ` entries; `RQ` even; ISA of `S` available.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
unsafe fn p_ds_rows16<S: Bf16Simd, const RQ: usize, const CQ: usize>(
    qa: *const u16,
    doa: *const u16,
    lda: usize,
    kt: *const u16,
    vt: *const u16,
    dh: usize,
    n: usize,
    n_eff: usize,
    l2: &[f32],
    dd: &[f32],
    scale2: f32,
    pp: *mut u16,
    dsp: *mut u16,
    dsr: *mut u16,
    ldp: usize,
) {
    let w = S::W;
    let kc = CQ * w;
    // SAFETY: forwarded contract.
    unsafe {
        let sc = S::splat(scale2);
        let l2v: [S::V; RQ] = std::array::from_fn(|r| S::splat(l2[r]));
        let ddv: [S::V; RQ] = std::array::from_fn(|r| S::splat(dd[r]));
        for c0 in (0..n_eff).step_by(kc) {
            let s = dot2_tile::<S, RQ, CQ>(qa, lda, kt.add(c0 * 2 * dh), 2 * kc, dh);
            let mut p = [[S::zero(); CQ]; RQ];
            for (r, (sr, pr)) in s.iter().zip(p.iter_mut()).enumerate() {
                for (c, (&x, pv)) in sr.iter().zip(pr.iter_mut()).enumerate() {
                    let col = c0 + c * w;
                    let x = S::exp2(S::sub(S::mul(x, sc), l2v[r]));
                    *pv = if col + w > n {
                        S::keep_first(x, n.saturating_sub(col), 0.0)
                    } else {
                        x
                    };
                }
            }
            let dpt = dot2_tile::<S, RQ, CQ>(doa, lda, vt.add(c0 * 2 * dh), 2 * kc, dh);
            let mut ds = [[S::zero(); CQ]; RQ];
            for (r, (dr, dsr_)) in dpt.iter().zip(ds.iter_mut()).enumerate() {
                for (c, (&x, o)) in dr.iter().zip(dsr_.iter_mut()).enumerate() {
                    *o = S::mul(p[r][c], S::sub(x, ddv[r]));
                    S::store_bf16(dsr.add(r * ldp + c0 + c * w), *o);
                }
            }
            for tq in 0..RQ / 2 {
                for c in 0..CQ {
                    let off = 2 * (tq * ldp + c0 + c * w);
                    S::store_pairs(pp.add(off), p[2 * tq][c], p[2 * tq + 1][c]);
                    S::store_pairs(dsp.add(off), ds[2 * tq][c], ds[2 * tq + 1][c]);
                }
            }
        }
    }
}

/// bf16 backward for keys `k0 .. k0 + n` of one (b, h) (same structure as the f32
/// `bwd_task`: queries as tile rows, keys as lanes; dK, dV accumulated locally; the block's
/// `scale · dS K` added to each dQ block under its lock).
///
/// # Safety
/// ISA of `S` available; `D` is 0 or `c.d`; `RQ` even, `BWD_BK % (CQ*W) == 0`,
/// `(CQ*W) % RP == 0`, `BWD_BQ % RQ == 0`, `RQ % RP == 0`.
#[inline(always)]
unsafe fn bwd_task16<
    S: Bf16Simd,
    const RQ: usize,
    const CQ: usize,
    const RP: usize,
    const CP: usize,
    const D: usize,
>(
    c: &BwdCtx16<'_>,
    k0: usize,
    dk: &mut [f32],
    dv: &mut [f32],
    ws: &mut Workspace16,
) {
    let d = if D != 0 { D } else { c.d };
    let w = S::W;
    let kc = CQ * w;
    let dp = round_up(d, w);
    let dh = d.div_ceil(2);
    let d2 = 2 * dh;
    let n = dk.len() / d;
    let n_eff = round_up(n, kc);
    let ldp = BWD_BK + LD_PAD;
    let bq = BWD_BQ;
    debug_assert!(RQ.is_multiple_of(2) && BWD_BK.is_multiple_of(kc) && n_eff.is_multiple_of(RP));

    debug_assert!(w == BF16_W && V_ROWS.is_multiple_of(RQ) && bq.is_multiple_of(V_ROWS));
    debug_assert!(c.qrp.len() >= round_up(c.seq, V_ROWS) * dp && c.dorp.len() == c.qrp.len());
    let ([l2, dd, acc], [kt, vt, kr, qb, dob, pp, dsp, dsr]) = ws.slices(
        [bq, bq, 2 * n_eff * dp + bq * dp],
        [
            n_eff * d2,
            n_eff * d2,
            n_eff * dp,
            bq * d2,
            bq * d2,
            bq * ldp,
            bq * ldp,
            bq * ldp,
        ],
    );
    let (dka, rest) = acc.split_at_mut(n_eff * dp);
    let (dva, dqt) = rest.split_at_mut(n_eff * dp);
    let krange = k0 * d..(k0 + n) * d;
    pack_pair_panels(&c.k[krange.clone()], d, n, n_eff, kc, kt);
    pack_pair_panels(&c.v[krange.clone()], d, n, n_eff, kc, vt);
    pack_row_pairs(&c.k[krange], d, dp, n, n_eff, kr);
    dka.fill(0.0);
    dva.fill(0.0);

    let nq = c.dq.len();
    let start = (k0 / BWD_BK) % nq;
    for qi in (start..nq).chain(0..start) {
        let q0 = qi * bq;
        let rows = bq.min(c.seq - q0);
        let rows_eff = round_up(rows, RQ);
        let r = q0 * d..(q0 + rows) * d;
        let (qp, ld) = rows_or_pad16(&c.q[r.clone()], d, d2, rows, rows_eff, qb);
        let (dop, _) = rows_or_pad16(&c.dout[r], d, d2, rows, rows_eff, dob);
        // This block's pair rows of the pre-packed Q and dO (q0 is even).
        let (qr, dor) = (&c.qrp[q0 * dp..], &c.dorp[q0 * dp..]);
        for (i, (l, x)) in l2[..rows_eff]
            .iter_mut()
            .zip(dd[..rows_eff].iter_mut())
            .enumerate()
        {
            if i < rows {
                *l = c.lse[q0 + i] * LOG2E;
                *x = c.delta[q0 + i];
            } else {
                *l = f32::INFINITY;
                *x = 0.0;
            }
        }
        for g0 in (0..rows_eff).step_by(RQ) {
            // SAFETY: qp/dop have rows_eff ≥ g0+RQ rows of stride ld ≥ d2; kt/vt hold
            // n_eff/kc panels; pp/dsp hold bq/2 pair rows of 2·ldp u16 and dsr bq rows of
            // ldp u16, with ldp ≥ n_eff and g0 + RQ ≤ rows_eff ≤ bq (g0 even).
            unsafe {
                p_ds_rows16::<S, RQ, CQ>(
                    qp.add(g0 * ld),
                    dop.add(g0 * ld),
                    ld,
                    kt.as_ptr(),
                    vt.as_ptr(),
                    dh,
                    n,
                    n_eff,
                    &l2[g0..g0 + RQ],
                    &dd[g0..g0 + RQ],
                    c.scale2,
                    pp.as_mut_ptr().add(g0 * ldp),
                    dsp.as_mut_ptr().add(g0 * ldp),
                    dsr.as_mut_ptr().add(g0 * ldp),
                    ldp,
                );
            }
        }
        // SAFETY: pair (query pair t, key j) of pp/dsp lives at 2(t·ldp + j) with
        // t < rows_eff/2, j < n_eff ≤ ldp; pair (query i, key pair t) of dsr at i·ldp + 2t;
        // qr/dor have rows_eff/2 pair rows of 2dp u16 (padded to round_up(seq, V_ROWS) ≥
        // q0 + rows_eff rows) and kr n_eff/2; dka/dva have n_eff
        // rows and dqt bq ≥ rows_eff rows of dp floats.
        unsafe {
            // dV += bf16(P)ᵀ dO, dK += bf16(dS)ᵀ Q (rows = keys, reduction over query pairs).
            acc2_rows::<S, RP, CP>(
                n_eff,
                pp.as_ptr(),
                2,
                2 * ldp,
                dor.as_ptr(),
                2 * dp,
                rows_eff / 2,
                dva.as_mut_ptr(),
                dp,
                dp,
                Init::Load,
            );
            acc2_rows::<S, RP, CP>(
                n_eff,
                dsp.as_ptr(),
                2,
                2 * ldp,
                qr.as_ptr(),
                2 * dp,
                rows_eff / 2,
                dka.as_mut_ptr(),
                dp,
                dp,
                Init::Load,
            );
            // dQ tile = bf16(dS) K (rows = queries, reduction over key pairs).
            acc2_rows::<S, RP, CP>(
                rows_eff,
                dsr.as_ptr(),
                ldp,
                2,
                kr.as_ptr(),
                2 * dp,
                n_eff / 2,
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

type BwdFn16 = unsafe fn(&BwdCtx16<'_>, usize, &mut [f32], &mut [f32], &mut Workspace16);

fn bwd16_portable(
    c: &BwdCtx16<'_>,
    k0: usize,
    dk: &mut [f32],
    dv: &mut [f32],
    ws: &mut Workspace16,
) {
    // SAFETY: the portable backend needs no ISA; the constants satisfy the contract.
    unsafe { bwd_task16::<portable::Portable, 4, 1, 4, 1, 0>(c, k0, dk, dv, ws) }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bf16,fma")]
unsafe fn bwd16_avx512<const D: usize>(
    c: &BwdCtx16<'_>,
    k0: usize,
    dk: &mut [f32],
    dv: &mut [f32],
    ws: &mut Workspace16,
) {
    // SAFETY: only called after checking AVX-512F, AVX512-BF16 and FMA support.
    unsafe { bwd_task16::<super::avx512::Avx512, 8, 2, 8, 2, D>(c, k0, dk, dv, ws) }
}

#[cfg_attr(
    not(target_arch = "x86_64"),
    allow(unused_variables, clippy::match_single_binding)
)]
fn select_bwd16(path: KernelPath, d: usize) -> BwdFn16 {
    match path {
        #[cfg(target_arch = "x86_64")]
        KernelPath::Avx512Bf16 => match d {
            32 => bwd16_avx512::<32>,
            64 => bwd16_avx512::<64>,
            _ => bwd16_avx512::<0>,
        },
        _ => bwd16_portable,
    }
}

/// bf16 backward entry point. Lengths were validated by the caller, `path` is a supported
/// bf16 path, `bh * seq * head_dim > 0`.
pub(crate) fn backward_bf16(
    path: KernelPath,
    inp: BwdInputs16<'_>,
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
    let kern = select_bwd16(path, d);

    // D_i = dO_i · O_i in f32 (dO decoded from bf16, O the f32 forward output).
    let mut delta = vec![0.0f32; inp.lse.len()];
    delta
        .par_chunks_mut(seq)
        .zip(inp.out.par_chunks(plane).zip(inp.dout.par_chunks(plane)))
        .for_each(|(dl, (o, g))| {
            for ((x, orow), grow) in dl.iter_mut().zip(o.chunks_exact(d)).zip(g.chunks_exact(d)) {
                *x = orow
                    .iter()
                    .zip(grow)
                    .map(|(&a, &b)| a * bf16_to_f32(b))
                    .sum();
            }
        });

    // Q and dO as query-pair rows, packed once per (b, h) rather than by every key block.
    let dp = round_up(d, BF16_W);
    let rplane = round_up(seq, V_ROWS) * dp;
    let pack = |src: &[u16]| {
        let mut dst = vec![0u16; shape.bh * rplane];
        dst.par_chunks_mut(rplane)
            .zip(src.par_chunks(plane))
            .for_each(|(o, x)| pack_row_pairs(x, d, dp, seq, round_up(seq, V_ROWS), o));
        dst
    };
    let (qrp, dorp) = (pack(inp.q), pack(inp.dout));

    dq.par_chunks_mut(1 << 16).for_each(|c| c.fill(0.0));
    let dq_blocks: Vec<Vec<Mutex<&mut [f32]>>> = dq
        .chunks_mut(plane)
        .map(|p| p.chunks_mut(BWD_BQ * d).map(Mutex::new).collect())
        .collect();

    let ctx = |b: usize| {
        let r = b * plane..(b + 1) * plane;
        BwdCtx16 {
            q: &inp.q[r.clone()],
            k: &inp.k[r.clone()],
            v: &inp.v[r.clone()],
            dout: &inp.dout[r],
            lse: &inp.lse[b * seq..(b + 1) * seq],
            delta: &delta[b * seq..(b + 1) * seq],
            qrp: &qrp[b * rplane..(b + 1) * rplane],
            dorp: &dorp[b * rplane..(b + 1) * rplane],
            dq: &dq_blocks[b],
            seq,
            d,
            scale2: scale * LOG2E,
            scale,
        }
    };

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
        .for_each_init(Workspace16::default, |ws, (b, k0, dkc, dvc)| {
            let c = ctx(b);
            // SAFETY: `kern` matches `path`, whose ISA support the caller checked.
            unsafe { kern(&c, k0, dkc, dvc, ws) }
        });
}
