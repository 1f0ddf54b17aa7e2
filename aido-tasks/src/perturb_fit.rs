//! Perturbation data, GEARS training and prediction, and the model folder `aido perturb fit`
//! writes and `aido perturb predict` reads.
//!
//! - [`PerturbData`]: raw counts of a GEARS/Norman-style file (cells × genes) with a condition
//!   per cell, validated (unknown genes, no control, too few cells, non-count values) and
//!   log-normalized `ln(1 + c / total · 10⁴)`;
//! - [`fit`]: GEARS's training — each perturbed training cell paired once with a random control
//!   cell (seeded), a control cell with itself; Adam (torch's ε 1e-8, L2 weight decay 5e-4),
//!   gradients clipped at ±1 by value, the learning rate halved every epoch (GEARS's `StepLR`;
//!   `FitConfig::lr_decay`),
//!   the epoch with the lowest validation MSE on the top-20 DE genes kept (GEARS's `mse_de`);
//!   the `max_norm` embeddings renormalized in their stored rows after every step
//!   ([`Gears::renormalize_embeddings`]); the loss is GEARS's `loss_fct`
//!   ([`gears_loss`]);
//! - [`predict_means`]: a condition's prediction is the mean over a pool of control cells
//!   (GEARS: 300) of the model's output from each;
//! - [`save_model`] / [`load_model`]: the folder.

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;

use aido_tokenize::{CellSource, CsrChunk, read_all};
use burn::module::{AutodiffModule, Module};
use burn::optim::{AdamConfig, GradientsParams, Optimizer, decay::WeightDecayConfig};
use burn::record::Recorder;
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Tensor, TensorData};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{RngExt, SeedableRng};
use serde::{Deserialize, Serialize};

use crate::error::{Result, TaskError, io};
use crate::finetune::host;
use crate::gears::{CoexpressionMode, Gears, GearsConfig, GearsGraphs};
use crate::perturb::{
    Condition, ConditionTruth, GeneEdge, PerturbSplit, SplitPart, TOP_DE, top_de_genes,
};

/// The normalization scale of log-normalized expression (10⁴, scanpy's and GEARS's).
pub const LOG_SCALE: f64 = 1.0e4;

/// A perturbation screen in memory: raw counts and log-normalized values (CSR over the file's
/// genes) and each cell's condition.
#[derive(Debug, Clone)]
pub struct PerturbData {
    /// The file's genes (var names), the model's gene order.
    pub genes: Vec<String>,
    /// Conditions in order of first appearance.
    pub conditions: Vec<Condition>,
    /// Index into `conditions` of every cell.
    pub cell_condition: Vec<usize>,
    /// Index of the control condition.
    pub control: usize,
    /// Raw counts.
    pub counts: CsrChunk,
    /// Log-normalized values, same sparsity as `counts`.
    pub lognorm: CsrChunk,
}

/// What [`PerturbData::from_source`] checks.
#[derive(Debug, Clone)]
pub struct PerturbDataOptions {
    /// obs column with the conditions (GEARS: `condition`).
    pub condition_column: String,
    /// The control value (GEARS: `ctrl`).
    pub control_value: String,
    /// Fewest cells a condition may have (the t-test needs 2).
    pub min_cells: usize,
}

impl Default for PerturbDataOptions {
    fn default() -> Self {
        Self {
            condition_column: "condition".into(),
            control_value: "ctrl".into(),
            min_cells: 3,
        }
    }
}

impl PerturbData {
    /// Reads and validates a whole source.
    pub fn from_source(source: &mut dyn CellSource, opts: &PerturbDataOptions) -> Result<Self> {
        let file = source.path().display().to_string();
        let obs = source.obs().clone();
        let col = obs.column(&opts.condition_column).ok_or_else(|| {
            let names: Vec<&str> = obs.columns.iter().map(|(n, _)| n.as_str()).collect();
            TaskError::Labels(format!(
                "{file}: obs has no condition column '{}' (columns: {}); name it with `condition_column`",
                opts.condition_column,
                if names.is_empty() {
                    "none".to_string()
                } else {
                    names.join(", ")
                }
            ))
        })?;
        let genes = source.gene_names().to_vec();
        let gene_set: BTreeMap<&str, usize> = genes
            .iter()
            .enumerate()
            .map(|(i, g)| (g.as_str(), i))
            .collect();
        let mut conditions: Vec<Condition> = Vec::new();
        let mut index: BTreeMap<String, usize> = BTreeMap::new();
        let mut cell_condition = Vec::with_capacity(col.len());
        for i in 0..col.len() {
            let v = col.display(i);
            if v.is_empty() {
                return Err(TaskError::Labels(format!(
                    "{file}: obs/{} has no value for cell {i} ('{}')",
                    opts.condition_column,
                    obs.cell_name(i)
                )));
            }
            let k = match index.get(&v) {
                Some(&k) => k,
                None => {
                    let c = Condition::parse(&v, &opts.control_value).map_err(|e| {
                        TaskError::Labels(format!(
                            "{file}: obs/{} of cell {i} ('{}'): {e}",
                            opts.condition_column,
                            obs.cell_name(i)
                        ))
                    })?;
                    if let Some(g) = c.genes.iter().find(|g| !gene_set.contains_key(g.as_str())) {
                        return Err(TaskError::Genes(format!(
                            "{file}: condition {v:?} (obs/{}, first at cell {i} '{}') perturbs '{g}', which is not one of the file's {} genes (var names); \
                             a perturbed gene must be measured so its change can be predicted and scored",
                            opts.condition_column,
                            obs.cell_name(i),
                            genes.len()
                        )));
                    }
                    index.insert(v.clone(), conditions.len());
                    conditions.push(c);
                    conditions.len() - 1
                }
            };
            cell_condition.push(k);
        }
        let control = conditions
            .iter()
            .position(Condition::is_control)
            .ok_or_else(|| {
                TaskError::Labels(format!(
                    "{file}: no control cells: no cell has obs/{} = {:?} (set the control value with `control_value`)",
                    opts.condition_column, opts.control_value
                ))
            })?;
        let mut n_cells = vec![0usize; conditions.len()];
        for &k in &cell_condition {
            n_cells[k] += 1;
        }
        let min = opts.min_cells.max(2);
        if let Some((k, n)) = n_cells.iter().enumerate().find(|(_, n)| **n < min) {
            return Err(TaskError::Labels(format!(
                "{file}: condition {:?} has {n} cell(s); every condition needs at least {min} (the DE t-test and the means need them): remove it from the file or lower `min_cells`",
                conditions[k].name
            )));
        }
        let counts = read_all(source)?;
        if counts.n_cells() != cell_condition.len() {
            return Err(TaskError::Labels(format!(
                "{file}: {} cells in the matrix, {} in obs",
                counts.n_cells(),
                cell_condition.len()
            )));
        }
        let mut lognorm = counts.clone();
        for c in 0..counts.n_cells() {
            let (idx, vals) = counts.row(c);
            let mut total = 0.0f64;
            for (&j, &v) in idx.iter().zip(vals) {
                if !v.is_finite() || v < 0.0 || v.fract() != 0.0 {
                    return Err(TaskError::Labels(format!(
                        "{file}: cell {c} ('{}'), gene '{}' holds {v}: perturbation modelling needs raw counts (non-negative integers); \
                         if the counts are in a layer, pass `layer` NAME",
                        obs.cell_name(c),
                        genes.get(j as usize).map(String::as_str).unwrap_or("?")
                    )));
                }
                total += f64::from(v);
            }
            if total <= 0.0 {
                return Err(TaskError::Labels(format!(
                    "{file}: cell {c} ('{}') has no counts",
                    obs.cell_name(c)
                )));
            }
            let (a, b) = (counts.indptr[c], counts.indptr[c + 1]);
            for v in &mut lognorm.data[a..b] {
                *v = (f64::from(*v) / total * LOG_SCALE).ln_1p() as f32;
            }
        }
        Ok(Self {
            genes,
            conditions,
            cell_condition,
            control,
            counts,
            lognorm,
        })
    }

    /// Number of genes.
    pub fn n_genes(&self) -> usize {
        self.genes.len()
    }

    /// The cells of condition `k`.
    pub fn cells_of(&self, k: usize) -> Vec<usize> {
        (0..self.cell_condition.len())
            .filter(|&c| self.cell_condition[c] == k)
            .collect()
    }

    /// Writes cell `c`'s log-normalized values into `out` (`[genes]`, overwritten).
    pub fn lognorm_row(&self, c: usize, out: &mut [f32]) {
        out.fill(0.0);
        let (idx, vals) = self.lognorm.row(c);
        for (&j, &v) in idx.iter().zip(vals) {
            out[j as usize] = v;
        }
    }

    /// Row-major `[cells, genes]` log-normalized values of `cells`, in f64.
    pub fn dense_f64(&self, cells: &[usize]) -> Vec<f64> {
        let g = self.n_genes();
        let mut out = vec![0.0f64; cells.len() * g];
        for (r, &c) in cells.iter().enumerate() {
            let (idx, vals) = self.lognorm.row(c);
            for (&j, &v) in idx.iter().zip(vals) {
                out[r * g + j as usize] = f64::from(v);
            }
        }
        out
    }

    /// Gene indices of a condition's perturbed genes.
    pub fn pert_indices(&self, c: &Condition) -> Result<Vec<usize>> {
        c.genes
            .iter()
            .map(|g| {
                self.genes.iter().position(|x| x == g).ok_or_else(|| {
                    TaskError::Genes(format!(
                        "condition {:?}: gene '{g}' is not one of the model's genes",
                        c.name
                    ))
                })
            })
            .collect()
    }

    /// Mean log-normalized expression of the control cells and, for every other condition,
    /// its mean and top-20 DE genes against the control (scanpy's t-test, |t| ranking).
    pub fn truths(&self, split: &PerturbSplit) -> Result<(Vec<f64>, Vec<ConditionTruth>)> {
        use rayon::prelude::*;
        let g = self.n_genes();
        let ctrl_cells = self.cells_of(self.control);
        let ctrl = self.dense_f64(&ctrl_cells);
        let ctrl_mean = column_means(&ctrl, g);
        let truths = self
            .conditions
            .par_iter()
            .enumerate()
            .filter(|(_, c)| !c.is_control())
            .map(|(k, c)| {
                let cells = self.cells_of(k);
                let x = self.dense_f64(&cells);
                Ok(ConditionTruth {
                    n_cells: cells.len(),
                    condition: c.clone(),
                    part: split.part.get(&c.name).copied().flatten(),
                    group: split
                        .group
                        .get(&c.name)
                        .copied()
                        .unwrap_or(crate::perturb::PertGroup::SeenSingle),
                    mean: column_means(&x, g),
                    top_de: top_de_genes(&x, &ctrl, g, TOP_DE)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok((ctrl_mean, truths))
    }
}

/// Per-gene mean of a control pool `[P, genes]` (f32 rows), in f64.
pub fn pool_mean(pool_x: &[f32], genes: usize) -> Vec<f64> {
    let p = pool_x.len() / genes.max(1);
    let mut m = vec![0.0f64; genes];
    for row in pool_x.chunks_exact(genes.max(1)) {
        for (a, &v) in m.iter_mut().zip(row) {
            *a += f64::from(v) / p.max(1) as f64;
        }
    }
    m
}

/// The rule of predicted single cells (`aido perturb predict --format cell-eval` and
/// [`cell_level_scores`]): `n` rows of the control pool `pool_x` (`[P, genes]`, taken in order
/// and reused past `P`), each shifted per gene by `shift` (`None`: unchanged) and clipped at 0,
/// appended to the CSR `x`.
pub fn push_shifted_pool(
    x: &mut CsrChunk,
    pool_x: &[f32],
    genes: usize,
    shift: Option<&[f64]>,
    n: usize,
) {
    let p = pool_x.len() / genes.max(1);
    if p == 0 {
        return;
    }
    for k in 0..n {
        let row = &pool_x[(k % p) * genes..(k % p + 1) * genes];
        for (j, &v) in row.iter().enumerate() {
            let y = match shift {
                Some(d) => (f64::from(v) + d[j]).max(0.0) as f32,
                None => v,
            };
            if y != 0.0 {
                x.indices.push(j as u32);
                x.data.push(y);
            }
        }
        x.indptr.push(x.data.len());
    }
}

/// cell-eval's metrics (`overlap_at_N`, `discrimination_score_l1`, `mae`; `aido_eval::perturb`)
/// of mean predictions turned into cells, per condition of `part`: the real cells are the
/// control cells and those conditions' cells (log-normalised); each predicted condition is the
/// control `pool` shifted by `predicted − pool mean` (clipped at 0), the pool itself the
/// predicted controls — the rule of `aido perturb predict --format cell-eval`. Conditions
/// without a prediction are left out (on both sides). A condition is labelled by its genes
/// (`A`, `A+B`), so a single's own gene is left out of its discrimination score.
///
/// One predictor; [`CellLevelScorer`] scores several against the same real cells, testing
/// those once.
pub fn cell_level_scores(
    data: &PerturbData,
    truths: &[ConditionTruth],
    part: crate::perturb::SplitPart,
    pool: &[usize],
    predicted: &BTreeMap<String, Vec<f64>>,
) -> Result<BTreeMap<String, aido_eval::perturb::PerturbationScores>> {
    CellLevelScorer::new(data, truths, part, pool).score(predicted)
}

/// The real side of [`cell_level_scores`] for one set of scored conditions: the cells and
/// their differential expression against control.
struct RealSide {
    cells: aido_eval::perturb::GroupedCells,
    de: Vec<Option<aido_eval::perturb::DeTable>>,
}

/// [`cell_level_scores`] for several predictors of one split: the real cells' Wilcoxon tests
/// are run once per set of scored conditions (every predictor but `additive` scores the same
/// set), not once per predictor. Records the seconds spent in differential expression.
pub struct CellLevelScorer<'a> {
    data: &'a PerturbData,
    truths: &'a [ConditionTruth],
    part: crate::perturb::SplitPart,
    pool: &'a [usize],
    pool_x: Vec<f32>,
    pool_mean: Vec<f64>,
    real: BTreeMap<Vec<usize>, RealSide>,
    /// Seconds spent in the Wilcoxon / Benjamini–Hochberg step (real and predicted cells).
    pub de_seconds: f64,
}

impl<'a> CellLevelScorer<'a> {
    /// A scorer of `part`'s conditions against `data`'s cells, predicted cells built from the
    /// control cells `pool`.
    pub fn new(
        data: &'a PerturbData,
        truths: &'a [ConditionTruth],
        part: crate::perturb::SplitPart,
        pool: &'a [usize],
    ) -> Self {
        let g = data.n_genes();
        let mut pool_x = vec![0.0f32; pool.len() * g];
        for (r, &c) in pool.iter().enumerate() {
            data.lognorm_row(c, &mut pool_x[r * g..(r + 1) * g]);
        }
        let pool_mean = pool_mean(&pool_x, g);
        Self {
            data,
            truths,
            part,
            pool,
            pool_x,
            pool_mean,
            real: BTreeMap::new(),
            de_seconds: 0.0,
        }
    }

    /// The cell-level scores of one predictor (`condition → mean prediction`), per scored
    /// condition.
    pub fn score(
        &mut self,
        predicted: &BTreeMap<String, Vec<f64>>,
    ) -> Result<BTreeMap<String, aido_eval::perturb::PerturbationScores>> {
        use aido_eval::perturb::{GroupedCells, differential_expression, score_predictions_with};
        let (data, g) = (self.data, self.data.n_genes());
        let tested: Vec<usize> = self
            .truths
            .iter()
            .enumerate()
            .filter(|(_, t)| t.part == Some(self.part) && !t.condition.is_control())
            .filter(|(_, t)| predicted.contains_key(&t.condition.name))
            .map(|(i, _)| i)
            .collect();
        if tested.is_empty() || self.pool.is_empty() {
            return Ok(BTreeMap::new());
        }
        let truths = self.truths;
        let mut names = vec![data.conditions[data.control].name.clone()];
        names.extend(tested.iter().map(|&i| truths[i].condition.genes.join("+")));
        let new_csr = || CsrChunk {
            first_cell: 0,
            indptr: vec![0],
            ..Default::default()
        };
        let cells = |x: CsrChunk, group: Vec<usize>| GroupedCells {
            x,
            n_genes: g,
            group,
            names: names.clone(),
            control: 0,
        };
        if !self.real.contains_key(&tested) {
            // real: control cells and the tested conditions' cells
            let index: BTreeMap<&str, usize> = tested
                .iter()
                .enumerate()
                .map(|(k, &i)| (truths[i].condition.name.as_str(), k + 1))
                .collect();
            let (mut rx, mut rg) = (new_csr(), Vec::new());
            for (c, &k) in data.cell_condition.iter().enumerate() {
                let group = if k == data.control {
                    Some(0)
                } else {
                    index.get(data.conditions[k].name.as_str()).copied()
                };
                if let Some(gi) = group {
                    let (idx, val) = data.lognorm.row(c);
                    rx.indices.extend_from_slice(idx);
                    rx.data.extend_from_slice(val);
                    rx.indptr.push(rx.data.len());
                    rg.push(gi);
                }
            }
            let real = cells(rx, rg);
            let t = std::time::Instant::now();
            let de = differential_expression(&real)
                .map_err(|e| TaskError::Config(format!("cell-level scores: {e}")))?;
            self.de_seconds += t.elapsed().as_secs_f64();
            self.real
                .insert(tested.clone(), RealSide { cells: real, de });
        }
        // predicted: the pool, then the pool shifted per condition
        let (mut px, mut pg) = (new_csr(), Vec::new());
        let n = self.pool.len();
        for gi in 0..names.len() {
            let shift: Option<Vec<f64>> = (gi > 0).then(|| {
                predicted[&truths[tested[gi - 1]].condition.name]
                    .iter()
                    .zip(&self.pool_mean)
                    .map(|(p, m)| p - m)
                    .collect()
            });
            push_shifted_pool(&mut px, &self.pool_x, g, shift.as_deref(), n);
            pg.extend(std::iter::repeat_n(gi, n));
        }
        let pred = cells(px, pg);
        let t = std::time::Instant::now();
        let de_pred = differential_expression(&pred)
            .map_err(|e| TaskError::Config(format!("cell-level scores: {e}")))?;
        self.de_seconds += t.elapsed().as_secs_f64();
        let real = &self.real[&tested];
        let s = score_predictions_with(&real.cells, &real.de, &pred, &de_pred, &data.genes)
            .map_err(|e| TaskError::Config(format!("cell-level scores: {e}")))?;
        Ok(tested
            .iter()
            .filter_map(|&i| {
                let t = &truths[i];
                s.per_perturbation
                    .get(&t.condition.genes.join("+"))
                    .map(|v| (t.condition.name.clone(), v.clone()))
            })
            .collect())
    }
}

/// Column means of a row-major `[n, genes]` matrix.
pub fn column_means(x: &[f64], genes: usize) -> Vec<f64> {
    let n = x.len() / genes.max(1);
    let mut m = vec![0.0; genes];
    for row in x.chunks_exact(genes) {
        for (a, v) in m.iter_mut().zip(row) {
            *a += v;
        }
    }
    m.iter_mut().for_each(|a| *a /= n.max(1) as f64);
    m
}

/// Training settings of [`fit`] (GEARS's defaults where it has them).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FitConfig {
    /// Epochs (GEARS: 20).
    pub epochs: usize,
    /// Cells per update (GEARS: 32).
    pub batch_size: usize,
    /// Initial learning rate (GEARS: 1e-3), multiplied by `lr_decay` after every epoch.
    pub lr: f64,
    /// The learning rate's factor per epoch (GEARS's `StepLR(step_size=1, gamma=0.5)`: 0.5; 1
    /// keeps it constant).
    #[serde(default = "half")]
    pub lr_decay: f64,
    /// Adam's L2 weight decay (GEARS: 5e-4).
    pub weight_decay: f64,
    /// Weight of the direction term of the loss (GEARS's `model_initialize`: 0.1).
    pub direction_lambda: f64,
    /// Seed of the initialization, the control pairing and the batch order.
    pub seed: u64,
    /// Control cells each prediction averages over (GEARS: 300).
    pub pool: usize,
}

impl Default for FitConfig {
    fn default() -> Self {
        Self {
            epochs: 20,
            batch_size: 32,
            lr: 1e-3,
            lr_decay: 0.5,
            weight_decay: 5e-4,
            direction_lambda: 0.1,
            seed: 1,
            pool: 300,
        }
    }
}

fn half() -> f64 {
    0.5
}

/// The encoder's gene embeddings of a pool of control cells (the frozen backbone).
#[derive(Debug, Clone)]
pub struct BackboneFeatures {
    /// The control cells (indices into the data).
    pub cells: Vec<usize>,
    /// `[cells, genes, D]` row-major.
    pub values: Vec<f32>,
    /// Width `D`.
    pub dim: usize,
}

/// One training example: the input control cell, the target cell, its condition.
#[derive(Debug, Clone, Copy)]
struct Example {
    input: usize,
    target: usize,
    condition: usize,
}

/// What an epoch did.
#[derive(Debug, Clone, Serialize)]
pub struct FitEpoch {
    /// Epoch (1-based).
    pub epoch: usize,
    /// Mean training loss.
    pub train_loss: f64,
    /// Validation MSE of condition means on each condition's top-20 DE genes (GEARS's `mse_de`,
    /// what the best epoch is chosen by; NaN without validation conditions).
    pub val_mse: f64,
    /// Learning rate of the epoch.
    pub lr: f64,
    /// Seconds.
    pub seconds: f64,
}

/// GEARS's `loss_fct`: for each condition `p` in the batch, over its cells and its retained
/// genes `R_p` (the genes with non-zero mean in the condition; all genes for the control),
/// `Σ (ŷ − y)⁴ / (n_p |R_p|)` plus `λ Σ (sign(y − c) − sign(ŷ − c))² / (n_p |R_p|)` with `c` the
/// control mean; the mean over the batch's conditions. The direction term has no gradient
/// (torch's `sign` has none either): it moves the loss value, not the update.
pub fn gears_loss<B: Backend>(
    pred: Tensor<B, 2>,
    y: Tensor<B, 2>,
    weights: Tensor<B, 2>,
    ctrl_mean: Tensor<B, 2>,
    direction_lambda: f64,
) -> Tensor<B, 1> {
    let focus = (pred.clone() - y.clone()).powi_scalar(4) * weights.clone();
    let dir = ((y - ctrl_mean.clone()).sign() - (pred.detach() - ctrl_mean).sign()).powi_scalar(2)
        * weights;
    focus.sum() + dir.sum().mul_scalar(direction_lambda)
}

/// The per-element weights of [`gears_loss`] for a batch: `1 / (n_p |R_p| · n_conditions)` on
/// the retained genes of each cell's condition, 0 elsewhere.
fn loss_weights(batch: &[Example], retained: &[Vec<bool>], genes: usize) -> Vec<f32> {
    let mut per: BTreeMap<usize, usize> = BTreeMap::new();
    for e in batch {
        *per.entry(e.condition).or_default() += 1;
    }
    let n_cond = per.len() as f64;
    let mut w = vec![0.0f32; batch.len() * genes];
    for (r, e) in batch.iter().enumerate() {
        let keep = &retained[e.condition];
        let k = keep.iter().filter(|&&b| b).count().max(1);
        let v = (1.0 / (per[&e.condition] as f64 * k as f64 * n_cond)) as f32;
        for (j, &b) in keep.iter().enumerate() {
            if b {
                w[r * genes + j] = v;
            }
        }
    }
    w
}

/// Everything [`fit`] needs besides the data.
pub struct FitInputs<'a, B: Backend> {
    /// Model sizes and options.
    pub model: GearsConfig,
    /// Training settings.
    pub fit: FitConfig,
    /// The split of the conditions.
    pub split: &'a PerturbSplit,
    /// The graphs, on the device.
    pub graphs: &'a GearsGraphs<B>,
    /// The backbone's embeddings of the control pool (required when `model.backbone_dim` is set).
    pub backbone: Option<&'a BackboneFeatures>,
}

/// A trained model with what it was trained from.
pub struct Fitted<B: Backend> {
    /// The model of the best validation epoch (or the last, without validation).
    pub model: Gears<B>,
    /// Per-epoch log.
    pub epochs: Vec<FitEpoch>,
    /// The best epoch (1-based).
    pub best_epoch: usize,
    /// The control cells predictions average over.
    pub pool: Vec<usize>,
}

/// A batch on the device: inputs, targets, perturbations, backbone features.
struct Batch<B: Backend> {
    x: Tensor<B, 2>,
    y: Tensor<B, 2>,
    perts: Vec<Vec<usize>>,
    features: Option<Tensor<B, 3>>,
}

fn make_batch<B: Backend>(
    data: &PerturbData,
    ex: &[Example],
    perts: &[Vec<usize>],
    backbone: Option<(&BackboneFeatures, &BTreeMap<usize, usize>)>,
    device: &B::Device,
) -> Batch<B> {
    let g = data.n_genes();
    let b = ex.len();
    let mut x = vec![0.0f32; b * g];
    let mut y = vec![0.0f32; b * g];
    for (r, e) in ex.iter().enumerate() {
        data.lognorm_row(e.input, &mut x[r * g..(r + 1) * g]);
        data.lognorm_row(e.target, &mut y[r * g..(r + 1) * g]);
    }
    let features = backbone.map(|(f, slot)| {
        let per = g * f.dim;
        let mut v = Vec::with_capacity(b * per);
        for e in ex {
            let s = slot[&e.input];
            v.extend_from_slice(&f.values[s * per..(s + 1) * per]);
        }
        Tensor::from_data(TensorData::new(v, [b, g, f.dim]), device)
    });
    Batch {
        x: Tensor::from_data(TensorData::new(x, [b, g]), device),
        y: Tensor::from_data(TensorData::new(y, [b, g]), device),
        perts: ex.iter().map(|e| perts[e.condition].clone()).collect(),
        features,
    }
}

/// Trains GEARS on the training conditions of `inputs.split`.
pub fn fit<B: AutodiffBackend>(
    data: &PerturbData,
    inputs: &FitInputs<'_, B>,
    device: &B::Device,
    mut on_epoch: impl FnMut(&FitEpoch),
) -> Result<Fitted<B::InnerBackend>> {
    let cfg = &inputs.fit;
    if cfg.epochs == 0 || cfg.batch_size == 0 || cfg.pool == 0 {
        return Err(TaskError::Config(
            "epochs, batch size and pool must be at least 1".into(),
        ));
    }
    if !(cfg.lr > 0.0 && cfg.lr.is_finite()) {
        return Err(TaskError::Config(format!(
            "learning rate {} must be > 0",
            cfg.lr
        )));
    }
    if !(cfg.lr_decay > 0.0 && cfg.lr_decay <= 1.0) {
        return Err(TaskError::Config(format!(
            "learning-rate decay {} must be in (0, 1] (GEARS: 0.5 per epoch; 1: constant)",
            cfg.lr_decay
        )));
    }
    let g = data.n_genes();
    let mut rng = StdRng::seed_from_u64(cfg.seed);
    B::seed(device, cfg.seed);
    let perts: Vec<Vec<usize>> = data
        .conditions
        .iter()
        .map(|c| data.pert_indices(c))
        .collect::<Result<_>>()?;
    // Control cells that can be inputs: the backbone's pool, or every control cell.
    let slot: BTreeMap<usize, usize> = inputs
        .backbone
        .map(|f| f.cells.iter().enumerate().map(|(s, &c)| (c, s)).collect())
        .unwrap_or_default();
    let controls: Vec<usize> = match inputs.backbone {
        Some(f) => f.cells.clone(),
        None => data.cells_of(data.control),
    };
    if inputs.model.backbone_dim.is_some() != inputs.backbone.is_some() {
        return Err(TaskError::Config(
            "backbone features and a backbone model go together".into(),
        ));
    }
    let part_of = |k: usize| {
        inputs
            .split
            .part
            .get(&data.conditions[k].name)
            .copied()
            .flatten()
    };
    // GEARS's pairing, drawn once: a perturbed cell with a random control cell, a control cell
    // with itself.
    let mut train = Vec::new();
    let mut val = Vec::new();
    for (c, &k) in data.cell_condition.iter().enumerate() {
        let part = part_of(k);
        let ex = if k == data.control {
            if inputs.backbone.is_some() && !slot.contains_key(&c) {
                continue;
            }
            Example {
                input: c,
                target: c,
                condition: k,
            }
        } else {
            Example {
                input: controls[rng.random_range(0..controls.len())],
                target: c,
                condition: k,
            }
        };
        match part {
            Some(SplitPart::Train) => train.push(ex),
            Some(SplitPart::Val) if k != data.control => val.push(ex),
            _ => {}
        }
    }
    if train.iter().all(|e| e.condition == data.control) {
        return Err(TaskError::Split(
            "no perturbed cells in training conditions".into(),
        ));
    }
    // Retained genes per condition: non-zero mean (GEARS's `non_zeros_gene_idx`); all for control.
    let mut retained = vec![vec![false; g]; data.conditions.len()];
    for (c, &k) in data.cell_condition.iter().enumerate() {
        let (idx, vals) = data.lognorm.row(c);
        for (&j, &v) in idx.iter().zip(vals) {
            if v != 0.0 {
                retained[k][j as usize] = true;
            }
        }
    }
    retained[data.control] = vec![true; g];
    let ctrl_cells = data.cells_of(data.control);
    let ctrl_mean: Vec<f32> = column_means(&data.dense_f64(&ctrl_cells), g)
        .into_iter()
        .map(|v| v as f32)
        .collect();
    let ctrl_t: Tensor<B, 2> =
        Tensor::<B, 1>::from_data(TensorData::new(ctrl_mean, [g]), device).unsqueeze_dim(0);

    // torch renormalizes the max_norm embeddings' rows at the first lookup: the same here.
    let mut model: Gears<B> = inputs.model.init(device).renormalize_embeddings();
    // GEARS keeps the epoch with the lowest validation `mse_de`: the MSE on each validation
    // condition's top-20 DE genes (against control), averaged over conditions.
    let val_de: BTreeMap<usize, Vec<usize>> = {
        let ctrl = data.dense_f64(&data.cells_of(data.control));
        let mut ks: Vec<usize> = val.iter().map(|e| e.condition).collect();
        ks.sort_unstable();
        ks.dedup();
        ks.into_iter()
            .map(|k| {
                let x = data.dense_f64(&data.cells_of(k));
                Ok((k, top_de_genes(&x, &ctrl, g, TOP_DE)?))
            })
            .collect::<Result<_>>()?
    };
    let mut optim = AdamConfig::new()
        .with_epsilon(1e-8)
        .with_weight_decay(Some(WeightDecayConfig::new(cfg.weight_decay as f32)))
        .with_grad_clipping(Some(
            burn::optim::grad_clipping::GradientClippingConfig::Value(1.0),
        ))
        .init::<B, Gears<B>>();
    let back = inputs.backbone.map(|f| (f, &slot));
    let inner_device = model.valid().indv_b1.val().device();
    let inner_graphs = inputs.graphs.to_device::<B::InnerBackend>(&inner_device);
    let mut best: Option<(f64, usize, Gears<B::InnerBackend>)> = None;
    let mut log = Vec::new();
    for epoch in 1..=cfg.epochs {
        let t0 = std::time::Instant::now();
        let lr = cfg.lr * cfg.lr_decay.powi(epoch as i32 - 1);
        train.shuffle(&mut rng);
        let (mut sum, mut n) = (0.0f64, 0usize);
        for chunk in train.chunks(cfg.batch_size) {
            // Batch norm needs two rows (torch refuses one in training); GEARS drops nothing,
            // its loader never yields one here but the last batch can.
            if chunk.len() < 2 {
                continue;
            }
            let batch = make_batch::<B>(data, chunk, &perts, back, device);
            let w = loss_weights(chunk, &retained, g);
            let w = Tensor::<B, 2>::from_data(TensorData::new(w, [chunk.len(), g]), device);
            let pred = model.forward(batch.x, &batch.perts, batch.features, inputs.graphs)?;
            let loss = gears_loss(
                pred,
                batch.y,
                w,
                ctrl_t.clone().expand([chunk.len(), g]),
                cfg.direction_lambda,
            );
            let v = f64::from(host(loss.clone())?[0]);
            if !v.is_finite() {
                return Err(TaskError::NonFinite {
                    what: "GEARS training loss".into(),
                    epoch,
                });
            }
            sum += v;
            n += 1;
            let grads = GradientsParams::from_grads(loss.backward(), &model);
            model = optim.step(lr, model, grads).renormalize_embeddings();
        }
        let valid = model.valid();
        let val_mse = if val.is_empty() {
            f64::NAN
        } else {
            validation_mse(
                data,
                &valid,
                &val,
                &val_de,
                &perts,
                back,
                &inner_graphs,
                cfg.batch_size,
            )?
        };
        let rec = FitEpoch {
            epoch,
            train_loss: sum / n.max(1) as f64,
            val_mse,
            lr,
            seconds: t0.elapsed().as_secs_f64(),
        };
        on_epoch(&rec);
        log.push(rec);
        let better = match &best {
            None => true,
            Some((b, _, _)) => val_mse.is_nan() || val_mse < *b,
        };
        if better {
            best = Some((val_mse, epoch, valid));
        }
    }
    let (_, best_epoch, model) = best.ok_or_else(|| TaskError::Config("no epoch ran".into()))?;
    // The prediction pool: the backbone's cells, or a seeded sample of the control cells.
    let pool = match inputs.backbone {
        Some(f) => f.cells.clone(),
        None => {
            let mut c = ctrl_cells;
            c.shuffle(&mut rng);
            c.truncate(cfg.pool);
            c.sort_unstable();
            c
        }
    };
    Ok(Fitted {
        model,
        epochs: log,
        best_epoch,
        pool,
    })
}

/// GEARS's validation `mse_de` (what upstream selects the best epoch by): the mean over
/// validation conditions of the MSE, on the condition's top-20 DE genes (`de`: condition index →
/// gene indices), between the condition's mean prediction (its cells from their paired
/// controls) and its true mean.
#[allow(clippy::too_many_arguments)]
fn validation_mse<B: Backend>(
    data: &PerturbData,
    model: &Gears<B>,
    val: &[Example],
    de: &BTreeMap<usize, Vec<usize>>,
    perts: &[Vec<usize>],
    back: Option<(&BackboneFeatures, &BTreeMap<usize, usize>)>,
    graphs: &GearsGraphs<B>,
    batch_size: usize,
) -> Result<f64> {
    let g = data.n_genes();
    let device = model.indv_b1.val().device();
    let mut pred_sum: BTreeMap<usize, (Vec<f64>, usize)> = BTreeMap::new();
    let mut true_sum: BTreeMap<usize, Vec<f64>> = BTreeMap::new();
    let table = model.perturbation_table(graphs);
    for chunk in val.chunks(batch_size.max(1)) {
        let batch = make_batch::<B>(data, chunk, perts, back, &device);
        let y = host(batch.y.clone())?;
        let p = host(model.forward_with_table(
            batch.x,
            &batch.perts,
            batch.features,
            graphs,
            Some(&table),
        )?)?;
        for (r, e) in chunk.iter().enumerate() {
            let (ps, n) = pred_sum
                .entry(e.condition)
                .or_insert_with(|| (vec![0.0; g], 0));
            let ts = true_sum.entry(e.condition).or_insert_with(|| vec![0.0; g]);
            for j in 0..g {
                ps[j] += f64::from(p[r * g + j]);
                ts[j] += f64::from(y[r * g + j]);
            }
            *n += 1;
        }
    }
    let mut total = 0.0;
    for (k, (ps, n)) in &pred_sum {
        let ts = &true_sum[k];
        let genes = &de[k];
        total += genes
            .iter()
            .map(|&j| ((ps[j] - ts[j]) / *n as f64).powi(2))
            .sum::<f64>()
            / genes.len().max(1) as f64;
    }
    Ok(total / pred_sum.len().max(1) as f64)
}

/// Mean predictions (`[genes]` each, log-normalized) of `conditions` (gene-index lists) from the
/// control inputs `pool_x` (`[P, genes]` row-major) and, with a backbone, their features
/// `[P, genes, D]`; batches of `batch_size` pool cells.
pub fn predict_means<B: Backend>(
    model: &Gears<B>,
    graphs: &GearsGraphs<B>,
    pool_x: &[f32],
    pool_features: Option<(&[f32], usize)>,
    conditions: &[Vec<usize>],
    batch_size: usize,
) -> Result<Vec<Vec<f64>>> {
    let g = model.genes;
    let p = pool_x.len() / g.max(1);
    if p == 0 {
        return Err(TaskError::Config("no control cells to predict from".into()));
    }
    let device = model.indv_b1.val().device();
    let bs = batch_size.max(1);
    // Each pool batch is uploaded once and run for every condition (batches outer), so one
    // batch of inputs is held; every condition's sum still adds its batches in pool order.
    let mut sums = vec![vec![0.0f64; g]; conditions.len()];
    // The propagated perturbation table depends on the model and the graph only: once.
    let table = model.perturbation_table(graphs);
    for start in (0..p).step_by(bs) {
        let end = (start + bs).min(p);
        let b = end - start;
        let x = Tensor::<B, 2>::from_data(
            TensorData::new(pool_x[start * g..end * g].to_vec(), [b, g]),
            &device,
        );
        let feats = pool_features.map(|(f, d)| {
            Tensor::<B, 3>::from_data(
                TensorData::new(f[start * g * d..end * g * d].to_vec(), [b, g, d]),
                &device,
            )
        });
        for (pert, sum) in conditions.iter().zip(&mut sums) {
            let perts = vec![pert.clone(); b];
            let y = host(model.forward_with_table(
                x.clone(),
                &perts,
                feats.clone(),
                graphs,
                Some(&table),
            )?)?;
            for row in y.chunks_exact(g) {
                for (s, v) in sum.iter_mut().zip(row) {
                    *s += f64::from(*v);
                }
            }
        }
    }
    let mut out = Vec::with_capacity(conditions.len());
    for sum in sums {
        if let Some(j) = sum.iter().position(|v| !v.is_finite()) {
            return Err(TaskError::NonFinite {
                what: format!("prediction (gene {j})"),
                epoch: 0,
            });
        }
        out.push(sum.into_iter().map(|s| s / p as f64).collect());
    }
    Ok(out)
}

/// The format tag of `perturb_model.json`.
pub const MODEL_FORMAT: &str = "aido-perturb-gears/1";

/// `perturb_model.json`: what a saved model needs besides its weights.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PerturbModelInfo {
    /// [`MODEL_FORMAT`].
    pub format: String,
    /// The genes, in output order.
    pub genes: Vec<String>,
    /// The perturbation graph's genes after `genes` (not measured; upstream's perturbation
    /// table spans its GO graph). Empty: the graph is over `genes` only.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub perturbation_genes: Vec<String>,
    /// The control value of the condition names.
    pub control_value: String,
    /// Hidden size.
    pub hidden: usize,
    /// Backbone width, or `None` for learned gene embeddings.
    pub backbone_dim: Option<usize>,
    /// Co-expression mode.
    pub coexpression: CoexpressionMode,
    /// Training settings.
    pub fit: FitConfig,
    /// Where it came from (input, split, graphs, backbone).
    pub trained_on: serde_json::Value,
}

impl PerturbModelInfo {
    /// The nodes of the perturbation graph: `genes`, then `perturbation_genes`.
    pub fn perturbation_nodes(&self) -> Vec<String> {
        let mut v = self.genes.clone();
        v.extend(self.perturbation_genes.iter().cloned());
        v
    }

    /// The model configuration.
    pub fn config(&self) -> GearsConfig {
        GearsConfig::new(self.genes.len())
            .with_perturbation_nodes(Some(self.genes.len() + self.perturbation_genes.len()))
            .with_hidden(self.hidden)
            .with_backbone_dim(self.backbone_dim)
            .with_coexpression(self.coexpression)
    }
}

/// A model folder's content.
pub struct PerturbModel<B: Backend> {
    /// The model.
    pub model: Gears<B>,
    /// Its description.
    pub info: PerturbModelInfo,
    /// The graphs.
    pub graphs: GearsGraphs<B>,
    /// Co-expression edges (as saved).
    pub coexpression_edges: Vec<GeneEdge>,
    /// Perturbation-graph edges (as saved).
    pub perturbation_edges: Vec<GeneEdge>,
    /// Control inputs `[P, genes]`.
    pub pool_x: Vec<f32>,
    /// Backbone features of the pool `[P, genes, D]`.
    pub pool_features: Option<Vec<f32>>,
}

fn write_graph(path: &Path, edges: &[GeneEdge], genes: &[String]) -> Result<()> {
    use std::fmt::Write;
    let mut s = String::from("gene_a\tgene_b\tweight\n");
    for e in edges {
        let _ = writeln!(s, "{}\t{}\t{}", genes[e.source], genes[e.target], e.weight);
    }
    aido_train::checkpoint::write_atomic(path, s.as_bytes())?;
    Ok(())
}

fn ckpt_err(path: &Path, detail: impl ToString) -> TaskError {
    TaskError::Checkpoint {
        path: path.to_path_buf(),
        detail: detail.to_string(),
    }
}

/// Writes the model folder through `dir.partial`, which then replaces `dir`:
/// `perturb_model.json`, `gears.mpk` (burn record), `coexpression_graph.tsv`,
/// `perturbation_graph.tsv` (the documented graph TSV) and `controls.safetensors` (`x [P, G]`,
/// and `backbone [P, G, D]` with a backbone).
pub fn save_model<B: Backend>(dir: &Path, m: &PerturbModel<B>) -> Result<()> {
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_else(|| "model".into());
    let partial = dir.with_file_name(format!("{name}.partial"));
    if partial.exists() {
        fs::remove_dir_all(&partial).map_err(io(&partial))?;
    }
    fs::create_dir_all(&partial).map_err(io(&partial))?;
    let wp = partial.join("gears");
    aido_train::checkpoint::recorder()
        .record(m.model.clone().into_record(), wp.clone())
        .map_err(|e| ckpt_err(&wp.with_extension("mpk"), e))?;
    let genes = &m.info.genes;
    write_graph(
        &partial.join("coexpression_graph.tsv"),
        &m.coexpression_edges,
        genes,
    )?;
    write_graph(
        &partial.join("perturbation_graph.tsv"),
        &m.perturbation_edges,
        &m.info.perturbation_nodes(),
    )?;
    let g = genes.len();
    let p = m.pool_x.len() / g.max(1);
    let to_bytes = |v: &[f32]| v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>();
    let xb = to_bytes(&m.pool_x);
    let fb = m.pool_features.as_deref().map(to_bytes);
    let mut views = vec![(
        "x".to_string(),
        safetensors::tensor::TensorView::new(safetensors::Dtype::F32, vec![p, g], &xb)
            .map_err(|e| ckpt_err(&partial, e))?,
    )];
    if let (Some(fb), Some(d)) = (&fb, m.info.backbone_dim) {
        views.push((
            "backbone".to_string(),
            safetensors::tensor::TensorView::new(safetensors::Dtype::F32, vec![p, g, d], fb)
                .map_err(|e| ckpt_err(&partial, e))?,
        ));
    }
    let cp = partial.join("controls.safetensors");
    let bytes = safetensors::serialize(views, None).map_err(|e| ckpt_err(&cp, e))?;
    aido_train::checkpoint::write_atomic(&cp, &bytes)?;
    let ip = partial.join("perturb_model.json");
    let json = serde_json::to_vec_pretty(&m.info).map_err(|e| ckpt_err(&ip, e))?;
    aido_train::checkpoint::write_atomic(&ip, &json)?;
    aido_tokenize::io_util::replace_dir(&partial, dir).map_err(io(dir))
}

/// Loads a folder written by [`save_model`].
pub fn load_model<B: Backend>(dir: &Path, device: &B::Device) -> Result<PerturbModel<B>> {
    let ip = dir.join("perturb_model.json");
    let text = fs::read_to_string(&ip).map_err(|e| {
        ckpt_err(
            &ip,
            format!("{e}: not a model folder of `aido perturb fit` (it holds perturb_model.json)"),
        )
    })?;
    let info: PerturbModelInfo = serde_json::from_str(&text).map_err(|e| ckpt_err(&ip, e))?;
    if info.format != MODEL_FORMAT {
        return Err(ckpt_err(
            &ip,
            format!("format {:?}, expected {MODEL_FORMAT:?}", info.format),
        ));
    }
    let g = info.genes.len();
    let wp = dir.join("gears");
    let record = aido_train::checkpoint::recorder()
        .load(wp.clone(), device)
        .map_err(|e| ckpt_err(&wp.with_extension("mpk"), e))?;
    let model = info.config().init::<B>(device).load_record(record);
    let (co, _) =
        crate::perturb::read_gene_graph(&dir.join("coexpression_graph.tsv"), &info.genes)?;
    let (pe, _) = crate::perturb::read_gene_graph(
        &dir.join("perturbation_graph.tsv"),
        &info.perturbation_nodes(),
    )?;
    let cp = dir.join("controls.safetensors");
    let bytes = fs::read(&cp).map_err(io(&cp))?;
    let st = safetensors::SafeTensors::deserialize(&bytes).map_err(|e| ckpt_err(&cp, e))?;
    let read = |name: &str, shape: &[usize]| -> Result<Vec<f32>> {
        let t = st
            .tensor(name)
            .map_err(|e| ckpt_err(&cp, format!("{name}: {e}")))?;
        if t.dtype() != safetensors::Dtype::F32 || t.shape() != shape {
            return Err(ckpt_err(
                &cp,
                format!(
                    "{name}: {:?} {:?}, expected F32 {shape:?}",
                    t.dtype(),
                    t.shape()
                ),
            ));
        }
        Ok(t.data()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect())
    };
    let p = st
        .tensor("x")
        .map_err(|e| ckpt_err(&cp, format!("x: {e}")))?
        .shape()
        .first()
        .copied()
        .unwrap_or(0);
    let pool_x = read("x", &[p, g])?;
    let pool_features = match info.backbone_dim {
        Some(d) => Some(read("backbone", &[p, g, d])?),
        None => None,
    };
    let graphs = GearsGraphs::with_perturbation_nodes(
        &co,
        &pe,
        g,
        g + info.perturbation_genes.len(),
        device,
    )?;
    Ok(PerturbModel {
        model,
        info,
        graphs,
        coexpression_edges: co,
        perturbation_edges: pe,
        pool_x,
        pool_features,
    })
}

/// The frozen encoder's contextual embeddings (`last_hidden_state` rows) of `data`'s genes in
/// each of `cells` (control cells): the cell's raw counts aligned to the model's `vocab`,
/// preprocessed as `aido embed` does, encoded in batches of `batch_size`. A gene of the data
/// that the vocabulary lacks gets a zero embedding; their number is returned beside.
pub fn backbone_features<B: aido_model::burn::prelude::Backend>(
    model: aido_model::AidoCellModel<B>,
    device: B::Device,
    vocab: &aido_tokenize::GeneVocab,
    data: &PerturbData,
    cells: &[usize],
    batch_size: usize,
    gene_id: aido_tokenize::GeneIdMode,
) -> Result<(BackboneFeatures, usize)> {
    let g = data.n_genes();
    // The data's genes placed in the model's list by the one alignment rule (symbol, Ensembl
    // id, alias); any overlap is accepted here, none is an error.
    let alignment = aido_tokenize::GeneAlignment::new(
        vocab,
        &data.genes,
        "the data's genes",
        std::path::Path::new("perturbation data"),
        &aido_tokenize::AlignOptions {
            min_fraction: 0.0,
            min_genes: 0,
            gene_id,
        },
    )
    .map_err(|e| TaskError::Genes(e.to_string()))?;
    let pos: Vec<Option<usize>> = (0..g)
        .map(|j| alignment.position(j).map(|p| p as usize))
        .collect();
    let missing = pos.iter().filter(|p| p.is_none()).count();
    if missing == g {
        return Err(TaskError::Genes(format!(
            "none of the data's {g} genes is in the model's gene list ({} genes; {})",
            vocab.len(),
            alignment.report()
        )));
    }
    let mut present = vec![0u8; vocab.seq_len()];
    for p in pos.iter().flatten() {
        present[*p] = 1;
    }
    for p in &mut present[vocab.len()..] {
        *p = 1;
    }
    let mapped: Vec<(usize, usize)> = pos
        .iter()
        .enumerate()
        .filter_map(|(j, p)| p.map(|p| (j, p)))
        .collect();
    let embedder =
        aido_model::Embedder::new(model, device, present, aido_model::Pooling::PresentMean)?
            .with_gene_positions(mapped.iter().map(|m| m.1).collect())?;
    let d = embedder.hidden_size();
    let pre = aido_tokenize::PreprocessConfig::default();
    let s = vocab.seq_len();
    let mut values = vec![0.0f32; cells.len() * g * d];
    for (bi, chunk) in cells.chunks(batch_size.max(1)).enumerate() {
        let mut rows = ndarray::Array2::<f32>::zeros((chunk.len(), s));
        for (r, &c) in chunk.iter().enumerate() {
            let (idx, vals) = data.counts.row(c);
            let entries: Vec<(usize, f32)> = idx
                .iter()
                .zip(vals)
                .filter_map(|(&j, &v)| pos[j as usize].map(|p| (p, v)))
                .collect();
            let total: f32 = entries.iter().map(|e| e.1).sum();
            if total <= 0.0 {
                return Err(TaskError::Genes(format!(
                    "control cell {c} has no counts in the model's genes"
                )));
            }
            let mut row = rows.row_mut(r);
            let out = row
                .as_slice_mut()
                .ok_or_else(|| TaskError::Config("internal: non-contiguous row".into()))?;
            pre.fill_row(entries.into_iter(), total, out);
        }
        let e = embedder.embed(&rows)?;
        let genes = e
            .genes
            .ok_or_else(|| TaskError::Config("internal: no gene embeddings".into()))?;
        for r in 0..chunk.len() {
            let cell = bi * batch_size.max(1) + r;
            for (k, &(j, _)) in mapped.iter().enumerate() {
                let dst = (cell * g + j) * d;
                for h in 0..d {
                    values[dst + h] = genes[[r, k, h]];
                }
            }
        }
    }
    Ok((
        BackboneFeatures {
            cells: cells.to_vec(),
            values,
            dim: d,
        },
        missing,
    ))
}
