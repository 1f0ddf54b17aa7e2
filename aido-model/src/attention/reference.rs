//! The attention formula evaluated naively in f64, straight from the definition, to check the
//! kernels against (tests and `examples/attention_check`): per batch·head,
//! `S = scale · q kᵀ`, `P = softmax(S)`, `O = P v`, and with an upstream gradient `dO`:
//! `dV = Pᵀ dO`, `dP = dO vᵀ`, `dS = P ∘ (dP − rowsum(dP ∘ P))`, `dQ = scale · dS k`,
//! `dK = scale · dSᵀ q`, with `scale = 1/√d`. O(S²) memory and time: for small shapes only.

/// Output, log-sum-exp and gradients of the naive formula (row-major, f64).
#[derive(Debug, Clone, PartialEq)]
pub struct Naive {
    /// `[BH, S, D]`.
    pub out: Vec<f64>,
    /// `[BH, S]`: log-sum-exp of each row of scaled scores.
    pub lse: Vec<f64>,
    /// `[BH, S, D]`.
    pub dq: Vec<f64>,
    /// `[BH, S, D]`.
    pub dk: Vec<f64>,
    /// `[BH, S, D]`.
    pub dv: Vec<f64>,
}

/// The formula on `q, k, v, dout: [bh, s, d]` (row-major f32).
pub fn naive(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    dout: &[f32],
    bh: usize,
    s: usize,
    d: usize,
) -> Naive {
    let scale = 1.0 / (d as f64).sqrt();
    let mut r = Naive {
        out: vec![0.0; bh * s * d],
        lse: vec![0.0; bh * s],
        dq: vec![0.0; bh * s * d],
        dk: vec![0.0; bh * s * d],
        dv: vec![0.0; bh * s * d],
    };
    let at = |x: &[f32], g: usize, i: usize, c: usize| f64::from(x[(g * s + i) * d + c]);
    for g in 0..bh {
        let mut p = vec![0.0f64; s * s];
        for i in 0..s {
            let sc: Vec<f64> = (0..s)
                .map(|j| (0..d).map(|c| at(q, g, i, c) * at(k, g, j, c)).sum::<f64>() * scale)
                .collect();
            let m = sc.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let z: f64 = sc.iter().map(|x| (x - m).exp()).sum();
            r.lse[g * s + i] = m + z.ln();
            for j in 0..s {
                p[i * s + j] = (sc[j] - m).exp() / z;
            }
            for c in 0..d {
                r.out[(g * s + i) * d + c] = (0..s).map(|j| p[i * s + j] * at(v, g, j, c)).sum();
            }
        }
        for i in 0..s {
            let dp: Vec<f64> = (0..s)
                .map(|j| (0..d).map(|c| at(dout, g, i, c) * at(v, g, j, c)).sum())
                .collect();
            let rowsum: f64 = (0..s).map(|j| dp[j] * p[i * s + j]).sum();
            for j in 0..s {
                let ds = p[i * s + j] * (dp[j] - rowsum);
                for c in 0..d {
                    r.dq[(g * s + i) * d + c] += scale * ds * at(k, g, j, c);
                    r.dk[(g * s + j) * d + c] += scale * ds * at(q, g, i, c);
                    r.dv[(g * s + j) * d + c] += p[i * s + j] * at(dout, g, i, c);
                }
            }
        }
    }
    r
}

/// Deterministic inputs: `n` values uniform in `[-a, a)` from splitmix64 seeded by `seed`.
pub fn random(n: usize, seed: u64, a: f32) -> Vec<f32> {
    let mut x = seed;
    (0..n)
        .map(|_| {
            x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = x;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^= z >> 31;
            ((z >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * a
        })
        .collect()
}

/// `max |got − want|` (0 for empty inputs; infinite when the lengths differ or a value is not
/// finite).
pub fn max_abs_diff(got: &[f32], want: &[f64]) -> f64 {
    if got.len() != want.len() {
        return f64::INFINITY;
    }
    got.iter()
        .zip(want)
        .map(|(a, b)| {
            let d = (f64::from(*a) - b).abs();
            if d.is_nan() { f64::INFINITY } else { d }
        })
        .fold(0.0, f64::max)
}
