//! Argument parsing and the subcommands of `aido`.

/// `println!` that never panics: a closed stdout (`aido … | head`) must not abort a run that
/// is writing its results to files, so the report lines are best effort.
macro_rules! outln {
    () => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout());
    }};
    ($($t:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($t)*);
    }};
}

/// `print!` that never panics (see `outln!`).
macro_rules! out {
    ($($t:tt)*) => {{
        use std::io::Write as _;
        let _ = write!(std::io::stdout(), $($t)*);
    }};
}

mod analysis;
mod annotate;
mod data;
mod demo;
mod embed;
mod insilico;
mod pack;
mod perturb;
mod predict;
mod pretrain;
pub(crate) mod render;

pub(crate) use render::{EventPrinter, pipeline_error};

use std::process::ExitCode;

use aido_tokenize::{
    AlignOptions, EmptyCellPolicy, GeneIdMode, NonIntegerPolicy, PreprocessConfig, ReadOptions,
    TokenizeOptions,
};
use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;

#[derive(Parser)]
#[command(
    name = "aido",
    version,
    about = "AIDO.Cell single-cell foundation model SDK"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// No progress bars, alignment reports or run details: only the line naming what was
    /// written, warnings and errors (the output files are the same).
    #[arg(long, short, global = true)]
    quiet: bool,
    /// CPU threads for every computation (attention, matmuls, clustering). Default: the
    /// `RAYON_NUM_THREADS` environment variable, else one per logical CPU.
    #[arg(long, global = true, value_name = "N")]
    threads: Option<usize>,
}

#[derive(Subcommand)]
enum Command {
    /// Tokenize a single-cell file into AIDO.Cell model input (safetensors: `values`, `present`).
    Tokenize(data::TokenizeArgs),
    /// Write a synthetic raw-count h5ad with known cell types.
    Simulate(data::SimulateArgs),
    /// Cell (and gene) embeddings of a single-cell file with an AIDO.Cell checkpoint.
    Embed(embed::EmbedArgs),
    /// Assemble the shards of `aido embed --shard I/N` into one output (the bytes one
    /// unsharded run writes).
    Merge(embed::MergeArgs),
    /// Align and validate raw-count files once into a packed corpus (compressed sparse shards
    /// plus an index) that `pretrain --corpus` streams.
    Pack(pack::PackArgs),
    /// Read-depth-aware pretraining from raw counts (resumable; writes a checkpoint `embed` loads).
    Pretrain(pretrain::PretrainArgs),
    /// Experimental: the orchestrator a multi-node `pretrain --nodes N` registers with.
    Orchestrator(pack::OrchestratorArgs),
    /// Zero-shot clustering of an embedding (or the expression baseline): PCA → kNN → Leiden →
    /// UMAP, results added to the user's h5ad, metrics against labels.
    Cluster(analysis::ClusterArgs),
    /// Metrics of columns already in an h5ad (clusters, predictions, an embedding).
    Evaluate(analysis::EvaluateArgs),
    /// Cell-type annotation: fine-tune the encoder with the paper's head on labelled cells
    /// (report, confusion matrix, a classifier folder for `predict`).
    Finetune(annotate::FinetuneArgs),
    /// Label new cells with a classifier from `finetune`; results added to the user's h5ad.
    Predict(predict::PredictArgs),
    /// Perturbation response (GEARS): `perturb fit` on a screen, `perturb predict` for new
    /// combinations.
    #[command(subcommand)]
    Perturb(perturb::PerturbCommand),
    /// In-silico knockout / over-expression through the encoder: the cosine shift of every
    /// cell's embedding per perturbed gene.
    Insilico(insilico::InsilicoArgs),
    /// Run the end-to-end default on embedded simulated data (no files needed).
    Demo(demo::DemoArgs),
}

/// The compute flags of the commands that run the encoder.
#[derive(Args, Clone, Copy)]
pub(crate) struct ComputeArgs {
    /// Compute device: cpu, cuda (build feature `cuda`) or wgpu (feature `wgpu`).
    #[arg(long, default_value = "cpu")]
    pub device: aido_model::DeviceKind,
    /// Compute precision: f32, or bf16 (mixed: bf16 projections; f32 master weights,
    /// optimizer state, norms, softmax statistics, loss and outputs; cpu and cuda). Recorded in
    /// the outputs.
    #[arg(long, default_value = "f32")]
    pub precision: aido_model::Precision,
}

/// How the genes and counts of an input are read: shared by the commands whose inputs are not
/// tokenized through [`InputArgs`] (`insilico`, `perturb fit`, `pack`, `pretrain`).
#[derive(Args, Clone)]
pub(crate) struct ReadArgs {
    /// Read `layers/NAME` of an h5ad input instead of X (e.g. `counts` when X holds
    /// log-normalized values).
    #[arg(long, conflicts_with = "use_raw")]
    pub layer: Option<String>,
    /// Read `raw/X` (with `raw/var`'s genes) of an h5ad input instead of X: where scanpy
    /// keeps the counts after normalizing X (`adata.raw`).
    #[arg(long)]
    pub use_raw: bool,
    /// Column of gene symbols: a `var` column (h5ad) or `name`/`id` (10x, Matrix Market).
    #[arg(long)]
    pub gene_column: Option<String>,
    /// How the gene names are read: `symbol`, `ensembl`, `auto` (each name by its shape) or
    /// `exact` (exact symbols only, the authors' preprocessing).
    #[arg(long, default_value = "auto")]
    pub gene_id: GeneIdMode,
}

impl ReadArgs {
    pub(crate) fn read_options(&self) -> ReadOptions {
        ReadOptions {
            gene_column: self.gene_column.clone(),
            layer: self.layer.clone(),
            raw: self.use_raw,
        }
    }
}

/// Input-reading flags shared by the commands that read single-cell files.
#[derive(Args, Clone)]
pub(crate) struct InputArgs {
    /// Input: .h5ad, Cell Ranger .h5, a Matrix Market folder, or dense .csv/.tsv.
    #[arg(long)]
    input: PathBuf,
    /// Column with gene symbols: a `var` column (h5ad) or `name`/`id` (10x, Matrix Market).
    #[arg(long)]
    gene_column: Option<String>,
    /// How the gene names are read: `symbol`, `ensembl` (`ENSG…`, version ignored), `auto`
    /// (each name by its shape; renamed symbols through the HGNC alias table either way) or
    /// `exact` (exact vocabulary symbols only, as the authors' preprocessing).
    #[arg(long, default_value = "auto")]
    gene_id: GeneIdMode,
    /// Read `layers/NAME` instead of `X` (h5ad).
    #[arg(long, conflicts_with = "use_raw")]
    layer: Option<String>,
    /// Read `raw/X` (with `raw/var`'s genes) instead of `X` (h5ad): where scanpy keeps the
    /// counts after normalizing X (`adata.raw`).
    #[arg(long)]
    use_raw: bool,
    /// Floor of the depth tokens (default 5, the reference's inference behaviour), or `none`.
    #[arg(long, default_value = "5")]
    depth_floor: String,
    /// Refuse non-integer counts (the default; kept for old scripts).
    #[arg(long, conflicts_with = "allow_non_integer")]
    strict: bool,
    /// Accept non-integer or normalized values (warn instead of refusing). AIDO.Cell expects raw
    /// counts: prefer a raw-count layer (--layer).
    #[arg(long)]
    allow_non_integer: bool,
    /// Drop cells whose aligned total is zero (counted) instead of failing.
    #[arg(long)]
    skip_empty: bool,
    /// Minimum matched genes (lowered to a quarter of the data's genes for small panels).
    #[arg(long, default_value_t = 1000)]
    min_overlap_genes: usize,
    /// Minimum fraction of the data's genes found in the vocabulary.
    #[arg(long, default_value_t = 0.10)]
    min_overlap_fraction: f64,
}

impl InputArgs {
    pub(crate) fn options(&self) -> Result<TokenizeOptions> {
        let depth_floor = match self.depth_floor.trim().to_lowercase().as_str() {
            "none" | "off" => None,
            s => Some(
                s.parse::<f32>()
                    .with_context(|| format!("--depth-floor: '{s}' is not a number or 'none'"))?,
            ),
        };
        if !(0.0..=1.0).contains(&self.min_overlap_fraction) {
            bail!("--min-overlap-fraction must be within 0..1");
        }
        Ok(TokenizeOptions {
            preprocess: PreprocessConfig {
                depth_floor,
                ..PreprocessConfig::default()
            },
            align: AlignOptions {
                min_fraction: self.min_overlap_fraction,
                min_genes: self.min_overlap_genes,
                gene_id: self.gene_id,
            },
            non_integer: if self.allow_non_integer && !self.strict {
                NonIntegerPolicy::Warn
            } else {
                NonIntegerPolicy::Error
            },
            empty: if self.skip_empty {
                EmptyCellPolicy::Skip
            } else {
                EmptyCellPolicy::Error
            },
        })
    }

    pub(crate) fn read_options(&self) -> ReadOptions {
        ReadOptions {
            gene_column: self.gene_column.clone(),
            layer: self.layer.clone(),
            raw: self.use_raw,
        }
    }
}

/// On Ctrl-C (SIGINT) or SIGTERM: removes the temporary outputs this run has started (an
/// interrupted `embed … --output x.safetensors` used to leave a hidden `.x.safetensors.tmp-PID`
/// of up to the full size), says so, and exits with 128 + the signal. The handler only records
/// the signal; a watcher thread does the rest outside the signal context.
#[cfg(unix)]
#[allow(unsafe_code)] // one signal-hook registration; the action is async-signal-safe
fn clean_up_on_signals() {
    use std::sync::atomic::{AtomicI32, Ordering};
    static SIGNAL: AtomicI32 = AtomicI32::new(0);
    for sig in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: the action only stores to an atomic, which is async-signal-safe.
        let registered = unsafe {
            signal_hook_registry::register(sig, move || SIGNAL.store(sig, Ordering::SeqCst))
        };
        if registered.is_err() {
            return;
        }
    }
    std::thread::spawn(|| {
        loop {
            std::thread::sleep(std::time::Duration::from_millis(50));
            let sig = SIGNAL.load(Ordering::SeqCst);
            if sig != 0 {
                let n = aido_tokenize::io_util::remove_live_temps();
                let name = if sig == libc::SIGINT {
                    "interrupted"
                } else {
                    "terminated"
                };
                eprintln!(
                    "\n{name}: {n} unfinished output file{} removed",
                    if n == 1 { "" } else { "s" }
                );
                std::process::exit(128 + sig);
            }
        }
    });
}

#[cfg(not(unix))]
fn clean_up_on_signals() {}

/// `--quiet`, set once from the command line.
static QUIET: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Whether `--quiet` was given: no progress bars, alignment reports or run details.
pub(crate) fn quiet() -> bool {
    QUIET.load(std::sync::atomic::Ordering::Relaxed)
}

/// Parses the command line and runs; errors are printed with their causes.
pub fn run() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    QUIET.store(cli.quiet, std::sync::atomic::Ordering::Relaxed);
    clean_up_on_signals();
    if let Some(n) = cli.threads
        && let Err(e) = aido_pipeline::set_threads(n)
    {
        eprintln!("error: {}", render::pipeline_error(e));
        return ExitCode::FAILURE;
    }
    let res = match cli.command {
        Command::Tokenize(a) => data::cmd_tokenize(&a),
        Command::Simulate(a) => data::cmd_simulate(&a),
        Command::Embed(a) => embed::cmd_embed(&a, true).map(|_| ()),
        Command::Merge(a) => embed::cmd_merge(&a),
        Command::Pack(a) => pack::cmd_pack(&a),
        Command::Pretrain(a) => pretrain::cmd_pretrain(&a).map(|_| ()),
        Command::Orchestrator(a) => pack::cmd_orchestrator(&a),
        Command::Cluster(a) => analysis::cmd_cluster(&a, true).map(|_| ()),
        Command::Evaluate(a) => analysis::cmd_evaluate(&a),
        Command::Finetune(a) => annotate::cmd_finetune(&a, true).map(|_| ()),
        Command::Predict(a) => predict::cmd_predict(&a, true).map(|_| ()),
        Command::Perturb(c) => perturb::cmd_perturb(&c, true).map(|_| ()),
        Command::Insilico(a) => insilico::cmd_insilico(&a).map(|_| ()),
        Command::Demo(a) => demo::cmd_demo(&a),
    };
    match res {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", render::flags_named(&e.to_string()));
            for cause in e.chain().skip(1) {
                eprintln!("  caused by: {}", render::flags_named(&cause.to_string()));
            }
            ExitCode::FAILURE
        }
    }
}
