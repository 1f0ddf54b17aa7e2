//! `aido perturb fit` / `aido perturb predict`: flags → [`aido_pipeline::perturb`].

use std::path::PathBuf;

use aido_model::backend::DeviceKind;
use aido_model::burn::backend::Autodiff;
use aido_model::burn::prelude::Backend;
use aido_pipeline::perturb::{
    PerturbFitOptions, PerturbFitReport, perturb_fit_file, perturb_predict_file,
};
use aido_pipeline::{ModelSource, OnDevice, Pretrained, on_device};
use anyhow::{Result, bail};
use clap::{Args, Subcommand};

use super::{EventPrinter, pipeline_error};

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
    /// An AIDO.Cell model (checkpoint folder or Hugging Face id ORG/NAME[@REVISION]) whose
    /// per-gene embeddings of control cells replace GEARS's learned gene embeddings (frozen;
    /// the paper's route).
    #[arg(long, conflicts_with = "no_backbone")]
    pub model: Option<ModelSource>,
    /// GEARS alone: learned gene embeddings.
    #[arg(long)]
    pub no_backbone: bool,
    /// Gene list of the checkpoint (default: MODEL/genes.tsv, else the built-in AIDO.Cell
    /// list for a 19,266-position model).
    #[arg(long)]
    pub genes: Option<PathBuf>,
    #[command(flatten)]
    pub read: super::ReadArgs,
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

pub(crate) fn cmd_perturb(c: &PerturbCommand, verbose: bool) -> Result<()> {
    match c {
        PerturbCommand::Fit(a) => cmd_fit(a, verbose),
        PerturbCommand::Predict(a) => cmd_predict(a, verbose),
    }
}

struct Fit<'a> {
    a: &'a FitArgs,
    backbone: Option<Pretrained>,
    options: PerturbFitOptions,
    verbose: bool,
}

impl OnDevice for Fit<'_> {
    type Output = PerturbFitReport;
    fn run<B: Backend>(self, device: B::Device) -> aido_pipeline::Result<PerturbFitReport> {
        let a = self.a;
        let mut printer = EventPrinter::new(self.verbose, "perturb");
        perturb_fit_file::<Autodiff<B>>(
            &a.input,
            &a.read.read_options(),
            &a.out,
            self.backbone.as_ref(),
            &self.options,
            &device,
            &mut |e| printer.show(e),
        )
    }
}

/// Runs `aido perturb fit`; returns report.json.
pub(crate) fn cmd_fit(a: &FitArgs, verbose: bool) -> Result<()> {
    a.device.ensure_compiled()?;
    if a.precision.is_some() && a.model.is_none() {
        bail!(
            "--precision applies to the --model backbone; with --no-backbone the perturbation model trains in f32"
        );
    }
    if a.model.is_none() && !a.no_backbone {
        bail!(
            "choose the gene embeddings: --model DIR (an AIDO.Cell checkpoint, the paper's route) or --no-backbone (GEARS alone)"
        );
    }
    let t0 = std::time::Instant::now();
    let options = PerturbFitOptions {
        condition_column: a.condition_column.clone(),
        control_value: a.control_value.clone(),
        split: a.split.clone(),
        seed: a.seed,
        train_gene_fraction: a.train_gene_fraction,
        combo_seen2_train_fraction: a.combo_seen2_train_fraction,
        gene_graph: a.gene_graph.clone(),
        coexpress_threshold: a.coexpress_threshold,
        coexpress_k: a.coexpress_k,
        coexpress_all_cells: a.coexpress_all_cells,
        epochs: a.epochs,
        batch_size: a.batch_size,
        lr: a.lr,
        hidden: a.hidden,
        direction_lambda: a.direction_lambda,
        pool: a.pool,
        min_cells: a.min_cells,
        precision: a.precision.unwrap_or_default(),
        gene_id: a.read.gene_id,
    };
    let backbone = match &a.model {
        None => None,
        Some(m) => Some(super::render::open_model(m, &a.genes, verbose)?),
    };
    let report = on_device(
        a.device,
        Fit {
            a,
            backbone,
            options,
            verbose,
        },
    )
    .map_err(pipeline_error)?;
    if verbose {
        out!("{report}");
        outln!(
            "wrote {0}/predictions.json, {0}/report.json, {0}/model/ in {1:.1} s",
            a.out.display(),
            t0.elapsed().as_secs_f64()
        );
    }
    Ok(())
}

struct Predict<'a>(&'a PredictArgs);

impl OnDevice for Predict<'_> {
    type Output = aido_pipeline::perturb::PerturbPredictions;
    fn run<B: Backend>(self, device: B::Device) -> aido_pipeline::Result<Self::Output> {
        let a = self.0;
        perturb_predict_file::<B>(&a.model, &a.conditions, &a.output, a.batch_size, &device)
    }
}

fn cmd_predict(a: &PredictArgs, verbose: bool) -> Result<()> {
    a.device.ensure_compiled()?;
    let t0 = std::time::Instant::now();
    let p = on_device(a.device, Predict(a)).map_err(pipeline_error)?;
    if verbose {
        outln!(
            "wrote {}: {} conditions × {} genes in {:.2} s",
            a.output.display(),
            p.conditions.len(),
            p.genes.len(),
            t0.elapsed().as_secs_f64()
        );
    }
    Ok(())
}
