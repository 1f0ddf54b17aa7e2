//! `aido perturb fit` / `aido perturb predict`: GEARS on a perturbation screen, next to the
//! baselines; and `aido simulate --perturbations` data for it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use aido_model::attention::AttentionBackend;
use aido_model::backend::DeviceKind;
use aido_model::burn::backend::Autodiff;
use aido_model::burn::tensor::backend::{AutodiffBackend, Backend};
use aido_model::load::{LoadMode, load_checkpoint};
use aido_tasks::gears::{CoexpressionMode, GearsConfig, GearsGraphs};
use aido_tasks::perturb::{
    self, Baseline, Condition, GeneEdge, PertGroup, PerturbSplit, SplitPart, baseline_prediction,
    score_groups,
};
use aido_tasks::perturb_fit::{
    self, BackboneFeatures, FitConfig, FitInputs, MODEL_FORMAT, PerturbData, PerturbDataOptions,
    PerturbModel, PerturbModelInfo,
};
use aido_tokenize::{GeneVocab, ReadOptions, open_source};
use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use rand::SeedableRng;
use rand::seq::SliceRandom;
use serde_json::{Value, json};

use super::analysis::write_json;

/// `aido perturb …`.
#[derive(Subcommand)]
pub(crate) enum PerturbCommand {
    /// Train GEARS (learned gene embeddings, or the encoder's as a frozen backbone) on a
    /// perturbation screen; predictions, a report next to the baselines, and a model folder.
    Fit(Box<FitArgs>),
    /// Predict the mean expression of conditions (also never-seen combinations) with a model
    /// from `perturb fit`.
    Predict(PredictArgs),
}

/// Flags of `aido perturb fit`.
#[derive(Args, Clone)]
pub(crate) struct FitArgs {
    /// GEARS/Norman-style .h5ad: raw counts in X (or --layer), a condition per cell.
    #[arg(long)]
    pub input: PathBuf,
    /// Output folder: predictions.json, report.json, model/.
    #[arg(long)]
    pub out: PathBuf,
    /// An AIDO.Cell checkpoint whose per-gene embeddings of control cells replace GEARS's
    /// learned gene embeddings (frozen; the paper's route).
    #[arg(long, conflicts_with = "no_backbone")]
    pub model: Option<PathBuf>,
    /// GEARS alone: learned gene embeddings.
    #[arg(long)]
    pub no_backbone: bool,
    /// Gene list of the checkpoint (default: MODEL/genes.tsv).
    #[arg(long)]
    pub genes: Option<PathBuf>,
    /// Read `layers/NAME` instead of X.
    #[arg(long)]
    pub layer: Option<String>,
    /// var column with the gene symbols (default: the var index).
    #[arg(long)]
    pub gene_column: Option<String>,
    /// How the gene names are matched to a backbone's gene list: `symbol`, `ensembl`,
    /// `auto` (each name by its shape) or `exact` (exact symbols only).
    #[arg(long, default_value = "auto")]
    pub gene_id: aido_tokenize::GeneIdMode,
    /// obs column with the conditions (`A+ctrl`, `A+B`, control).
    #[arg(long, default_value = "condition")]
    pub condition_column: String,
    /// The control value of the condition column.
    #[arg(long, default_value = "ctrl")]
    pub control_value: String,
    /// simulation, combo_seen0, combo_seen1, combo_seen2, or an obs column of train/val/test.
    #[arg(long, default_value = "simulation")]
    pub split: String,
    /// Seed of the split, the initialization and the training order.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Share of the perturbed genes seen in training (simulation split).
    #[arg(long, default_value_t = 0.75)]
    pub train_gene_fraction: f64,
    /// Share of the two-seen-gene doubles kept in training (simulation split; GEARS 0.75).
    #[arg(long, default_value_t = 0.75)]
    pub combo_seen2_train_fraction: f64,
    /// Gene–gene graph of the perturbations (TSV gene_a, gene_b, weight; default: the shipped
    /// GO-Jaccard graph, or the co-expression graph where GO covers too few of the genes).
    #[arg(long)]
    pub gene_graph: Option<PathBuf>,
    /// Co-expression graph: |r| threshold.
    #[arg(long, default_value_t = 0.4)]
    pub coexpress_threshold: f64,
    /// Co-expression graph: partners per gene.
    #[arg(long, default_value_t = 20)]
    pub coexpress_k: usize,
    /// Give every cell of a batch the co-expression propagation (GEARS's code gives it to the
    /// first cell of each batch only; that is the default here too).
    #[arg(long)]
    pub coexpress_all_cells: bool,
    /// Epochs (the learning rate halves after each, as GEARS).
    #[arg(long, default_value_t = 20)]
    pub epochs: usize,
    /// Cells per update.
    #[arg(long, default_value_t = 32)]
    pub batch_size: usize,
    /// Initial learning rate.
    #[arg(long, default_value_t = 1e-3)]
    pub lr: f64,
    /// Hidden size.
    #[arg(long, default_value_t = 64)]
    pub hidden: usize,
    /// Weight of the loss's direction term (GEARS's model_initialize default 0.1).
    #[arg(long, default_value_t = 0.1)]
    pub direction_lambda: f64,
    /// Control cells each prediction averages over (GEARS: 300).
    #[arg(long, default_value_t = 300)]
    pub pool: usize,
    /// Fewest cells a condition may have.
    #[arg(long, default_value_t = 3)]
    pub min_cells: usize,
    /// Compute device: cpu, cuda (feature `cuda`) or wgpu (feature `wgpu`).
    #[arg(long, default_value = "cpu")]
    pub device: DeviceKind,
    /// Compute precision of the --model backbone: f32 (default), or bf16 (mixed: bf16
    /// projections; f32 norms, softmax statistics and embeddings; cpu and cuda). The
    /// perturbation model itself trains in f32.
    #[arg(long, requires = "model")]
    pub precision: Option<aido_model::Precision>,
}

/// Flags of `aido perturb predict`.
#[derive(Args, Clone)]
pub(crate) struct PredictArgs {
    /// The model folder of `perturb fit` (OUTDIR/model).
    #[arg(long)]
    pub model: PathBuf,
    /// Comma-separated conditions (`A+B`, `C+ctrl`).
    #[arg(long, value_delimiter = ',')]
    pub conditions: Vec<String>,
    /// Output JSON (the form of predictions.json).
    #[arg(long)]
    pub output: PathBuf,
    /// Pool cells per forward pass.
    #[arg(long, default_value_t = 64)]
    pub batch_size: usize,
    /// Compute device.
    #[arg(long, default_value = "cpu")]
    pub device: DeviceKind,
}

pub(crate) fn cmd_perturb(c: &PerturbCommand, verbose: bool) -> Result<Value> {
    match c {
        PerturbCommand::Fit(a) => cmd_fit(a, verbose),
        PerturbCommand::Predict(a) => cmd_predict(a, verbose).map(|()| Value::Null),
    }
}

/// Runs `aido perturb fit`; returns report.json.
pub(crate) fn cmd_fit(a: &FitArgs, verbose: bool) -> Result<Value> {
    a.device.ensure_compiled()?;
    if a.precision.is_some() && a.model.is_none() {
        bail!(
            "--precision applies to the --model backbone; with --no-backbone the perturbation model trains in f32"
        );
    }
    match a.device {
        DeviceKind::Cpu => fit_on::<Autodiff<aido_model::Cpu>>(Default::default(), a, verbose),
        #[cfg(feature = "cuda")]
        DeviceKind::Cuda => {
            fit_on::<Autodiff<aido_model::backend::Cuda>>(Default::default(), a, verbose)
        }
        #[cfg(feature = "wgpu")]
        DeviceKind::Wgpu => {
            fit_on::<Autodiff<aido_model::backend::Wgpu>>(Default::default(), a, verbose)
        }
        #[allow(unreachable_patterns)]
        other => bail!("device {other:?} is not compiled in"),
    }
}

fn make_split(
    a: &FitArgs,
    data: &PerturbData,
    obs: &aido_tokenize::ObsTable,
) -> Result<PerturbSplit> {
    let seed = u32::try_from(a.seed).context("--seed must fit in 32 bits (numpy's seed)")?;
    Ok(match a.split.as_str() {
        "simulation" => perturb::simulation_split(
            &data.conditions,
            seed,
            a.train_gene_fraction,
            a.combo_seen2_train_fraction,
        )?,
        "combo_seen0" => perturb::combo_split(&data.conditions, 0, seed)?,
        "combo_seen1" => perturb::combo_split(&data.conditions, 1, seed)?,
        "combo_seen2" => perturb::combo_split(&data.conditions, 2, seed)?,
        col => {
            let c = obs.column(col).with_context(|| {
                format!(
                    "{}: --split {col}: not simulation / combo_seen0/1/2 and obs has no such column",
                    a.input.display()
                )
            })?;
            let mut parts: BTreeMap<String, SplitPart> = BTreeMap::new();
            for (i, &k) in data.cell_condition.iter().enumerate() {
                let v = c.display(i);
                let p = match v.as_str() {
                    "train" => SplitPart::Train,
                    "val" | "valid" | "validation" => SplitPart::Val,
                    "test" => SplitPart::Test,
                    other => bail!(
                        "{}: obs/{col} of cell {i} ('{}') is {other:?}: use train, val or test",
                        a.input.display(),
                        obs.cell_name(i)
                    ),
                };
                let name = &data.conditions[k].name;
                if let Some(&q) = parts.get(name)
                    && q != p
                {
                    bail!(
                        "{}: obs/{col}: condition {name:?} is in both {} and {} (cell {i} '{}'); a condition belongs to one part",
                        a.input.display(),
                        q.as_str(),
                        p.as_str(),
                        obs.cell_name(i)
                    );
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
    a: &FitArgs,
) -> Result<(Vec<GeneEdge>, usize)> {
    let conds: Vec<&Condition> = data
        .cell_condition
        .iter()
        .map(|&k| &data.conditions[k])
        .collect();
    let mut cells = perturb::coexpression_cells(&conds, split, false);
    if cells.len() > COEXPRESSION_MAX_CELLS {
        let mut rng = rand::rngs::StdRng::seed_from_u64(a.seed);
        cells.shuffle(&mut rng);
        cells.truncate(COEXPRESSION_MAX_CELLS);
        cells.sort_unstable();
    }
    let x = data.dense_f64(&cells);
    let edges =
        perturb::coexpression_graph(&x, data.n_genes(), a.coexpress_threshold, a.coexpress_k)?;
    Ok((edges, cells.len()))
}

fn fit_on<B: AutodiffBackend + AttentionBackend>(
    device: B::Device,
    a: &FitArgs,
    verbose: bool,
) -> Result<Value>
where
    B::InnerBackend: AttentionBackend,
{
    let t0 = Instant::now();
    if a.model.is_none() && !a.no_backbone {
        bail!(
            "choose the gene embeddings: --model DIR (an AIDO.Cell checkpoint, the paper's route) or --no-backbone (GEARS alone)"
        );
    }
    if !(0.0..=1.0).contains(&a.train_gene_fraction)
        || !(0.0..=1.0).contains(&a.combo_seen2_train_fraction)
    {
        bail!("--train-gene-fraction and --combo-seen2-train-fraction must be within 0..1");
    }
    let mut source = open_source(
        &a.input,
        &ReadOptions {
            gene_column: a.gene_column.clone(),
            layer: a.layer.clone(),
        },
    )?;
    let obs = source.obs().clone();
    let data = PerturbData::from_source(
        source.as_mut(),
        &PerturbDataOptions {
            condition_column: a.condition_column.clone(),
            control_value: a.control_value.clone(),
            min_cells: a.min_cells,
        },
    )
    .with_context(|| format!("reading {}", a.input.display()))?;
    let g = data.n_genes();
    let n_ctrl = data.cells_of(data.control).len();
    let split = make_split(a, &data, &obs)?;
    if verbose {
        let count = |p| split.conditions(p).len();
        outln!(
            "{}: {} cells × {g} genes, {} conditions ({} control cells); split {}: {} train, {} val, {} test conditions",
            a.input.display(),
            data.cell_condition.len(),
            data.conditions.len(),
            n_ctrl,
            a.split,
            count(SplitPart::Train),
            count(SplitPart::Val),
            count(SplitPart::Test)
        );
    }
    // Graphs.
    let (co_edges, co_cells) = coexpression_edges(&data, &split, a)?;
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
    let (pert_edges, pert_graph) = match &a.gene_graph {
        Some(p) => {
            let (e, dropped) = perturb::read_gene_graph(p, &data.genes)?;
            if e.is_empty() {
                bail!(
                    "{}: none of its edges joins two of the data's genes ({dropped} edges dropped)",
                    p.display()
                );
            }
            let note = format!(
                "{} ({} edges kept, {dropped} outside the data's genes)",
                p.display(),
                e.len()
            );
            (e, note)
        }
        None => {
            let (e, _) = perturb::go_graph(&data.genes)?;
            let targets: std::collections::BTreeSet<usize> = e.iter().map(|e| e.target).collect();
            let covered = perturbed.iter().filter(|p| targets.contains(p)).count();
            if covered * 2 >= perturbed.len() && !e.is_empty() {
                (
                    e,
                    format!(
                        "GO Jaccard (shipped; {covered} of {} perturbed genes covered)",
                        perturbed.len()
                    ),
                )
            } else {
                (
                    co_edges.clone(),
                    format!(
                        "co-expression (fallback: the GO graph covers {covered} of {} perturbed genes)",
                        perturbed.len()
                    ),
                )
            }
        }
    };
    if verbose {
        outln!(
            "co-expression graph: {} edges over {co_cells} cells (|r| > {}, top {}); perturbation graph: {pert_graph}, {} edges",
            co_edges.len(),
            a.coexpress_threshold,
            a.coexpress_k,
            pert_edges.len()
        );
    }
    let graphs = GearsGraphs::<B>::new(&co_edges, &pert_edges, g, &device)?;
    // Backbone features of a control pool.
    let mut rng = rand::rngs::StdRng::seed_from_u64(a.seed ^ 0x5eed);
    let (backbone, backbone_note) = match &a.model {
        None => (None, json!(null)),
        Some(dir) => {
            let genes_path = match &a.genes {
                Some(p) => p.clone(),
                None => dir.join("genes.tsv"),
            };
            let vocab = GeneVocab::from_tsv(&genes_path).with_context(|| {
                format!(
                    "the model's gene list (pass --genes, or put genes.tsv in {})",
                    dir.display()
                )
            })?;
            let (mut model, cfg) =
                load_checkpoint::<B::InnerBackend>(dir, LoadMode::EncoderOnly, &device)?;
            model.bert.set_precision(a.precision.unwrap_or_default())?;
            if vocab.seq_len() != cfg.seq_len() {
                bail!(
                    "{} lists {} genes but the checkpoint {} has {} gene positions",
                    genes_path.display(),
                    vocab.len(),
                    dir.display(),
                    cfg.seq_len() - 2
                );
            }
            let d = cfg.hidden_size;
            // Memory of the pool's features: P × G × D × 4 bytes, kept ≤ 2 GiB.
            let cap = ((2usize << 30) / (g * d * 4).max(1)).max(2);
            let mut ctrl = data.cells_of(data.control);
            ctrl.shuffle(&mut rng);
            ctrl.truncate(a.pool.min(cap));
            ctrl.sort_unstable();
            let t = Instant::now();
            let (f, missing) = perturb_fit::backbone_features(
                model.bert,
                device.clone(),
                &vocab,
                &data,
                &ctrl,
                8,
                a.gene_id,
            )?;
            if verbose {
                outln!(
                    "backbone {}: gene embeddings [{} control cells × {g} genes × {d}] in {:.1} s ({missing} of the data's genes not in the model's list: zero embedding)",
                    dir.display(),
                    ctrl.len(),
                    t.elapsed().as_secs_f64()
                );
            }
            (
                Some(f),
                json!({"model": dir.display().to_string(), "hidden": d, "pool_cells": ctrl.len(), "genes_not_in_model": missing}),
            )
        }
    };
    let model_cfg = GearsConfig::new(g)
        .with_hidden(a.hidden)
        .with_backbone_dim(backbone.as_ref().map(|f: &BackboneFeatures| f.dim))
        .with_coexpression(if a.coexpress_all_cells {
            CoexpressionMode::AllCells
        } else {
            CoexpressionMode::FirstCell
        });
    let fit_cfg = FitConfig {
        epochs: a.epochs,
        batch_size: a.batch_size,
        lr: a.lr,
        direction_lambda: a.direction_lambda,
        seed: a.seed,
        pool: a.pool,
        ..FitConfig::default()
    };
    let inputs = FitInputs {
        model: model_cfg.clone(),
        fit: fit_cfg.clone(),
        split: &split,
        graphs: &graphs,
        backbone: backbone.as_ref(),
    };
    let fitted = perturb_fit::fit::<B>(&data, &inputs, &device, |e| {
        if verbose {
            outln!(
                "epoch {:>3}: train loss {:.5}, val MSE {:.5} (lr {:.2e}, {:.1} s)",
                e.epoch,
                e.train_loss,
                e.val_mse,
                e.lr,
                e.seconds
            );
        }
    })?;
    // Predictions of every condition from the pool.
    let pool = &fitted.pool;
    let mut pool_x = vec![0.0f32; pool.len() * g];
    for (r, &c) in pool.iter().enumerate() {
        data.lognorm_row(c, &mut pool_x[r * g..(r + 1) * g]);
    }
    let inner_graphs = graphs.to_device::<B::InnerBackend>(&device);
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
        backbone.as_ref().map(|f| (f.values.as_slice(), f.dim)),
        &pert_lists,
        64,
    )?;
    if verbose {
        outln!(
            "predicted {} conditions from {} control cells in {:.1} s",
            means.len(),
            pool.len(),
            tp.elapsed().as_secs_f64()
        );
    }
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
    let mut groups = serde_json::Map::new();
    let mut scored: BTreeMap<String, BTreeMap<PertGroup, perturb::GroupScore>> = BTreeMap::new();
    for (name, pred) in &predictors {
        scored.insert(
            name.clone(),
            score_groups(&truths, SplitPart::Test, &ctrl_mean, pred)?,
        );
    }
    let all_groups = [
        PertGroup::UnseenSingle,
        PertGroup::ComboSeen2,
        PertGroup::ComboSeen1,
        PertGroup::ComboSeen0,
        PertGroup::SeenSingle,
    ];
    for grp in all_groups {
        let mut per = serde_json::Map::new();
        for (name, s) in &scored {
            if let Some(v) = s.get(&grp) {
                per.insert(name.clone(), json!(v));
            }
        }
        if !per.is_empty() {
            groups.insert(grp.as_str().to_string(), Value::Object(per));
        }
    }
    let settings = json!({
        "input": a.input.display().to_string(),
        "layer": a.layer,
        "condition_column": a.condition_column,
        "control_value": a.control_value,
        "split": a.split,
        "seed": a.seed,
        "train_gene_fraction": a.train_gene_fraction,
        "combo_seen2_train_fraction": a.combo_seen2_train_fraction,
        "gene_embeddings": if backbone.is_some() { "backbone" } else { "learned" },
        "backbone": backbone_note,
        "backbone_precision": a.model.as_ref().map(|_| a.precision.unwrap_or_default().as_str()),
        "coexpression_graph": {"edges": co_edges.len(), "cells": co_cells, "threshold": a.coexpress_threshold, "k": a.coexpress_k,
            "mode": model_cfg.coexpression.as_str()},
        "perturbation_graph": {"source": pert_graph, "edges": pert_edges.len()},
        "fit": fit_cfg,
        "hidden": a.hidden,
        "best_epoch": fitted.best_epoch,
        "epochs_log": fitted.epochs,
        "pool_cells": pool.len(),
        "metric": "per test condition: MSE of the mean prediction on its top-20 DE genes (scanpy t-test vs control, |t| ranking) and Pearson of predicted vs true changes from the control mean there; means per group",
        "seconds": t0.elapsed().as_secs_f64(),
    });
    let report = json!({"groups": groups, "settings": settings});
    // Outputs.
    std::fs::create_dir_all(&a.out).with_context(|| format!("creating {}", a.out.display()))?;
    let predictions = predictions_json(
        &data.genes,
        data.conditions.iter().zip(&means).map(|(c, m)| {
            let part = split.part.get(&c.name).copied().flatten();
            let group = split
                .group
                .get(&c.name)
                .copied()
                .unwrap_or(PertGroup::SeenSingle);
            (
                c.name.clone(),
                part.map_or("held_out", SplitPart::as_str).to_string(),
                group,
                m.as_slice(),
            )
        }),
    );
    write_json(&a.out.join("predictions.json"), &predictions)?;
    write_json(&a.out.join("report.json"), &report)?;
    let parts: BTreeMap<String, String> = data
        .conditions
        .iter()
        .map(|c| {
            let p = split.part.get(&c.name).copied().flatten();
            (
                c.name.clone(),
                p.map_or("held_out", SplitPart::as_str).to_string(),
            )
        })
        .collect();
    let info = PerturbModelInfo {
        format: MODEL_FORMAT.into(),
        genes: data.genes.clone(),
        control_value: a.control_value.clone(),
        hidden: a.hidden,
        backbone_dim: model_cfg.backbone_dim,
        coexpression: model_cfg.coexpression,
        fit: fit_cfg,
        trained_on: json!({"input": a.input.display().to_string(), "split": a.split, "parts": parts}),
    };
    let saved = PerturbModel {
        model: fitted.model,
        info,
        graphs: inner_graphs,
        coexpression_edges: co_edges,
        perturbation_edges: pert_edges,
        pool_x,
        pool_features: backbone.map(|f| f.values),
    };
    perturb_fit::save_model(&a.out.join("model"), &saved)?;
    if verbose {
        print_report(&report);
        outln!(
            "wrote {0}/predictions.json, {0}/report.json, {0}/model/ in {1:.1} s",
            a.out.display(),
            t0.elapsed().as_secs_f64()
        );
    }
    Ok(report)
}

/// The table of report.json's groups.
pub(crate) fn print_report(report: &Value) {
    outln!("test conditions — MSE on the top-20 DE genes (Pearson of deltas):");
    let names = ["model", "no_change", "mean_delta", "additive"];
    out!("  {:<14} {:>4}", "group", "n");
    for n in names {
        out!(" {n:>20}");
    }
    outln!();
    if let Some(groups) = report["groups"].as_object() {
        for (grp, per) in groups {
            let n = per["model"]["n_conditions"].as_u64().unwrap_or(0);
            out!("  {grp:<14} {n:>4}");
            for name in names {
                match per.get(name) {
                    Some(v) => out!(
                        " {:>11.4} ({:>6.3})",
                        v["mse_top20_de"].as_f64().unwrap_or(f64::NAN),
                        v["pearson_delta"].as_f64().unwrap_or(f64::NAN)
                    ),
                    None => out!(" {:>20}", "–"),
                }
            }
            outln!();
        }
    }
}

fn predictions_json<'a>(
    genes: &[String],
    rows: impl Iterator<Item = (String, String, PertGroup, &'a [f64])>,
) -> Value {
    let mut conds = serde_json::Map::new();
    for (name, split, group, pred) in rows {
        conds.insert(
            name,
            json!({"split": split, "group": group.as_str(), "predicted": pred}),
        );
    }
    json!({"genes": genes, "conditions": conds})
}

fn cmd_predict(a: &PredictArgs, verbose: bool) -> Result<()> {
    a.device.ensure_compiled()?;
    match a.device {
        DeviceKind::Cpu => predict_on::<aido_model::Cpu>(Default::default(), a, verbose),
        #[cfg(feature = "cuda")]
        DeviceKind::Cuda => predict_on::<aido_model::backend::Cuda>(Default::default(), a, verbose),
        #[cfg(feature = "wgpu")]
        DeviceKind::Wgpu => predict_on::<aido_model::backend::Wgpu>(Default::default(), a, verbose),
        #[allow(unreachable_patterns)]
        other => bail!("device {other:?} is not compiled in"),
    }
}

fn predict_on<B: Backend>(device: B::Device, a: &PredictArgs, verbose: bool) -> Result<()> {
    if a.conditions.is_empty() {
        bail!("--conditions: give at least one condition (e.g. \"A+B,C+ctrl\")");
    }
    let m: PerturbModel<B> = perturb_fit::load_model(&a.model, &device)?;
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
    let trained: std::collections::BTreeSet<String> = parts
        .iter()
        .filter(|(_, p)| p.as_str() == "train")
        .filter_map(|(c, _)| Condition::parse(c, &info.control_value).ok())
        .flat_map(|c| c.genes)
        .collect();
    let mut conds = Vec::new();
    let mut lists = Vec::new();
    for name in &a.conditions {
        let name = name.trim();
        let c = Condition::parse(name, &info.control_value)?;
        let idx = c
            .genes
            .iter()
            .map(|g| {
                index.get(g.as_str()).copied().with_context(|| {
                    format!(
                        "condition {name:?}: gene '{g}' is not one of the model's {} genes ({})",
                        info.genes.len(),
                        a.model.display()
                    )
                })
            })
            .collect::<Result<Vec<usize>>>()?;
        conds.push(c);
        lists.push(idx);
    }
    let t0 = Instant::now();
    let means = perturb_fit::predict_means(
        &m.model,
        &m.graphs,
        &m.pool_x,
        m.pool_features.as_deref().zip(info.backbone_dim),
        &lists,
        a.batch_size,
    )?;
    let rows = conds.iter().zip(&means).map(|(c, p)| {
        let group = perturb::group_by_training(c, &trained);
        let split = parts.get(&c.name).cloned().unwrap_or_else(|| "test".into());
        (c.name.clone(), split, group, p.as_slice())
    });
    let out = predictions_json(&info.genes, rows);
    write_json(&a.output, &out)?;
    if verbose {
        outln!(
            "wrote {}: {} conditions × {} genes in {:.2} s",
            a.output.display(),
            conds.len(),
            info.genes.len(),
            t0.elapsed().as_secs_f64()
        );
    }
    Ok(())
}

/// Writes a simulated perturbation screen (`aido simulate --perturbations`).
pub(crate) fn write_simulated_screen(
    cfg: &aido_tasks::perturb_sim::PerturbSimConfig,
    output: &Path,
    controls_out: Option<&Path>,
) -> Result<Vec<String>> {
    use aido_tokenize::h5ad_out::{H5adWriter, XMatrix};
    use aido_tokenize::{ObsColumn, ObsTable};
    let sim = aido_tasks::perturb_sim::simulate_perturbations(cfg)?;
    let n = sim.condition.len();
    let mut categories: Vec<String> = Vec::new();
    let mut codes = Vec::with_capacity(n);
    let mut idx: BTreeMap<&str, i32> = BTreeMap::new();
    for c in &sim.condition {
        let k = *idx.entry(c.as_str()).or_insert_with(|| {
            categories.push(c.clone());
            (categories.len() - 1) as i32
        });
        codes.push(k);
    }
    let mut obs = ObsTable::from_names((0..n).map(|i| format!("cell{i:06}")).collect());
    obs.columns.push((
        "condition".into(),
        ObsColumn::Categorical {
            codes,
            categories,
            ordered: false,
        },
    ));
    let g = sim.genes.len();
    let mut w = H5adWriter::new(obs, sim.genes.clone());
    let genes_out = sim.genes.clone();
    w.var_columns.push((
        "program".into(),
        ObsColumn::Int(
            sim.program
                .iter()
                .map(|p| p.map_or(-1, |p| p as i64))
                .collect(),
        ),
    ));
    let nnz = sim.counts.data.len();
    if let Some(path) = controls_out {
        let keep: Vec<usize> = (0..n).filter(|&i| sim.condition[i] == "ctrl").collect();
        let mut csr = aido_tokenize::CsrChunk {
            first_cell: 0,
            indptr: vec![0],
            ..Default::default()
        };
        for &i in &keep {
            let (idx, vals) = sim.counts.row(i);
            csr.indices.extend_from_slice(idx);
            csr.data.extend_from_slice(vals);
            csr.indptr.push(csr.data.len());
        }
        let mut c = H5adWriter::new(w.obs.select(&keep), sim.genes.clone());
        c.var_columns = w.var_columns.clone();
        c.x = Some(XMatrix::Csr { csr, n_cols: g });
        c.write(path)?;
        outln!(
            "wrote the {} control cells to {}",
            keep.len(),
            path.display()
        );
    }
    w.x = Some(XMatrix::Csr {
        csr: sim.counts,
        n_cols: g,
    });
    w.uns.push((
        "aido_perturbation_simulation".into(),
        serde_json::to_string(cfg)?,
    ));
    w.write(output)?;
    outln!(
        "wrote {}: {n} cells × {g} genes, {} conditions (control, {} singles, {} doubles), {nnz} non-zero",
        output.display(),
        sim.true_shift.len(),
        cfg.perturbed_genes,
        cfg.doubles
    );
    Ok(genes_out)
}
