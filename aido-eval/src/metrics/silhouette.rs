//! Silhouette coefficients (scikit-learn `silhouette_samples`) and scib-metrics' label and
//! batch ASW.
//!
//! Distances are computed in f64 tiles of 256 cells against all cells, the way sklearn's
//! `pairwise_distances_chunked` does (Euclidean: `‖x‖² − 2x·y + ‖y‖²`, clamped at 0, the
//! diagonal set to 0; cosine: `1 − x̂·ŷ` clipped to [0, 2]); only per-label sums are kept, so
//! memory is `O(tile · n)`, never `n × n`. Rows are split between threads, not sums, so the
//! result does not depend on the thread count.

use rayon::prelude::*;

use crate::error::{EvalError, Result, check_finite};
use crate::labels::Labels;
use crate::linalg::matmul_nt;

/// The distance of a silhouette.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Metric {
    /// Euclidean (sklearn's and scib's default).
    Euclidean,
    /// Cosine distance `1 − cos`.
    Cosine,
}

const TILE: usize = 128;
const COLS: usize = 1024;

/// Per-cell silhouette of `labels` on the row-major `n × d` matrix `x`. Cells alone in their
/// label get 0 (as sklearn, whose NaN is turned into 0), so do cells with `a = b = 0`.
/// Needs at least 2 distinct labels.
pub fn silhouette_samples(
    x: &[f32],
    n: usize,
    d: usize,
    labels: &Labels,
    metric: Metric,
) -> Result<Vec<f64>> {
    if labels.len() != n || x.len() != n * d {
        return Err(EvalError::LengthMismatch {
            what: "silhouette: labels against embedding rows".into(),
            a: labels.len(),
            b: x.len().checked_div(d).unwrap_or(0),
        });
    }
    let n_labels = labels.n_distinct();
    if n_labels < 2 {
        return Err(EvalError::LabelCount {
            metric: "a silhouette",
            need: "at least 2".into(),
            got: n_labels,
        });
    }
    check_finite("the silhouette input", x, d)?;
    let mut xf: Vec<f64> = x.iter().map(|&v| f64::from(v)).collect();
    if metric == Metric::Cosine {
        for row in xf.chunks_exact_mut(d.max(1)) {
            let norm = row.iter().map(|v| v * v).sum::<f64>().sqrt();
            if norm > 0.0 {
                row.iter_mut().for_each(|v| *v /= norm);
            }
        }
    }
    let norms: Vec<f64> = xf
        .chunks_exact(d.max(1))
        .map(|r| r.iter().map(|v| v * v).sum())
        .collect();
    let l = labels.names.len();
    let freq = labels.counts();
    let codes = &labels.codes;
    // Columns in label order: each label's distances are then one contiguous run of a row
    // (a plain sum, no scatter by label).
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by_key(|&i| (codes[i], i));
    let xs: Vec<f64> = order
        .iter()
        .flat_map(|&i| xf[i * d..(i + 1) * d].iter().copied())
        .collect();
    let norms_s: Vec<f64> = order.iter().map(|&i| norms[i]).collect();
    let mut inv = vec![0usize; n];
    for (p, &i) in order.iter().enumerate() {
        inv[i] = p;
    }
    let mut starts = vec![0usize; l + 1];
    for c in 0..l {
        starts[c + 1] = starts[c] + freq[c];
    }
    let blocks: Vec<(usize, usize)> = (0..n)
        .step_by(TILE)
        .map(|r0| (r0, TILE.min(n - r0)))
        .collect();
    let out: Vec<Vec<f64>> = blocks
        .par_iter()
        .map(|&(r0, rows)| {
            let a = &xf[r0 * d..(r0 + rows) * d];
            let mut sums = vec![0.0f64; rows * l];
            let mut tile = vec![0.0f64; rows * COLS.min(n)];
            let mut c0 = 0;
            while c0 < n {
                let cols = COLS.min(n - c0);
                let t = &mut tile[..rows * cols];
                matmul_nt(a, rows, &xs[c0 * d..(c0 + cols) * d], cols, d, t);
                for r in 0..rows {
                    let i = r0 + r;
                    let ni = norms[i];
                    let trow = &mut t[r * cols..(r + 1) * cols];
                    match metric {
                        Metric::Euclidean => {
                            for (v, &nj) in trow.iter_mut().zip(&norms_s[c0..c0 + cols]) {
                                *v = (-2.0 * *v + ni + nj).max(0.0).sqrt();
                            }
                        }
                        Metric::Cosine => {
                            for v in trow.iter_mut() {
                                *v = (1.0 - *v).clamp(0.0, 2.0);
                            }
                        }
                    }
                    // the self distance is 0 (sklearn zeroes the diagonal)
                    let own_pos = inv[i];
                    if (c0..c0 + cols).contains(&own_pos) {
                        trow[own_pos - c0] = 0.0;
                    }
                    let s = &mut sums[r * l..(r + 1) * l];
                    for c in 0..l {
                        let (a0, a1) = (starts[c].max(c0), starts[c + 1].min(c0 + cols));
                        if a0 < a1 {
                            s[c] += trow[a0 - c0..a1 - c0].iter().sum::<f64>();
                        }
                    }
                }
                c0 += cols;
            }
            (0..rows)
                .map(|r| {
                    let i = r0 + r;
                    let own = codes[i] as usize;
                    let s = &sums[r * l..(r + 1) * l];
                    let intra = s[own] / (freq[own] as f64 - 1.0);
                    let inter = (0..l)
                        .filter(|&c| c != own && freq[c] > 0)
                        .map(|c| s[c] / freq[c] as f64)
                        .fold(f64::INFINITY, f64::min);
                    let v = (inter - intra) / intra.max(inter);
                    if v.is_finite() { v } else { 0.0 }
                })
                .collect()
        })
        .collect();
    Ok(out.into_iter().flatten().collect())
}

/// Mean silhouette (sklearn `silhouette_score`).
pub fn silhouette_score(
    x: &[f32],
    n: usize,
    d: usize,
    labels: &Labels,
    metric: Metric,
) -> Result<f64> {
    let s = silhouette_samples(x, n, d, labels, metric)?;
    Ok(s.iter().sum::<f64>() / s.len() as f64)
}

/// scib's label ASW: the mean silhouette rescaled to `(s + 1) / 2` (higher = labels
/// better separated).
pub fn label_asw(x: &[f32], n: usize, d: usize, labels: &Labels, metric: Metric) -> Result<f64> {
    Ok((silhouette_score(x, n, d, labels, metric)? + 1.0) / 2.0)
}

/// scib's batch ASW: within each label, the silhouette of the batches, `1 − |s|` per cell,
/// averaged per label, then the mean over labels (each label weighs the same). A label with
/// one batch, or with every cell in its own batch, is skipped. Errors if every label is.
pub fn batch_asw(
    x: &[f32],
    n: usize,
    d: usize,
    labels: &Labels,
    batches: &Labels,
    metric: Metric,
) -> Result<f64> {
    if labels.len() != n || batches.len() != n {
        return Err(EvalError::LengthMismatch {
            what: "batch ASW: labels and batches against embedding rows".into(),
            a: labels.len(),
            b: batches.len(),
        });
    }
    let mut per_label = Vec::new();
    for code in 0..labels.names.len() as u32 {
        let keep: Vec<usize> = (0..n).filter(|&i| labels.codes[i] == code).collect();
        if keep.is_empty() {
            continue;
        }
        let b = batches.select(&keep);
        let nb = b.n_distinct();
        if nb == 1 || nb == keep.len() {
            continue;
        }
        let sub: Vec<f32> = keep
            .iter()
            .flat_map(|&i| x[i * d..(i + 1) * d].iter().copied())
            .collect();
        let s = silhouette_samples(&sub, keep.len(), d, &b, metric)?;
        per_label.push(s.iter().map(|v| 1.0 - v.abs()).sum::<f64>() / s.len() as f64);
    }
    if per_label.is_empty() {
        return Err(EvalError::LabelCount {
            metric: "batch ASW",
            need: "a label holding cells of at least 2 batches".into(),
            got: batches.n_distinct(),
        });
    }
    Ok(per_label.iter().sum::<f64>() / per_label.len() as f64)
}
