//! The baselines a perturbation model must beat since 2025, from the training conditions'
//! mean profiles alone.
//!
//! - [`LinearModel`]: Ahlmann-Eltze, Huber & Anders (Nature Methods 2025, "Deep-learning-based
//!   gene perturbation effect prediction does not yet outperform simple linear baselines"),
//!   their `solve_y_axb`: with `Y` the genes × training-perturbations matrix of mean
//!   log-expression, `b` its row means and `Y_c = Y − b`,
//!   `W = (GᵀG + λI)⁻¹ Gᵀ Y_c Pᵀ (PPᵀ + λI)⁻¹` and the prediction `ŷ = G W p + b`. `G`
//!   (genes × K) is a gene embedding and a perturbation's column `p` of `P` (K × perturbations)
//!   is the sum of its genes' rows of a perturbation-gene embedding, so a perturbation never
//!   trained on is predictable. By default both come from a K = 10 PCA of `Y_c` with the genes
//!   as observations (λ = 0.1); [`LinearModel::fit`] takes other embeddings: the encoder's gene
//!   embeddings for `G` (`linear_encoder`) or another screen's fitted perturbation embedding
//!   for `P` (`linear_external`, the paper's best variant).
//! - [`matching_mean`]: Systema's (Viñas Torné et al., Nat Biotechnol 2025) `matching-mean`: a
//!   double → the mean of its two singles' training centroids; anything else → the mean of all
//!   perturbed training cells.

use std::collections::BTreeMap;

use crate::perturb::{Condition, ConditionTruth, SplitPart};
use crate::{Result, TaskError};

/// Settings of the linear model (the paper's defaults).
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct LinearConfig {
    /// PCA dimension `K` of the default embeddings (default 10).
    pub k: usize,
    /// Ridge penalty `λ` (default 0.1).
    pub ridge: f64,
}

impl Default for LinearConfig {
    fn default() -> Self {
        LinearConfig { k: 10, ridge: 0.1 }
    }
}

/// A fitted linear model.
#[derive(Debug, Clone, PartialEq)]
pub struct LinearModel {
    /// Genes.
    pub n_genes: usize,
    /// `G`, `[genes × kg]` row-major.
    pub gene_embedding: Vec<f64>,
    /// Width of `G`.
    pub kg: usize,
    /// The perturbation-gene embedding: gene name → its row (`kp` values).
    pub perturbation_embedding: BTreeMap<String, Vec<f64>>,
    /// Width of `P`.
    pub kp: usize,
    /// `W`, `[kg × kp]` row-major.
    pub w: Vec<f64>,
    /// `b`, the training row means `[genes]`.
    pub b: Vec<f64>,
}

/// Solves `A X = B` for a symmetric positive definite `A` (`n × n`, row-major) and `B`
/// (`n × m`, row-major) by Cholesky.
pub fn solve_spd(a: &[f64], n: usize, b: &[f64], m: usize) -> Result<Vec<f64>> {
    let mut l = vec![0.0f64; n * n];
    for i in 0..n {
        for j in 0..=i {
            let s: f64 = (0..j).map(|k| l[i * n + k] * l[j * n + k]).sum();
            if i == j {
                let d = a[i * n + i] - s;
                if d.partial_cmp(&0.0) != Some(std::cmp::Ordering::Greater) {
                    return Err(TaskError::Config(format!(
                        "the ridge system is not positive definite (pivot {i}: {d})"
                    )));
                }
                l[i * n + i] = d.sqrt();
            } else {
                l[i * n + j] = (a[i * n + j] - s) / l[j * n + j];
            }
        }
    }
    let mut x = b.to_vec();
    for c in 0..m {
        for i in 0..n {
            let s: f64 = (0..i).map(|k| l[i * n + k] * x[k * m + c]).sum();
            x[i * m + c] = (x[i * m + c] - s) / l[i * n + i];
        }
        for i in (0..n).rev() {
            let s: f64 = (i + 1..n).map(|k| l[k * n + i] * x[k * m + c]).sum();
            x[i * m + c] = (x[i * m + c] - s) / l[i * n + i];
        }
    }
    Ok(x)
}

/// `[r × c]` = `a [r × k]` · `b [k × c]`, row-major.
fn matmul(a: &[f64], r: usize, k: usize, b: &[f64], c: usize) -> Vec<f64> {
    let mut out = vec![0.0; r * c];
    for i in 0..r {
        for t in 0..k {
            let v = a[i * k + t];
            if v != 0.0 {
                for j in 0..c {
                    out[i * c + j] += v * b[t * c + j];
                }
            }
        }
    }
    out
}

fn transpose(a: &[f64], r: usize, c: usize) -> Vec<f64> {
    let mut t = vec![0.0; r * c];
    for i in 0..r {
        for j in 0..c {
            t[j * r + i] = a[i * c + j];
        }
    }
    t
}

/// The `k`-dimensional PCA scores `[rows × k]` of a row-major `[rows × cols]` matrix (rows as
/// observations, columns centred; scikit-learn's sign rule: each component's largest entry
/// positive), in f64.
pub fn pca_scores(x: &[f64], rows: usize, cols: usize, k: usize) -> Result<Vec<f64>> {
    if rows < 2 || cols < 1 {
        return Err(TaskError::Config(format!(
            "a PCA needs 2 genes and 1 perturbation, got {rows} × {cols}"
        )));
    }
    let k = k.min(cols).min(rows - 1);
    let mut mean = vec![0.0; cols];
    for r in x.chunks_exact(cols) {
        for (m, v) in mean.iter_mut().zip(r) {
            *m += v / rows as f64;
        }
    }
    let xc: Vec<f64> = x
        .chunks_exact(cols)
        .flat_map(|r| r.iter().zip(&mean).map(|(v, m)| v - m).collect::<Vec<_>>())
        .collect();
    let mut cov = matmul(&transpose(&xc, rows, cols), cols, rows, &xc, cols);
    cov.iter_mut().for_each(|c| *c /= (rows - 1) as f64);
    let (_, vectors) = aido_eval::linalg::symmetric_eigen(&cov, cols)
        .map_err(|e| TaskError::Config(e.to_string()))?;
    let mut comps = Vec::with_capacity(cols * k);
    for v in vectors.iter().take(k) {
        let big = v
            .iter()
            .copied()
            .fold(0.0f64, |b, x| if x.abs() > b.abs() { x } else { b });
        let s = if big < 0.0 { -1.0 } else { 1.0 };
        comps.extend(v.iter().map(|x| x * s));
    }
    // scores = xc · compsᵀ
    Ok(matmul(&xc, rows, cols, &transpose(&comps, k, cols), k))
}

impl LinearModel {
    /// Fits the model on the training conditions of `truths` (`part == Train`, not the control)
    /// whose genes all have a perturbation embedding. `genes` are the data's gene names.
    /// `gene_embedding`: `G` (`[genes × kg]`), `None` for the PCA; `perturbation_embedding`:
    /// gene → row, `None` for `G`'s rows (the paper's use of one embedding for both).
    pub fn fit(
        truths: &[ConditionTruth],
        genes: &[String],
        gene_embedding: Option<(&[f64], usize)>,
        perturbation_embedding: Option<&BTreeMap<String, Vec<f64>>>,
        config: LinearConfig,
    ) -> Result<LinearModel> {
        let n = genes.len();
        if !(config.ridge.is_finite() && config.ridge > 0.0) || config.k == 0 {
            return Err(TaskError::Config(format!(
                "linear model: need K ≥ 1 and λ > 0, got K = {}, λ = {}",
                config.k, config.ridge
            )));
        }
        let train: Vec<&ConditionTruth> = truths
            .iter()
            .filter(|t| t.part == Some(SplitPart::Train) && !t.condition.is_control())
            .collect();
        if train.is_empty() {
            return Err(TaskError::Split(
                "the linear model needs training perturbations".into(),
            ));
        }
        // Y: genes × T; b: row means; Y_c
        let t = train.len();
        let mut y = vec![0.0; n * t];
        for (c, tr) in train.iter().enumerate() {
            for g in 0..n {
                y[g * t + c] = tr.mean[g];
            }
        }
        let b: Vec<f64> = (0..n)
            .map(|g| y[g * t..(g + 1) * t].iter().sum::<f64>() / t as f64)
            .collect();
        let yc: Vec<f64> = (0..n * t).map(|i| y[i] - b[i / t]).collect();
        let (gm, kg): (Vec<f64>, usize) = match gene_embedding {
            Some((v, k)) => {
                if v.len() != n * k || k == 0 {
                    return Err(TaskError::Config(format!(
                        "gene embedding of {} values for {n} genes × {k}",
                        v.len()
                    )));
                }
                (v.to_vec(), k)
            }
            None => {
                let s = pca_scores(&yc, n, t, config.k)?;
                let k = s.len() / n;
                (s, k)
            }
        };
        let (pe, kp): (BTreeMap<String, Vec<f64>>, usize) = match perturbation_embedding {
            Some(m) => {
                let k = m.values().next().map_or(0, Vec::len);
                (m.clone(), k)
            }
            // P from G's rows: the PCA's, or the given gene embedding's
            None => (
                genes
                    .iter()
                    .enumerate()
                    .map(|(g, name)| (name.clone(), gm[g * kg..(g + 1) * kg].to_vec()))
                    .collect(),
                kg,
            ),
        };
        let column = |c: &Condition| -> Option<Vec<f64>> {
            let mut p = vec![0.0; kp];
            for g in &c.genes {
                for (a, v) in p.iter_mut().zip(pe.get(g)?) {
                    *a += v;
                }
            }
            Some(p)
        };
        // only training perturbations with an embedding enter P and Y
        let kept: Vec<usize> = (0..t)
            .filter(|&c| column(&train[c].condition).is_some())
            .collect();
        if kept.is_empty() {
            return Err(TaskError::Genes(
                "no training perturbation has a perturbation embedding".into(),
            ));
        }
        let tk = kept.len();
        let mut p = vec![0.0; kp * tk]; // K × T
        let mut ycs = vec![0.0; n * tk];
        for (j, &c) in kept.iter().enumerate() {
            let col = column(&train[c].condition).unwrap_or_default();
            for r in 0..kp {
                p[r * tk + j] = col[r];
            }
            for g in 0..n {
                ycs[g * tk + j] = yc[g * t + c];
            }
        }
        let w = Self::solve_w(&gm, n, kg, &ycs, tk, &p, kp, config.ridge)?;
        Ok(LinearModel {
            n_genes: n,
            gene_embedding: gm,
            kg,
            perturbation_embedding: pe,
            kp,
            w,
            b,
        })
    }

    /// `W = (GᵀG + λI)⁻¹ Gᵀ Y_c Pᵀ (PPᵀ + λI)⁻¹` for `G [n × kg]`, `Y_c [n × t]`, `P [kp × t]`.
    #[allow(clippy::too_many_arguments)]
    pub fn solve_w(
        g: &[f64],
        n: usize,
        kg: usize,
        yc: &[f64],
        t: usize,
        p: &[f64],
        kp: usize,
        ridge: f64,
    ) -> Result<Vec<f64>> {
        let gt = transpose(g, n, kg);
        let mut gtg = matmul(&gt, kg, n, g, kg);
        for i in 0..kg {
            gtg[i * kg + i] += ridge;
        }
        let pt = transpose(p, kp, t);
        let mut ppt = matmul(p, kp, t, &pt, kp);
        for i in 0..kp {
            ppt[i * kp + i] += ridge;
        }
        // M = Gᵀ Y_c Pᵀ  [kg × kp]
        let m = matmul(&matmul(&gt, kg, n, yc, t), kg, t, &pt, kp);
        // left = (GᵀG + λI)⁻¹ M; W = left (PPᵀ + λI)⁻¹ = ((PPᵀ + λI)⁻¹ leftᵀ)ᵀ (symmetric)
        let left = solve_spd(&gtg, kg, &m, kp)?;
        let wt = solve_spd(&ppt, kp, &transpose(&left, kg, kp), kg)?;
        Ok(transpose(&wt, kp, kg))
    }

    /// The predicted mean profile `G W p + b` of a condition, `None` when a gene of it has no
    /// perturbation embedding.
    pub fn predict(&self, c: &Condition) -> Option<Vec<f64>> {
        let mut p = vec![0.0; self.kp];
        for g in &c.genes {
            for (a, v) in p.iter_mut().zip(self.perturbation_embedding.get(g)?) {
                *a += v;
            }
        }
        let wp = matmul(&self.w, self.kg, self.kp, &p, 1);
        let gwp = matmul(&self.gene_embedding, self.n_genes, self.kg, &wp, 1);
        Some(gwp.iter().zip(&self.b).map(|(a, b)| a + b).collect())
    }
}

/// Systema's `matching-mean` prediction of `target`: a double whose two singles are training
/// conditions → the mean of their centroids; otherwise the mean over all perturbed training
/// cells (`nonctl-mean`; conditions weighted by their cells).
pub fn matching_mean(target: &Condition, truths: &[ConditionTruth]) -> Option<Vec<f64>> {
    let train: Vec<&ConditionTruth> = truths
        .iter()
        .filter(|t| t.part == Some(SplitPart::Train) && !t.condition.is_control())
        .collect();
    if train.is_empty() {
        return None;
    }
    if target.is_double() {
        let single = |g: &String| {
            train
                .iter()
                .find(|t| t.condition.is_single() && &t.condition.genes[0] == g)
        };
        if let (Some(a), Some(b)) = (single(&target.genes[0]), single(&target.genes[1])) {
            return Some(
                a.mean
                    .iter()
                    .zip(&b.mean)
                    .map(|(x, y)| (x + y) / 2.0)
                    .collect(),
            );
        }
    }
    let cells: usize = train.iter().map(|t| t.n_cells).sum();
    let n = train[0].mean.len();
    let mut out = vec![0.0; n];
    for t in &train {
        let w = t.n_cells as f64 / cells.max(1) as f64;
        for (o, m) in out.iter_mut().zip(&t.mean) {
            *o += w * m;
        }
    }
    Some(out)
}

/// Reads a perturbation embedding TSV (`gene<TAB>v1<TAB>…<TAB>vK`, an optional header whose
/// values are not numbers, `#` comments), requiring every row to have the same width.
pub fn read_perturbation_embedding(path: &std::path::Path) -> Result<BTreeMap<String, Vec<f64>>> {
    let text = std::fs::read_to_string(path).map_err(|e| TaskError::Checkpoint {
        path: path.to_path_buf(),
        detail: e.to_string(),
    })?;
    let bad = |line: usize, d: String| TaskError::Checkpoint {
        path: path.to_path_buf(),
        detail: format!("line {line}: {d}"),
    };
    let mut out = BTreeMap::new();
    let mut width = None;
    for (i, line) in text.lines().enumerate() {
        let line = line.trim_end();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let mut f = line.split('\t');
        let gene = f.next().unwrap_or_default().trim().to_string();
        let vals: Vec<&str> = f.collect();
        let parsed: std::result::Result<Vec<f64>, _> =
            vals.iter().map(|v| v.trim().parse::<f64>()).collect();
        let Ok(v) = parsed else {
            if out.is_empty() && width.is_none() {
                continue; // a header
            }
            return Err(bad(i + 1, format!("gene {gene}: a value is not a number")));
        };
        if v.is_empty() {
            return Err(bad(i + 1, format!("gene {gene} has no values")));
        }
        if let Some(x) = v.iter().find(|x| !x.is_finite()) {
            return Err(bad(i + 1, format!("gene {gene} holds {x}")));
        }
        match width {
            None => width = Some(v.len()),
            Some(w) if w != v.len() => {
                return Err(bad(
                    i + 1,
                    format!("gene {gene} has {} values, the rows before {w}", v.len()),
                ));
            }
            _ => {}
        }
        if out.insert(gene.clone(), v).is_some() {
            return Err(bad(i + 1, format!("gene {gene} appears twice")));
        }
    }
    if out.is_empty() {
        return Err(TaskError::Checkpoint {
            path: path.to_path_buf(),
            detail: "no gene rows (gene<TAB>v1<TAB>…<TAB>vK)".into(),
        });
    }
    Ok(out)
}
