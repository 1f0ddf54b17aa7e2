//! `aido pretrain`: read-depth-aware pretraining from raw counts.

use std::path::PathBuf;

use aido_model::attention::AttentionBackend;
use aido_model::backend::DeviceKind;
use aido_model::burn::backend::Autodiff;
use aido_model::burn::backend::autodiff::checkpoint::strategy::BalancedCheckpointing;
use aido_model::burn::tensor::backend::AutodiffBackend;
use aido_tokenize::ReadOptions;
use aido_train::{
    CellCorpus, Event, PackOptions, PackedCorpus, Preset, PretrainJob, Summary, TrainConfig,
    TrainCorpus, pack, pretrain,
};
use anyhow::{Context, Result, bail};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};

/// Flags of `aido pretrain`. Values given here override `--config`, which overrides the
/// defaults of `aido_train::TrainConfig`.
#[derive(Args, Clone)]
pub(crate) struct PretrainArgs {
    /// Raw-count input (.h5ad, 10x .h5, Matrix Market folder, .csv/.tsv), held in memory;
    /// repeat for several.
    #[arg(
        long = "data",
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
    /// Optimizer updates.
    #[arg(long)]
    pub steps: Option<u64>,
    /// Cells per micro-batch.
    #[arg(long)]
    pub batch_size: Option<usize>,
    /// Micro-batches per update (effective batch = batch size × this).
    #[arg(long)]
    pub grad_accum: Option<usize>,
    /// Peak learning rate.
    #[arg(long)]
    pub lr: Option<f64>,
    /// Seed of initialization, split, data order and RDA examples.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Validation every N updates.
    #[arg(long)]
    pub val_every: Option<u64>,
    /// Resumable checkpoint every N updates.
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
    /// Column of gene symbols in the inputs (h5ad `var` column, or name/id for 10x/mtx).
    #[arg(long)]
    pub gene_column: Option<String>,
    /// How the gene names are read: `symbol`, `ensembl`, `auto` (each name by its shape) or `exact` (exact symbols only, the authors' preprocessing).
    #[arg(long, default_value = "auto")]
    pub gene_id: aido_tokenize::GeneIdMode,
    /// Read `layers/NAME` of every h5ad input instead of X (e.g. `counts` when X holds
    /// log-normalized values).
    #[arg(long)]
    pub layer: Option<String>,
    /// Compute device: cpu, cuda (build feature `cuda`) or wgpu (feature `wgpu`).
    #[arg(long, default_value = "cpu")]
    pub device: DeviceKind,
    /// No progress bar (the metrics log is still written).
    #[arg(long)]
    pub quiet: bool,
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

    /// Defaults (with `--resume`: the saved run's configuration), then the TOML file, then the
    /// flags. So `--resume` alone continues a run; a flag that contradicts the saved run is
    /// refused by the training loop.
    pub fn config(&self) -> Result<TrainConfig> {
        let saved = self.out.join("train_config.json");
        let mut c = match &self.config {
            Some(p) => TrainConfig::from_toml(p)?,
            None if self.resume && saved.exists() => {
                let text = std::fs::read_to_string(&saved)
                    .with_context(|| format!("reading {}", saved.display()))?;
                serde_json::from_str(&text)
                    .with_context(|| format!("{}: not a training configuration", saved.display()))?
            }
            None => TrainConfig::default(),
        };
        if let Some(p) = self.preset {
            c.model.preset = p;
            c.model.hidden = None;
            c.model.layers = None;
            c.model.heads = None;
            c.model.intermediate = None;
        }
        macro_rules! set {
            ($flag:ident => $($field:tt)+) => {
                if let Some(v) = self.$flag {
                    c.$($field)+ = v;
                }
            };
        }
        if self.hidden.is_some() {
            c.model.hidden = self.hidden;
        }
        if self.layers.is_some() {
            c.model.layers = self.layers;
        }
        if self.heads.is_some() {
            c.model.heads = self.heads;
        }
        if self.intermediate.is_some() {
            c.model.intermediate = self.intermediate;
        }
        set!(steps => steps);
        set!(batch_size => batch_size);
        set!(grad_accum => grad_accum);
        set!(lr => optim.lr);
        set!(seed => seed);
        set!(val_every => val_every);
        set!(checkpoint_every => checkpoint_every);
        set!(data_parallel => data_parallel);
        set!(shuffle_buffer => shuffle_buffer);
        set!(precision => precision);
        c.validate()?;
        Ok(c)
    }
}

/// Runs `aido pretrain`.
pub(crate) fn cmd_pretrain(a: &PretrainArgs) -> Result<Summary> {
    a.device.ensure_compiled()?;
    let cfg = a.config()?;
    let n = cfg.data_parallel;
    match a.device {
        DeviceKind::Cpu if cfg.activation_checkpointing => run::<
            Autodiff<aido_model::Cpu, BalancedCheckpointing>,
        >(
            a, cfg, vec![Default::default(); n]
        ),
        DeviceKind::Cpu => run::<Autodiff<aido_model::Cpu>>(a, cfg, vec![Default::default(); n]),
        #[cfg(feature = "cuda")]
        DeviceKind::Cuda => {
            let devices = (0..n)
                .map(aido_model::burn::backend::cuda::CudaDevice::new)
                .collect();
            run::<Autodiff<aido_model::backend::Cuda>>(a, cfg, devices)
        }
        #[cfg(feature = "wgpu")]
        DeviceKind::Wgpu => {
            if n > 1 {
                bail!("--data-parallel with wgpu is not supported here: use cuda or cpu");
            }
            run::<Autodiff<aido_model::backend::Wgpu>>(a, cfg, vec![Default::default()])
        }
        #[allow(unreachable_patterns)]
        other => bail!("device {other:?} is not compiled in"),
    }
}

/// The run's gene list and cells: `--data` read into memory, or `--corpus` opened for
/// streaming (its panel is the gene list; `--genes`, when given, must name the same genes).
fn load_corpus(a: &PretrainArgs) -> Result<(aido_tokenize::GeneVocab, TrainCorpus)> {
    if let Some(dir) = &a.corpus {
        let c = PackedCorpus::open(dir)?;
        if let Some(g) = &a.genes {
            let given = aido_tokenize::GeneVocab::from_tsv(g)?;
            if given.names() != c.genes().names() {
                bail!(
                    "--genes {} ({} genes) is not the panel of corpus {} ({} genes, its genes.tsv): leave --genes out or pack the data for this gene list",
                    g.display(),
                    given.len(),
                    dir.display(),
                    c.n_genes()
                );
            }
        }
        let ix = c.index();
        eprintln!(
            "{}: packed corpus of {} cells, {} non-zeros in {} shards, {} genes",
            dir.display(),
            ix.n_cells,
            ix.nnz,
            ix.shards.len(),
            c.n_genes()
        );
        return Ok((c.genes().clone(), c.into()));
    }
    let Some(genes_path) = &a.genes else {
        bail!("--genes is required with --data");
    };
    let genes = aido_tokenize::GeneVocab::from_tsv(genes_path)?;
    let read = ReadOptions {
        gene_column: a.gene_column.clone(),
        layer: a.layer.clone(),
    };
    let corpus = CellCorpus::load(&a.data, &genes, &read, a.gene_id)?;
    for s in corpus.sets() {
        if let Some(r) = &s.report {
            eprintln!("{}: {} cells; {r}", s.path.display(), s.cells.len());
        }
        if s.skipped_empty > 0 {
            eprintln!(
                "{}: {} cells without counts in the gene list were left out",
                s.path.display(),
                s.skipped_empty
            );
        }
    }
    Ok((genes, corpus.into()))
}

/// Flags of `aido pack`.
#[derive(Args, Clone)]
pub(crate) struct PackArgs {
    /// Raw-count input (.h5ad, 10x .h5, Matrix Market folder, .csv/.tsv); repeat for several.
    #[arg(long = "data", required = true)]
    pub data: Vec<PathBuf>,
    /// The gene list to align to (TSV, `gene_name` column): the panel of the models trained on
    /// the corpus.
    #[arg(long)]
    pub genes: PathBuf,
    /// The corpus folder to write (must not exist).
    #[arg(long)]
    pub out: PathBuf,
    /// Cells per shard.
    #[arg(long, default_value_t = 10_000)]
    pub cells_per_shard: usize,
    /// Read `layers/NAME` of every h5ad input instead of X (e.g. `counts`).
    #[arg(long)]
    pub layer: Option<String>,
    /// Column of gene symbols in the inputs (h5ad `var` column, or name/id for 10x/mtx).
    #[arg(long)]
    pub gene_column: Option<String>,
    /// How the gene names are read: `symbol`, `ensembl`, `auto` or `exact`.
    #[arg(long, default_value = "auto")]
    pub gene_id: aido_tokenize::GeneIdMode,
}

/// Runs `aido pack`.
pub(crate) fn cmd_pack(a: &PackArgs) -> Result<()> {
    let genes = aido_tokenize::GeneVocab::from_tsv(&a.genes)?;
    let opts = PackOptions {
        cells_per_shard: a.cells_per_shard,
        read: ReadOptions {
            gene_column: a.gene_column.clone(),
            layer: a.layer.clone(),
        },
        gene_id: a.gene_id,
    };
    let t0 = std::time::Instant::now();
    let ix = pack(&a.data, &genes, &opts, &a.out, &mut |f| {
        eprintln!("{}: {} cells; {}", f.path.display(), f.cells, f.alignment);
        if f.skipped_empty > 0 {
            eprintln!(
                "{}: {} cells without counts in the gene list were left out",
                f.path.display(),
                f.skipped_empty
            );
        }
    })
    .with_context(|| format!("packing into {}", a.out.display()))?;
    let secs = t0.elapsed().as_secs_f64();
    outln!(
        "packed {} cells ({} non-zeros, {} genes) into {} shards in {}: {:.0} cells/s (aido pretrain --corpus {})",
        ix.n_cells,
        ix.nnz,
        ix.genes.len(),
        ix.shards.len(),
        a.out.display(),
        ix.n_cells as f64 / secs.max(1e-9),
        a.out.display()
    );
    Ok(())
}

fn run<B>(a: &PretrainArgs, cfg: TrainConfig, devices: Vec<B::Device>) -> Result<Summary>
where
    B: AutodiffBackend + AttentionBackend,
    B::InnerBackend: AttentionBackend,
{
    let (genes, corpus) = load_corpus(a)?;
    let steps = cfg.steps;
    let job = PretrainJob {
        config: cfg,
        corpus,
        genes,
        out: a.out.clone(),
        resume: a.resume,
        nodes: a.node_config(),
    };
    let pb = if a.quiet {
        ProgressBar::hidden()
    } else {
        let pb = ProgressBar::new(steps);
        if let Ok(style) = ProgressStyle::with_template(
            "{spinner} [{bar:30}] {pos}/{len} updates {msg} (eta {eta})",
        ) {
            pb.set_style(style.progress_chars("=> "));
        }
        pb
    };
    let summary = pretrain::<B>(job, &devices, &mut |e| match e {
        Event::Started {
            first_step,
            steps,
            n_train,
            n_val,
            n_params,
            resumed_from,
            baselines,
        } => {
            pb.set_position(first_step - 1);
            pb.println(format!(
                "pretraining: {n_params} parameters, {n_train} training / {n_val} validation cells, updates {first_step}..={steps}{}",
                resumed_from
                    .map(|p| format!(", resumed from {}", p.display()))
                    .unwrap_or_default()
            ));
            if let Some(b) = baselines {
                pb.println(format!(
                    "validation baselines (masked MSE): input value {:.4}, zero {:.4}, gene mean {:.4}, cell mean {:.4}",
                    b.input_value, b.zero, b.gene_mean, b.cell_mean
                ));
            }
        }
        Event::Step(m) => {
            pb.set_position(m.step);
            pb.set_message(format!(
                "loss {:.4} lr {:.2e} {:.1} cells/s",
                m.train_loss, m.lr, m.cells_per_s
            ));
            if let Some(v) = m.val_loss {
                pb.println(format!(
                    "update {}: train loss {:.4}, validation loss {v:.4}",
                    m.step, m.train_loss
                ));
            }
        }
        Event::Checkpoint { step, dir } => {
            pb.println(format!("update {step}: checkpoint {}", dir.display()));
        }
    })
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

/// Flags of `aido orchestrator`.
#[derive(Args, Clone)]
pub(crate) struct OrchestratorArgs {
    /// Port to listen on (all interfaces); the nodes pass `--orchestrator HOST:PORT`.
    #[arg(long)]
    pub port: u16,
}

/// Runs `aido orchestrator` until it is interrupted (Ctrl-C / SIGTERM).
pub(crate) fn cmd_orchestrator(a: &OrchestratorArgs) -> Result<()> {
    // burn's orchestrator logs a failed bind and returns: check the port first, for a clear
    // error.
    std::net::TcpListener::bind(("0.0.0.0", a.port))
        .with_context(|| format!("the orchestrator cannot listen on port {}", a.port))?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the orchestrator's runtime")?;
    eprintln!(
        "orchestrator listening on port {} (experimental multi-node training; Ctrl-C stops it)",
        a.port
    );
    rt.block_on(burn_collective::start_global_orchestrator(a.port));
    Ok(())
}
