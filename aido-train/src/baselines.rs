//! Trivial predictors of the masked values, scored on the same validation examples as the
//! model: what "the model learned something" has to beat.

use serde::Serialize;

use crate::Result;
use crate::data::{CellLookup, Samplers, VALIDATION_EPOCH};

/// Validation masked MSE of each trivial predictor.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Baselines {
    /// Predict the input's value at the position: −1, the mask value, at every masked position.
    pub input_value: f64,
    /// Predict 0 (no expression).
    pub zero: f64,
    /// Predict the gene's mean target over (up to 2,000) training cells.
    pub gene_mean: f64,
    /// Predict the mean of the cell's visible (unmasked, measured) gene inputs.
    pub cell_mean: f64,
    /// Masked positions scored.
    pub n_masked: usize,
    /// Training cells the gene means were computed on.
    pub gene_mean_cells: usize,
}

/// The training cells the gene means are computed on: every `⌈n / 2000⌉`-th of the `n`
/// training cells (ascending ids), i.e. at most 2,000 evenly spaced ones.
pub fn gene_mean_cells(
    train: impl Iterator<Item = usize>,
    n: usize,
) -> impl Iterator<Item = usize> {
    train.step_by(n.div_ceil(2000).max(1))
}

/// Per-group mean high-depth target of every gene over an evenly spaced subset of (at most
/// 2,000) training cells: `[n_groups][G]`, with the number of cells used.
fn group_means(
    corpus: &dyn CellLookup,
    samplers: &Samplers,
    train: &[usize],
    group: &dyn Fn(usize) -> usize,
    n_groups: usize,
) -> Result<(Vec<Vec<f64>>, usize)> {
    let g = corpus.n_genes();
    let (mut sum, mut cnt) = (
        vec![vec![0.0f64; g]; n_groups],
        vec![vec![0u32; g]; n_groups],
    );
    let mut used = 0;
    for id in gene_mean_cells(train.iter().copied(), train.len()) {
        let (counts, set) = corpus.lookup(id)?;
        let ex = samplers.0[set].example(0, id, counts)?;
        let present = corpus.present(set);
        let k = group(id);
        for p in (0..g).filter(|&p| present[p] == 1) {
            sum[k][p] += f64::from(ex.target[p]);
            cnt[k][p] += 1;
        }
        used += 1;
    }
    let means = sum
        .iter()
        .zip(&cnt)
        .map(|(s, c)| {
            s.iter()
                .zip(c)
                .map(|(s, &c)| if c > 0 { s / f64::from(c) } else { 0.0 })
                .collect()
        })
        .collect();
    Ok((means, used))
}

/// Validation masked MSE of predicting, for each masked gene, its mean target among training
/// cells of the same group (e.g. the cell type, when it is known: a reference that is told what
/// the model has to infer from context).
pub fn group_mean_loss(
    corpus: &dyn CellLookup,
    samplers: &Samplers,
    train: &[usize],
    val: &[usize],
    group: &dyn Fn(usize) -> usize,
    n_groups: usize,
) -> Result<f64> {
    let (means, _) = group_means(corpus, samplers, train, group, n_groups)?;
    let (mut e, mut n) = (0.0, 0usize);
    for &id in val {
        let (counts, set) = corpus.lookup(id)?;
        let ex = samplers.0[set].example(VALIDATION_EPOCH, id, counts)?;
        let m = &means[group(id)];
        for p in (0..corpus.n_genes()).filter(|&p| ex.mask[p] == 1) {
            let d = m[p] - f64::from(ex.target[p]);
            e += d * d;
            n += 1;
        }
    }
    Ok(e / n.max(1) as f64)
}

/// Scores the trivial predictors on the validation cells.
pub fn baselines(
    corpus: &dyn CellLookup,
    samplers: &Samplers,
    train: &[usize],
    val: &[usize],
) -> Result<Baselines> {
    let g = corpus.n_genes();
    let (means, used) = group_means(corpus, samplers, train, &|_| 0, 1)?;
    let mean = &means[0];
    let (mut e_in, mut e_zero, mut e_gene, mut e_cell, mut n) = (0.0, 0.0, 0.0, 0.0, 0usize);
    for &id in val {
        let (counts, set) = corpus.lookup(id)?;
        let ex = samplers.0[set].example(VALIDATION_EPOCH, id, counts)?;
        let present = corpus.present(set);
        let visible: Vec<f64> = (0..g)
            .filter(|&p| present[p] == 1 && ex.mask[p] == 0)
            .map(|p| f64::from(ex.input[p]))
            .collect();
        let cell_mean = if visible.is_empty() {
            0.0
        } else {
            visible.iter().sum::<f64>() / visible.len() as f64
        };
        for p in (0..g).filter(|&p| ex.mask[p] == 1) {
            let y = f64::from(ex.target[p]);
            let sq = |v: f64| (v - y) * (v - y);
            e_in += sq(f64::from(ex.input[p]));
            e_zero += sq(0.0);
            e_gene += sq(mean[p]);
            e_cell += sq(cell_mean);
            n += 1;
        }
    }
    let d = n.max(1) as f64;
    Ok(Baselines {
        input_value: e_in / d,
        zero: e_zero / d,
        gene_mean: e_gene / d,
        cell_mean: e_cell / d,
        n_masked: n,
        gene_mean_cells: used,
    })
}
