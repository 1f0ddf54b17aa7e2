//! `aido perturb fit` / `aido perturb predict`: flags → [`aido_pipeline::perturb`].

use std::path::PathBuf;

use aido_model::backend::DeviceKind;
use aido_model::burn::backend::Autodiff;
use aido_model::burn::prelude::Backend;
use aido_pipeline::perturb::{
    PerturbFitOptions, PerturbFitReport, perturb_fit_file, perturb_predict_file,
};
use aido_pipeline::perturb_benchmark::{
    BenchmarkProtocol, BenchmarkReport, PerturbBenchmarkOptions, perturb_benchmark_file,
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
    /// Score any tool's predicted single cells against the real ones as the Virtual Cell
    /// Challenge (cell-eval 0.8) and Systema do: overlap_at_N, discrimination_score_l1, mae,
    /// pearson_delta, pearson_delta_centroid, centroid_accuracy, and the scores normalised
    /// against cell-eval's cell-mean baseline.
    Score(ScoreArgs),
    /// Fit GEARS and every baseline on repeated splits of a screen and summarise each metric
    /// per method and test group (mean, sd, 95 % interval): OUT/benchmark.json, .tsv, .png.
    /// Resumable: a split already in OUT/split_SEED/ is read back, not refitted.
    Benchmark(Box<BenchmarkArgs>),
}

/// Flags of `aido perturb score`.
#[derive(Args, Clone)]
pub(crate) struct ScoreArgs {
    /// The real single cells (.h5ad): log1p-normalised values, or counts (normalised as
    /// cell-eval does: each cell to the median total, then log1p); controls included.
    #[arg(long)]
    pub real: PathBuf,
    /// The predicted single cells (.h5ad), the same genes in any order, controls included.
    #[arg(long)]
    pub predicted: PathBuf,
    /// Output JSON: per_perturbation, mean, baseline_normalized.
    #[arg(long)]
    pub report: PathBuf,
    /// obs column naming each cell's perturbation.
    #[arg(long, default_value = "target_gene")]
    pub perturbation_column: String,
    /// Its value for control cells.
    #[arg(long, default_value = "non-targeting")]
    pub control_value: String,
    /// Read layers/NAME instead of X (both files).
    #[arg(long, value_name = "NAME")]
    pub layer: Option<String>,
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
    /// simulation, combo_seen0, combo_seen1, combo_seen2, double (Ahlmann-Eltze et al. 2025: all singles and half of the doubles train, the other half test), or an obs column of train/val/test.
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
    /// Epochs (the learning rate is multiplied by --lr-decay after each).
    #[arg(long, default_value_t = 20)]
    pub epochs: usize,
    /// The learning rate's factor per epoch: GEARS's StepLR(step_size=1, gamma=0.5) halves it
    /// every epoch, so after 8 epochs it is below 4e-6 of a 1e-3 start; 1 keeps it constant.
    #[arg(long, default_value_t = 0.5)]
    pub lr_decay: f64,
    /// Another screen's fitted perturbation embedding (TSV: gene, then K values per row):
    /// adds the linear_external baseline (Ahlmann-Eltze et al. 2025's best variant).
    #[arg(long, value_name = "FILE.tsv")]
    pub perturbation_embedding: Option<PathBuf>,
    /// PCA dimension K of the linear baselines.
    #[arg(long, default_value_t = 10)]
    pub linear_k: usize,
    /// Ridge penalty λ of the linear baselines.
    #[arg(long, default_value_t = 0.1)]
    pub linear_ridge: f64,
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

/// What `aido perturb predict` writes.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum PredictFormat {
    /// predictions.json's form.
    Json,
    /// Predicted single cells for cell-eval.
    CellEval,
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
    /// Output: JSON (the form of predictions.json), or with --format cell-eval an .h5ad of
    /// predicted single cells.
    #[arg(long)]
    pub output: PathBuf,
    /// json: per-condition mean profiles. cell-eval: predicted single cells in the layout
    /// `cell-eval prep` / `run` take (obs/target_gene = the target gene, `A+B` for a double,
    /// non-targeting controls; float32 CSR log1p values in the screen's gene order): each
    /// cell a control cell of the model's pool shifted by the predicted mean change, clipped
    /// at 0.
    #[arg(long, value_enum, default_value = "json")]
    pub format: PredictFormat,
    /// With --format cell-eval: cells per condition (and control cells).
    #[arg(long, default_value_t = 100, value_name = "N")]
    pub cells: usize,
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
        PerturbCommand::Score(a) => cmd_score(a, verbose),
        PerturbCommand::Benchmark(a) => cmd_benchmark(a, verbose),
    }
}

fn linear_config(k: usize, ridge: f64) -> aido_pipeline::perturb::LinearConfig {
    aido_pipeline::perturb::LinearConfig { k, ridge }
}

/// Runs `aido perturb score`.
fn cmd_score(a: &ScoreArgs, verbose: bool) -> Result<()> {
    let options = aido_pipeline::perturb_score::ScoreOptions {
        perturbation_column: a.perturbation_column.clone(),
        control_value: a.control_value.clone(),
        layer: a.layer.clone(),
    };
    let r = aido_pipeline::perturb_score::score_files(&a.real, &a.predicted, &a.report, &options)
        .map_err(pipeline_error)?;
    if verbose && !super::quiet() {
        outln!("wrote {}: {r}", a.report.display());
    }
    Ok(())
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
    check_fit_args(a)?;
    let t0 = std::time::Instant::now();
    let options = fit_options(a);
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

/// The checks `perturb fit` and `perturb benchmark` share.
fn check_fit_args(a: &FitArgs) -> Result<()> {
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
    Ok(())
}

/// `perturb fit`'s flags as the library's options.
fn fit_options(a: &FitArgs) -> PerturbFitOptions {
    PerturbFitOptions {
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
        lr_decay: a.lr_decay,
        perturbation_embedding: a.perturbation_embedding.clone(),
        linear: linear_config(a.linear_k, a.linear_ridge),
        batch_size: a.batch_size,
        lr: a.lr,
        hidden: a.hidden,
        direction_lambda: a.direction_lambda,
        pool: a.pool,
        min_cells: a.min_cells,
        precision: a.precision.unwrap_or_default(),
        gene_id: a.read.gene_id,
    }
}

/// Flags of `aido perturb benchmark`: every `perturb fit` flag (`--seed` is the first split's,
/// `--out` the benchmark's folder) and the repetitions.
#[derive(Args, Clone)]
pub(crate) struct BenchmarkArgs {
    #[command(flatten)]
    pub fit: FitArgs,
    /// Repetitions: seeds --seed .. --seed + N − 1.
    #[arg(long, default_value_t = 5, value_name = "N")]
    pub splits: usize,
    /// gears: GEARS's split (--split, by default simulation) per seed, groups unseen_single and
    /// combo_seen0/1/2; double: Ahlmann-Eltze et al. 2025's (all singles and half of the doubles
    /// train, the other half test), group double.
    #[arg(long, default_value = "gears")]
    pub protocol: BenchmarkProtocol,
    /// Methods to report (default: every one that applies): model, linear, linear_encoder
    /// (needs --model), linear_external (needs --perturbation-embedding), additive,
    /// mean_delta, matching_mean, no_change.
    #[arg(long, value_delimiter = ',')]
    pub methods: Vec<String>,
}

struct Bench<'a> {
    a: &'a BenchmarkArgs,
    backbone: Option<Pretrained>,
    options: PerturbBenchmarkOptions,
    verbose: bool,
}

impl OnDevice for Bench<'_> {
    type Output = BenchmarkReport;
    fn run<B: Backend>(self, device: B::Device) -> aido_pipeline::Result<BenchmarkReport> {
        let a = &self.a.fit;
        let mut printer = EventPrinter::new(self.verbose, "benchmark");
        perturb_benchmark_file::<Autodiff<B>>(
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

/// Runs `aido perturb benchmark`.
fn cmd_benchmark(b: &BenchmarkArgs, verbose: bool) -> Result<()> {
    let a = &b.fit;
    check_fit_args(a)?;
    let options = PerturbBenchmarkOptions {
        fit: fit_options(a),
        splits: b.splits,
        protocol: b.protocol,
        methods: (!b.methods.is_empty()).then(|| b.methods.clone()),
    };
    let backbone = match &a.model {
        None => None,
        Some(m) => Some(super::render::open_model(m, &a.genes, verbose)?),
    };
    let t0 = std::time::Instant::now();
    let report = on_device(
        a.device,
        Bench {
            a: b,
            backbone,
            options,
            verbose,
        },
    )
    .map_err(pipeline_error)?;
    if verbose {
        out!("{report}");
        outln!(
            "wrote {0}/benchmark.json, {0}/benchmark.tsv, {0}/benchmark.png ({1} splits in {0}/split_SEED/) in {2:.1} s",
            a.out.display(),
            b.splits,
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
        match a.format {
            PredictFormat::Json => {
                perturb_predict_file::<B>(&a.model, &a.conditions, &a.output, a.batch_size, &device)
            }
            PredictFormat::CellEval => aido_pipeline::perturb::perturb_predict_cells_file::<B>(
                &a.model,
                &a.conditions,
                &a.output,
                a.batch_size,
                &aido_pipeline::perturb::CellEvalLayout {
                    cells: a.cells,
                    ..Default::default()
                },
                &device,
            ),
        }
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
