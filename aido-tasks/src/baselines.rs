//! The expression baselines an annotation result is read against (SPEC-tasks §1): the
//! scanpy-style PCA of log-normalized expression, then a multinomial logistic regression
//! (scikit-learn's `LogisticRegression()` defaults: L2, C = 1, intercept not penalized) and a
//! 10-nearest-neighbour vote (`KNeighborsClassifier(n_neighbors=10)`: uniform weights, a tie
//! goes to the class that sorts first).
//!
//! Everything that is fitted — the highly variable genes, the scaling, the PCA, the
//! classifiers — is fitted on the training cells only and applied to the others, so the test
//! cells leak nothing into the baseline.

use aido_eval::knn::knn_query;
use aido_eval::pca::{pca, project};
use aido_eval::preprocess::{
    HvgSelection, apply_scale, check_counts, dense_columns, highly_variable_genes,
    normalize_log1p_in_place, scale,
};
use aido_tokenize::CsrChunk;
use rayon::prelude::*;
use serde::Serialize;

use crate::error::{Result, TaskError};

/// Accuracy and macro-F1 of a baseline on the test cells.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BaselineScore {
    /// Fraction correct.
    pub accuracy: f64,
    /// Macro-F1 over the union of true and predicted labels.
    pub macro_f1: f64,
}

/// Rows `rows` of a CSR chunk.
fn select_rows(x: &CsrChunk, rows: &[usize]) -> CsrChunk {
    let mut out = CsrChunk {
        first_cell: 0,
        indptr: vec![0],
        indices: Vec::new(),
        data: Vec::new(),
    };
    for &r in rows {
        let (i, v) = x.row(r);
        out.indices.extend_from_slice(i);
        out.data.extend_from_slice(v);
        out.indptr.push(out.indices.len());
    }
    out
}

/// The 50-component (at most) PCA features of every cell, from raw counts `[n × n_genes]`:
/// normalize_total (1e4) + log1p of every cell; seurat-flavour HVGs, scaling (ddof 1, clip
/// 10) and PCA fitted on the `train` rows. Returns `(features [n × k], k)`.
pub fn pca_features(
    mut counts: CsrChunk,
    n_genes: usize,
    train: &[usize],
    n_comps: usize,
) -> Result<(Vec<f32>, usize)> {
    check_counts(&counts)?;
    let n = counts.n_cells();
    normalize_log1p_in_place(&mut counts, 1e4);
    let hvg = highly_variable_genes(
        &select_rows(&counts, train),
        n_genes,
        HvgSelection::default(),
    )?;
    let sel = hvg.selected();
    if sel.len() < 2 {
        return Err(TaskError::Config(format!(
            "the expression baseline found {} highly variable genes in the training cells (2 or more needed)",
            sel.len()
        )));
    }
    let d = sel.len();
    let mut all = dense_columns(&counts, n_genes, &sel);
    drop(counts);
    let mut tr: Vec<f32> = train
        .iter()
        .flat_map(|&r| all[r * d..(r + 1) * d].iter().copied())
        .collect();
    let (mean, std) = scale(&mut tr, train.len(), d, Some(10.0));
    apply_scale(&mut all, d, &mean, &std, Some(10.0));
    let k = n_comps.min(train.len().min(d).saturating_sub(1)).max(1);
    let p = pca(&tr, train.len(), d, k)?;
    Ok((
        project(&all, n, d, &p.mean, &p.components, p.n_comps),
        p.n_comps,
    ))
}

/// A fitted multinomial logistic regression.
#[derive(Debug, Clone, PartialEq)]
pub struct LogReg {
    /// Classes `C`.
    pub n_classes: usize,
    /// Features `d`.
    pub n_features: usize,
    /// `[C × d]` coefficients (scikit-learn's `coef_`).
    pub coef: Vec<f64>,
    /// `[C]` intercepts.
    pub intercept: Vec<f64>,
    /// L-BFGS iterations used.
    pub iterations: usize,
}

const CHUNK: usize = 512;

/// `mean_i CE_i + ‖W‖² / (2 C n)` (scikit-learn's objective divided by `n`) and its gradient;
/// `theta = [W (C × d) | b (C)]`.
fn objective(theta: &[f64], x: &[f32], y: &[u32], d: usize, c: usize, l2: f64) -> (f64, Vec<f64>) {
    let n = y.len();
    let (w, b) = theta.split_at(c * d);
    // fixed chunks summed in order: independent of the thread count
    let parts: Vec<(f64, Vec<f64>)> = (0..n)
        .step_by(CHUNK)
        .collect::<Vec<_>>()
        .par_iter()
        .map(|&r0| {
            let mut g = vec![0.0f64; c * d + c];
            let mut f = 0.0f64;
            let mut z = vec![0.0f64; c];
            for i in r0..(r0 + CHUNK).min(n) {
                let xi = &x[i * d..(i + 1) * d];
                for k in 0..c {
                    let wk = &w[k * d..(k + 1) * d];
                    z[k] = b[k]
                        + wk.iter()
                            .zip(xi)
                            .map(|(&a, &v)| a * f64::from(v))
                            .sum::<f64>();
                }
                let m = z.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                let s: f64 = z.iter().map(|&v| (v - m).exp()).sum();
                let lse = m + s.ln();
                let yi = y[i] as usize;
                f += lse - z[yi];
                for k in 0..c {
                    let p = (z[k] - lse).exp() - if k == yi { 1.0 } else { 0.0 };
                    let gk = &mut g[k * d..(k + 1) * d];
                    for (gv, &v) in gk.iter_mut().zip(xi) {
                        *gv += p * f64::from(v);
                    }
                    g[c * d + k] += p;
                }
            }
            (f, g)
        })
        .collect();
    let mut f = 0.0;
    let mut g = vec![0.0f64; c * d + c];
    for (pf, pg) in parts {
        f += pf;
        for (a, b) in g.iter_mut().zip(pg) {
            *a += b;
        }
    }
    let inv = 1.0 / n as f64;
    f *= inv;
    g.iter_mut().for_each(|v| *v *= inv);
    for (j, &wv) in w.iter().enumerate() {
        f += 0.5 * l2 * wv * wv;
        g[j] += l2 * wv;
    }
    (f, g)
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// Fits `LogisticRegression(C=c_reg)` (multinomial, L2 on the coefficients, not the
/// intercepts) to the row-major features `x [n × d]` and classes `y` (`< n_classes`), by
/// L-BFGS (10 corrections, backtracking Armijo line search) run to convergence
/// (`‖∇‖∞ < 1e-9` or no further decrease), so the result is the optimum scikit-learn's
/// `lbfgs` approaches.
pub fn fit_logreg(x: &[f32], y: &[u32], d: usize, n_classes: usize, c_reg: f64) -> Result<LogReg> {
    let n = y.len();
    if n == 0 || x.len() != n * d || c_reg.is_nan() || c_reg <= 0.0 {
        return Err(TaskError::Config(format!(
            "logistic regression on {n} cells × {d} features (C = {c_reg})"
        )));
    }
    if let Some(i) = y.iter().position(|&v| v as usize >= n_classes) {
        return Err(TaskError::Config(format!(
            "cell {i} has class {} of {n_classes}",
            y[i]
        )));
    }
    let c = n_classes;
    let l2 = 1.0 / (c_reg * n as f64);
    let dim = c * d + c;
    let mut theta = vec![0.0f64; dim];
    let (mut f, mut g) = objective(&theta, x, y, d, c, l2);
    let m = 10;
    let mut hist: Vec<(Vec<f64>, Vec<f64>, f64)> = Vec::new();
    let mut iterations = 0;
    for it in 0..2000 {
        iterations = it;
        if g.iter().fold(0.0f64, |a, v| a.max(v.abs())) < 1e-9 {
            break;
        }
        // two-loop recursion
        let mut q = g.clone();
        let mut alpha = vec![0.0; hist.len()];
        for (j, (s, yv, rho)) in hist.iter().enumerate().rev() {
            alpha[j] = rho * dot(s, &q);
            q.iter_mut().zip(yv).for_each(|(a, b)| *a -= alpha[j] * b);
        }
        if let Some((s, yv, _)) = hist.last() {
            let gamma = dot(s, yv) / dot(yv, yv);
            q.iter_mut().for_each(|a| *a *= gamma);
        }
        for (j, (s, yv, rho)) in hist.iter().enumerate() {
            let beta = rho * dot(yv, &q);
            q.iter_mut()
                .zip(s)
                .for_each(|(a, b)| *a += (alpha[j] - beta) * b);
        }
        let mut dir: Vec<f64> = q.iter().map(|v| -v).collect();
        let mut slope = dot(&g, &dir);
        if slope >= 0.0 {
            // not a descent direction: restart from the gradient
            hist.clear();
            dir = g.iter().map(|v| -v).collect();
            slope = dot(&g, &dir);
        }
        let mut step = if hist.is_empty() {
            1.0 / g.iter().map(|v| v * v).sum::<f64>().sqrt().max(1.0)
        } else {
            1.0
        };
        let mut accepted = None;
        for _ in 0..60 {
            let cand: Vec<f64> = theta
                .iter()
                .zip(&dir)
                .map(|(t, dv)| t + step * dv)
                .collect();
            let (fc, gc) = objective(&cand, x, y, d, c, l2);
            if fc <= f + 1e-4 * step * slope {
                accepted = Some((cand, fc, gc));
                break;
            }
            step *= 0.5;
        }
        let Some((cand, fc, gc)) = accepted else {
            break;
        };
        let s: Vec<f64> = cand.iter().zip(&theta).map(|(a, b)| a - b).collect();
        let yv: Vec<f64> = gc.iter().zip(&g).map(|(a, b)| a - b).collect();
        let sy = dot(&s, &yv);
        let decrease = f - fc;
        theta = cand;
        f = fc;
        g = gc;
        if sy > 1e-12 {
            hist.push((s, yv, 1.0 / sy));
            if hist.len() > m {
                hist.remove(0);
            }
        }
        if decrease <= 1e-16 * f.abs().max(1.0) {
            break;
        }
    }
    if !f.is_finite() {
        return Err(TaskError::NonFinite {
            what: "logistic-regression loss".into(),
            epoch: 0,
        });
    }
    let (w, b) = theta.split_at(c * d);
    Ok(LogReg {
        n_classes: c,
        n_features: d,
        coef: w.to_vec(),
        intercept: b.to_vec(),
        iterations,
    })
}

impl LogReg {
    /// Class probabilities `[n × C]` of the features `x [n × d]`.
    pub fn predict_proba(&self, x: &[f32]) -> Vec<f64> {
        let (c, d) = (self.n_classes, self.n_features);
        let mut out = Vec::with_capacity(x.len() / d.max(1) * c);
        for xi in x.chunks_exact(d.max(1)) {
            let z: Vec<f64> = (0..c)
                .map(|k| {
                    self.intercept[k]
                        + self.coef[k * d..(k + 1) * d]
                            .iter()
                            .zip(xi)
                            .map(|(&a, &v)| a * f64::from(v))
                            .sum::<f64>()
                })
                .collect();
            let m = z.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            let s: f64 = z.iter().map(|&v| (v - m).exp()).sum();
            out.extend(z.iter().map(|&v| (v - m).exp() / s));
        }
        out
    }

    /// The most probable class of every row (the first on ties).
    pub fn predict(&self, x: &[f32]) -> Vec<u32> {
        let p = self.predict_proba(x);
        p.chunks_exact(self.n_classes)
            .map(|r| {
                let mut best = 0;
                for (k, &v) in r.iter().enumerate() {
                    if v > r[best] {
                        best = k;
                    }
                }
                best as u32
            })
            .collect()
    }
}

/// The `k`-nearest-neighbour vote: the class held by most of the `k` training rows nearest
/// each query (Euclidean), a tie going to the lowest class index.
pub fn knn_vote(
    train_x: &[f32],
    train_y: &[u32],
    queries: &[f32],
    d: usize,
    k: usize,
    n_classes: usize,
) -> Result<Vec<u32>> {
    let nq = queries.len() / d.max(1);
    let nn = knn_query(queries, nq, train_x, train_y.len(), d, k)?;
    Ok((0..nq)
        .map(|i| {
            let mut votes = vec![0usize; n_classes];
            for &j in nn.row(i) {
                votes[train_y[j as usize] as usize] += 1;
            }
            let mut best = 0;
            for (c, &v) in votes.iter().enumerate() {
                if v > votes[best] {
                    best = c;
                }
            }
            best as u32
        })
        .collect())
}
