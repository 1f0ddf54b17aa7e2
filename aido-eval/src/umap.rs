//! UMAP as scanpy runs it through umap-learn 0.5: the fuzzy simplicial set of a kNN graph
//! (scanpy's `connectivities`), the `a, b` curve fit, a spectral initialization, and the
//! single-threaded SGD layout (`parallel=False`, umap-learn's default). Same input and seed →
//! same coordinates, whatever the thread count.
//!
//! Where this port differs from umap-learn, and why:
//! - random numbers come from umap-learn's Tausworthe generator (`tau_rand_int`, per-vertex
//!   states as umap 0.5.5+), seeded from `seed`, not from numpy's `RandomState`: layouts are
//!   reproducible here but not bit-equal to Python's;
//! - the spectral initialization solves for the leading eigenvectors of `D^-½ A D^-½` by a
//!   restarted Lanczos iteration (dense for small components) instead of ARPACK's
//!   `eigsh(L, which="SM")`; both give the eigenvectors of the smallest Laplacian eigenvalues.
//!   If it does not converge, the component falls back to its first two principal
//!   coordinates (umap-learn falls back to a random layout).

use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use rand_distr::{Distribution, Normal};

use crate::error::{EvalError, Result};
use crate::knn::Knn;
use crate::linalg::symmetric_eigen;
use crate::sparse::CsrMatrix;

const SMOOTH_K_TOLERANCE: f64 = 1e-5;
const MIN_K_DIST_SCALE: f64 = 1e-3;

/// umap-learn `smooth_knn_dist` (local_connectivity 1, bandwidth 1, 64 bisection steps):
/// per cell `(sigma, rho)`.
pub fn smooth_knn_dist(knn: &Knn) -> (Vec<f32>, Vec<f32>) {
    let k = knn.k;
    let target = (k as f64).log2();
    let mean_all: f64 = knn.distances.iter().map(|&v| f64::from(v)).sum::<f64>()
        / knn.distances.len().max(1) as f64;
    let mut sigmas = Vec::with_capacity(knn.n);
    let mut rhos = Vec::with_capacity(knn.n);
    for i in 0..knn.n {
        let d = knn.row_distances(i);
        let rho = d.iter().copied().find(|&v| v > 0.0).map_or(0.0, f64::from);
        let (mut lo, mut hi, mut mid) = (0.0f64, f64::MAX, 1.0f64);
        for _ in 0..64 {
            let mut psum = 0.0;
            for &dj in &d[1..] {
                let x = f64::from(dj) - rho;
                psum += if x > 0.0 { (-(x / mid)).exp() } else { 1.0 };
            }
            if (psum - target).abs() < SMOOTH_K_TOLERANCE {
                break;
            }
            if psum > target {
                hi = mid;
                mid = (lo + hi) / 2.0;
            } else {
                lo = mid;
                if hi >= f64::MAX {
                    mid *= 2.0;
                } else {
                    mid = (lo + hi) / 2.0;
                }
            }
        }
        let mean_i = d.iter().map(|&v| f64::from(v)).sum::<f64>() / k as f64;
        let floor = if rho > 0.0 { mean_i } else { mean_all } * MIN_K_DIST_SCALE;
        sigmas.push(mid.max(floor) as f32);
        rhos.push(rho as f32);
    }
    (sigmas, rhos)
}

/// umap-learn `fuzzy_simplicial_set` with scanpy's settings (`set_op_mix_ratio = 1`,
/// `local_connectivity = 1`): membership strengths `exp(−(d − ρ)/σ)` (self 0), then the fuzzy
/// union `A + Aᵀ − A∘Aᵀ`. This is scanpy's `obsp/connectivities`.
pub fn fuzzy_simplicial_set(knn: &Knn) -> CsrMatrix {
    let (sigmas, rhos) = smooth_knn_dist(knn);
    let mut t = Vec::with_capacity(knn.n * knn.k);
    for i in 0..knn.n {
        for (&j, &d) in knn.row(i).iter().zip(knn.row_distances(i)) {
            let val = if j as usize == i {
                0.0
            } else if d - rhos[i] <= 0.0 || sigmas[i] == 0.0 {
                1.0
            } else {
                (-(f64::from(d - rhos[i]) / f64::from(sigmas[i]))).exp() as f32
            };
            t.push((i as u32, j, val));
        }
    }
    let a = CsrMatrix::from_triplets(knn.n, t);
    // union with the transpose: entries (i, j) with a = A_ij, b = A_ji
    let mut pairs: Vec<(u32, u32, f32, f32)> = Vec::with_capacity(2 * a.nnz());
    for i in 0..a.n {
        let (c, v) = a.row(i);
        for (&j, &x) in c.iter().zip(v) {
            pairs.push((i as u32, j, x, 0.0));
            pairs.push((j, i as u32, 0.0, x));
        }
    }
    pairs.sort_unstable_by_key(|&(r, c, _, _)| (r, c));
    let mut t = Vec::with_capacity(pairs.len());
    let mut p = 0;
    while p < pairs.len() {
        let (r, c, mut x, mut y) = pairs[p];
        let mut q = p + 1;
        while q < pairs.len() && pairs[q].0 == r && pairs[q].1 == c {
            x += pairs[q].2;
            y += pairs[q].3;
            q += 1;
        }
        t.push((r, c, (x + y) - x * y));
        p = q;
    }
    CsrMatrix::from_triplets(knn.n, t)
}

/// scanpy's `obsp/distances`: the kNN distances without the self edge.
pub fn distance_graph(knn: &Knn) -> CsrMatrix {
    let mut t = Vec::with_capacity(knn.n * knn.k);
    for i in 0..knn.n {
        for (&j, &d) in knn.row(i).iter().zip(knn.row_distances(i)) {
            if j as usize != i {
                t.push((i as u32, j, d));
            }
        }
    }
    // keep explicit zero distances (duplicates) out of the way of eliminate_zeros: they are
    // edges too, so store them as the smallest positive float
    for e in &mut t {
        if e.2 == 0.0 {
            e.2 = f32::MIN_POSITIVE;
        }
    }
    CsrMatrix::from_triplets(knn.n, t)
}

/// umap-learn `find_ab_params`: least-squares fit of `1 / (1 + a x^{2b})` to the offset
/// exponential on 300 points of `[0, 3·spread]` (Levenberg–Marquardt from `a = b = 1`, as
/// scipy's `curve_fit`).
pub fn find_ab_params(spread: f64, min_dist: f64) -> (f64, f64) {
    let xs: Vec<f64> = (0..300).map(|i| spread * 3.0 * i as f64 / 299.0).collect();
    let ys: Vec<f64> = xs
        .iter()
        .map(|&x| {
            if x < min_dist {
                1.0
            } else {
                (-(x - min_dist) / spread).exp()
            }
        })
        .collect();
    let resid = |a: f64, b: f64| -> f64 {
        xs.iter()
            .zip(&ys)
            .map(|(&x, &y)| {
                let f = 1.0 / (1.0 + a * x.powf(2.0 * b));
                (f - y).powi(2)
            })
            .sum()
    };
    let (mut a, mut b) = (1.0f64, 1.0f64);
    let mut lambda = 1e-3;
    let mut cost = resid(a, b);
    for _ in 0..500 {
        // Jacobian of f wrt (a, b)
        let (mut jtj, mut jtr) = ([[0.0f64; 2]; 2], [0.0f64; 2]);
        for (&x, &y) in xs.iter().zip(&ys) {
            let x2b = if x > 0.0 { x.powf(2.0 * b) } else { 0.0 };
            let den = 1.0 + a * x2b;
            let f = 1.0 / den;
            let da = -x2b / (den * den);
            let db = if x > 0.0 {
                -a * x2b * 2.0 * x.ln() / (den * den)
            } else {
                0.0
            };
            let r = f - y;
            let g = [da, db];
            for p in 0..2 {
                jtr[p] += g[p] * r;
                for q in 0..2 {
                    jtj[p][q] += g[p] * g[q];
                }
            }
        }
        let mut improved = false;
        for _ in 0..30 {
            let m = [
                [jtj[0][0] * (1.0 + lambda), jtj[0][1]],
                [jtj[1][0], jtj[1][1] * (1.0 + lambda)],
            ];
            let det = m[0][0] * m[1][1] - m[0][1] * m[1][0];
            if det == 0.0 {
                lambda *= 10.0;
                continue;
            }
            let da = -(m[1][1] * jtr[0] - m[0][1] * jtr[1]) / det;
            let db = -(-m[1][0] * jtr[0] + m[0][0] * jtr[1]) / det;
            let (na, nb) = (a + da, b + db);
            let c = resid(na, nb);
            if c.is_finite() && c < cost {
                let rel = (cost - c) / cost.max(1e-300);
                a = na;
                b = nb;
                cost = c;
                lambda = (lambda / 10.0).max(1e-12);
                improved = rel > 1e-15;
                break;
            }
            lambda *= 10.0;
        }
        if !improved {
            break;
        }
    }
    (a, b)
}

/// Settings of [`umap_layout`] (scanpy's `tl.umap` defaults).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct UmapConfig {
    /// `min_dist` (scanpy: 0.5).
    pub min_dist: f64,
    /// `spread` (1.0).
    pub spread: f64,
    /// Epochs; `None`: 500 up to 10,000 cells, else 200 (umap-learn's default).
    pub n_epochs: Option<usize>,
    /// Initial learning rate (1.0).
    pub alpha: f64,
    /// Repulsion weight (1.0).
    pub gamma: f64,
    /// Negative samples per positive sample (5).
    pub negative_sample_rate: usize,
    /// Seed of the initialization noise and the negative sampling.
    pub seed: u64,
}

impl Default for UmapConfig {
    fn default() -> Self {
        UmapConfig {
            min_dist: 0.5,
            spread: 1.0,
            n_epochs: None,
            alpha: 1.0,
            gamma: 1.0,
            negative_sample_rate: 5,
            seed: 0,
        }
    }
}

/// `y = D^-½ A D^-½ x` for a symmetric graph.
fn norm_adj_mul(g: &CsrMatrix, dinv: &[f64], x: &[f64], y: &mut [f64]) {
    for i in 0..g.n {
        let (c, v) = g.row(i);
        let s: f64 = c
            .iter()
            .zip(v)
            .map(|(&j, &w)| f64::from(w) * dinv[j as usize] * x[j as usize])
            .sum();
        y[i] = dinv[i] * s;
    }
}

fn normalize(v: &mut [f64]) -> f64 {
    let n = v.iter().map(|x| x * x).sum::<f64>().sqrt();
    if n > 0.0 {
        v.iter_mut().for_each(|x| *x /= n);
    }
    n
}

fn orthogonalize(v: &mut [f64], basis: &[Vec<f64>]) {
    for _ in 0..2 {
        for b in basis {
            let d: f64 = v.iter().zip(b).map(|(x, y)| x * y).sum();
            v.iter_mut().zip(b).for_each(|(x, y)| *x -= d * y);
        }
    }
}

/// The `nev` leading eigenvectors of `D^-½ A D^-½` orthogonal to the trivial one
/// (`D^½ 1`), i.e. the Laplacian eigenvectors 2..nev+1; `None` if they do not converge.
fn spectral_vectors(g: &CsrMatrix, nev: usize) -> Option<Vec<Vec<f64>>> {
    let n = g.n;
    let deg = g.row_sums();
    if deg.iter().any(|&d| d <= 0.0) {
        return None;
    }
    let dinv: Vec<f64> = deg.iter().map(|d| 1.0 / d.sqrt()).collect();
    let mut trivial: Vec<f64> = deg.iter().map(|d| d.sqrt()).collect();
    normalize(&mut trivial);
    if n <= 1000 {
        let mut m = vec![0.0f64; n * n];
        for i in 0..n {
            let (c, v) = g.row(i);
            for (&j, &w) in c.iter().zip(v) {
                m[i * n + j as usize] = f64::from(w) * dinv[i] * dinv[j as usize];
            }
        }
        let (_, vecs) = symmetric_eigen(&m, n).ok()?;
        return Some(vecs.into_iter().skip(1).take(nev).collect());
    }
    // Restarted Lanczos with full re-orthogonalization, deflating the trivial vector.
    let m = 64.min(n - 1);
    let mut v0 = vec![1.0f64; n];
    for (i, x) in v0.iter_mut().enumerate() {
        *x += 1e-3 * ((i % 17) as f64 - 8.0);
    }
    let defl = vec![trivial];
    for _restart in 0..60 {
        orthogonalize(&mut v0, &defl);
        if normalize(&mut v0) == 0.0 {
            return None;
        }
        let mut basis: Vec<Vec<f64>> = vec![v0.clone()];
        let (mut alpha, mut beta) = (Vec::with_capacity(m), Vec::with_capacity(m));
        let mut w = vec![0.0f64; n];
        for j in 0..m {
            norm_adj_mul(g, &dinv, &basis[j], &mut w);
            let a: f64 = w.iter().zip(&basis[j]).map(|(x, y)| x * y).sum();
            alpha.push(a);
            let mut r = w.clone();
            orthogonalize(&mut r, &defl);
            orthogonalize(&mut r, &basis);
            let b = normalize(&mut r);
            if j + 1 == m || b < 1e-12 {
                break;
            }
            beta.push(b);
            basis.push(r);
        }
        let k = basis.len();
        let mut t = vec![0.0f64; k * k];
        for i in 0..k {
            t[i * k + i] = alpha[i];
            if i + 1 < k {
                t[i * k + i + 1] = beta[i];
                t[(i + 1) * k + i] = beta[i];
            }
        }
        let (_, svecs) = symmetric_eigen(&t, k).ok()?;
        let ritz: Vec<Vec<f64>> = svecs
            .iter()
            .take(nev)
            .map(|s| {
                let mut x = vec![0.0f64; n];
                for (c, b) in s.iter().zip(&basis) {
                    x.iter_mut().zip(b).for_each(|(xi, bi)| *xi += c * bi);
                }
                normalize(&mut x);
                x
            })
            .collect();
        let mut converged = true;
        for x in &ritz {
            norm_adj_mul(g, &dinv, x, &mut w);
            let theta: f64 = w.iter().zip(x).map(|(a, b)| a * b).sum();
            let res = w
                .iter()
                .zip(x)
                .map(|(a, b)| (a - theta * b).powi(2))
                .sum::<f64>()
                .sqrt();
            if res > 1e-4 {
                converged = false;
            }
        }
        if converged {
            return Some(ritz);
        }
        v0 = vec![0.0; n];
        for x in &ritz {
            v0.iter_mut().zip(x).for_each(|(a, b)| *a += b);
        }
    }
    None
}

/// The first two principal coordinates of `points` (a fallback initialization).
fn pca2(points: &[f32], n: usize, d: usize) -> Vec<[f64; 2]> {
    match crate::pca::pca(points, n, d, 2) {
        Ok(p) if p.n_comps >= 2 => (0..n)
            .map(|i| [f64::from(p.scores[i * 2]), f64::from(p.scores[i * 2 + 1])])
            .collect(),
        Ok(p) => (0..n).map(|i| [f64::from(p.scores[i]), 0.0]).collect(),
        Err(_) => (0..n).map(|i| [i as f64, 0.0]).collect(),
    }
}

/// The spectral initialization of umap-learn (`spectral_layout`, with its
/// `multi_component_layout` for a disconnected graph: components placed by a spectral
/// embedding of their centroids in `data`, or on the axes when there are at most 4), before
/// `noisy_scale_coords`.
pub fn spectral_init(g: &CsrMatrix, data: &[f32], d: usize, rng: &mut StdRng) -> Vec<[f64; 2]> {
    let n = g.n;
    let (comp, nc) = g.components();
    let embed_component = |nodes: &[usize]| -> Vec<[f64; 2]> {
        let sub = if nodes.len() == n {
            g.clone()
        } else {
            g.subgraph(nodes)
        };
        match spectral_vectors(&sub, 2) {
            Some(v) if v.len() == 2 => (0..nodes.len()).map(|i| [v[0][i], v[1][i]]).collect(),
            _ => {
                let pts: Vec<f32> = nodes
                    .iter()
                    .flat_map(|&i| data[i * d..(i + 1) * d].iter().copied())
                    .collect();
                pca2(&pts, nodes.len(), d)
            }
        }
    };
    if nc == 1 {
        let all: Vec<usize> = (0..n).collect();
        return embed_component(&all);
    }
    // meta layout of the components
    let meta: Vec<[f64; 2]> = if nc > 4 {
        let mut cent = vec![0.0f64; nc * d];
        let mut cnt = vec![0usize; nc];
        for i in 0..n {
            cnt[comp[i]] += 1;
            for k in 0..d {
                cent[comp[i] * d + k] += f64::from(data[i * d + k]);
            }
        }
        for c in 0..nc {
            for k in 0..d {
                cent[c * d + k] /= cnt[c] as f64;
            }
        }
        let mut aff = vec![0.0f64; nc * nc];
        for a in 0..nc {
            for b in 0..nc {
                let d2: f64 = (0..d)
                    .map(|k| (cent[a * d + k] - cent[b * d + k]).powi(2))
                    .sum();
                aff[a * nc + b] = (-d2).exp();
            }
        }
        let deg: Vec<f64> = (0..nc)
            .map(|a| aff[a * nc..(a + 1) * nc].iter().sum())
            .collect();
        let mut m = vec![0.0f64; nc * nc];
        for a in 0..nc {
            for b in 0..nc {
                m[a * nc + b] = aff[a * nc + b] / (deg[a] * deg[b]).sqrt();
            }
        }
        let coords: Vec<[f64; 2]> = match symmetric_eigen(&m, nc) {
            Ok((_, v)) => (0..nc)
                .map(|c| [v[1][c] / deg[c].sqrt(), v[2 % nc][c] / deg[c].sqrt()])
                .collect(),
            Err(_) => (0..nc).map(|c| [c as f64, 0.0]).collect(),
        };
        let mx = coords
            .iter()
            .flat_map(|p| p.iter().copied())
            .fold(f64::NEG_INFINITY, f64::max);
        let s = if mx > 0.0 { mx } else { 1.0 };
        coords.into_iter().map(|p| [p[0] / s, p[1] / s]).collect()
    } else {
        let base = [[1.0, 0.0], [0.0, 1.0]];
        let k = nc.div_ceil(2);
        let mut m = Vec::new();
        for b in base.iter().take(k) {
            m.push(*b);
        }
        for b in base.iter().take(k) {
            m.push([-b[0], -b[1]]);
        }
        m.truncate(nc);
        m
    };
    let mut out = vec![[0.0f64; 2]; n];
    for c in 0..nc {
        let nodes: Vec<usize> = (0..n).filter(|&i| comp[i] == c).collect();
        let range = (0..nc)
            .filter(|&o| o != c)
            .map(|o| ((meta[c][0] - meta[o][0]).powi(2) + (meta[c][1] - meta[o][1]).powi(2)).sqrt())
            .filter(|&x| x > 0.0)
            .fold(f64::INFINITY, f64::min)
            / 2.0;
        let range = if range.is_finite() { range } else { 1.0 };
        if nodes.len() < 4 {
            for &i in &nodes {
                out[i] = [
                    meta[c][0] + rng.random_range(-range..range),
                    meta[c][1] + rng.random_range(-range..range),
                ];
            }
            continue;
        }
        let e = embed_component(&nodes);
        let mx = e
            .iter()
            .flat_map(|p| [p[0].abs(), p[1].abs()])
            .fold(0.0f64, f64::max);
        let s = if mx > 0.0 { range / mx } else { 1.0 };
        for (&i, p) in nodes.iter().zip(&e) {
            out[i] = [p[0] * s + meta[c][0], p[1] * s + meta[c][1]];
        }
    }
    out
}

/// umap-learn's Tausworthe generator (`tau_rand_int`) on an i64 state, with numba's
/// Python-style `%`.
fn tau_rand_int(s: &mut [i64; 3]) -> i64 {
    const M: i64 = 0xFFFF_FFFF;
    s[0] = (((s[0] & 4_294_967_294).wrapping_shl(12)) & M)
        ^ ((((s[0].wrapping_shl(13)) & M) ^ s[0]) >> 19);
    s[1] = (((s[1] & 4_294_967_288).wrapping_shl(4)) & M)
        ^ ((((s[1].wrapping_shl(2)) & M) ^ s[1]) >> 25);
    s[2] = (((s[2] & 4_294_967_280).wrapping_shl(17)) & M)
        ^ ((((s[2].wrapping_shl(3)) & M) ^ s[2]) >> 11);
    s[0] ^ s[1] ^ s[2]
}

fn clip4(x: f64) -> f64 {
    x.clamp(-4.0, 4.0)
}

/// A 2-D UMAP layout of the connectivity graph `g` (scanpy `tl.umap` defaults, see
/// [`UmapConfig`]), with `data` (`n × d`, e.g. the PCA scores the graph was built on) used to
/// place disconnected components. Returns `n × 2` coordinates.
pub fn umap_layout(
    g: &CsrMatrix,
    data: &[f32],
    d: usize,
    cfg: &UmapConfig,
) -> Result<Vec<[f32; 2]>> {
    let n = g.n;
    if data.len() != n * d {
        return Err(EvalError::LengthMismatch {
            what: "UMAP: data rows against graph nodes".into(),
            a: data.len() / d.max(1),
            b: n,
        });
    }
    if n == 0 {
        return Ok(Vec::new());
    }
    let n_epochs = cfg.n_epochs.unwrap_or(if n <= 10_000 { 500 } else { 200 });
    let (a, b) = find_ab_params(cfg.spread, cfg.min_dist);
    let mut rng = StdRng::seed_from_u64(cfg.seed);
    // edges: drop weights below max / n_epochs
    let wmax = g.data.iter().copied().fold(0.0f32, f32::max);
    let cut = if n_epochs > 10 {
        wmax / n_epochs as f32
    } else {
        wmax / 200.0
    };
    let (mut head, mut tail, mut w) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..n {
        let (c, v) = g.row(i);
        for (&j, &x) in c.iter().zip(v) {
            if x >= cut && x > 0.0 {
                head.push(i);
                tail.push(j as usize);
                w.push(f64::from(x));
            }
        }
    }
    // initialization: spectral, noisy_scale_coords (max |coord| 10, noise 1e-4), then each
    // axis rescaled to [0, 10]
    let init = spectral_init(g, data, d, &mut rng);
    let mx = init
        .iter()
        .flat_map(|p| [p[0].abs(), p[1].abs()])
        .fold(0.0f64, f64::max);
    let expansion = if mx > 0.0 { 10.0 / mx } else { 1.0 };
    let noise = Normal::new(0.0, 1e-4).map_err(|e| EvalError::Numerics(e.to_string()))?;
    let mut emb: Vec<[f32; 2]> = init
        .iter()
        .map(|p| {
            [
                (p[0] * expansion) as f32 + noise.sample(&mut rng) as f32,
                (p[1] * expansion) as f32 + noise.sample(&mut rng) as f32,
            ]
        })
        .collect();
    for k in 0..2 {
        let lo = emb.iter().map(|p| p[k]).fold(f32::INFINITY, f32::min);
        let hi = emb.iter().map(|p| p[k]).fold(f32::NEG_INFINITY, f32::max);
        let span = if hi > lo { hi - lo } else { 1.0 };
        for p in &mut emb {
            p[k] = 10.0 * (p[k] - lo) / span;
        }
    }
    if head.is_empty() {
        return Ok(emb);
    }
    let wm = w.iter().copied().fold(0.0f64, f64::max);
    let eps: Vec<f64> = w
        .iter()
        .map(|&x| {
            let ns = n_epochs as f64 * (x / wm);
            if ns > 0.0 { n_epochs as f64 / ns } else { -1.0 }
        })
        .collect();
    let eps_neg: Vec<f64> = eps
        .iter()
        .map(|e| e / cfg.negative_sample_rate as f64)
        .collect();
    let mut next = eps.clone();
    let mut next_neg = eps_neg.clone();
    let base: [i64; 3] = [
        rng.random_range(i64::from(i32::MIN)..i64::from(i32::MAX)),
        rng.random_range(i64::from(i32::MIN)..i64::from(i32::MAX)),
        rng.random_range(i64::from(i32::MIN)..i64::from(i32::MAX)),
    ];
    let mut states: Vec<[i64; 3]> = emb
        .iter()
        .map(|p| {
            let bits = f64::from(p[0]).to_bits() as i64;
            [
                base[0].wrapping_add(bits),
                base[1].wrapping_add(bits),
                base[2].wrapping_add(bits),
            ]
        })
        .collect();
    let mut alpha = cfg.alpha;
    let nv = n as i64;
    for epoch in 0..n_epochs {
        let e = epoch as f64;
        for i in 0..head.len() {
            if next[i] > e {
                continue;
            }
            let (j, k) = (head[i], tail[i]);
            let (cur, oth) = (emb[j], emb[k]);
            let d2 = f64::from((cur[0] - oth[0]).powi(2) + (cur[1] - oth[1]).powi(2));
            let gc = if d2 > 0.0 {
                // d2^(b−1) = d2^b / d2: one power per sample
                let p = d2.powf(b);
                -2.0 * a * b * (p / d2) / (a * p + 1.0)
            } else {
                0.0
            };
            let mut cur = cur;
            let mut oth = oth;
            for dd in 0..2 {
                let g = clip4(gc * f64::from(cur[dd] - oth[dd]));
                cur[dd] += (g * alpha) as f32;
                oth[dd] += (-g * alpha) as f32;
            }
            emb[j] = cur;
            emb[k] = oth;
            next[i] += eps[i];
            let n_neg = ((e - next_neg[i]) / eps_neg[i]) as i64;
            for _ in 0..n_neg.max(0) {
                let kk = tau_rand_int(&mut states[j]).rem_euclid(nv) as usize;
                let cur = emb[j];
                let oth = emb[kk];
                let d2 = f64::from((cur[0] - oth[0]).powi(2) + (cur[1] - oth[1]).powi(2));
                let gc = if d2 > 0.0 {
                    2.0 * cfg.gamma * b / ((0.001 + d2) * (a * d2.powf(b) + 1.0))
                } else if j == kk {
                    continue;
                } else {
                    0.0
                };
                let mut cur = cur;
                for dd in 0..2 {
                    let g = if gc > 0.0 {
                        clip4(gc * f64::from(cur[dd] - oth[dd]))
                    } else {
                        0.0
                    };
                    cur[dd] += (g * alpha) as f32;
                }
                emb[j] = cur;
            }
            next_neg[i] += n_neg.max(0) as f64 * eps_neg[i];
        }
        alpha = cfg.alpha * (1.0 - (epoch as f64 / n_epochs as f64));
    }
    Ok(emb)
}
