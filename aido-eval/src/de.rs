//! Differential expression of a group against a reference, and the perturbation metrics read
//! on its top genes.
//!
//! - [`welch_t`]: scanpy's `rank_genes_groups(method="t-test")` score — Welch's t of every gene,
//!   means and variances (ddof 1) of the log-normalized values, a NaN score (no variance in
//!   either group) set to 0 as scanpy does;
//! - [`rank_by_abs`]: genes by |t| descending (`rankby_abs=True`, as GEARS calls it), ties by
//!   gene index;
//! - [`mse_on`] and [`pearson_delta_on`]: GEARS's "MSE on the top-20 DE genes" and the Pearson
//!   correlation of predicted and true changes from the control mean on the same genes.

use crate::{EvalError, Result};

/// Per-gene mean and sample variance (ddof 1) of a row-major `[n, genes]` matrix.
fn mean_var(x: &[f64], genes: usize) -> (Vec<f64>, Vec<f64>, usize) {
    let n = x.len() / genes.max(1);
    let mut mean = vec![0.0; genes];
    for row in x.chunks_exact(genes) {
        for (m, v) in mean.iter_mut().zip(row) {
            *m += v;
        }
    }
    mean.iter_mut().for_each(|m| *m /= n as f64);
    let mut var = vec![0.0; genes];
    for row in x.chunks_exact(genes) {
        for ((s, v), m) in var.iter_mut().zip(row).zip(&mean) {
            *s += (v - m) * (v - m);
        }
    }
    var.iter_mut().for_each(|s| *s /= n as f64 - 1.0);
    (mean, var, n)
}

fn check(x: &[f64], genes: usize, what: &str) -> Result<()> {
    if genes == 0 || !x.len().is_multiple_of(genes) || x.is_empty() {
        return Err(EvalError::InvalidArgument(format!(
            "{what}: {} values are not whole rows of {genes} genes",
            x.len()
        )));
    }
    if let Some(i) = x.iter().position(|v| !v.is_finite()) {
        return Err(EvalError::InvalidArgument(format!(
            "{what}: non-finite value in row {}, gene {}",
            i / genes,
            i % genes
        )));
    }
    Ok(())
}

/// Welch's t of `group` against `reference` for every gene (both row-major `[cells, genes]`
/// log-normalized values): `(m₁ − m₂) / √(v₁/n₁ + v₂/n₂)`, positive when the group is higher.
/// A gene without variance in both (or a group of one cell) scores 0, as scanpy reports it.
pub fn welch_t(group: &[f64], reference: &[f64], genes: usize) -> Result<Vec<f64>> {
    check(group, genes, "DE group")?;
    check(reference, genes, "DE reference")?;
    let (m1, v1, n1) = mean_var(group, genes);
    let (m2, v2, n2) = mean_var(reference, genes);
    Ok((0..genes)
        .map(|g| {
            let t = (m1[g] - m2[g]) / (v1[g] / n1 as f64 + v2[g] / n2 as f64).sqrt();
            if t.is_finite() { t } else { 0.0 }
        })
        .collect())
}

/// Gene indices by |score| descending; equal |score| keep ascending gene order.
pub fn rank_by_abs(scores: &[f64]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[b].abs().total_cmp(&scores[a].abs()).then(a.cmp(&b)));
    order
}

fn gather(v: &[f64], genes: &[usize], what: &str) -> Result<Vec<f64>> {
    genes
        .iter()
        .map(|&g| {
            v.get(g).copied().ok_or_else(|| {
                EvalError::InvalidArgument(format!("{what}: gene {g} of {} genes", v.len()))
            })
        })
        .collect()
}

/// Mean squared error of `predicted` against `truth` (per-gene means) over `genes`.
pub fn mse_on(predicted: &[f64], truth: &[f64], genes: &[usize]) -> Result<f64> {
    if genes.is_empty() {
        return Err(EvalError::InvalidArgument("MSE over no genes".into()));
    }
    let p = gather(predicted, genes, "prediction")?;
    let t = gather(truth, genes, "truth")?;
    Ok(p.iter()
        .zip(&t)
        .map(|(a, b)| (a - b) * (a - b))
        .sum::<f64>()
        / genes.len() as f64)
}

/// Pearson correlation of `predicted − control` and `truth − control` over `genes`
/// (0 when either change is constant there, as GEARS reports a NaN correlation).
pub fn pearson_delta_on(
    predicted: &[f64],
    truth: &[f64],
    control: &[f64],
    genes: &[usize],
) -> Result<f64> {
    let p = gather(predicted, genes, "prediction")?;
    let t = gather(truth, genes, "truth")?;
    let c = gather(control, genes, "control")?;
    let dp: Vec<f64> = p.iter().zip(&c).map(|(a, b)| a - b).collect();
    let dt: Vec<f64> = t.iter().zip(&c).map(|(a, b)| a - b).collect();
    let n = genes.len() as f64;
    let (mp, mt) = (dp.iter().sum::<f64>() / n, dt.iter().sum::<f64>() / n);
    let (mut sxy, mut sxx, mut syy) = (0.0, 0.0, 0.0);
    for (a, b) in dp.iter().zip(&dt) {
        sxy += (a - mp) * (b - mt);
        sxx += (a - mp) * (a - mp);
        syy += (b - mt) * (b - mt);
    }
    let r = sxy / (sxx * syy).sqrt();
    Ok(if r.is_finite() { r } else { 0.0 })
}
