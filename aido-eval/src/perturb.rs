//! Perturbation predictions judged as the field judges them since 2025: the Virtual Cell
//! Challenge's metrics (cell-eval 0.8 with pdex 0.3), Systema's centroid metrics, and the
//! cell-mean baseline that normalises the challenge's scores.
//!
//! Definitions (each checked against the package on `testdata/perturb_score`, whose
//! `make_reference.py` ran cell-eval 0.8.2 / pdex 0.3.0 and wrote Systema's formulas in numpy):
//!
//! - **Pseudobulk** `m_p` = per-gene mean of the log1p values of perturbation `p`'s cells
//!   (f64 sum, rounded to f32 as polars returns it); `Δ_p = m_p − m_control` within one file
//!   (a prediction's change is read against the prediction's own control cells).
//! - **`pearson_delta`**: Pearson(Δ_pred,p, Δ_real,p) over all genes (NaN when one is constant).
//! - **`mae`** / **`mse`**: mean |·| / (·)² of `m_pred,p − m_real,p` (the expression, not the change).
//! - **`discrimination_score_l1`**: L1 distances from Δ_pred,p to every Δ_real,q over the genes
//!   except the column named like `p` (its target); `1 − r/N` with `r` the number of `q` strictly
//!   closer than `p` itself and `N` the perturbations (1 = best).
//! - **Differential expression** (pdex, `mode="ref"`): each perturbation against its file's
//!   control, per gene the Mann–Whitney U test two-sided with the normal approximation, tie
//!   correction and continuity correction (= `scipy.stats.mannwhitneyu(method="asymptotic")`),
//!   Benjamini–Hochberg over all genes; fold change `log2(expm1(m̄_p) / expm1(m̄_ctrl))` of the
//!   f32 means as pdex computes them (0/0 = 0, one zero = ±∞). Significant: FDR < 0.05 after
//!   rounding to f32, as cell-eval reads its tables.
//! - **`overlap_at_N`**: the real significant genes ranked by |log2FC| (descending, ties in gene
//!   order), `k` of them; the share of them among the predicted significant genes' top `k`;
//!   0 when `k = 0`, and 0 for every perturbation when either side has no significant gene at
//!   all.
//! - **Systema** (Viñas Torné et al., Nat Biotechnol 2025): `pearson_delta_centroid` =
//!   Pearson(m_pred,p − ref, m_real,p − ref) with `ref` the mean of the real perturbation
//!   centroids (control excluded), on all genes or on `p`'s top-20 DE genes; centroid accuracy:
//!   whether `m_pred,p` is strictly closer (Euclidean) to `m_real,p` than to every other real
//!   centroid.
//! - **Baseline and normalised scores** (cell-eval `baseline` + `score`, the Virtual Cell
//!   Challenge): the baseline predicts every perturbation as `b` = the mean of all real group
//!   means (control included), with the real control cells; a lower-is-better metric scores
//!   `1 − user/base`, a higher-is-better one `(user − base)/(1 − base)`, NaN → 0, clipped at 0.

use std::collections::BTreeMap;

use aido_tokenize::CsrChunk;
use rayon::prelude::*;
use serde::Serialize;

use crate::{EvalError, Result};

/// Cells of one file grouped by perturbation: a log1p-normalised `[cells, genes]` CSR matrix,
/// each cell's group, the group names, and which group is the control.
#[derive(Debug, Clone)]
pub struct GroupedCells {
    /// The values, cells as rows (non-negative).
    pub x: CsrChunk,
    /// Genes (columns).
    pub n_genes: usize,
    /// Each cell's group (index into `names`).
    pub group: Vec<usize>,
    /// Group names.
    pub names: Vec<String>,
    /// The control group.
    pub control: usize,
}

impl GroupedCells {
    fn check(&self, what: &str) -> Result<()> {
        let n = self.x.n_cells();
        if self.group.len() != n {
            return Err(EvalError::InvalidArgument(format!(
                "{what}: {} group labels for {n} cells",
                self.group.len()
            )));
        }
        if let Some(&g) = self.group.iter().find(|&&g| g >= self.names.len()) {
            return Err(EvalError::InvalidArgument(format!(
                "{what}: group {g} of {} groups",
                self.names.len()
            )));
        }
        if let Some((i, v)) = self
            .x
            .data
            .iter()
            .enumerate()
            .find(|(_, v)| !v.is_finite() || **v < 0.0)
        {
            return Err(EvalError::InvalidArgument(format!(
                "{what}: stored value {i} is {v}; log1p values are finite and ≥ 0"
            )));
        }
        if let Some(&j) = self.x.indices.iter().find(|&&j| j as usize >= self.n_genes) {
            return Err(EvalError::InvalidArgument(format!(
                "{what}: gene column {j} of {} genes",
                self.n_genes
            )));
        }
        Ok(())
    }

    /// Cells per group.
    pub fn counts(&self) -> Vec<usize> {
        let mut c = vec![0; self.names.len()];
        for &g in &self.group {
            c[g] += 1;
        }
        c
    }

    /// Per-group mean of every gene, `[groups][genes]`: the f64 mean rounded to f32 (polars'
    /// `group_by().mean()` on f32 columns, as cell-eval builds its pseudobulks).
    pub fn pseudobulk(&self) -> Vec<Vec<f32>> {
        let g = self.n_genes;
        let mut sum = vec![vec![0.0f64; g]; self.names.len()];
        for (i, &k) in self.group.iter().enumerate() {
            let (idx, val) = self.x.row(i);
            for (&j, &v) in idx.iter().zip(val) {
                sum[k][j as usize] += f64::from(v);
            }
        }
        let counts = self.counts();
        sum.into_iter()
            .zip(counts)
            .map(|(s, n)| {
                s.into_iter()
                    .map(|v| {
                        if n == 0 {
                            f32::NAN
                        } else {
                            (v / n as f64) as f32
                        }
                    })
                    .collect()
            })
            .collect()
    }

    /// Per-group `expm1` of the f32 mean, `[groups][genes]`, computed as pdex gets it from
    /// scipy: `Σ_rows f32(x · f32(1/n))` accumulated in f32 in row order, then f32 `expm1`.
    fn pdex_means(&self) -> Vec<Vec<f32>> {
        let g = self.n_genes;
        let counts = self.counts();
        let inv: Vec<f32> = counts
            .iter()
            .map(|&n| if n == 0 { 0.0 } else { 1.0 / n as f32 })
            .collect();
        let mut sum = vec![vec![0.0f32; g]; self.names.len()];
        for (i, &k) in self.group.iter().enumerate() {
            let (idx, val) = self.x.row(i);
            for (&j, &v) in idx.iter().zip(val) {
                sum[k][j as usize] += v * inv[k];
            }
        }
        sum.into_iter()
            .map(|s| s.into_iter().map(f32::exp_m1).collect())
            .collect()
    }

    /// The non-zero values of every gene per group, sorted ascending, `[genes][groups]`.
    fn sorted_columns(&self) -> Vec<Vec<Vec<f64>>> {
        let mut cols = vec![vec![Vec::new(); self.names.len()]; self.n_genes];
        for (i, &k) in self.group.iter().enumerate() {
            let (idx, val) = self.x.row(i);
            for (&j, &v) in idx.iter().zip(val) {
                if v != 0.0 {
                    cols[j as usize][k].push(f64::from(v));
                }
            }
        }
        cols.par_iter_mut().for_each(|per| {
            for v in per.iter_mut() {
                v.sort_by(f64::total_cmp);
            }
        });
        cols
    }
}

/// The Mann–Whitney U test of `x` against `y`, each given as its sorted non-zero values plus a
/// number of zeros (all values ≥ 0): `(U₁, p)` with `U₁` for `x`, the two-sided p-value of the
/// normal approximation with tie and continuity corrections (`scipy.stats.mannwhitneyu(x, y,
/// use_continuity=True, alternative="two-sided", method="asymptotic")`); p = 1 when every value
/// is equal.
pub fn mann_whitney_u(x: &[f64], x_zeros: usize, y: &[f64], y_zeros: usize) -> (f64, f64) {
    let n1 = (x.len() + x_zeros) as f64;
    let n2 = (y.len() + y_zeros) as f64;
    let n = n1 + n2;
    let (mut r1, mut ties, mut pos) = (0.0f64, 0.0f64, 0.0f64);
    let mut tie = |cx: usize, cy: usize, r1: &mut f64| {
        let t = (cx + cy) as f64;
        if t > 0.0 {
            *r1 += cx as f64 * (pos + (t + 1.0) / 2.0);
            ties += t * t * t - t;
            pos += t;
        }
    };
    tie(x_zeros, y_zeros, &mut r1);
    let (mut i, mut j) = (0, 0);
    while i < x.len() || j < y.len() {
        let v = match (x.get(i), y.get(j)) {
            (Some(&a), Some(&b)) => a.min(b),
            (Some(&a), None) => a,
            (None, Some(&b)) => b,
            (None, None) => break,
        };
        let (i0, j0) = (i, j);
        while i < x.len() && x[i] == v {
            i += 1;
        }
        while j < y.len() && y[j] == v {
            j += 1;
        }
        tie(i - i0, j - j0, &mut r1);
    }
    let u1 = r1 - n1 * (n1 + 1.0) / 2.0;
    let u2 = n1 * n2 - u1;
    let var = n1 * n2 / 12.0 * ((n + 1.0) - ties / (n * (n - 1.0)));
    if n1 == 0.0 || n2 == 0.0 || var <= 0.0 {
        return (u1, 1.0);
    }
    let z = (u1.max(u2) - n1 * n2 / 2.0 - 0.5) / var.sqrt();
    (u1, libm::erfc(z / std::f64::consts::SQRT_2).clamp(0.0, 1.0))
}

/// Benjamini–Hochberg adjusted p-values (`scipy.stats.false_discovery_control`, method "bh").
pub fn benjamini_hochberg(p: &[f64]) -> Vec<f64> {
    let m = p.len();
    let mut order: Vec<usize> = (0..m).collect();
    order.sort_by(|&a, &b| p[a].total_cmp(&p[b]));
    let mut q = vec![0.0; m];
    let mut running = f64::INFINITY;
    for (rank, &i) in order.iter().enumerate().rev() {
        running = running.min(p[i] * m as f64 / (rank + 1) as f64);
        q[i] = running.clamp(0.0, 1.0);
    }
    q
}

/// One perturbation's differential expression against the control, per gene.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DeTable {
    /// `log2(expm1(m̄_p) / expm1(m̄_ctrl))` (0/0 = 0; ±∞ when one side is zero).
    pub log2_fold_change: Vec<f64>,
    /// Mann–Whitney U of the perturbation's cells.
    pub statistic: Vec<f64>,
    /// Two-sided p-value.
    pub p_value: Vec<f64>,
    /// Benjamini–Hochberg over the genes.
    pub fdr: Vec<f64>,
}

impl DeTable {
    /// The significant genes (FDR < 0.05 in f32, as cell-eval reads its tables) by |log2FC|
    /// descending (in f32; ±∞ first), ties in gene order.
    pub fn ranked_significant(&self) -> Vec<usize> {
        let mut sig: Vec<usize> = (0..self.fdr.len())
            .filter(|&g| (self.fdr[g] as f32) < 0.05)
            .collect();
        let key = |g: usize| (self.log2_fold_change[g] as f32).abs();
        sig.sort_by(|&a, &b| key(b).total_cmp(&key(a)).then(a.cmp(&b)));
        sig
    }
}

/// Differential expression (pdex `mode="ref"`) of every group but the control against the
/// control, `group → table` (the control's entry is `None`).
pub fn differential_expression(cells: &GroupedCells) -> Result<Vec<Option<DeTable>>> {
    cells.check("differential expression")?;
    let counts = cells.counts();
    let c = cells.control;
    if counts[c] == 0 {
        return Err(EvalError::InvalidArgument(format!(
            "the control group {} has no cells",
            cells.names[c]
        )));
    }
    let means = cells.pdex_means();
    let cols = cells.sorted_columns();
    // per gene, per group: (U, p)
    let tests: Vec<Vec<(f64, f64)>> = cols
        .par_iter()
        .map(|per| {
            (0..cells.names.len())
                .map(|k| {
                    if k == c || counts[k] == 0 {
                        return (f64::NAN, 1.0);
                    }
                    mann_whitney_u(
                        &per[k],
                        counts[k] - per[k].len(),
                        &per[c],
                        counts[c] - per[c].len(),
                    )
                })
                .collect()
        })
        .collect();
    Ok((0..cells.names.len())
        .map(|k| {
            if k == c || counts[k] == 0 {
                return None;
            }
            let p_value: Vec<f64> = tests.iter().map(|t| t[k].1).collect();
            let statistic: Vec<f64> = tests.iter().map(|t| t[k].0).collect();
            let log2_fold_change = (0..cells.n_genes)
                .map(|g| {
                    let (t, r) = (f64::from(means[k][g]), f64::from(means[c][g]));
                    if t == 0.0 && r == 0.0 {
                        0.0
                    } else {
                        (t / r).log2()
                    }
                })
                .collect();
            Some(DeTable {
                fdr: benjamini_hochberg(&p_value),
                log2_fold_change,
                statistic,
                p_value,
            })
        })
        .collect())
}

/// `overlap_at_N` of one perturbation: of the real ranked significant genes (`k` of them), the
/// share found in the predicted ranked list's first `k`; 0 when `k = 0`.
pub fn overlap_at_n(real: &[usize], predicted: &[usize]) -> f64 {
    let k = real.len();
    if k == 0 {
        return 0.0;
    }
    let top: std::collections::HashSet<usize> = predicted.iter().take(k).copied().collect();
    real.iter().filter(|g| top.contains(g)).count() as f64 / k as f64
}

/// Pearson correlation (NaN when either side is constant or empty).
pub fn pearson(a: &[f64], b: &[f64]) -> f64 {
    let n = a.len() as f64;
    if a.is_empty() || a.len() != b.len() {
        return f64::NAN;
    }
    let (ma, mb) = (a.iter().sum::<f64>() / n, b.iter().sum::<f64>() / n);
    let (mut sab, mut saa, mut sbb) = (0.0, 0.0, 0.0);
    for (x, y) in a.iter().zip(b) {
        sab += (x - ma) * (y - mb);
        saa += (x - ma) * (x - ma);
        sbb += (y - mb) * (y - mb);
    }
    if saa == 0.0 || sbb == 0.0 {
        return f64::NAN;
    }
    (sab / (saa * sbb).sqrt()).clamp(-1.0, 1.0)
}

/// The per-perturbation metrics of one prediction (see the module docs; NaN where cell-eval
/// reports NaN).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PerturbationScores {
    /// cell-eval `overlap_at_N`.
    pub overlap_at_n: f64,
    /// cell-eval `discrimination_score_l1`.
    pub discrimination_score_l1: f64,
    /// cell-eval `mae` (pseudobulk expression).
    pub mae: f64,
    /// cell-eval `mse`.
    pub mse: f64,
    /// cell-eval `pearson_delta` (each file's change from its own control).
    pub pearson_delta: f64,
    /// Systema's Pearson Δ against the mean of the real perturbation centroids, all genes.
    pub pearson_delta_centroid: f64,
    /// The same on the perturbation's top-20 real DE genes (by FDR, then |log2FC|).
    pub pearson_delta_centroid_top20_de: f64,
    /// Systema: 1 when the predicted centroid is strictly closest to its own real centroid.
    pub centroid_accuracy: f64,
    /// Real significant DE genes (FDR < 0.05).
    pub n_de_real: usize,
    /// Predicted significant DE genes.
    pub n_de_predicted: usize,
}

/// The metric names of [`PerturbationScores`] in reports, in order.
pub const SCORE_KEYS: [&str; 8] = [
    "overlap_at_N",
    "discrimination_score_l1",
    "mae",
    "mse",
    "pearson_delta",
    "pearson_delta_centroid",
    "pearson_delta_centroid_top20_de",
    "centroid_accuracy",
];

impl PerturbationScores {
    /// The value of a [`SCORE_KEYS`] metric.
    pub fn get(&self, key: &str) -> Option<f64> {
        Some(match key {
            "overlap_at_N" => self.overlap_at_n,
            "discrimination_score_l1" => self.discrimination_score_l1,
            "mae" => self.mae,
            "mse" => self.mse,
            "pearson_delta" => self.pearson_delta,
            "pearson_delta_centroid" => self.pearson_delta_centroid,
            "pearson_delta_centroid_top20_de" => self.pearson_delta_centroid_top20_de,
            "centroid_accuracy" => self.centroid_accuracy,
            _ => return None,
        })
    }
}

/// A prediction scored against the real cells.
#[derive(Debug, Clone, PartialEq)]
pub struct PredictionScores {
    /// Perturbation → its metrics, in name order.
    pub per_perturbation: BTreeMap<String, PerturbationScores>,
}

impl PredictionScores {
    /// The mean of a metric over the perturbations (NaN when any is NaN, as cell-eval's agg).
    pub fn mean(&self, key: &str) -> f64 {
        let v: Vec<f64> = self
            .per_perturbation
            .values()
            .filter_map(|s| s.get(key))
            .collect();
        if v.is_empty() {
            return f64::NAN;
        }
        v.iter().sum::<f64>() / v.len() as f64
    }
}

fn group_index(cells: &GroupedCells) -> BTreeMap<&str, usize> {
    cells
        .names
        .iter()
        .enumerate()
        .map(|(i, n)| (n.as_str(), i))
        .collect()
}

/// Scores `predicted` against `real`: the same genes in the same column order, the same
/// perturbation names (groups without cells are ignored), a control in both. `gene_names` name
/// the columns (a perturbation's own column is left out of its discrimination score).
pub fn score_predictions(
    real: &GroupedCells,
    predicted: &GroupedCells,
    gene_names: &[String],
) -> Result<PredictionScores> {
    let de_real = differential_expression(real)?;
    let de_pred = differential_expression(predicted)?;
    score_predictions_with(real, &de_real, predicted, &de_pred, gene_names)
}

/// [`score_predictions`] with both files' differential expression computed
/// ([`differential_expression`]; the real one can serve several predictions).
pub fn score_predictions_with(
    real: &GroupedCells,
    de_real: &[Option<DeTable>],
    predicted: &GroupedCells,
    de_pred: &[Option<DeTable>],
    gene_names: &[String],
) -> Result<PredictionScores> {
    if de_real.len() != real.names.len() || de_pred.len() != predicted.names.len() {
        return Err(EvalError::InvalidArgument(
            "differential expression tables do not match the groups".into(),
        ));
    }
    real.check("real cells")?;
    predicted.check("predicted cells")?;
    if real.n_genes != predicted.n_genes || gene_names.len() != real.n_genes {
        return Err(EvalError::InvalidArgument(format!(
            "{} real genes, {} predicted, {} names",
            real.n_genes,
            predicted.n_genes,
            gene_names.len()
        )));
    }
    let (rc, pc) = (real.counts(), predicted.counts());
    let perts: Vec<&str> = real
        .names
        .iter()
        .enumerate()
        .filter(|&(k, _)| k != real.control && rc[k] > 0)
        .map(|(_, n)| n.as_str())
        .collect();
    let pidx = group_index(predicted);
    let ridx = group_index(real);
    for p in &perts {
        if !pidx
            .get(p)
            .is_some_and(|&k| pc[k] > 0 && k != predicted.control)
        {
            return Err(EvalError::InvalidArgument(format!(
                "perturbation {p} has real cells but no predicted cells"
            )));
        }
    }
    if let Some(extra) = predicted.names.iter().enumerate().find(|&(k, n)| {
        k != predicted.control && pc[k] > 0 && ridx.get(n.as_str()).is_none_or(|&r| rc[r] == 0)
    }) {
        return Err(EvalError::InvalidArgument(format!(
            "perturbation {} has predicted cells but no real cells",
            extra.1
        )));
    }
    if perts.is_empty() {
        return Err(EvalError::InvalidArgument(
            "no perturbation besides the control".into(),
        ));
    }
    let g = real.n_genes;
    let (mr, mp) = (real.pseudobulk(), predicted.pseudobulk());
    let delta = |m: &[Vec<f32>], k: usize, c: usize| -> Vec<f32> {
        m[k].iter().zip(&m[c]).map(|(a, b)| a - b).collect()
    };
    let wide = |v: &[f32]| -> Vec<f64> { v.iter().map(|&x| f64::from(x)).collect() };
    let rk: Vec<usize> = perts.iter().map(|p| ridx[p]).collect();
    let pk: Vec<usize> = perts.iter().map(|p| pidx[p]).collect();
    let d_real: Vec<Vec<f64>> = rk
        .iter()
        .map(|&k| wide(&delta(&mr, k, real.control)))
        .collect();
    let d_pred: Vec<Vec<f64>> = pk
        .iter()
        .map(|&k| wide(&delta(&mp, k, predicted.control)))
        .collect();
    let ranked = |de: &[Option<DeTable>], k: usize| -> Vec<usize> {
        de[k]
            .as_ref()
            .map(DeTable::ranked_significant)
            .unwrap_or_default()
    };
    let lists_real: Vec<Vec<usize>> = rk.iter().map(|&k| ranked(de_real, k)).collect();
    let lists_pred: Vec<Vec<usize>> = pk.iter().map(|&k| ranked(de_pred, k)).collect();
    let any_sig = |l: &[Vec<usize>]| l.iter().any(|v| !v.is_empty());
    let overlap_defined = any_sig(&lists_real) && any_sig(&lists_pred);
    // Systema's reference: the mean of the real perturbation centroids (control excluded)
    let centroid = |m: &[Vec<f32>], k: usize| wide(&m[k]);
    let real_c: Vec<Vec<f64>> = rk.iter().map(|&k| centroid(&mr, k)).collect();
    let pred_c: Vec<Vec<f64>> = pk.iter().map(|&k| centroid(&mp, k)).collect();
    let reference: Vec<f64> = (0..g)
        .map(|j| real_c.iter().map(|c| c[j]).sum::<f64>() / real_c.len() as f64)
        .collect();
    let n = perts.len();
    let mut out = BTreeMap::new();
    for (i, p) in perts.iter().enumerate() {
        let mask: Vec<usize> = (0..g).filter(|&j| gene_names[j] != *p).collect();
        let l1 = |a: &[f64], b: &[f64]| mask.iter().map(|&j| (a[j] - b[j]).abs()).sum::<f64>();
        let d: Vec<f64> = (0..n).map(|q| l1(&d_real[q], &d_pred[i])).collect();
        let closer = d.iter().filter(|&&x| x < d[i]).count();
        let diff: Vec<f64> = pred_c[i]
            .iter()
            .zip(&real_c[i])
            .map(|(a, b)| a - b)
            .collect();
        let euclid = |a: &[f64], b: &[f64]| {
            a.iter()
                .zip(b)
                .map(|(x, y)| (x - y) * (x - y))
                .sum::<f64>()
                .sqrt()
        };
        let own = euclid(&pred_c[i], &real_c[i]);
        let closest = (0..n)
            .filter(|&q| q != i)
            .all(|q| own < euclid(&pred_c[i], &real_c[q]));
        let rel = |c: &[f64], genes: &[usize]| -> Vec<f64> {
            genes.iter().map(|&j| c[j] - reference[j]).collect()
        };
        let all: Vec<usize> = (0..g).collect();
        let top20 = top_de_by_fdr(de_real[rk[i]].as_ref(), 20);
        out.insert(
            (*p).to_string(),
            PerturbationScores {
                overlap_at_n: if overlap_defined {
                    overlap_at_n(&lists_real[i], &lists_pred[i])
                } else {
                    0.0
                },
                discrimination_score_l1: 1.0 - closer as f64 / n as f64,
                mae: diff.iter().map(|x| x.abs()).sum::<f64>() / g as f64,
                mse: diff.iter().map(|x| x * x).sum::<f64>() / g as f64,
                pearson_delta: pearson(&d_pred[i], &d_real[i]),
                pearson_delta_centroid: pearson(&rel(&pred_c[i], &all), &rel(&real_c[i], &all)),
                pearson_delta_centroid_top20_de: pearson(
                    &rel(&pred_c[i], &top20),
                    &rel(&real_c[i], &top20),
                ),
                centroid_accuracy: if closest { 1.0 } else { 0.0 },
                n_de_real: lists_real[i].len(),
                n_de_predicted: lists_pred[i].len(),
            },
        );
    }
    Ok(PredictionScores {
        per_perturbation: out,
    })
}

/// A perturbation's `n` top DE genes of a [`DeTable`]: by FDR ascending, then |log2FC|
/// descending, then gene order.
pub fn top_de_by_fdr(de: Option<&DeTable>, n: usize) -> Vec<usize> {
    let Some(de) = de else {
        return Vec::new();
    };
    let mut order: Vec<usize> = (0..de.fdr.len()).collect();
    order.sort_by(|&a, &b| {
        de.fdr[a]
            .total_cmp(&de.fdr[b])
            .then(
                de.log2_fold_change[b]
                    .abs()
                    .total_cmp(&de.log2_fold_change[a].abs()),
            )
            .then(a.cmp(&b))
    });
    order.truncate(n);
    order
}

/// cell-eval's cell-mean baseline built from the real cells: every perturbation's cells (as
/// many as it has) equal to `b`, the mean of all real group means (control included), plus the
/// real control cells.
pub fn mean_baseline(real: &GroupedCells) -> Result<GroupedCells> {
    real.check("real cells")?;
    let counts = real.counts();
    let m = real.pseudobulk();
    let groups: Vec<usize> = (0..real.names.len()).filter(|&k| counts[k] > 0).collect();
    let b: Vec<f32> = (0..real.n_genes)
        .map(|j| groups.iter().map(|&k| m[k][j]).sum::<f32>() / groups.len() as f32)
        .collect();
    let mut x = CsrChunk {
        first_cell: 0,
        indptr: vec![0],
        ..Default::default()
    };
    let mut group = Vec::new();
    let row: Vec<(u32, f32)> = b
        .iter()
        .enumerate()
        .filter(|(_, v)| **v != 0.0)
        .map(|(j, &v)| (j as u32, v))
        .collect();
    for &k in &groups {
        if k == real.control {
            continue;
        }
        for _ in 0..counts[k] {
            x.indices.extend(row.iter().map(|r| r.0));
            x.data.extend(row.iter().map(|r| r.1));
            x.indptr.push(x.data.len());
            group.push(k);
        }
    }
    for (i, &k) in real.group.iter().enumerate() {
        if k == real.control {
            let (idx, val) = real.x.row(i);
            x.indices.extend_from_slice(idx);
            x.data.extend_from_slice(val);
            x.indptr.push(x.data.len());
            group.push(k);
        }
    }
    Ok(GroupedCells {
        x,
        n_genes: real.n_genes,
        group,
        names: real.names.clone(),
        control: real.control,
    })
}

/// Whether lower is better for a metric (cell-eval's `best_value` ZERO: `mae`, `mse`).
pub fn lower_is_better(key: &str) -> bool {
    matches!(key, "mae" | "mse" | "mae_delta" | "mse_delta")
}

/// The Virtual Cell Challenge's normalised score of a metric's mean `user` against the
/// baseline's `base`: `1 − user/base` (lower is better) or `(user − base)/(1 − base)`, NaN → 0,
/// clipped below at 0.
pub fn normalized_score(key: &str, user: f64, base: f64) -> f64 {
    let s = if lower_is_better(key) {
        1.0 - user / base
    } else {
        (user - base) / (1.0 - base)
    };
    if s.is_nan() { 0.0 } else { s.max(0.0) }
}

/// The three metrics of the Virtual Cell Challenge.
pub const VCC_KEYS: [&str; 3] = ["overlap_at_N", "discrimination_score_l1", "mae"];
