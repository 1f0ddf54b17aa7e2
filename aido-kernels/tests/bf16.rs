//! bf16 kernels: every bf16 path present on this machine against an f64 formula evaluated
//! on the bf16 inputs (decoded exactly), the AVX512-BF16 path against the portable reference
//! path, the conversion helpers, error reporting and thread-count independence.
//!
//! A bf16 path the CPU lacks is reported on stderr as `NOT RUN: <path> ...` (written
//! straight to the process's stderr, so it shows even when the test passes) and contributes
//! no assertion.
//!
//! Tolerances against the f64 formula. The kernels round two intermediates to bf16 (8
//! significant bits, relative rounding error ≤ 2⁻⁹): the probabilities `P` before `P·V` /
//! `Pᵀ·dO`, and `dS` before `dS·K` / `dSᵀ·Q`. Everything else is f32 on exact bf16 products.
//! * `out_i = Σ_j bf16(p_ij) v_j / l_i` with `l_i = Σ_j p_ij` unrounded: each term is off by
//!   at most `2⁻⁹·p_ij·|v_j|`, so `|err| ≤ 2⁻⁹·max|v|` in the worst case (all roundings in
//!   the same direction), plus f32 noise. Bound used: `2⁻⁸·max|v| + 1e-5`
//!   (`max|v| ≤ 1` here).
//! * `lse` involves no bf16 rounding (scores are f32 sums of exact products): same bound as
//!   the f32 kernels, `2e-5·max(1, |lse|)`.
//! * gradients are sums of terms of both signs, each carrying a relative error up to 2⁻⁹
//!   (rounded `P` or `dS`, and `D = dO·O` inherits the forward's `out` error); the errors
//!   of the terms are independent, so the error of a sum of `n` terms grows like `√n` while
//!   the largest entries grow like `n` or `√n`. Bound used: `|err| ≤ 1e-2·max|ref|` over the
//!   tensor (about 5 × 2⁻⁹).
//!
//! Measured worst errors on the development machine (AMD EPYC with AVX512-BF16, both paths
//! ran; print them with `AIDO_PRINT_ERR=1 cargo test --release --test bf16 -- --nocapture`),
//! identical for the two paths since they agree bit for bit on `out`, `lse`, `dk`, `dv`:
//! * `out`: 9.7e-4 absolute (0.25 of its bound; seq = 7, where few terms average out);
//!   7.7e-5 at seq = 4099;
//! * `lse`: 0.019 of its bound (seq = 4099);
//! * gradients, error / max|ref|: dq 3.1e-3, dk 4.2e-3 (head_dim 1, seq 3), dv 2.7e-3;
//!   at head_dim 32/64 at most 2.6e-3 (0.26 of the bound).
//! * AVX512-BF16 vs portable reference: `out`, `lse`, `dk`, `dv` bitwise equal, `dq`
//!   ≤ 6.3e-8 of max|dq| (summation order of the key blocks).
#![allow(clippy::unwrap_used)]

use aido_kernels::{
    AttnShape, Buffer, KernelError, KernelPath, bf16_slice_to_f32, bf16_to_f32, f32_slice_to_bf16,
    f32_to_bf16, flash_backward_bf16, flash_backward_bf16_with, flash_backward_with,
    flash_forward_bf16, flash_forward_bf16_with, flash_forward_with,
};
use std::io::Write;

/// splitmix64: tiny deterministic PRNG.
struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// bf16 values, uniform in [-amp, amp) before rounding.
    fn bf16_vec(&mut self, n: usize, amp: f32) -> Vec<u16> {
        (0..n)
            .map(|_| {
                let u = (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32;
                f32_to_bf16((2.0 * u - 1.0) * amp)
            })
            .collect()
    }
}

/// Writes to the process's stderr directly (not captured by the test harness).
fn report(msg: &str) {
    let _ = writeln!(std::io::stderr(), "{msg}");
}

fn print_err() -> bool {
    std::env::var_os("AIDO_PRINT_ERR").is_some()
}

/// The bf16 paths this machine supports; every path it lacks is reported as NOT RUN.
fn bf16_paths(test: &str) -> Vec<KernelPath> {
    for p in [KernelPath::ScalarBf16, KernelPath::Avx512Bf16] {
        if !p.is_supported() {
            report(&format!(
                "NOT RUN: {p} path in test `{test}` (CPU lacks avx512f/avx512bf16/fma)"
            ));
        }
    }
    KernelPath::supported_bf16()
}

struct RefOut {
    out: Vec<f64>,
    lse: Vec<f64>,
    dq: Vec<f64>,
    dk: Vec<f64>,
    dv: Vec<f64>,
}

/// Dot product with four partial sums (so the compiler can vectorise it).
fn dot(a: &[f64], b: &[f64]) -> f64 {
    let mut s = [0.0f64; 4];
    let (ac, bc) = (a.chunks_exact(4), b.chunks_exact(4));
    let tail: f64 = ac
        .remainder()
        .iter()
        .zip(bc.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in ac.zip(bc) {
        for l in 0..4 {
            s[l] += x[l] * y[l];
        }
    }
    s.iter().sum::<f64>() + tail
}

/// Exact (f64) attention forward and softmax backward on the decoded bf16 inputs, row by
/// row (O(seq) extra memory). `dout` may be empty (forward only).
#[allow(clippy::too_many_arguments)]
fn reference(
    q: &[u16],
    k: &[u16],
    v: &[u16],
    dout: &[u16],
    bh: usize,
    seq: usize,
    d: usize,
    scale: f32,
) -> RefOut {
    let scale = scale as f64;
    let dec = |x: &[u16]| -> Vec<f64> { x.iter().map(|&h| bf16_to_f32(h) as f64).collect() };
    let (q, k, v, g) = (dec(q), dec(k), dec(v), dec(dout));
    let n = bh * seq * d;
    let bwd = !g.is_empty();
    let gn = if bwd { n } else { 0 };
    let mut r = RefOut {
        out: vec![0.0; n],
        lse: vec![0.0; bh * seq],
        dq: vec![0.0; gn],
        dk: vec![0.0; gn],
        dv: vec![0.0; gn],
    };
    let mut p = vec![0.0f64; seq];
    for b in 0..bh {
        let pl = b * seq * d..(b + 1) * seq * d;
        let (qb, kb, vb) = (&q[pl.clone()], &k[pl.clone()], &v[pl.clone()]);
        for i in 0..seq {
            let qi = &qb[i * d..(i + 1) * d];
            for (j, pj) in p.iter_mut().enumerate() {
                *pj = scale * dot(qi, &kb[j * d..(j + 1) * d]);
            }
            let m = p.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let mut z = 0.0;
            for pj in p.iter_mut() {
                *pj = (*pj - m).exp();
                z += *pj;
            }
            r.lse[b * seq + i] = m + z.ln();
            let o = &mut r.out[(b * seq + i) * d..(b * seq + i + 1) * d];
            for (j, pj) in p.iter_mut().enumerate() {
                *pj /= z;
                for (x, &y) in o.iter_mut().zip(&vb[j * d..(j + 1) * d]) {
                    *x += *pj * y;
                }
            }
            if !bwd {
                continue;
            }
            // dS_ij = P_ij (dO_i·V_j − dO_i·O_i); dQ_i = scale Σ_j dS_ij K_j,
            // dK_j += scale dS_ij Q_i, dV_j += P_ij dO_i.
            let gi = &g[pl.start + i * d..pl.start + (i + 1) * d];
            let di = dot(gi, o);
            let dq = &mut r.dq[pl.start + i * d..pl.start + (i + 1) * d];
            for (j, &pj) in p.iter().enumerate() {
                let ds = pj * (dot(gi, &vb[j * d..(j + 1) * d]) - di);
                let kj = &kb[j * d..(j + 1) * d];
                for (x, &y) in dq.iter_mut().zip(kj) {
                    *x += scale * ds * y;
                }
                let dkj = &mut r.dk[pl.start + j * d..pl.start + (j + 1) * d];
                for (x, &y) in dkj.iter_mut().zip(qi) {
                    *x += scale * ds * y;
                }
                let dvj = &mut r.dv[pl.start + j * d..pl.start + (j + 1) * d];
                for (x, &y) in dvj.iter_mut().zip(gi) {
                    *x += pj * y;
                }
            }
        }
    }
    r
}

fn max_abs(x: &[f64]) -> f64 {
    x.iter().fold(0.0, |m, v| m.max(v.abs()))
}

/// Worst `|got - want|` and its index.
fn worst_abs(got: &[f32], want: &[f64]) -> (f64, usize) {
    let mut w = (0.0, 0);
    for (i, (&g, &r)) in got.iter().zip(want).enumerate() {
        let e = (g as f64 - r).abs();
        assert!(e.is_finite(), "non-finite value at {i}: got {g}, want {r}");
        if e > w.0 {
            w = (e, i);
        }
    }
    w
}

/// Runs forward and backward of `path`; returns `(out, lse, dq, dk, dv)`.
#[allow(clippy::too_many_arguments, clippy::type_complexity)]
fn run(
    path: KernelPath,
    q: &[u16],
    k: &[u16],
    v: &[u16],
    g: &[u16],
    shape: AttnShape,
    scale: f32,
) -> (Vec<f32>, Vec<f32>, Vec<f32>, Vec<f32>, Vec<f32>) {
    let n = q.len();
    let rows = shape.bh * shape.seq;
    let mut out = vec![f32::NAN; n];
    let mut lse = vec![f32::NAN; rows];
    flash_forward_bf16_with(path, q, k, v, shape, scale, &mut out, &mut lse).unwrap();
    let (mut dq, mut dk, mut dv) = (vec![f32::NAN; n], vec![f32::NAN; n], vec![f32::NAN; n]);
    flash_backward_bf16_with(
        path, q, k, v, &out, g, &lse, shape, scale, &mut dq, &mut dk, &mut dv,
    )
    .unwrap();
    (out, lse, dq, dk, dv)
}

/// Ratios (error / bound) of one case, over all supported bf16 paths; asserts each ≤ 1.
fn check_case(rng: &mut Rng, paths: &[KernelPath], bh: usize, seq: usize, d: usize, large: bool) {
    let n = bh * seq * d;
    let scale = 1.0 / (d as f32).sqrt();
    // Large: score std ≈ 8 (extremes ≈ ±30), exercises the online-softmax rescaling.
    let amp = if large {
        (24.0 / (d as f32).sqrt()).sqrt()
    } else {
        1.0
    };
    let q = rng.bf16_vec(n, amp);
    let k = rng.bf16_vec(n, amp);
    let v = rng.bf16_vec(n, 1.0);
    let g = rng.bf16_vec(n, 1.0);
    let r = reference(&q, &k, &v, &g, bh, seq, d, scale);
    let shape = AttnShape {
        bh,
        seq,
        head_dim: d,
    };
    let vmax = bf16_slice_to_f32(&v)
        .iter()
        .fold(0.0f64, |m, &x| m.max(x.abs() as f64));
    for &path in paths {
        let ctx = format!("path={path} bh={bh} seq={seq} d={d} large={large}");
        let (out, lse, dq, dk, dv) = run(path, &q, &k, &v, &g, shape, scale);
        let (e, i) = worst_abs(&out, &r.out);
        let bound = vmax / 256.0 + 1e-5;
        let mut msg = format!("{ctx}: out err {e:.2e} ({:.3} of bound)", e / bound);
        assert!(
            e <= bound,
            "{ctx}: out[{i}] = {} want {} (err {e:.3e} > {bound:.3e})",
            out[i],
            r.out[i]
        );
        let mut lw = 0.0f64;
        for (i, (&got, &want)) in lse.iter().zip(&r.lse).enumerate() {
            let ratio = (got as f64 - want).abs() / (2e-5 * want.abs().max(1.0));
            assert!(ratio <= 1.0, "{ctx}: lse[{i}] = {got} want {want}");
            lw = lw.max(ratio);
        }
        msg += &format!(", lse {lw:.3} of bound");
        for (name, got, want) in [("dq", &dq, &r.dq), ("dk", &dk, &r.dk), ("dv", &dv, &r.dv)] {
            // Floor 1e-4: at seq = 1 the exact dq and dk are 0 (P = 1), while the kernel's
            // dP − D is an f32 cancellation of two differently rounded sums (~1e-8).
            let scale_ref = max_abs(want).max(1e-4);
            let (e, i) = worst_abs(got, want);
            let rel = e / scale_ref;
            msg += &format!(", {name} err/max {rel:.2e} ({:.3} of bound)", rel / 1e-2);
            assert!(
                rel <= 1e-2,
                "{ctx}: {name}[{i}] = {} want {} (err {e:.3e}, max|ref| {scale_ref:.3e})",
                got[i],
                want[i]
            );
        }
        if print_err() {
            report(&msg);
        }
    }
}

#[test]
fn bf16_paths_match_f64_ragged_seq() {
    let paths = bf16_paths("bf16_paths_match_f64_ragged_seq");
    let mut rng = Rng(11);
    for &seq in &[1, 7, 65, 300] {
        for &d in &[32, 64] {
            for &bh in &[1, 2] {
                for large in [false, true] {
                    check_case(&mut rng, &paths, bh, seq, d, large);
                }
            }
        }
    }
}

#[test]
fn bf16_paths_match_f64_seq_4099() {
    let paths = bf16_paths("bf16_paths_match_f64_seq_4099");
    let mut rng = Rng(12);
    check_case(&mut rng, &paths, 1, 4099, 64, false);
}

#[test]
fn bf16_paths_match_f64_odd_head_dims() {
    let paths = bf16_paths("bf16_paths_match_f64_odd_head_dims");
    let mut rng = Rng(13);
    for &(bh, seq, d) in &[(2, 1, 1), (1, 3, 1), (2, 17, 5), (1, 97, 33), (1, 129, 80)] {
        check_case(&mut rng, &paths, bh, seq, d, false);
        check_case(&mut rng, &paths, bh, seq, d, true);
    }
}

/// The AVX512-BF16 path performs the same operations as the portable reference, in the same
/// order: `out`, `lse`, `dk`, `dv` must agree bit for bit; `dq` up to the order in which
/// key blocks add their contributions (≤ 1e-6 relative to max|dq|).
#[test]
fn avx512bf16_matches_portable_reference() {
    if !KernelPath::Avx512Bf16.is_supported() {
        report(
            "NOT RUN: avx512-bf16 path in test `avx512bf16_matches_portable_reference` \
             (CPU lacks avx512f/avx512bf16/fma)",
        );
        return;
    }
    let mut rng = Rng(14);
    let mut worst_dq = 0.0f64;
    for &(bh, seq, d) in &[
        (2, 7, 32),
        (2, 65, 64),
        (1, 300, 32),
        (1, 300, 64),
        (1, 1000, 64),
        (3, 129, 33),
        (1, 200, 80),
    ] {
        for large in [false, true] {
            let n = bh * seq * d;
            let amp = if large { 1.5 } else { 1.0 };
            let (q, k, v, g) = (
                rng.bf16_vec(n, amp),
                rng.bf16_vec(n, amp),
                rng.bf16_vec(n, 1.0),
                rng.bf16_vec(n, 1.0),
            );
            let shape = AttnShape {
                bh,
                seq,
                head_dim: d,
            };
            let scale = 1.0 / (d as f32).sqrt();
            let fast = run(KernelPath::Avx512Bf16, &q, &k, &v, &g, shape, scale);
            let refp = run(KernelPath::ScalarBf16, &q, &k, &v, &g, shape, scale);
            let ctx = format!("bh={bh} seq={seq} d={d} large={large}");
            assert!(fast.0 == refp.0, "{ctx}: out differs");
            assert!(fast.1 == refp.1, "{ctx}: lse differs");
            assert!(fast.3 == refp.3, "{ctx}: dk differs");
            assert!(fast.4 == refp.4, "{ctx}: dv differs");
            let m = fast.2.iter().fold(0.0f32, |m, x| m.max(x.abs())) as f64;
            for (&a, &b) in fast.2.iter().zip(&refp.2) {
                let e = (a as f64 - b as f64).abs() / m.max(1e-30);
                worst_dq = worst_dq.max(e);
                assert!(e <= 1e-6, "{ctx}: dq {a} vs {b}");
            }
        }
    }
    if print_err() {
        report(&format!(
            "avx512-bf16 vs scalar-bf16: out/lse/dk/dv identical, dq worst {worst_dq:.2e} of max|dq|"
        ));
    }
}

#[test]
fn bf16_results_identical_on_1_and_2_threads() {
    let paths = bf16_paths("bf16_results_identical_on_1_and_2_threads");
    let mut rng = Rng(15);
    // Several key blocks (256) and query blocks (128) per (b, h).
    let (bh, seq, d) = (2, 700, 64);
    let n = bh * seq * d;
    let (q, k, v, g) = (
        rng.bf16_vec(n, 1.0),
        rng.bf16_vec(n, 1.0),
        rng.bf16_vec(n, 1.0),
        rng.bf16_vec(n, 1.0),
    );
    let shape = AttnShape {
        bh,
        seq,
        head_dim: d,
    };
    let pool = |t| {
        rayon::ThreadPoolBuilder::new()
            .num_threads(t)
            .build()
            .unwrap()
    };
    let (p1, p2) = (pool(1), pool(2));
    for &path in &paths {
        let a = p1.install(|| run(path, &q, &k, &v, &g, shape, 0.125));
        let b = p2.install(|| run(path, &q, &k, &v, &g, shape, 0.125));
        // Forward, dk and dv are bitwise independent of the thread count; dq adds the
        // key blocks' contributions in scheduling order (as the f32 kernels do).
        assert!(a.0 == b.0, "{path}: out differs");
        assert!(a.1 == b.1, "{path}: lse differs");
        assert!(a.3 == b.3, "{path}: dk differs");
        assert!(a.4 == b.4, "{path}: dv differs");
        let m = a.2.iter().fold(0.0f32, |m, x| m.max(x.abs()));
        for (&x, &y) in a.2.iter().zip(&b.2) {
            assert!((x - y).abs() <= 1e-6 * m, "{path}: dq {x} vs {y}");
        }
    }
}

#[test]
fn auto_bf16_path_is_the_detected_one() {
    let expect = if KernelPath::Avx512Bf16.is_supported() {
        KernelPath::Avx512Bf16
    } else {
        report(
            "NOT RUN: avx512-bf16 path in test `auto_bf16_path_is_the_detected_one` (CPU lacks avx512f/avx512bf16/fma)",
        );
        KernelPath::ScalarBf16
    };
    assert_eq!(KernelPath::detect_bf16(), expect);
    assert!(KernelPath::supported_bf16().contains(&KernelPath::ScalarBf16));
    assert!(KernelPath::supported_bf16().iter().all(|p| p.is_bf16()));
    assert!(KernelPath::supported().iter().all(|p| !p.is_bf16()));
    let mut rng = Rng(16);
    let (bh, seq, d) = (1, 300, 32);
    let n = bh * seq * d;
    let (q, k, v, g) = (
        rng.bf16_vec(n, 1.0),
        rng.bf16_vec(n, 1.0),
        rng.bf16_vec(n, 1.0),
        rng.bf16_vec(n, 1.0),
    );
    let shape = AttnShape {
        bh,
        seq,
        head_dim: d,
    };
    let (mut o, mut l) = (vec![0.0; n], vec![0.0; seq]);
    flash_forward_bf16(&q, &k, &v, shape, 0.2, &mut o, &mut l).unwrap();
    let (mut dq, mut dk, mut dv) = (vec![0.0; n], vec![0.0; n], vec![0.0; n]);
    flash_backward_bf16(
        &q, &k, &v, &o, &g, &l, shape, 0.2, &mut dq, &mut dk, &mut dv,
    )
    .unwrap();
    let e = run(expect, &q, &k, &v, &g, shape, 0.2);
    assert!(o == e.0 && l == e.1 && dk == e.3 && dv == e.4);
}

#[test]
fn bf16_length_and_path_errors() {
    let shape = AttnShape {
        bh: 2,
        seq: 5,
        head_dim: 4,
    };
    let ok = vec![0u16; 40];
    let bad = vec![0u16; 39];
    let okf = vec![0.0f32; 40];
    let mut out = vec![0.0f32; 40];
    let mut lse = vec![0.0f32; 10];
    let e = flash_forward_bf16(&ok, &bad, &ok, shape, 1.0, &mut out, &mut lse).unwrap_err();
    assert_eq!(
        e,
        KernelError::LengthMismatch {
            buffer: Buffer::K,
            expected: 40,
            actual: 39
        }
    );
    assert_eq!(e.to_string(), "buffer `k` has length 39, expected 40");
    let mut short_lse = vec![0.0f32; 11];
    let e = flash_forward_bf16(&ok, &ok, &ok, shape, 1.0, &mut out, &mut short_lse).unwrap_err();
    assert_eq!(
        e,
        KernelError::LengthMismatch {
            buffer: Buffer::Lse,
            expected: 10,
            actual: 11
        }
    );
    let mut long_out = vec![0.0f32; 41];
    let e = flash_forward_bf16(&ok, &ok, &ok, shape, 1.0, &mut long_out, &mut lse).unwrap_err();
    assert!(matches!(
        e,
        KernelError::LengthMismatch {
            buffer: Buffer::Out,
            ..
        }
    ));

    let (mut dq, mut dk, mut dv) = (vec![0.0f32; 40], vec![0.0f32; 40], vec![0.0f32; 40]);
    let e = flash_backward_bf16(
        &ok, &ok, &ok, &okf, &bad, &lse, shape, 1.0, &mut dq, &mut dk, &mut dv,
    )
    .unwrap_err();
    assert_eq!(
        e,
        KernelError::LengthMismatch {
            buffer: Buffer::DOut,
            expected: 40,
            actual: 39
        }
    );
    let mut short_dq = vec![0.0f32; 39];
    let e = flash_backward_bf16(
        &ok,
        &ok,
        &ok,
        &okf,
        &ok,
        &lse,
        shape,
        1.0,
        &mut short_dq,
        &mut dk,
        &mut dv,
    )
    .unwrap_err();
    assert!(matches!(
        e,
        KernelError::LengthMismatch {
            buffer: Buffer::Dq,
            ..
        }
    ));
    let huge = AttnShape {
        bh: usize::MAX,
        seq: 2,
        head_dim: 2,
    };
    assert_eq!(
        flash_forward_bf16(&ok, &ok, &ok, huge, 1.0, &mut out, &mut lse),
        Err(KernelError::ShapeOverflow)
    );

    // Paths of the other precision are refused by name, for both directions.
    let e = flash_forward_bf16_with(
        KernelPath::Scalar,
        &ok,
        &ok,
        &ok,
        shape,
        1.0,
        &mut out,
        &mut lse,
    )
    .unwrap_err();
    assert_eq!(e, KernelError::PrecisionMismatch(KernelPath::Scalar));
    assert_eq!(
        e.to_string(),
        "kernel path Scalar takes f32 inputs and cannot run the bf16 kernels"
    );
    let e = flash_forward_with(
        KernelPath::ScalarBf16,
        &okf,
        &okf,
        &okf,
        shape,
        1.0,
        &mut out,
        &mut lse,
    )
    .unwrap_err();
    assert_eq!(e, KernelError::PrecisionMismatch(KernelPath::ScalarBf16));
    let e = flash_backward_with(
        KernelPath::Avx512Bf16,
        &okf,
        &okf,
        &okf,
        &okf,
        &okf,
        &lse,
        shape,
        1.0,
        &mut dq,
        &mut dk,
        &mut dv,
    )
    .unwrap_err();
    assert_eq!(e, KernelError::PrecisionMismatch(KernelPath::Avx512Bf16));
    assert_eq!(
        e.to_string(),
        "kernel path Avx512Bf16 takes bf16 inputs and cannot run the f32 kernels"
    );
    if !KernelPath::Avx512Bf16.is_supported() {
        let e = flash_forward_bf16_with(
            KernelPath::Avx512Bf16,
            &ok,
            &ok,
            &ok,
            shape,
            1.0,
            &mut out,
            &mut lse,
        )
        .unwrap_err();
        assert_eq!(e, KernelError::UnsupportedPath(KernelPath::Avx512Bf16));
    }
}

#[test]
fn bf16_empty_shapes_are_ok() {
    let mut lse = vec![0.0f32; 3];
    let shape = AttnShape {
        bh: 1,
        seq: 3,
        head_dim: 0,
    };
    flash_forward_bf16(&[], &[], &[], shape, 1.0, &mut [], &mut lse).unwrap();
    assert!(lse.iter().all(|&x| (x - 3f32.ln()).abs() < 1e-6));
    let shape = AttnShape {
        bh: 0,
        seq: 3,
        head_dim: 4,
    };
    flash_forward_bf16(&[], &[], &[], shape, 1.0, &mut [], &mut []).unwrap();
    flash_backward_bf16(
        &[],
        &[],
        &[],
        &[],
        &[],
        &[],
        shape,
        1.0,
        &mut [],
        &mut [],
        &mut [],
    )
    .unwrap();
}

#[test]
fn bf16_conversion_helpers() {
    // Exact values round-trip.
    for x in [
        0.0f32,
        -0.0,
        1.0,
        -2.5,
        0.15625,
        f32::from_bits(0x7f7f_0000),
        f32::MIN_POSITIVE,
    ] {
        let h = f32_to_bf16(x);
        assert_eq!(bf16_to_f32(h).to_bits(), x.to_bits() & 0xffff_0000, "{x}");
    }
    assert_eq!(f32_to_bf16(1.0), 0x3f80);
    assert_eq!(f32_to_bf16(-0.0), 0x8000);
    // Ties go to even: 1 + 2⁻⁸ is halfway between 1 and 1 + 2⁻⁷ (0x3f80 is even).
    assert_eq!(f32_to_bf16(f32::from_bits(0x3f80_8000)), 0x3f80);
    // 1 + 3·2⁻⁸ is halfway between 0x3f81 (odd) and 0x3f82 (even).
    assert_eq!(f32_to_bf16(f32::from_bits(0x3f81_8000)), 0x3f82);
    // Just above / below a tie.
    assert_eq!(f32_to_bf16(f32::from_bits(0x3f80_8001)), 0x3f81);
    assert_eq!(f32_to_bf16(f32::from_bits(0x3f81_7fff)), 0x3f81);
    assert_eq!(f32_to_bf16(f32::from_bits(0xbf80_8000)), 0xbf80);
    // Infinities, overflow to infinity, the largest finite bf16.
    assert_eq!(f32_to_bf16(f32::INFINITY), 0x7f80);
    assert_eq!(f32_to_bf16(f32::NEG_INFINITY), 0xff80);
    assert_eq!(f32_to_bf16(f32::MAX), 0x7f80);
    assert_eq!(f32_to_bf16(f32::from_bits(0x7f7f_7fff)), 0x7f7f);
    assert_eq!(bf16_to_f32(0x7f80), f32::INFINITY);
    // NaN stays NaN (sign kept, quiet), also NaNs whose payload lies in the low half only.
    for bits in [
        0x7fc0_0000u32,
        0xffc0_0001,
        0x7f80_0001,
        0xff80_ffff,
        0x7fff_ffff,
    ] {
        let h = f32_to_bf16(f32::from_bits(bits));
        assert!(bf16_to_f32(h).is_nan(), "{bits:08x} -> {h:04x}");
        assert_eq!(h & 0x8000, (bits >> 16) as u16 & 0x8000);
    }
    assert!(bf16_to_f32(0x7fc1).is_nan());
    // Subnormals are rounded (round to nearest even), not flushed.
    assert_eq!(f32_to_bf16(f32::from_bits(0x0000_0001)), 0x0000);
    assert_eq!(f32_to_bf16(f32::from_bits(0x0000_8000)), 0x0000); // tie → even (0)
    assert_eq!(f32_to_bf16(f32::from_bits(0x0001_8000)), 0x0002); // tie → even (2)
    assert_eq!(f32_to_bf16(f32::from_bits(0x0000_8001)), 0x0001);
    assert_eq!(f32_to_bf16(f32::from_bits(0x8012_3456)), 0x8012);
    assert_eq!(f32_to_bf16(f32::from_bits(0x007f_ffff)), 0x0080); // rounds up to MIN_POSITIVE
    assert_eq!(bf16_to_f32(0x0001), f32::from_bits(0x0001_0000));
    // Slice versions agree with the scalar ones.
    let xs = [1.0f32, f32::from_bits(0x3f80_8000), -7.3, f32::NAN, 1e-40];
    let hs = f32_slice_to_bf16(&xs);
    assert_eq!(hs.len(), xs.len());
    for (&x, &h) in xs.iter().zip(&hs) {
        assert_eq!(h, f32_to_bf16(x));
    }
    let back = bf16_slice_to_f32(&hs);
    for (&b, &h) in back.iter().zip(&hs) {
        assert_eq!(b.to_bits(), bf16_to_f32(h).to_bits());
    }
    // Exhaustive property on a strided sample: the result is one of the two neighbours and
    // the nearer one (ties: the even one).
    let mut bits = 0u32;
    while bits < 0x7f80_0000 {
        let x = f32::from_bits(bits);
        let h = f32_to_bf16(x);
        let lo = bits & 0xffff_0000;
        let hi = lo + 0x1_0000;
        let r = (h as u32) << 16;
        let (dlo, dhi) = (bits - lo, hi - bits);
        let want = if dlo < dhi || (dlo == dhi && (lo >> 16).is_multiple_of(2)) {
            lo
        } else {
            hi
        };
        assert_eq!(r, want, "{bits:08x}");
        bits += 0x0000_1235;
    }
}
