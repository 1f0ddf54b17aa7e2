//! Principal component analysis through the covariance matrix (scanpy's
//! `svd_solver="covariance_eigh"` route): the `d × d` Gram of the centred data by blocked f32
//! products accumulated in f64, its eigen-decomposition in f64 (`faer`), then scikit-learn's
//! sign rule (`svd_flip(u_based_decision=False)`: the largest-|·| loading of every component
//! is positive).

use rayon::prelude::*;

use crate::error::{EvalError, Result, check_finite};
use crate::linalg::{gram_f64, matmul_nt, symmetric_eigen};

/// A fitted PCA and the projected data.
#[derive(Debug, Clone, PartialEq)]
pub struct Pca {
    /// Number of components.
    pub n_comps: usize,
    /// Input dimension.
    pub n_features: usize,
    /// `[n_comps × n_features]` row-major unit loadings (sklearn's `components_`).
    pub components: Vec<f32>,
    /// Variance along each component (eigenvalues of the covariance, ddof 1).
    pub variance: Vec<f64>,
    /// `variance / total variance`.
    pub variance_ratio: Vec<f64>,
    /// Column means that were subtracted.
    pub mean: Vec<f64>,
    /// `[n × n_comps]` row-major scores (scanpy's `X_pca`).
    pub scores: Vec<f32>,
}

/// scanpy's default number of components: 50, or `min(n_obs, n_vars) − 1` when smaller.
pub fn default_n_comps(n: usize, d: usize) -> usize {
    50.min(n.min(d).saturating_sub(1)).max(1)
}

/// PCA of the row-major `n × d` matrix `x` with `n_comps` components (capped at
/// `min(n, d) − 1`, as ARPACK requires), centred on the column means.
pub fn pca(x: &[f32], n: usize, d: usize, n_comps: usize) -> Result<Pca> {
    if x.len() != n * d {
        return Err(EvalError::LengthMismatch {
            what: "PCA matrix values against rows × columns".into(),
            a: x.len(),
            b: n * d,
        });
    }
    if n < 2 || d < 2 {
        return Err(EvalError::InvalidArgument(format!(
            "PCA needs at least 2 cells and 2 features, got {n} × {d}"
        )));
    }
    check_finite("the PCA input", x, d)?;
    let k = n_comps.clamp(1, n.min(d) - 1);
    let mut mean = vec![0.0f64; d];
    for row in x.chunks_exact(d) {
        for (m, &v) in mean.iter_mut().zip(row) {
            *m += f64::from(v);
        }
    }
    mean.iter_mut().for_each(|m| *m /= n as f64);
    let mut cov = gram_f64(x, n, d, Some(&mean));
    cov.iter_mut().for_each(|c| *c /= (n - 1) as f64);
    // symmetrize exactly (the blocked products are symmetric up to rounding)
    for i in 0..d {
        for j in 0..i {
            let v = 0.5 * (cov[i * d + j] + cov[j * d + i]);
            cov[i * d + j] = v;
            cov[j * d + i] = v;
        }
    }
    let total: f64 = (0..d).map(|i| cov[i * d + i]).sum();
    let (values, vectors) = symmetric_eigen(&cov, d)?;
    let mut components = Vec::with_capacity(k * d);
    for v in vectors.iter().take(k) {
        let (arg, _) = v
            .iter()
            .enumerate()
            .fold((0, -1.0f64), |(bi, bv), (i, &x)| {
                if x.abs() > bv { (i, x.abs()) } else { (bi, bv) }
            });
        let sign = if v[arg] < 0.0 { -1.0 } else { 1.0 };
        components.extend(v.iter().map(|&x| (x * sign) as f32));
    }
    let variance: Vec<f64> = values.iter().take(k).map(|&v| v.max(0.0)).collect();
    let variance_ratio = variance
        .iter()
        .map(|&v| if total > 0.0 { v / total } else { 0.0 })
        .collect();
    let scores = project(x, n, d, &mean, &components, k);
    Ok(Pca {
        n_comps: k,
        n_features: d,
        components,
        variance,
        variance_ratio,
        mean,
        scores,
    })
}

/// `(x − mean) · componentsᵀ` in blocks of rows (threads split the rows).
pub fn project(
    x: &[f32],
    n: usize,
    d: usize,
    mean: &[f64],
    components: &[f32],
    k: usize,
) -> Vec<f32> {
    const ROWS: usize = 1024;
    let blocks: Vec<usize> = (0..n).step_by(ROWS).collect();
    let parts: Vec<Vec<f32>> = blocks
        .par_iter()
        .map(|&r0| {
            let rows = ROWS.min(n - r0);
            let mut c: Vec<f32> = x[r0 * d..(r0 + rows) * d].to_vec();
            for row in c.chunks_exact_mut(d) {
                for (v, &m) in row.iter_mut().zip(mean) {
                    *v = (f64::from(*v) - m) as f32;
                }
            }
            let mut out = vec![0.0f32; rows * k];
            matmul_nt(&c, rows, components, k, d, &mut out);
            out
        })
        .collect();
    parts.concat()
}
