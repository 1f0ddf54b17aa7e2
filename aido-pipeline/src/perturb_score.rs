//! Scoring any tool's predicted single cells against the real ones as the Virtual Cell
//! Challenge (cell-eval 0.8) and Systema do ([`score_files`], what `aido perturb score` runs):
//! the metrics of [`aido_eval::perturb`], their means, and the normalised scores against
//! cell-eval's cell-mean baseline.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Instant;

use aido_eval::perturb::{
    GroupedCells, PredictionScores, SCORE_KEYS, VCC_KEYS, differential_expression, mean_baseline,
    normalized_score, score_predictions_with,
};
use aido_tokenize::{CsrChunk, ReadOptions, open_source, read_all};
use serde::Serialize;
use serde_json::{Value, json};

use crate::error::{PipelineError, Result};
use crate::obs::{obs_labels, write_json};

/// How the files are read (defaults = cell-eval's command line).
#[derive(Debug, Clone, PartialEq)]
pub struct ScoreOptions {
    /// obs column naming each cell's perturbation (default `target_gene`).
    pub perturbation_column: String,
    /// Its value for control cells (default `non-targeting`).
    pub control_value: String,
    /// Read `layers/<name>` instead of `X` (both files).
    pub layer: Option<String>,
}

impl Default for ScoreOptions {
    fn default() -> Self {
        ScoreOptions {
            perturbation_column: "target_gene".into(),
            control_value: "non-targeting".into(),
            layer: None,
        }
    }
}

/// What `aido perturb score` writes (`REPORT.json`).
#[derive(Debug, Clone, Serialize)]
pub struct ScoreReport {
    /// Perturbation → metric → value (`null` where the value is NaN: a constant change).
    pub per_perturbation: BTreeMap<String, BTreeMap<String, Value>>,
    /// Metric → mean over the perturbations (`null` when any is NaN, as cell-eval's mean), and
    /// `baseline_normalized` (as at the top level).
    pub mean: BTreeMap<String, Value>,
    /// The Virtual Cell Challenge's scores against the cell-mean baseline: `overlap_at_N`,
    /// `discrimination_score_l1`, `mae` and their mean `avg_score`.
    pub baseline_normalized: BTreeMap<String, f64>,
    /// The baseline's own means of the metrics.
    pub baseline_mean: BTreeMap<String, Value>,
    /// Perturbations scored.
    pub n_perturbations: usize,
    /// How each file was read and normalised.
    pub inputs: Value,
    /// Seconds taken (scoring; reading the files not included).
    pub seconds: f64,
    /// Seconds per stage: `de_real`, `de_predicted` (pdex's Wilcoxon + BH on each file),
    /// `metrics`, `baseline` (building, DE and scoring cell-eval's mean baseline).
    pub stage_seconds: BTreeMap<String, f64>,
    /// Definitions and settings.
    pub settings: Value,
}

impl std::fmt::Display for ScoreReport {
    /// The headline numbers.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let num = |v: Option<&Value>| {
            v.and_then(Value::as_f64)
                .map_or("NaN".to_string(), |x| format!("{x:.4}"))
        };
        writeln!(f, "{} perturbations", self.n_perturbations)?;
        for k in [
            "overlap_at_N",
            "discrimination_score_l1",
            "mae",
            "pearson_delta",
            "pearson_delta_centroid",
            "centroid_accuracy",
        ] {
            writeln!(f, "  {k}: {}", num(self.mean.get(k)))?;
        }
        write!(
            f,
            "  baseline-normalized (Virtual Cell Challenge): overlap {:.4}, discrimination {:.4}, mae {:.4}, average {:.4}",
            self.baseline_normalized["overlap_at_N"],
            self.baseline_normalized["discrimination_score_l1"],
            self.baseline_normalized["mae"],
            self.baseline_normalized["avg_score"]
        )
    }
}

/// One file read for scoring.
#[derive(Debug, Clone)]
pub struct ScoreInput {
    /// The cells, log1p-normalised, grouped by perturbation.
    pub cells: GroupedCells,
    /// Gene names of the columns.
    pub genes: Vec<String>,
    /// What was done to the values (`log1p as given`, or the counts' normalisation).
    pub normalization: String,
}

/// The value cell-eval treats as decimal: a fractional part above this means "not counts".
const FRACTION_EPS: f32 = 1e-3;

/// Reads `path` for scoring: `X` (or the layer), the genes, the perturbation column; counts
/// (no stored value with a fractional part above 1e-3) are normalised as cell-eval does —
/// each cell to the median total of the file, then `ln(1 + x)` — and other values must be
/// log1p values (≥ 0, below 15).
pub fn read_score_input(path: &Path, options: &ScoreOptions) -> Result<ScoreInput> {
    let read = ReadOptions {
        layer: options.layer.clone(),
        ..ReadOptions::default()
    };
    let mut src = open_source(path, &read)?;
    let genes = src.gene_names().to_vec();
    let labels = obs_labels(src.obs(), &path.display(), &options.perturbation_column)?;
    let mut x: CsrChunk = read_all(src.as_mut())?;
    drop(src);
    let what = options
        .layer
        .as_ref()
        .map_or("X".to_string(), |l| format!("layers/{l}"));
    let bad = |d: String| PipelineError::input(path.display(), format!("{what}: {d}"));
    if let Some(i) = x.data.iter().position(|v| !v.is_finite()) {
        let cell = x.indptr.partition_point(|&p| p <= i) - 1;
        return Err(bad(format!(
            "cell {cell} holds a non-finite value ({})",
            x.data[i]
        )));
    }
    let counts = !x.data.iter().any(|v| v.fract() > FRACTION_EPS);
    let normalization = if counts {
        if let Some(i) = x.data.iter().position(|&v| v < 0.0) {
            let cell = x.indptr.partition_point(|&p| p <= i) - 1;
            return Err(bad(format!(
                "cell {cell} holds a negative count ({})",
                x.data[i]
            )));
        }
        let mut totals: Vec<f64> = (0..x.n_cells())
            .map(|i| x.row(i).1.iter().map(|&v| f64::from(v)).sum())
            .collect();
        totals.sort_by(f64::total_cmp);
        let n = totals.len();
        let median = if n == 0 {
            0.0
        } else if n % 2 == 1 {
            totals[n / 2]
        } else {
            (totals[n / 2 - 1] + totals[n / 2]) / 2.0
        };
        aido_eval::preprocess::normalize_log1p_in_place(&mut x, median);
        format!("counts: each cell scaled to the median total ({median}), then ln(1 + x)")
    } else {
        let (min, max) = x
            .data
            .iter()
            .fold((f32::INFINITY, f32::NEG_INFINITY), |(a, b), &v| {
                (a.min(v), b.max(v))
            });
        if min < 0.0 || max >= 15.0 {
            return Err(bad(format!(
                "values range {min}..{max}: neither counts nor log1p-normalised values (0 ≤ x < 15); give counts or log1p(normalised) values"
            )));
        }
        "log1p values, as given".to_string()
    };
    let control = labels
        .names
        .iter()
        .position(|n| *n == options.control_value)
        .ok_or_else(|| {
            PipelineError::input(
                path.display(),
                format!(
                    "obs/{} has no control cells '{}' (values: {})",
                    options.perturbation_column,
                    options.control_value,
                    preview(&labels.names)
                ),
            )
        })?;
    Ok(ScoreInput {
        cells: GroupedCells {
            n_genes: genes.len(),
            x,
            group: labels.codes.iter().map(|&c| c as usize).collect(),
            names: labels.names,
            control,
        },
        genes,
        normalization,
    })
}

fn preview(v: &[String]) -> String {
    let mut s: Vec<&str> = v.iter().take(8).map(String::as_str).collect();
    if v.len() > 8 {
        s.push("…");
    }
    s.join(", ")
}

/// Puts `predicted`'s columns in `real`'s gene order, refusing different gene sets (naming the
/// genes) or repeated names.
fn align_genes(
    real: &ScoreInput,
    predicted: &mut ScoreInput,
    real_path: &Path,
    pred_path: &Path,
) -> Result<()> {
    let index = |genes: &[String], path: &Path| -> Result<BTreeMap<String, usize>> {
        let mut m = BTreeMap::new();
        for (j, g) in genes.iter().enumerate() {
            if m.insert(g.clone(), j).is_some() {
                return Err(PipelineError::input(
                    path.display(),
                    format!("gene {g} names two columns: gene names must be unique"),
                ));
            }
        }
        Ok(m)
    };
    let ri = index(&real.genes, real_path)?;
    let pi = index(&predicted.genes, pred_path)?;
    let missing: Vec<String> = real
        .genes
        .iter()
        .filter(|g| !pi.contains_key(*g))
        .cloned()
        .collect();
    let extra: Vec<String> = predicted
        .genes
        .iter()
        .filter(|g| !ri.contains_key(*g))
        .cloned()
        .collect();
    if !missing.is_empty() || !extra.is_empty() {
        return Err(PipelineError::input(
            pred_path.display(),
            format!(
                "its genes differ from {}'s: {} missing ({}), {} not in the real file ({}); both files must hold the same genes (any order)",
                real_path.display(),
                missing.len(),
                preview(&missing),
                extra.len(),
                preview(&extra)
            ),
        ));
    }
    if real.genes == predicted.genes {
        return Ok(());
    }
    // column j of predicted → column ri[name] of real
    let to_real: Vec<u32> = predicted.genes.iter().map(|g| ri[g] as u32).collect();
    let x = &mut predicted.cells.x;
    for i in 0..x.n_cells() {
        let (a, b) = (x.indptr[i], x.indptr[i + 1]);
        let mut row: Vec<(u32, f32)> = x.indices[a..b]
            .iter()
            .zip(&x.data[a..b])
            .map(|(&j, &v)| (to_real[j as usize], v))
            .collect();
        row.sort_by_key(|r| r.0);
        for (k, (j, v)) in row.into_iter().enumerate() {
            x.indices[a + k] = j;
            x.data[a + k] = v;
        }
    }
    predicted.genes = real.genes.clone();
    Ok(())
}

/// Refuses perturbation sets that differ, naming the perturbations.
fn check_perturbations(
    real: &ScoreInput,
    predicted: &ScoreInput,
    pred_path: &Path,
    real_path: &Path,
    column: &str,
) -> Result<()> {
    let set = |s: &ScoreInput| -> Vec<String> {
        let c = s.cells.counts();
        s.cells
            .names
            .iter()
            .enumerate()
            .filter(|&(k, _)| c[k] > 0 && k != s.cells.control)
            .map(|(_, n)| n.clone())
            .collect()
    };
    let (r, p) = (set(real), set(predicted));
    let only_real: Vec<String> = r.iter().filter(|x| !p.contains(x)).cloned().collect();
    let only_pred: Vec<String> = p.iter().filter(|x| !r.contains(x)).cloned().collect();
    if !only_real.is_empty() || !only_pred.is_empty() {
        return Err(PipelineError::input(
            pred_path.display(),
            format!(
                "its perturbations (obs/{column}) differ from {}'s: {} without predicted cells ({}), {} without real cells ({})",
                real_path.display(),
                only_real.len(),
                preview(&only_real),
                only_pred.len(),
                preview(&only_pred)
            ),
        ));
    }
    if r.is_empty() {
        return Err(PipelineError::input(
            real_path.display(),
            format!("obs/{column} holds no perturbation besides the control"),
        ));
    }
    Ok(())
}

fn value(x: f64) -> Value {
    if x.is_finite() { json!(x) } else { Value::Null }
}

fn means(s: &PredictionScores) -> BTreeMap<String, Value> {
    SCORE_KEYS
        .iter()
        .map(|k| (k.to_string(), value(s.mean(k))))
        .collect()
}

/// Scores two files already read ([`read_score_input`]); `real_name` / `pred_name` name them in
/// the report.
pub fn score_inputs(
    real: &ScoreInput,
    predicted: &ScoreInput,
    real_name: &str,
    pred_name: &str,
    options: &ScoreOptions,
) -> Result<ScoreReport> {
    let t0 = Instant::now();
    let mut stage = BTreeMap::new();
    let mut timed = |name: &str, t: Instant| {
        stage.insert(name.to_string(), t.elapsed().as_secs_f64());
    };
    let t = Instant::now();
    let de_real = differential_expression(&real.cells)?;
    timed("de_real", t);
    let t = Instant::now();
    let de_pred = differential_expression(&predicted.cells)?;
    timed("de_predicted", t);
    let t = Instant::now();
    let scores = score_predictions_with(
        &real.cells,
        &de_real,
        &predicted.cells,
        &de_pred,
        &real.genes,
    )?;
    timed("metrics", t);
    let t = Instant::now();
    let baseline = mean_baseline(&real.cells)?;
    let de_base = differential_expression(&baseline)?;
    let base = score_predictions_with(&real.cells, &de_real, &baseline, &de_base, &real.genes)?;
    timed("baseline", t);
    let mut baseline_normalized: BTreeMap<String, f64> = VCC_KEYS
        .iter()
        .map(|k| {
            (
                k.to_string(),
                normalized_score(k, scores.mean(k), base.mean(k)),
            )
        })
        .collect();
    let avg = VCC_KEYS
        .iter()
        .map(|k| baseline_normalized[*k])
        .sum::<f64>()
        / VCC_KEYS.len() as f64;
    baseline_normalized.insert("avg_score".into(), avg);
    let per_perturbation = scores
        .per_perturbation
        .iter()
        .map(|(p, s)| {
            let mut m: BTreeMap<String, Value> = SCORE_KEYS
                .iter()
                .map(|k| (k.to_string(), value(s.get(k).unwrap_or(f64::NAN))))
                .collect();
            m.insert("n_de_real".into(), json!(s.n_de_real));
            m.insert("n_de_predicted".into(), json!(s.n_de_predicted));
            (p.clone(), m)
        })
        .collect();
    let mut mean = means(&scores);
    mean.insert("baseline_normalized".into(), json!(baseline_normalized));
    Ok(ScoreReport {
        per_perturbation,
        mean,
        baseline_mean: means(&base),
        baseline_normalized,
        n_perturbations: scores.per_perturbation.len(),
        inputs: json!({
            "real": {"file": real_name, "cells": real.cells.x.n_cells(), "values": real.normalization},
            "predicted": {"file": pred_name, "cells": predicted.cells.x.n_cells(), "values": predicted.normalization},
            "genes": real.genes.len(),
        }),
        seconds: t0.elapsed().as_secs_f64(),
        stage_seconds: stage,
        settings: json!({
            "perturbation_column": options.perturbation_column,
            "control_value": options.control_value,
            "layer": options.layer,
            "definitions": {
                "overlap_at_N, discrimination_score_l1, mae, mse, pearson_delta": "cell-eval 0.8.2 with pdex 0.3.0 (Wilcoxon rank-sum, normal approximation with tie and continuity corrections, Benjamini-Hochberg, FDR < 0.05, |log2FC| of expm1 means); each file's change from its own control",
                "pearson_delta_centroid": "Systema: Pearson(pred centroid - ref, real centroid - ref), ref = mean of the real perturbation centroids; _top20_de on the perturbation's 20 real DE genes of lowest FDR",
                "centroid_accuracy": "Systema: 1 when the predicted centroid is strictly closer (Euclidean) to its own real centroid than to any other",
                "baseline_normalized": "cell-eval's cell-mean baseline (mean of all real group means, control included, with the real control cells); lower-is-better 1 - user/base, else (user - base)/(1 - base), NaN -> 0, clipped at 0; avg_score = their mean",
            },
            "aido_version": env!("CARGO_PKG_VERSION"),
        }),
    })
}

/// Scores the predicted single cells of `predicted` against the real cells of `real` and writes
/// the report (JSON, atomically). What `aido perturb score` runs.
pub fn score_files(
    real: &Path,
    predicted: &Path,
    report: &Path,
    options: &ScoreOptions,
) -> Result<ScoreReport> {
    crate::output::check_writable(report, "report")?;
    let r = read_score_input(real, options)?;
    let mut p = read_score_input(predicted, options)?;
    align_genes(&r, &mut p, real, predicted)?;
    check_perturbations(&r, &p, predicted, real, &options.perturbation_column)?;
    let out = score_inputs(
        &r,
        &p,
        &real.display().to_string(),
        &predicted.display().to_string(),
        options,
    )?;
    write_json(report, &out)?;
    Ok(out)
}
