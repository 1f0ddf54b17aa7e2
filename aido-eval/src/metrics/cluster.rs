//! Agreement between two labellings, as scikit-learn 1.9 `sklearn.metrics.cluster` defines it.
//!
//! Every function takes two [`Labels`] over the same cells. Pair counts are exact integers
//! (`i128`), so ARI does not overflow at millions of cells.

use crate::error::{EvalError, Result};
use crate::labels::Labels;

/// The sparse contingency table of two labellings: non-zero cells `(i, j, n_ij)` plus the row
/// sums `a_i` (true classes) and column sums `b_j` (predicted clusters), over labels that occur.
#[derive(Debug, Clone)]
pub struct Contingency {
    /// Non-zero entries `(row, column, count)`.
    pub cells: Vec<(usize, usize, u64)>,
    /// Row sums (sizes of the true classes that occur).
    pub a: Vec<u64>,
    /// Column sums (sizes of the predicted clusters that occur).
    pub b: Vec<u64>,
    /// Number of cells.
    pub n: u64,
}

impl Contingency {
    /// Builds the table; errors if the labellings differ in length.
    pub fn new(truth: &Labels, pred: &Labels) -> Result<Contingency> {
        if truth.len() != pred.len() {
            return Err(EvalError::LengthMismatch {
                what: "labels_true against labels_pred".into(),
                a: truth.len(),
                b: pred.len(),
            });
        }
        // Dense re-indexing over the labels that occur (sklearn's np.unique).
        let remap = |l: &Labels| {
            let counts = l.counts();
            let mut idx = vec![usize::MAX; counts.len()];
            let mut k = 0;
            for (c, &n) in counts.iter().enumerate() {
                if n > 0 {
                    idx[c] = k;
                    k += 1;
                }
            }
            (idx, k)
        };
        let (ri, nr) = remap(truth);
        let (ci, nc) = remap(pred);
        let mut pairs: Vec<(usize, usize)> = truth
            .codes
            .iter()
            .zip(&pred.codes)
            .map(|(&t, &p)| (ri[t as usize], ci[p as usize]))
            .collect();
        pairs.sort_unstable();
        let mut cells: Vec<(usize, usize, u64)> = Vec::new();
        for p in pairs {
            match cells.last_mut() {
                Some(last) if (last.0, last.1) == p => last.2 += 1,
                _ => cells.push((p.0, p.1, 1)),
            }
        }
        let mut a = vec![0u64; nr];
        let mut b = vec![0u64; nc];
        for &(i, j, v) in &cells {
            a[i] += v;
            b[j] += v;
        }
        Ok(Contingency {
            cells,
            a,
            b,
            n: truth.len() as u64,
        })
    }
}

/// The 2×2 pair confusion matrix `[[tn, fp], [fn, tp]]` (sklearn `pair_confusion_matrix`),
/// over ordered pairs of distinct cells.
pub fn pair_confusion(truth: &Labels, pred: &Labels) -> Result<[[i128; 2]; 2]> {
    let t = Contingency::new(truth, pred)?;
    let n = i128::from(t.n);
    let sum_sq: i128 = t.cells.iter().map(|&(_, _, v)| i128::from(v).pow(2)).sum();
    let c01: i128 = t
        .cells
        .iter()
        .map(|&(_, j, v)| i128::from(v) * i128::from(t.b[j]))
        .sum::<i128>()
        - sum_sq;
    let c10: i128 = t
        .cells
        .iter()
        .map(|&(i, _, v)| i128::from(v) * i128::from(t.a[i]))
        .sum::<i128>()
        - sum_sq;
    let c11 = sum_sq - n;
    let c00 = n * n - c01 - c10 - sum_sq;
    Ok([[c00, c01], [c10, c11]])
}

/// Adjusted Rand index (sklearn `adjusted_rand_score`): 1.0 when both labellings make the
/// same pairs (including the all-singletons and single-cluster cases).
pub fn adjusted_rand_index(truth: &Labels, pred: &Labels) -> Result<f64> {
    let [[tn, fp], [fn_, tp]] = pair_confusion(truth, pred)?;
    if fn_ == 0 && fp == 0 {
        return Ok(1.0);
    }
    let num = 2 * (tp * tn - fn_ * fp);
    let den = (tp + fn_) * (fn_ + tn) + (tp + fp) * (fp + tn);
    Ok(num as f64 / den as f64)
}

/// Shannon entropy (natural log) of a labelling given its class sizes; 0 for one class,
/// 1.0 for no cells (sklearn `entropy`).
fn entropy_of(sizes: &[u64]) -> f64 {
    let sizes: Vec<f64> = sizes
        .iter()
        .filter(|&&s| s > 0)
        .map(|&s| s as f64)
        .collect();
    if sizes.is_empty() {
        return 1.0;
    }
    if sizes.len() == 1 {
        return 0.0;
    }
    let total: f64 = sizes.iter().sum();
    let lt = total.ln();
    -sizes
        .iter()
        .map(|&p| (p / total) * (p.ln() - lt))
        .sum::<f64>()
}

/// Entropy of a labelling (natural log), as sklearn's `entropy`.
pub fn entropy(l: &Labels) -> f64 {
    let c: Vec<u64> = l.counts().into_iter().map(|x| x as u64).collect();
    if l.is_empty() {
        return 1.0;
    }
    entropy_of(&c)
}

fn mutual_info_of(t: &Contingency) -> f64 {
    if t.a.len() == 1 || t.b.len() == 1 {
        return 0.0;
    }
    let total = t.n as f64;
    let (sa, sb) = (
        t.a.iter().sum::<u64>() as f64,
        t.b.iter().sum::<u64>() as f64,
    );
    let mut mi = 0.0;
    for &(i, j, v) in &t.cells {
        let nm = v as f64 / total;
        let outer = (t.a[i] as f64) * (t.b[j] as f64);
        let log_outer = -outer.ln() + sa.ln() + sb.ln();
        let term = nm * ((v as f64).ln() - total.ln()) + nm * log_outer;
        if term.abs() >= f64::EPSILON {
            mi += term;
        }
    }
    mi.max(0.0)
}

/// Mutual information (natural log), sklearn `mutual_info_score`.
pub fn mutual_info(truth: &Labels, pred: &Labels) -> Result<f64> {
    Ok(mutual_info_of(&Contingency::new(truth, pred)?))
}

fn distinct_pair(truth: &Labels, pred: &Labels) -> (usize, usize) {
    (truth.n_distinct(), pred.n_distinct())
}

/// Normalized mutual information with the arithmetic mean of the entropies (sklearn's
/// default): 1.0 when both are one cluster (or empty), 0.0 when the MI is 0.
pub fn normalized_mutual_info(truth: &Labels, pred: &Labels) -> Result<f64> {
    let t = Contingency::new(truth, pred)?;
    let (r, c) = distinct_pair(truth, pred);
    if (r == 1 && c == 1) || (r == 0 && c == 0) {
        return Ok(1.0);
    }
    let mi = mutual_info_of(&t);
    if mi == 0.0 {
        return Ok(0.0);
    }
    let norm = (entropy_of(&t.a) + entropy_of(&t.b)) / 2.0;
    Ok(mi / norm)
}

/// ln Γ(x).
fn ln_gamma(x: f64) -> f64 {
    libm::lgamma(x)
}

/// The expected mutual information of two random labellings with the table's marginals
/// (Vinh et al. 2009), as sklearn's `expected_mutual_information`. Cost: Σ over row/column
/// pairs of `min(a_i, b_j)` terms.
pub fn expected_mutual_info(t: &Contingency) -> f64 {
    if t.a.len() == 1 || t.b.len() == 1 {
        return 0.0;
    }
    let n = t.n as f64;
    let max_ab = t.a.iter().chain(&t.b).copied().max().unwrap_or(0) as usize;
    let mut log_nnij = vec![0.0; max_ab + 1];
    let mut gln_nnij = vec![0.0; max_ab + 1];
    let gln_n1 = ln_gamma(n + 1.0);
    for (k, (l, g)) in log_nnij.iter_mut().zip(gln_nnij.iter_mut()).enumerate() {
        let nij = if k == 0 { 1.0 } else { k as f64 };
        *l = n.ln() + nij.ln();
        *g = ln_gamma(nij + 1.0) + gln_n1;
    }
    let mut emi = 0.0;
    for &ai in &t.a {
        let a = ai as f64;
        let (gln_a, gln_na, log_a) = (ln_gamma(a + 1.0), ln_gamma(n - a + 1.0), a.ln());
        for &bj in &t.b {
            let b = bj as f64;
            let (gln_b, gln_nb, log_b) = (ln_gamma(b + 1.0), ln_gamma(n - b + 1.0), b.ln());
            let start = (ai as i64 - t.n as i64 + bj as i64).max(1) as u64;
            let end = ai.min(bj) + 1;
            for nij in start..end {
                let k = nij as usize;
                let x = nij as f64;
                let term2 = log_nnij[k] - log_a - log_b;
                let gln = gln_a + gln_b + gln_na + gln_nb
                    - gln_nnij[k]
                    - ln_gamma(a - x + 1.0)
                    - ln_gamma(b - x + 1.0)
                    - ln_gamma(n - a - b + x + 1.0);
                emi += (x / n) * term2 * gln.exp();
            }
        }
    }
    emi
}

/// Adjusted mutual information with the arithmetic mean (sklearn's default).
pub fn adjusted_mutual_info(truth: &Labels, pred: &Labels) -> Result<f64> {
    let t = Contingency::new(truth, pred)?;
    let (r, c) = distinct_pair(truth, pred);
    if (r == 1 && c == 1) || (r == 0 && c == 0) {
        return Ok(1.0);
    }
    let mi = mutual_info_of(&t);
    let emi = expected_mutual_info(&t);
    let norm = (entropy_of(&t.a) + entropy_of(&t.b)) / 2.0;
    let mut den = norm - emi;
    den = if den < 0.0 {
        den.min(-f64::EPSILON)
    } else {
        den.max(f64::EPSILON)
    };
    Ok((mi - emi) / den)
}

/// Homogeneity, completeness and V-measure (β = 1), sklearn
/// `homogeneity_completeness_v_measure`.
pub fn homogeneity_completeness_v(truth: &Labels, pred: &Labels) -> Result<(f64, f64, f64)> {
    if truth.is_empty() && pred.is_empty() {
        return Ok((1.0, 1.0, 1.0));
    }
    let t = Contingency::new(truth, pred)?;
    let (hc, hk) = (entropy_of(&t.a), entropy_of(&t.b));
    let mi = mutual_info_of(&t);
    let h = if hc != 0.0 { mi / hc } else { 1.0 };
    let c = if hk != 0.0 { mi / hk } else { 1.0 };
    let v = if h + c == 0.0 {
        0.0
    } else {
        2.0 * h * c / (h + c)
    };
    Ok((h, c, v))
}

/// The label-agreement metrics a clustering report carries.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct ClusterAgreement {
    /// Adjusted Rand index.
    pub ari: f64,
    /// Normalized mutual information (arithmetic).
    pub nmi: f64,
    /// Adjusted mutual information (arithmetic).
    pub ami: f64,
    /// Homogeneity.
    pub homogeneity: f64,
    /// Completeness.
    pub completeness: f64,
}

/// All of [`ClusterAgreement`] at once.
pub fn agreement(truth: &Labels, pred: &Labels) -> Result<ClusterAgreement> {
    let (homogeneity, completeness, _) = homogeneity_completeness_v(truth, pred)?;
    Ok(ClusterAgreement {
        ari: adjusted_rand_index(truth, pred)?,
        nmi: normalized_mutual_info(truth, pred)?,
        ami: adjusted_mutual_info(truth, pred)?,
        homogeneity,
        completeness,
    })
}
