//! The expression baseline's preprocessing, as scanpy 1.11 (ScanpyV1 defaults) does it:
//! `normalize_total` (explicit target, 1e4 in the protocol), `log1p`, seurat-flavour highly
//! variable genes, and `scale` (zero-centred, std with ddof 1, std 0 → 1, optional clip).
//!
//! Counts arrive as cells × genes CSR ([`CsrChunk`], as every reader of `aido-tokenize` hands
//! them on); the output of [`scale`] is a dense row-major `n × h` f32 matrix over the selected
//! genes, ready for [`crate::pca`].

use aido_tokenize::CsrChunk;

use crate::error::{EvalError, Result};

/// What [`check_counts`] found wrong, in words a user can act on.
fn describe(data: &[f32]) -> String {
    let max = data.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let min = data.iter().copied().fold(f32::INFINITY, f32::min);
    let non_int = data.iter().filter(|v| v.fract() != 0.0).count();
    let looks = if min < 0.0 {
        "scaled or centred data (negative values)"
    } else if max < 30.0 && non_int > 0 {
        "log-normalized data (small non-integer values)"
    } else {
        "normalized, non-integer data"
    };
    format!(
        "{looks}: {non_int} of {} stored values are not integers, range {min}..{max}",
        data.len()
    )
}

/// Errors unless every stored value is a finite, non-negative integer (raw counts), naming
/// the first offending cell (0-based row of `x`) and gene column.
pub fn check_counts(x: &CsrChunk) -> Result<()> {
    for i in 0..x.n_cells() {
        let (idx, val) = x.row(i);
        for (&j, &v) in idx.iter().zip(val) {
            if !v.is_finite() || v < 0.0 || v.fract() != 0.0 {
                return Err(EvalError::NotCounts(format!(
                    "cell {i}, gene column {j} holds {v}; the matrix looks like {}. The expression \
                     baseline normalizes raw counts itself: give the raw counts (X or `layer`)",
                    describe(&x.data)
                )));
            }
        }
    }
    Ok(())
}

/// `x / total · target` per cell, then `ln(1 + ·)`, in f32 (scanpy's `normalize_total` with
/// `target_sum = target`, then `log1p`). Cells with a zero total stay zero.
pub fn normalize_log1p(x: &CsrChunk, target: f64) -> CsrChunk {
    let mut out = x.clone();
    normalize_log1p_in_place(&mut out, target);
    out
}

/// [`normalize_log1p`] without a copy.
pub fn normalize_log1p_in_place(x: &mut CsrChunk, target: f64) {
    for i in 0..x.n_cells() {
        let (a, b) = (x.indptr[i], x.indptr[i + 1]);
        let total: f64 = x.data[a..b].iter().map(|&v| f64::from(v)).sum();
        if total <= 0.0 {
            continue;
        }
        let scale = (total / target) as f32;
        for v in &mut x.data[a..b] {
            *v = (*v / scale).ln_1p();
        }
    }
}

/// The cut-offs of seurat-flavour HVG selection (scanpy's defaults), or a fixed count.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub enum HvgSelection {
    /// `min_mean < mean < max_mean` and `min_disp < dispersion_norm < max_disp`, with the
    /// mean on the `log1p` scale (scanpy's `n_top_genes=None` path).
    Cutoffs {
        /// Lower bound of `log1p(mean)`.
        min_mean: f64,
        /// Upper bound of `log1p(mean)`.
        max_mean: f64,
        /// Lower bound of the normalized dispersion.
        min_disp: f64,
        /// Upper bound of the normalized dispersion.
        max_disp: f64,
    },
    /// The `n` genes of highest normalized dispersion (ties at the cut kept, as scanpy).
    Top(usize),
}

impl Default for HvgSelection {
    fn default() -> Self {
        HvgSelection::Cutoffs {
            min_mean: 0.0125,
            max_mean: 3.0,
            min_disp: 0.5,
            max_disp: f64::INFINITY,
        }
    }
}

/// Per-gene statistics of the HVG step and the selection.
#[derive(Debug, Clone, PartialEq)]
pub struct Hvg {
    /// Whether each gene is selected.
    pub highly_variable: Vec<bool>,
    /// `log1p` of the mean normalized expression.
    pub means: Vec<f64>,
    /// `ln(variance / mean)` (NaN where the variance is 0).
    pub dispersions: Vec<f64>,
    /// Dispersion z-scored within its mean bin.
    pub dispersions_norm: Vec<f64>,
}

impl Hvg {
    /// Indices of the selected genes, ascending.
    pub fn selected(&self) -> Vec<usize> {
        (0..self.highly_variable.len())
            .filter(|&j| self.highly_variable[j])
            .collect()
    }
}

/// Mean and variance (ddof 1) of every column of a CSR matrix, in f64, of `f(value)`.
fn column_mean_var(x: &CsrChunk, n_genes: usize, f: impl Fn(f32) -> f64) -> (Vec<f64>, Vec<f64>) {
    let n = x.n_cells() as f64;
    let mut s = vec![0.0f64; n_genes];
    let mut s2 = vec![0.0f64; n_genes];
    for (&j, &v) in x.indices.iter().zip(&x.data) {
        let y = f(v);
        s[j as usize] += y;
        s2[j as usize] += y * y;
    }
    let mean: Vec<f64> = s.iter().map(|&a| a / n).collect();
    let var = s2
        .iter()
        .zip(&mean)
        .map(|(&q, &m)| {
            let v = (q / n - m * m).max(0.0);
            if n > 1.0 { v * n / (n - 1.0) } else { f64::NAN }
        })
        .collect();
    (mean, var)
}

/// The 20 equal-width bins of `pd.cut(x, 20)`: right-closed intervals over [min, max] with
/// the lowest edge moved down by 0.1% of the range; the bin index of each value.
fn pd_cut(x: &[f64], bins: usize) -> Vec<usize> {
    let mn = x.iter().copied().fold(f64::INFINITY, f64::min);
    let mx = x.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let mut edges: Vec<f64> = if mn == mx {
        let (lo, hi) = if mn != 0.0 {
            (mn - 0.001 * mn.abs(), mx + 0.001 * mx.abs())
        } else {
            (-0.001, 0.001)
        };
        (0..=bins)
            .map(|i| lo + (hi - lo) * i as f64 / bins as f64)
            .collect()
    } else {
        // numpy.linspace: i · step + start, the last edge exactly the stop
        let step = (mx - mn) / bins as f64;
        let mut e: Vec<f64> = (0..=bins).map(|i| i as f64 * step + mn).collect();
        e[bins] = mx;
        e[0] -= (mx - mn) * 0.001;
        e
    };
    if let Some(last) = edges.last_mut() {
        *last = last.max(mx);
    }
    x.iter()
        .map(|&v| {
            // right-closed: first edge >= v, minus one
            let pos = edges.partition_point(|&e| e < v);
            pos.saturating_sub(1).min(bins - 1)
        })
        .collect()
}

/// Seurat-flavour highly variable genes of log-normalized data (`ln(1 + ·)` values), as
/// scanpy's `highly_variable_genes(flavor="seurat")`: mean and variance of `expm1(x)`,
/// dispersion `var / mean`, `ln` of it and `log1p` of the mean, 20 mean bins, z-score of the
/// dispersion in each bin (a bin whose std is undefined gets avg 0 and dev = its mean).
pub fn highly_variable_genes(log_x: &CsrChunk, n_genes: usize, sel: HvgSelection) -> Result<Hvg> {
    if log_x.n_cells() < 2 {
        return Err(EvalError::InvalidArgument(format!(
            "highly variable genes need at least 2 cells, got {}",
            log_x.n_cells()
        )));
    }
    let (mut mean, var) = column_mean_var(log_x, n_genes, |v| f64::from(v.exp_m1()));
    for m in &mut mean {
        if *m == 0.0 {
            *m = 1e-12;
        }
    }
    let dispersions: Vec<f64> = var
        .iter()
        .zip(&mean)
        .map(|(&v, &m)| {
            let d = v / m;
            if d == 0.0 { f64::NAN } else { d.ln() }
        })
        .collect();
    let means: Vec<f64> = mean.iter().map(|m| m.ln_1p()).collect();
    let bins = pd_cut(&means, 20);
    let mut sum = [0.0f64; 20];
    let mut cnt = [0usize; 20];
    for (&b, &d) in bins.iter().zip(&dispersions) {
        if !d.is_nan() {
            sum[b] += d;
            cnt[b] += 1;
        }
    }
    let avg: Vec<f64> = (0..20)
        .map(|b| {
            if cnt[b] > 0 {
                sum[b] / cnt[b] as f64
            } else {
                f64::NAN
            }
        })
        .collect();
    let mut ss = [0.0f64; 20];
    for (&b, &d) in bins.iter().zip(&dispersions) {
        if !d.is_nan() {
            ss[b] += (d - avg[b]).powi(2);
        }
    }
    let (mut bin_avg, mut bin_dev) = (avg.clone(), vec![f64::NAN; 20]);
    for b in 0..20 {
        if cnt[b] > 1 {
            bin_dev[b] = (ss[b] / (cnt[b] - 1) as f64).sqrt();
        } else {
            // pandas' std of one value is NaN: scanpy then sets dev = avg, avg = 0
            bin_dev[b] = bin_avg[b];
            bin_avg[b] = 0.0;
        }
    }
    let dispersions_norm: Vec<f64> = dispersions
        .iter()
        .zip(&bins)
        .map(|(&d, &b)| (d - bin_avg[b]) / bin_dev[b])
        .collect();
    let highly_variable = match sel {
        HvgSelection::Cutoffs {
            min_mean,
            max_mean,
            min_disp,
            max_disp,
        } => means
            .iter()
            .zip(&dispersions_norm)
            .map(|(&m, &dn)| {
                let dn = if dn.is_nan() { 0.0 } else { dn };
                m > min_mean && m < max_mean && dn > min_disp && dn < max_disp
            })
            .collect(),
        HvgSelection::Top(k) => {
            let mut v: Vec<f64> = dispersions_norm
                .iter()
                .copied()
                .filter(|x| !x.is_nan())
                .collect();
            v.sort_by(|a, b| b.total_cmp(a));
            let k = k.clamp(1, v.len().max(1));
            let cut = v.get(k - 1).copied().unwrap_or(f64::INFINITY);
            dispersions_norm
                .iter()
                .map(|&x| !x.is_nan() && x >= cut)
                .collect()
        }
    };
    Ok(Hvg {
        highly_variable,
        means,
        dispersions,
        dispersions_norm,
    })
}

/// The columns `genes` of a CSR matrix as a dense row-major `n × genes.len()` f32 matrix.
pub fn dense_columns(x: &CsrChunk, n_genes: usize, genes: &[usize]) -> Vec<f32> {
    let h = genes.len();
    let mut pos = vec![usize::MAX; n_genes];
    for (k, &g) in genes.iter().enumerate() {
        pos[g] = k;
    }
    let mut out = vec![0.0f32; x.n_cells() * h];
    for i in 0..x.n_cells() {
        let (idx, val) = x.row(i);
        for (&j, &v) in idx.iter().zip(val) {
            let p = pos[j as usize];
            if p != usize::MAX {
                out[i * h + p] += v;
            }
        }
    }
    out
}

/// Per-column standardization of a dense row-major `n × d` matrix in place (scanpy `scale`):
/// subtract the mean, divide by the std with ddof 1 (0 → 1), then clip to
/// `[−max_value, max_value]` when given. Returns the means and stds used.
pub fn scale(x: &mut [f32], n: usize, d: usize, max_value: Option<f32>) -> (Vec<f64>, Vec<f64>) {
    let mut mean = vec![0.0f64; d];
    for row in x.chunks_exact(d.max(1)) {
        for (m, &v) in mean.iter_mut().zip(row) {
            *m += f64::from(v);
        }
    }
    mean.iter_mut().for_each(|m| *m /= n as f64);
    let mut var = vec![0.0f64; d];
    for row in x.chunks_exact(d.max(1)) {
        for ((s, &v), &m) in var.iter_mut().zip(row).zip(&mean) {
            *s += (f64::from(v) - m).powi(2);
        }
    }
    let std: Vec<f64> = var
        .iter()
        .map(|&s| {
            let sd = if n > 1 {
                (s / (n - 1) as f64).sqrt()
            } else {
                0.0
            };
            if sd == 0.0 { 1.0 } else { sd }
        })
        .collect();
    apply_scale(x, d, &mean, &std, max_value);
    (mean, std)
}

/// `(x − mean) / std`, clipped to `[−max_value, max_value]` when given, per column of the
/// row-major `· × d` matrix `x`: the transform [`scale`] fitted (e.g. on training cells)
/// applied to other rows.
pub fn apply_scale(x: &mut [f32], d: usize, mean: &[f64], std: &[f64], max_value: Option<f32>) {
    for row in x.chunks_exact_mut(d.max(1)) {
        for ((v, &m), &s) in row.iter_mut().zip(mean).zip(std) {
            let mut y = ((f64::from(*v) - m) / s) as f32;
            if let Some(c) = max_value {
                y = y.clamp(-c, c);
            }
            *v = y;
        }
    }
}
