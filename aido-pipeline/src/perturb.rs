//! Perturbation response (GEARS) on a screen, next to the baselines ([`perturb_fit_cells`],
//! [`perturb_fit_file`]), and predictions for new combinations ([`perturb_predict`]).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Instant;

use aido_model::Precision;
use aido_tasks::gears::{CoexpressionMode, GearsConfig, GearsGraphs};
use aido_tasks::perturb::{
    self, Baseline, Condition, ConditionScore, GeneEdge, GroupScore, PertGroup, PerturbSplit,
    SplitPart, baseline_prediction, group_means, score_conditions,
};
use aido_tasks::perturb_fit::{
    self, BackboneFeatures, FitConfig, FitInputs, MODEL_FORMAT, PerturbData, PerturbDataOptions,
    PerturbModel, PerturbModelInfo,
};
pub use aido_tasks::perturb_linear::LinearConfig;
use aido_tasks::perturb_linear::{LinearModel, matching_mean, read_perturbation_embedding};
use aido_tokenize::{CellSource, GeneIdMode, ObsColumn, ObsTable, ReadOptions, open_source};
use burn::prelude::Backend;
use burn::tensor::backend::AutodiffBackend;
use rand::SeedableRng;
use rand::seq::SliceRandom;
use serde::Serialize;
use serde_json::{Value, json};

use crate::Event;
use crate::error::{PipelineError, Result};
use crate::matrix::CountsMatrix;
use crate::obs::write_json;
use crate::pretrained::Pretrained;

/// How to fit (defaults = `aido perturb fit`'s, GEARS's).
#[derive(Debug, Clone)]
pub struct PerturbFitOptions {
    /// obs column with the conditions (`A+ctrl`, `A+B`, control; default `condition`).
    pub condition_column: String,
    /// The control value of the condition column (default `ctrl`).
    pub control_value: String,
    /// `simulation` (default), `combo_seen0`, `combo_seen1`, `combo_seen2`, `double`
    /// (Ahlmann-Eltze et al.'s: all singles train, half the doubles test), or an obs column of
    /// train / val (valid, validation) / test.
    pub split: String,
    /// Seed of the split, the initialization and the training order (default 1).
    pub seed: u64,
    /// Share of the perturbed genes seen in training (simulation split; default 0.75).
    pub train_gene_fraction: f64,
    /// Share of the two-seen-gene doubles kept in training (simulation split; default 0.75).
    pub combo_seen2_train_fraction: f64,
    /// Gene–gene graph of the perturbations (TSV); `None`: the shipped GO-Jaccard graph, or
    /// the co-expression graph where GO covers too few of the genes.
    pub gene_graph: Option<PathBuf>,
    /// Co-expression graph: |r| threshold (default 0.4).
    pub coexpress_threshold: f64,
    /// Co-expression graph: partners per gene (default 20).
    pub coexpress_k: usize,
    /// Give every cell of a batch the co-expression propagation (GEARS's code: the first only).
    pub coexpress_all_cells: bool,
    /// Epochs (default 20; the learning rate is multiplied by `lr_decay` after each).
    pub epochs: usize,
    /// The learning rate's factor per epoch (default 0.5, GEARS's `StepLR`; 1: constant).
    pub lr_decay: f64,
    /// Another screen's fitted perturbation embedding (TSV `gene<TAB>v1…vK`): adds the
    /// `linear_external` baseline (Ahlmann-Eltze et al.'s best variant).
    pub perturbation_embedding: Option<PathBuf>,
    /// The linear baselines' PCA dimension and ridge penalty (default K = 10, λ = 0.1).
    pub linear: LinearConfig,
    /// Cells per update (default 32).
    pub batch_size: usize,
    /// Initial learning rate (default 1e-3).
    pub lr: f64,
    /// Hidden size (default 64).
    pub hidden: usize,
    /// Weight of the loss's direction term (default 0.1).
    pub direction_lambda: f64,
    /// Control cells each prediction averages over (default 300).
    pub pool: usize,
    /// Fewest cells a condition may have (default 3).
    pub min_cells: usize,
    /// Precision of the backbone (default f32; GEARS itself trains in f32).
    pub precision: Precision,
    /// How the data's gene names are matched to a backbone's list.
    pub gene_id: GeneIdMode,
}

impl Default for PerturbFitOptions {
    fn default() -> Self {
        PerturbFitOptions {
            condition_column: "condition".into(),
            control_value: "ctrl".into(),
            split: "simulation".into(),
            seed: 1,
            train_gene_fraction: 0.75,
            combo_seen2_train_fraction: 0.75,
            gene_graph: None,
            coexpress_threshold: 0.4,
            coexpress_k: 20,
            coexpress_all_cells: false,
            epochs: 20,
            lr_decay: 0.5,
            perturbation_embedding: None,
            linear: LinearConfig::default(),
            batch_size: 32,
            lr: 1e-3,
            hidden: 64,
            direction_lambda: 0.1,
            pool: 300,
            min_cells: 3,
            precision: Precision::F32,
            gene_id: GeneIdMode::Auto,
        }
    }
}

/// `report.json` of a fit: per GEARS test group, each predictor's scores; per test condition,
/// the same metrics; the settings.
#[derive(Debug, Clone, Serialize)]
pub struct PerturbFitReport {
    /// Group → predictor (`model`, `no_change`, `mean_delta`, `additive`, `matching_mean`,
    /// `linear`, and `linear_encoder` / `linear_external` where they apply) → scores (the
    /// means of [`per_condition`](Self::per_condition) over the group's conditions).
    pub groups: BTreeMap<String, BTreeMap<String, GroupScore>>,
    /// Test condition → its group and each predictor's scores on it (a predictor that does not
    /// apply, `additive` on a single say, is absent).
    pub per_condition: BTreeMap<String, ConditionReport>,
    /// The settings of the run.
    pub settings: Value,
}

/// One test condition in [`PerturbFitReport::per_condition`].
#[derive(Debug, Clone, Serialize)]
pub struct ConditionReport {
    /// Its GEARS test group.
    pub group: String,
    /// Predictor → its scores on this condition.
    pub scores: BTreeMap<String, ConditionScore>,
}

impl std::fmt::Display for PerturbFitReport {
    /// The table of the test groups: per predictor, the MSE on the top-20 DE genes (and the
    /// Pearson of the changes from control in parentheses).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = [
            "model",
            "no_change",
            "mean_delta",
            "additive",
            "matching_mean",
            "linear",
            "linear_encoder",
            "linear_external",
        ]
        .into_iter()
        .filter(|n| self.groups.values().any(|per| per.contains_key(*n)))
        .collect();
        writeln!(
            f,
            "test conditions — MSE on the top-20 DE genes (Pearson of deltas):"
        )?;
        write!(f, "  {:<14} {:>4}", "group", "n")?;
        for n in &names {
            write!(f, " {n:>20}")?;
        }
        writeln!(f)?;
        for (grp, per) in &self.groups {
            let n = per.get("model").map_or(0, |s| s.n_conditions);
            write!(f, "  {grp:<14} {n:>4}")?;
            for name in &names {
                match per.get(*name) {
                    Some(v) => write!(f, " {:>11.4} ({:>6.3})", v.mse_top20_de, v.pearson_delta)?,
                    None => write!(f, " {:>20}", "–")?,
                }
            }
            writeln!(f)?;
        }
        Ok(())
    }
}

/// One predicted condition.
#[derive(Debug, Clone, Serialize)]
pub struct PredictedCondition {
    /// `train`, `val`, `test` or `held_out`.
    pub split: String,
    /// Its GEARS group.
    pub group: String,
    /// Predicted mean log-normalized expression per gene.
    pub predicted: Vec<f64>,
}

/// Predictions (`predictions.json`): the genes and, per condition, its prediction.
#[derive(Debug, Clone, Serialize)]
pub struct PerturbPredictions {
    /// Gene order of every prediction.
    pub genes: Vec<String>,
    /// Condition → prediction.
    pub conditions: BTreeMap<String, PredictedCondition>,
}

pub(crate) fn make_split(
    options: &PerturbFitOptions,
    data: &PerturbData,
    obs: &ObsTable,
    input: &str,
) -> Result<PerturbSplit> {
    let seed = u32::try_from(options.seed)
        .map_err(|_| PipelineError::option("seed", "must fit in 32 bits (numpy's seed)"))?;
    Ok(match options.split.as_str() {
        "simulation" => perturb::simulation_split(
            &data.conditions,
            seed,
            options.train_gene_fraction,
            options.combo_seen2_train_fraction,
        )?,
        "combo_seen0" => perturb::combo_split(&data.conditions, 0, seed)?,
        "combo_seen1" => perturb::combo_split(&data.conditions, 1, seed)?,
        "combo_seen2" => perturb::combo_split(&data.conditions, 2, seed)?,
        "double" => perturb::double_split(&data.conditions, seed)?,
        col => {
            let c = obs.column(col).ok_or_else(|| {
                PipelineError::input(
                    input,
                    format!(
                        "split {col}: not simulation / combo_seen0/1/2 and obs has no such column"
                    ),
                )
            })?;
            let mut parts: BTreeMap<String, SplitPart> = BTreeMap::new();
            for (i, &k) in data.cell_condition.iter().enumerate() {
                let v = c.display(i);
                let Ok(p) = v.parse::<SplitPart>() else {
                    return Err(PipelineError::input(
                        input,
                        format!(
                            "obs/{col} of cell {i} ('{}') is {v:?}: use train, val (or valid, validation) or test",
                            obs.cell_name(i)
                        ),
                    ));
                };
                let name = &data.conditions[k].name;
                if let Some(&q) = parts.get(name)
                    && q != p
                {
                    return Err(PipelineError::input(
                        input,
                        format!(
                            "obs/{col}: condition {name:?} is in both {} and {} (cell {i} '{}'); a condition belongs to one part",
                            q.as_str(),
                            p.as_str(),
                            obs.cell_name(i)
                        ),
                    ));
                }
                parts.insert(name.clone(), p);
            }
            perturb::user_split(&data.conditions, &parts)?
        }
    })
}

/// Cells for the co-expression graph: GEARS's (control + training singles), at most 5,000
/// (a seeded sample; the correlation's cost is genes² × cells).
const COEXPRESSION_MAX_CELLS: usize = 5000;

fn coexpression_edges(
    data: &PerturbData,
    split: &PerturbSplit,
    options: &PerturbFitOptions,
) -> Result<(Vec<GeneEdge>, usize)> {
    let conds: Vec<&Condition> = data
        .cell_condition
        .iter()
        .map(|&k| &data.conditions[k])
        .collect();
    let mut cells = perturb::coexpression_cells(&conds, split, false);
    if cells.len() > COEXPRESSION_MAX_CELLS {
        let mut rng = rand::rngs::StdRng::seed_from_u64(options.seed);
        cells.shuffle(&mut rng);
        cells.truncate(COEXPRESSION_MAX_CELLS);
        cells.sort_unstable();
    }
    let x = data.dense_f64(&cells);
    let edges = perturb::coexpression_graph(
        &x,
        data.n_genes(),
        options.coexpress_threshold,
        options.coexpress_k,
    )?;
    Ok((edges, cells.len()))
}

/// The training settings of a fit with `options` (as `report.json` records them).
pub(crate) fn fit_config(options: &PerturbFitOptions) -> FitConfig {
    FitConfig {
        epochs: options.epochs,
        batch_size: options.batch_size,
        lr: options.lr,
        lr_decay: options.lr_decay,
        direction_lambda: options.direction_lambda,
        seed: options.seed,
        pool: options.pool,
        ..FitConfig::default()
    }
}

/// Fits GEARS (learned gene embeddings, or `backbone`'s per-gene embeddings of control cells,
/// frozen: the paper's route) on the screen `source` reads, scores it and the baselines on the
/// test conditions, and writes into `out`: `predictions.json`, `report.json` and `model/`
/// (for [`perturb_predict`]). `B` is an autodiff backend. What `aido perturb fit` runs.
pub fn perturb_fit_cells<B: AutodiffBackend>(
    source: &mut dyn CellSource,
    out: &Path,
    backbone: Option<&Pretrained>,
    options: &PerturbFitOptions,
    device: &B::Device,
    on_event: &mut dyn FnMut(Event),
) -> Result<PerturbFitReport> {
    let t0 = Instant::now();
    crate::output::check_out_folder(out, "out")?;
    if !(0.0..=1.0).contains(&options.train_gene_fraction)
        || !(0.0..=1.0).contains(&options.combo_seen2_train_fraction)
    {
        return Err(PipelineError::option(
            "train_gene_fraction",
            "the train gene fraction and the combo_seen2 train fraction must be within 0..1",
        ));
    }
    let input = source.path().display().to_string();
    let obs = source.obs().clone();
    let data = PerturbData::from_source(
        source,
        &PerturbDataOptions {
            condition_column: options.condition_column.clone(),
            control_value: options.control_value.clone(),
            min_cells: options.min_cells,
        },
    )
    .map_err(|e| PipelineError::input(&input, format!("reading the screen: {e}")))?;
    let g = data.n_genes();
    let n_ctrl = data.cells_of(data.control).len();
    let split = make_split(options, &data, &obs, &input)?;
    if !(options.lr_decay > 0.0 && options.lr_decay <= 1.0) {
        return Err(PipelineError::option(
            "lr_decay",
            format!(
                "must be in (0, 1] (GEARS: 0.5, the rate halved every epoch; 1: constant), got {}",
                options.lr_decay
            ),
        ));
    }
    if options.linear.k == 0 || !(options.linear.ridge.is_finite() && options.linear.ridge > 0.0) {
        return Err(PipelineError::option(
            "linear",
            format!(
                "the linear baselines need K ≥ 1 and a ridge penalty > 0, got K = {}, λ = {}",
                options.linear.k, options.linear.ridge
            ),
        ));
    }
    // Another screen's perturbation embedding: every perturbed gene of this screen needs a row.
    let external_embedding = match &options.perturbation_embedding {
        None => None,
        Some(path) => {
            let m = read_perturbation_embedding(path)
                .map_err(|e| PipelineError::option("perturbation_embedding", e.to_string()))?;
            let mut missing: Vec<&str> = data
                .conditions
                .iter()
                .flat_map(|c| c.genes.iter())
                .filter(|gname| !m.contains_key(*gname))
                .map(String::as_str)
                .collect();
            missing.sort_unstable();
            missing.dedup();
            if !missing.is_empty() {
                let shown: Vec<&str> = missing.iter().take(8).copied().collect();
                return Err(PipelineError::option(
                    "perturbation_embedding",
                    format!(
                        "{}: no row for {} of the screen's perturbed genes ({}{})",
                        path.display(),
                        missing.len(),
                        shown.join(", "),
                        if missing.len() > 8 { ", …" } else { "" }
                    ),
                ));
            }
            Some(m)
        }
    };
    let count = |p| split.conditions(p).len();
    on_event(Event::Info(format!(
        "{input}: {} cells × {g} genes, {} conditions ({} control cells); split {}: {} train, {} val, {} test conditions",
        data.cell_condition.len(),
        data.conditions.len(),
        n_ctrl,
        options.split,
        count(SplitPart::Train),
        count(SplitPart::Val),
        count(SplitPart::Test)
    )));
    // Graphs.
    let (co_edges, co_cells) = coexpression_edges(&data, &split, options)?;
    let perturbed: Vec<usize> = {
        let mut v: Vec<usize> = data
            .conditions
            .iter()
            .flat_map(|c| data.pert_indices(c).unwrap_or_default())
            .collect();
        v.sort_unstable();
        v.dedup();
        v
    };
    // The perturbation graph spans all of its genes, measured or not (upstream GEARS's
    // perturbation table covers its whole GO graph): nodes = the data's genes, then the rest.
    let (pert_edges, pert_nodes, pert_graph) = match &options.gene_graph {
        Some(p) => {
            let (e, nodes) = perturb::read_gene_graph_over(p, &data.genes)?;
            let targets: BTreeSet<usize> = e.iter().map(|e| e.target).collect();
            let covered = perturbed.iter().filter(|p| targets.contains(p)).count();
            if covered == 0 {
                return Err(PipelineError::input(
                    p.display(),
                    format!(
                        "none of its edges reaches one of the {} perturbed genes",
                        perturbed.len()
                    ),
                ));
            }
            let note = format!(
                "{} ({} edges over {} genes, {} of them not measured; {covered} of {} perturbed genes covered)",
                p.display(),
                e.len(),
                nodes.len(),
                nodes.len() - g,
                perturbed.len()
            );
            (e, nodes, note)
        }
        None => {
            let (e, nodes) = perturb::go_graph_over(&data.genes)?;
            let targets: BTreeSet<usize> = e.iter().map(|e| e.target).collect();
            let covered = perturbed.iter().filter(|p| targets.contains(p)).count();
            if covered * 2 >= perturbed.len() && !e.is_empty() {
                let note = format!(
                    "GO Jaccard (shipped; {} genes, {} of them not measured; {covered} of {} perturbed genes covered)",
                    nodes.len(),
                    nodes.len() - g,
                    perturbed.len()
                );
                (e, nodes, note)
            } else {
                (
                    co_edges.clone(),
                    data.genes.clone(),
                    format!(
                        "co-expression (fallback: the GO graph covers {covered} of {} perturbed genes)",
                        perturbed.len()
                    ),
                )
            }
        }
    };
    on_event(Event::Info(format!(
        "co-expression graph: {} edges over {co_cells} cells (|r| > {}, top {}); perturbation graph: {pert_graph}, {} edges",
        co_edges.len(),
        options.coexpress_threshold,
        options.coexpress_k,
        pert_edges.len()
    )));
    let graphs = GearsGraphs::<B>::with_perturbation_nodes(
        &co_edges,
        &pert_edges,
        g,
        pert_nodes.len(),
        device,
    )?;
    // Backbone features of a control pool.
    let mut rng = rand::rngs::StdRng::seed_from_u64(options.seed ^ 0x5eed);
    let (backbone_features, backbone_note) = match backbone {
        None => (None, json!(null)),
        Some(p) => {
            let model = p.load::<B::InnerBackend>(
                aido_model::LoadMode::EncoderOnly,
                options.precision,
                device,
            )?;
            let d = p.config.hidden_size;
            // Memory of the pool's features: P × G × D × 4 bytes, kept ≤ 2 GiB.
            let cap = ((2usize << 30) / (g * d * 4).max(1)).max(2);
            let mut ctrl = data.cells_of(data.control);
            ctrl.shuffle(&mut rng);
            ctrl.truncate(options.pool.min(cap));
            ctrl.sort_unstable();
            let t = Instant::now();
            let (f, missing) = perturb_fit::backbone_features(
                model.bert,
                device.clone(),
                &p.vocab,
                &data,
                &ctrl,
                8,
                options.gene_id,
            )?;
            on_event(Event::Info(format!(
                "backbone {}: gene embeddings [{} control cells × {g} genes × {d}] in {:.1} s ({missing} of the data's genes not in the model's list: zero embedding)",
                p.name(),
                ctrl.len(),
                t.elapsed().as_secs_f64()
            )));
            (
                Some(f),
                json!({"model": p.name(), "hidden": d, "pool_cells": ctrl.len(), "genes_not_in_model": missing}),
            )
        }
    };
    let model_cfg = GearsConfig::new(g)
        .with_perturbation_nodes(Some(pert_nodes.len()))
        .with_hidden(options.hidden)
        .with_backbone_dim(backbone_features.as_ref().map(|f: &BackboneFeatures| f.dim))
        .with_coexpression(if options.coexpress_all_cells {
            CoexpressionMode::AllCells
        } else {
            CoexpressionMode::FirstCell
        });
    let fit_cfg = fit_config(options);
    let inputs = FitInputs {
        model: model_cfg.clone(),
        fit: fit_cfg.clone(),
        split: &split,
        graphs: &graphs,
        backbone: backbone_features.as_ref(),
    };
    let mut stages = serde_json::Map::new();
    stages.insert("prepare".into(), json!(t0.elapsed().as_secs_f64()));
    let tf = Instant::now();
    let fitted = perturb_fit::fit::<B>(&data, &inputs, device, |e| {
        on_event(Event::Info(format!(
            "epoch {:>3}: train loss {:.5}, val MSE top-20 DE {:.5} (lr {:.2e}, {:.1} s)",
            e.epoch, e.train_loss, e.val_mse, e.lr, e.seconds
        )));
    })?;
    stages.insert("fit".into(), json!(tf.elapsed().as_secs_f64()));
    // Predictions of every condition from the pool.
    let pool = &fitted.pool;
    let mut pool_x = vec![0.0f32; pool.len() * g];
    for (r, &c) in pool.iter().enumerate() {
        data.lognorm_row(c, &mut pool_x[r * g..(r + 1) * g]);
    }
    let inner_graphs = graphs.to_device::<B::InnerBackend>(device);
    let pert_lists: Vec<Vec<usize>> = data
        .conditions
        .iter()
        .map(|c| data.pert_indices(c))
        .collect::<aido_tasks::Result<_>>()?;
    let tp = Instant::now();
    let means = perturb_fit::predict_means(
        &fitted.model,
        &inner_graphs,
        &pool_x,
        backbone_features
            .as_ref()
            .map(|f| (f.values.as_slice(), f.dim)),
        &pert_lists,
        64,
    )?;
    on_event(Event::Info(format!(
        "predicted {} conditions from {} control cells in {:.1} s",
        means.len(),
        pool.len(),
        tp.elapsed().as_secs_f64()
    )));
    stages.insert("predict".into(), json!(tp.elapsed().as_secs_f64()));
    let tb = Instant::now();
    // Scores: the model and the baselines on the test conditions, per group.
    let (ctrl_mean, truths) = data.truths(&split)?;
    let model_pred: BTreeMap<String, Vec<f64>> = data
        .conditions
        .iter()
        .zip(&means)
        .map(|(c, m)| (c.name.clone(), m.clone()))
        .collect();
    let mut predictors: Vec<(String, BTreeMap<String, Vec<f64>>)> =
        vec![("model".to_string(), model_pred)];
    for b in [Baseline::NoChange, Baseline::MeanDelta, Baseline::Additive] {
        let m: BTreeMap<String, Vec<f64>> = truths
            .iter()
            .filter_map(|t| {
                baseline_prediction(b, &t.condition, &ctrl_mean, &truths)
                    .map(|p| (t.condition.name.clone(), p))
            })
            .collect();
        predictors.push((b.as_str().to_string(), m));
    }
    // The linear baselines (Ahlmann-Eltze et al. 2025) and Systema's matching mean.
    let mut linear_variants: Vec<(&str, LinearModel)> = vec![(
        "linear",
        LinearModel::fit(&truths, &data.genes, None, None, options.linear)?,
    )];
    if let Some(f) = &backbone_features {
        let d = f.dim;
        let n_cells = f.cells.len().max(1);
        let mut ge = vec![0.0f64; g * d];
        for cell in f.values.chunks_exact(g * d) {
            for (a, &v) in ge.iter_mut().zip(cell) {
                *a += f64::from(v) / n_cells as f64;
            }
        }
        linear_variants.push((
            "linear_encoder",
            LinearModel::fit(&truths, &data.genes, Some((&ge, d)), None, options.linear)?,
        ));
    }
    if let Some(pe) = &external_embedding {
        linear_variants.push((
            "linear_external",
            LinearModel::fit(&truths, &data.genes, None, Some(pe), options.linear)?,
        ));
    }
    for (name, m) in &linear_variants {
        let pred: BTreeMap<String, Vec<f64>> = truths
            .iter()
            .filter_map(|t| {
                m.predict(&t.condition)
                    .map(|p| (t.condition.name.clone(), p))
            })
            .collect();
        predictors.push(((*name).to_string(), pred));
    }
    predictors.push((
        "matching_mean".to_string(),
        truths
            .iter()
            .filter_map(|t| {
                matching_mean(&t.condition, &truths).map(|p| (t.condition.name.clone(), p))
            })
            .collect(),
    ));
    let mut groups: BTreeMap<String, BTreeMap<String, GroupScore>> = BTreeMap::new();
    let mut per_condition: BTreeMap<String, ConditionReport> = BTreeMap::new();
    stages.insert("baselines".into(), json!(tb.elapsed().as_secs_f64()));
    let tc = Instant::now();
    let mut scorer = perturb_fit::CellLevelScorer::new(&data, &truths, SplitPart::Test, pool);
    for (name, pred) in &predictors {
        // cell-eval's trio on predicted cells (the control pool shifted by each prediction)
        let cells = scorer.score(pred)?;
        let scores = score_conditions(&truths, SplitPart::Test, &ctrl_mean, pred, Some(&cells))?;
        for (grp, s) in group_means(&scores) {
            groups
                .entry(grp.as_str().to_string())
                .or_default()
                .insert(name.clone(), s);
        }
        for s in scores {
            per_condition
                .entry(s.condition.clone())
                .or_insert_with(|| ConditionReport {
                    group: s.group.as_str().to_string(),
                    scores: BTreeMap::new(),
                })
                .scores
                .insert(name.clone(), s);
        }
    }
    on_event(Event::Info(format!(
        "scored {} predictors on the test conditions in {:.1} s ({:.1} s of it in the Wilcoxon tests of the cell-level metrics)",
        predictors.len(),
        tc.elapsed().as_secs_f64(),
        scorer.de_seconds
    )));
    stages.insert("scoring".into(), json!(tc.elapsed().as_secs_f64()));
    stages.insert("de_tests".into(), json!(scorer.de_seconds));
    let settings = json!({
        "input": input,
        "condition_column": options.condition_column,
        "control_value": options.control_value,
        "split": options.split,
        "seed": options.seed,
        "train_gene_fraction": options.train_gene_fraction,
        "combo_seen2_train_fraction": options.combo_seen2_train_fraction,
        "gene_embeddings": if backbone_features.is_some() { "backbone" } else { "learned" },
        "backbone": backbone_note,
        "backbone_precision": backbone.map(|_| options.precision.as_str()),
        "coexpression_graph": {"edges": co_edges.len(), "cells": co_cells, "threshold": options.coexpress_threshold, "k": options.coexpress_k,
            "mode": model_cfg.coexpression.as_str()},
        "perturbation_graph": {"source": pert_graph, "edges": pert_edges.len(), "genes": pert_nodes.len(), "genes_not_measured": pert_nodes.len() - g},
        "fit": fit_cfg,
        "hidden": options.hidden,
        "best_epoch": fitted.best_epoch,
        "epochs_log": fitted.epochs,
        "pool_cells": pool.len(),
        "metric": "per test condition: MSE of the mean prediction on its top-20 DE genes (scanpy t-test vs control, |t| ranking) and Pearson of predicted vs true changes from the control mean there (GEARS); L2 and Pearson of changes on the 1,000 genes most expressed in control (Ahlmann-Eltze et al. 2025); Pearson of changes from the mean of the training perturbation centroids on all genes and on the top-20 DE genes, and centroid accuracy among the test conditions (Systema); means per group",
        "linear": {"k": options.linear.k, "ridge": options.linear.ridge, "variants": linear_variants.iter().map(|(n, m)| json!({"name": n, "gene_embedding_width": m.kg, "perturbation_embedding_width": m.kp})).collect::<Vec<_>>(),
            "definition": "Ahlmann-Eltze et al. 2025: W = (G'G + lambda I)^-1 G' Y_c P' (PP' + lambda I)^-1, prediction G W p + b; G and P from a K-dim PCA of the training profiles (genes as observations), linear_encoder: G and P from the encoder's gene embeddings (mean over the control pool), linear_external: P from --perturbation-embedding"},
        "matching_mean": "Systema: a double of two training singles -> the mean of their centroids; otherwise the mean of all perturbed training cells",
        "cell_level": "overlap_at_N, discrimination_score_l1, mae as cell-eval 0.8 computes them, on the test conditions' real cells against predicted cells: the model's control pool shifted by each predicted mean change (clipped at 0), the pool as the predicted controls; conditions labelled by their genes",
        "perturbation_embedding": options.perturbation_embedding.as_ref().map(|p| p.display().to_string()),
        "seconds": t0.elapsed().as_secs_f64(),
        "stage_seconds": stages,
    });
    let report = PerturbFitReport {
        groups,
        per_condition,
        settings,
    };
    // Outputs.
    std::fs::create_dir_all(out).map_err(PipelineError::io(out))?;
    let part_of = |name: &str| {
        split
            .part
            .get(name)
            .copied()
            .flatten()
            .map_or("held_out", SplitPart::as_str)
            .to_string()
    };
    let predictions = PerturbPredictions {
        genes: data.genes.clone(),
        conditions: data
            .conditions
            .iter()
            .zip(&means)
            .map(|(c, m)| {
                let group = split
                    .group
                    .get(&c.name)
                    .copied()
                    .unwrap_or(PertGroup::SeenSingle);
                (
                    c.name.clone(),
                    PredictedCondition {
                        split: part_of(&c.name),
                        group: group.as_str().to_string(),
                        predicted: m.clone(),
                    },
                )
            })
            .collect(),
    };
    write_json(&out.join("predictions.json"), &predictions)?;
    write_json(&out.join("report.json"), &report)?;
    let parts: BTreeMap<String, String> = data
        .conditions
        .iter()
        .map(|c| (c.name.clone(), part_of(&c.name)))
        .collect();
    let info = PerturbModelInfo {
        format: MODEL_FORMAT.into(),
        genes: data.genes.clone(),
        perturbation_genes: pert_nodes[g..].to_vec(),
        control_value: options.control_value.clone(),
        hidden: options.hidden,
        backbone_dim: model_cfg.backbone_dim,
        coexpression: model_cfg.coexpression,
        fit: fit_cfg,
        trained_on: json!({"input": input, "split": options.split, "parts": parts}),
    };
    let saved = PerturbModel {
        model: fitted.model,
        info,
        graphs: inner_graphs,
        coexpression_edges: co_edges,
        perturbation_edges: pert_edges,
        pool_x,
        pool_features: backbone_features.map(|f| f.values),
    };
    perturb_fit::save_model(&out.join("model"), &saved)?;
    on_event(Event::Wrote {
        path: out.to_path_buf(),
        what: "predictions.json, report.json, model/".into(),
    });
    Ok(report)
}

/// [`perturb_fit_cells`] on a file (raw counts in X or a layer, a condition per cell).
pub fn perturb_fit_file<B: AutodiffBackend>(
    input: &Path,
    read: &ReadOptions,
    out: &Path,
    backbone: Option<&Pretrained>,
    options: &PerturbFitOptions,
    device: &B::Device,
    on_event: &mut dyn FnMut(Event),
) -> Result<PerturbFitReport> {
    let mut source = open_source(input, read)?;
    perturb_fit_cells::<B>(source.as_mut(), out, backbone, options, device, on_event)
}

/// [`perturb_fit_cells`] on a matrix in memory (conditions in its `obs`).
pub fn perturb_fit_matrix<B: AutodiffBackend>(
    matrix: &CountsMatrix<'_>,
    out: &Path,
    backbone: Option<&Pretrained>,
    options: &PerturbFitOptions,
    device: &B::Device,
    on_event: &mut dyn FnMut(Event),
) -> Result<PerturbFitReport> {
    perturb_fit_cells::<B>(
        &mut matrix.source(),
        out,
        backbone,
        options,
        device,
        on_event,
    )
}

/// Predicts the mean expression of `conditions` (`A+B`, `C+ctrl`; also never-seen
/// combinations) with a model folder of [`perturb_fit_cells`] (`OUT/model`).
pub fn perturb_predict<B: Backend>(
    model: &Path,
    conditions: &[String],
    batch_size: usize,
    device: &B::Device,
) -> Result<PerturbPredictions> {
    if conditions.is_empty() {
        return Err(PipelineError::option(
            "conditions",
            "give at least one condition (e.g. \"A+B,C+ctrl\")",
        ));
    }
    if batch_size == 0 {
        return Err(PipelineError::option("batch_size", "must be at least 1"));
    }
    let m: PerturbModel<B> = perturb_fit::load_model(model, device)?;
    predict_with(&m, model, conditions, batch_size)
}

/// [`perturb_predict`] with the model loaded.
fn predict_with<B: Backend>(
    m: &PerturbModel<B>,
    model: &Path,
    conditions: &[String],
    batch_size: usize,
) -> Result<PerturbPredictions> {
    let info = &m.info;
    let index: BTreeMap<&str, usize> = info
        .genes
        .iter()
        .enumerate()
        .map(|(i, g)| (g.as_str(), i))
        .collect();
    let parts: BTreeMap<String, String> = info
        .trained_on
        .get("parts")
        .and_then(|p| serde_json::from_value(p.clone()).ok())
        .unwrap_or_default();
    // Genes in training conditions: a new condition's group counts them.
    let trained: BTreeSet<String> = parts
        .iter()
        .filter(|(_, p)| p.as_str() == "train")
        .filter_map(|(c, _)| Condition::parse(c, &info.control_value).ok())
        .flat_map(|c| c.genes)
        .collect();
    let mut conds = Vec::new();
    let mut lists = Vec::new();
    for name in conditions {
        let name = name.trim();
        let c = Condition::parse(name, &info.control_value)?;
        let idx = c
            .genes
            .iter()
            .map(|g| {
                index.get(g.as_str()).copied().ok_or_else(|| {
                    PipelineError::option(
                        "conditions",
                        format!(
                            "condition {name:?}: gene '{g}' is not one of the model's {} genes ({})",
                            info.genes.len(),
                            model.display()
                        ),
                    )
                })
            })
            .collect::<Result<Vec<usize>>>()?;
        conds.push(c);
        lists.push(idx);
    }
    let means = perturb_fit::predict_means(
        &m.model,
        &m.graphs,
        &m.pool_x,
        m.pool_features.as_deref().zip(info.backbone_dim),
        &lists,
        batch_size,
    )?;
    Ok(PerturbPredictions {
        genes: info.genes.clone(),
        conditions: conds
            .iter()
            .zip(means)
            .map(|(c, p)| {
                let group = perturb::group_by_training(c, &trained);
                let split = parts.get(&c.name).cloned().unwrap_or_else(|| "test".into());
                (
                    c.name.clone(),
                    PredictedCondition {
                        split,
                        group: group.as_str().to_string(),
                        predicted: p,
                    },
                )
            })
            .collect(),
    })
}

/// Predicted single cells in the layout cell-eval (`cell-eval prep` / `run`) and the Virtual
/// Cell Challenge take: `cells` cells per condition, each a control cell of the model's pool
/// shifted by the condition's predicted mean change (`predicted mean − pool mean`, per gene,
/// clipped at 0 as log1p values cannot be negative), plus `cells` unshifted pool cells as the
/// controls. Pool cells are taken in order and reused when `cells` exceeds the pool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CellEvalLayout {
    /// Cells per condition (and controls).
    pub cells: usize,
    /// obs column of the perturbation (cell-eval: `target_gene`).
    pub column: String,
    /// Its value for the controls (cell-eval: `non-targeting`).
    pub control_label: String,
}

impl Default for CellEvalLayout {
    fn default() -> Self {
        CellEvalLayout {
            cells: 100,
            column: "target_gene".into(),
            control_label: "non-targeting".into(),
        }
    }
}

/// [`perturb_predict`] written as predicted single cells ([`CellEvalLayout`]) to `output`
/// (`.h5ad`: float32 CSR `X` of log1p values in the screen's gene order, `obs[column]` = the
/// target gene of a single, `A+B` for a double, the control label for the controls,
/// `obs/condition` = the condition's name, `uns/aido_perturb` = the model and the rule).
pub fn perturb_predict_cells_file<B: Backend>(
    model: &Path,
    conditions: &[String],
    output: &Path,
    batch_size: usize,
    layout: &CellEvalLayout,
    device: &B::Device,
) -> Result<PerturbPredictions> {
    use aido_tokenize::CsrChunk;
    use aido_tokenize::h5ad_edit::UnsValue;
    use aido_tokenize::h5ad_out::{H5adWriter, XMatrix};
    if !output
        .extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| e.eq_ignore_ascii_case("h5ad"))
    {
        return Err(PipelineError::option(
            "output",
            format!(
                "{}: the cell-eval layout is an .h5ad file",
                output.display()
            ),
        ));
    }
    crate::output::check_writable(output, "output")?;
    if layout.cells == 0 {
        return Err(PipelineError::option("cells", "must be at least 1"));
    }
    let m: PerturbModel<B> = perturb_fit::load_model(model, device)?;
    let p = predict_with(&m, model, conditions, batch_size)?;
    let g = m.info.genes.len();
    let pool = m.pool_x.len() / g.max(1);
    if pool == 0 {
        return Err(PipelineError::input(
            model.display(),
            "the model folder holds no control cells",
        ));
    }
    let pool_mean = perturb_fit::pool_mean(&m.pool_x, g);
    let mut x = CsrChunk {
        first_cell: 0,
        indptr: vec![0],
        ..Default::default()
    };
    let (mut names, mut labels, mut conds) = (Vec::new(), Vec::new(), Vec::new());
    let mut push = |shift: Option<&[f64]>, label: &str, cond: &str, x: &mut CsrChunk| {
        perturb_fit::push_shifted_pool(x, &m.pool_x, g, shift, layout.cells);
        for k in 0..layout.cells {
            names.push(format!("{cond}_{k}"));
            labels.push(label.to_string());
            conds.push(cond.to_string());
        }
    };
    for (name, c) in &p.conditions {
        let cond = Condition::parse(name, &m.info.control_value)?;
        if cond.is_control() {
            continue;
        }
        let label = cond.genes.join("+");
        if label == layout.control_label {
            return Err(PipelineError::option(
                "control_label",
                format!("'{label}' is also a perturbation's label"),
            ));
        }
        let shift: Vec<f64> = c
            .predicted
            .iter()
            .zip(&pool_mean)
            .map(|(a, b)| a - b)
            .collect();
        push(Some(&shift), &label, name, &mut x);
    }
    push(None, &layout.control_label, &m.info.control_value, &mut x);
    let cat = |v: &[String]| {
        let l = aido_eval::Labels::from_strings(v);
        ObsColumn::Categorical {
            codes: l.codes.iter().map(|&c| c as i32).collect(),
            categories: l.names,
            ordered: false,
        }
    };
    let mut obs = ObsTable::from_names(names);
    obs.columns.push((layout.column.clone(), cat(&labels)));
    if layout.column != "condition" {
        obs.columns.push(("condition".into(), cat(&conds)));
    }
    let mut w = H5adWriter::new(obs, m.info.genes.clone());
    w.x = Some(XMatrix::Csr { csr: x, n_cols: g });
    w.uns.push((
        "aido_perturb".into(),
        UnsValue::Dict(vec![
            ("model".into(), UnsValue::Str(model.display().to_string())),
            ("cells_per_condition".into(), UnsValue::I64(layout.cells as i64)),
            (
                "rule".into(),
                UnsValue::Str("each predicted cell = a control cell of the model's pool + (predicted mean - pool mean), clipped at 0; controls = the pool cells unchanged".into()),
            ),
        ]),
    ));
    w.write(output)?;
    Ok(p)
}

/// [`perturb_predict`], written as JSON (the form of `predictions.json`) to `output`.
pub fn perturb_predict_file<B: Backend>(
    model: &Path,
    conditions: &[String],
    output: &Path,
    batch_size: usize,
    device: &B::Device,
) -> Result<PerturbPredictions> {
    crate::output::check_writable(output, "output")?;
    let p = perturb_predict::<B>(model, conditions, batch_size, device)?;
    write_json(output, &p)?;
    Ok(p)
}
