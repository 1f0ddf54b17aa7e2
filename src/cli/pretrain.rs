//! `aido pretrain`: flags → [`aido_pipeline::pretrain`] (configuration, corpus, device) and
//! [`aido_train::pretrain`] (the loop); progress rendering.

use std::path::PathBuf;

use aido_model::backend::DeviceKind;
use aido_pipeline::pretrain::{
    CorpusSource, TrainSettings, event_lines, open_corpus, pretrain_on, resolve_config,
};
use aido_train::{Event, Preset, PretrainJob, Summary};
use anyhow::{Context, Result};
use clap::Args;

use super::pipeline_error;

/// Flags of `aido pretrain`. Values given here override `--config`, which overrides the
/// defaults of `aido_train::TrainConfig`.
#[derive(Args, Clone)]
pub(crate) struct PretrainArgs {
    /// Raw-count input (.h5ad, 10x .h5, Matrix Market folder, .csv/.tsv), held in memory;
    /// repeat for several.
    #[arg(
        long = "input",
        visible_alias = "data",
        required_unless_present = "corpus",
        conflicts_with = "corpus"
    )]
    pub data: Vec<PathBuf>,
    /// A packed corpus folder (`aido pack`), streamed: memory is bounded by
    /// --shuffle-buffer and the batch, not by the corpus.
    #[arg(long, conflicts_with_all = ["gene_column", "layer"])]
    pub corpus: Option<PathBuf>,
    /// The gene list the model is trained on (TSV, `gene_name` column); a short panel trains a
    /// short-context model. With --corpus it defaults to the corpus' panel (and must equal it).
    #[arg(long, required_unless_present = "corpus")]
    pub genes: Option<PathBuf>,
    /// Output folder: checkpoints, metrics.jsonl, and the latest weights in the released layout.
    #[arg(long)]
    pub out: PathBuf,
    /// Model size: tiny, 3m, 10m or 100m (default tiny).
    #[arg(long, conflicts_with_all = ["hidden", "layers", "heads", "intermediate"])]
    pub preset: Option<Preset>,
    /// Hidden size (explicit shape instead of a preset).
    #[arg(long)]
    pub hidden: Option<usize>,
    /// Number of blocks.
    #[arg(long)]
    pub layers: Option<usize>,
    /// Attention heads.
    #[arg(long)]
    pub heads: Option<usize>,
    /// SwiGLU width.
    #[arg(long)]
    pub intermediate: Option<usize>,
    /// Optimizer updates (default 1000).
    #[arg(long)]
    pub steps: Option<u64>,
    /// Cells per micro-batch (default 8).
    #[arg(long)]
    pub batch_size: Option<usize>,
    /// Micro-batches per update (effective batch = batch size × this; default 1).
    #[arg(long)]
    pub grad_accum: Option<usize>,
    /// Peak learning rate (default 0.0003).
    #[arg(long)]
    pub lr: Option<f64>,
    /// Seed of initialization, split, data order and RDA examples (default 0).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Validation every N updates (default 100).
    #[arg(long)]
    pub val_every: Option<u64>,
    /// Resumable checkpoint every N updates (default 100).
    #[arg(long)]
    pub checkpoint_every: Option<u64>,
    /// --corpus: training cells shuffled together (the cells held in memory), default 10000;
    /// with at least the corpus' training cells the order is that of --data.
    #[arg(long)]
    pub shuffle_buffer: Option<usize>,
    /// Data-parallel peers: devices 0..N (CPU: N peers sharing the processor); needs
    /// --grad-accum ≥ N.
    #[arg(long)]
    pub data_parallel: Option<usize>,
    /// Compute precision: f32, or bf16 (mixed: bf16 projections, f32 master weights,
    /// optimizer state, norms, softmax statistics and loss). Default f32.
    #[arg(long)]
    pub precision: Option<aido_model::Precision>,
    /// TOML file with any `aido_train::TrainConfig` field (flags override it).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Continue the run in --out from its latest checkpoint (flags not given take the saved
    /// run's values; flags that contradict it are refused).
    #[arg(long)]
    pub resume: bool,
    #[command(flatten)]
    pub read: super::ReadArgs,
    /// Compute device: cpu, cuda (build feature `cuda`) or wgpu (feature `wgpu`).
    #[arg(long, default_value = "cpu")]
    pub device: DeviceKind,
    /// Experimental: nodes (processes, one device each) of a multi-node run; start
    /// `aido orchestrator` first and this command on every node with its --node-rank.
    #[arg(long, requires_all = ["node_rank", "orchestrator", "bind"])]
    pub nodes: Option<u32>,
    /// This node's rank, 0..--nodes.
    #[arg(long, requires = "nodes")]
    pub node_rank: Option<u32>,
    /// HOST:PORT of the orchestrator (`aido orchestrator --port PORT`).
    #[arg(long, requires = "nodes")]
    pub orchestrator: Option<String>,
    /// HOST:PORT the other nodes reach this node at (it listens on PORT on all interfaces).
    #[arg(long, requires = "nodes")]
    pub bind: Option<String>,
    /// Seconds a node waits for the others at each exchange before it stops the run.
    #[arg(long, default_value_t = 600, requires = "nodes")]
    pub node_timeout: u64,
}

impl PretrainArgs {
    /// The multi-node settings, when --nodes is given.
    pub fn node_config(&self) -> Option<aido_train::NodeConfig> {
        Some(aido_train::NodeConfig {
            nodes: self.nodes?,
            rank: self.node_rank?,
            orchestrator: self.orchestrator.clone()?,
            bind: self.bind.clone()?,
            timeout: std::time::Duration::from_secs(self.node_timeout),
        })
    }

    /// The flags that override the configuration (defaults, or with `--resume` the saved
    /// run's, then `--config`).
    fn settings(&self) -> TrainSettings {
        TrainSettings {
            preset: self.preset,
            hidden: self.hidden,
            layers: self.layers,
            heads: self.heads,
            intermediate: self.intermediate,
            steps: self.steps,
            batch_size: self.batch_size,
            grad_accum: self.grad_accum,
            lr: self.lr,
            seed: self.seed,
            val_every: self.val_every,
            checkpoint_every: self.checkpoint_every,
            data_parallel: self.data_parallel,
            shuffle_buffer: self.shuffle_buffer,
            precision: self.precision,
        }
    }

    fn corpus(&self) -> Result<CorpusSource> {
        Ok(match &self.corpus {
            Some(dir) => CorpusSource::Packed {
                dir: dir.clone(),
                genes: self.genes.clone(),
            },
            None => CorpusSource::Files {
                paths: self.data.clone(),
                genes: self
                    .genes
                    .clone()
                    .context("--genes is required with --data")?,
                read: self.read.read_options(),
                gene_id: self.read.gene_id,
            },
        })
    }
}

/// Runs `aido pretrain`.
pub(crate) fn cmd_pretrain(a: &PretrainArgs) -> Result<Summary> {
    a.device.ensure_compiled()?;
    let cfg = resolve_config(&a.out, a.config.as_deref(), a.resume, &a.settings())
        .map_err(pipeline_error)?;
    let (genes, corpus) = open_corpus(&a.corpus()?, &mut |e| {
        if let aido_pipeline::Event::Note(n) = e {
            eprintln!("{n}");
        }
    })
    .map_err(pipeline_error)?;
    let steps = cfg.steps;
    let job = PretrainJob {
        config: cfg,
        corpus,
        genes,
        out: a.out.clone(),
        resume: a.resume,
        nodes: a.node_config(),
    };
    let t = "{spinner} [{bar:30}] {pos}/{len} updates {msg} (eta {eta})";
    let pb = super::render::bar(!super::quiet(), steps, t);
    let summary = pretrain_on(a.device, job, &mut |e| {
        match &e {
            Event::Started { first_step, .. } => pb.set_position(first_step - 1),
            Event::Step(m) => {
                pb.set_position(m.step);
                pb.set_message(format!(
                    "loss {:.4} lr {:.2e} {:.1} cells/s",
                    m.train_loss, m.lr, m.cells_per_s
                ));
            }
            Event::Checkpoint { .. } => {}
        }
        if let Some(lines) = event_lines(&e) {
            pb.println(lines);
        }
    })
    .map_err(pipeline_error)
    .with_context(|| format!("pretraining into {}", a.out.display()))?;
    pb.finish_and_clear();
    outln!(
        "done: {} updates, validation loss {:.4}; weights in {} (aido embed --model {}), resumable state in {}",
        summary.steps,
        summary.final_val_loss,
        a.out.display(),
        a.out.display(),
        summary.checkpoint.display()
    );
    Ok(summary)
}
