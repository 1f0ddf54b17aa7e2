//! The RDA pretraining loop.
//!
//! One update: `batch_size × grad_accum` cells from the data order → RDA examples → for each
//! micro-batch, forward + masked MSE (normalized by the masked positions of the whole update, so
//! the accumulated gradient is that of the full batch) + backward, gradients accumulated
//! (burn's `GradientsAccumulator`) → global-norm clipping → AdamW at the scheduled rate.
//! Validation before the first update, every `val_every` updates and at the end; a resumable
//! checkpoint every `checkpoint_every` updates and at the end, each followed by an export of
//! the weights in the released layout into the output folder (what `aido embed --model`
//! reads).

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Instant;

use aido_model::burn::module::{AutodiffModule, Module};
use aido_model::burn::optim::{GradientsAccumulator, GradientsParams, Optimizer};
use aido_model::burn::tensor::ElementConversion;
use aido_model::burn::tensor::backend::AutodiffBackend;
use aido_model::burn::tensor::backend::Backend;
use aido_model::{AidoCell, AidoCellConfig, save_checkpoint};
use aido_rda::{RdaBatch, masked_mse};
use aido_tokenize::GeneVocab;

use crate::baselines::gene_mean_cells;
use crate::baselines::{Baselines, baselines};
use crate::checkpoint::{self, TrainState, io, write_atomic};
use crate::config::{NodeConfig, TrainConfig, learning_rate};
use crate::data::{
    CellCorpus, CellLookup, Samplers, Split, TrainOrder, VALIDATION_EPOCH, split_cells,
};
use crate::metrics::{MetricsLog, StepMetrics};
use crate::optim::{adamw, clip_global_norm};
use crate::packed::{PackedCorpus, PackedStream};
use crate::{Result, TrainError};

/// The cells of a run: held in memory (`--data`), or streamed from a packed corpus
/// (`--corpus`, see [`crate::packed`]). Both give the same split, validation examples and
/// baselines for the same files; the training order of a packed corpus is bounded by its
/// shuffle buffer (`TrainConfig::shuffle_buffer`).
#[derive(Debug, Clone)]
pub enum TrainCorpus {
    /// All cells in memory.
    Memory(CellCorpus),
    /// Streamed from shards.
    Packed(Box<PackedCorpus>),
}

impl From<CellCorpus> for TrainCorpus {
    fn from(c: CellCorpus) -> Self {
        TrainCorpus::Memory(c)
    }
}

impl From<PackedCorpus> for TrainCorpus {
    fn from(c: PackedCorpus) -> Self {
        TrainCorpus::Packed(Box::new(c))
    }
}

impl TrainCorpus {
    /// Cells.
    pub fn len(&self) -> usize {
        match self {
            TrainCorpus::Memory(c) => c.len(),
            TrainCorpus::Packed(c) => c.len(),
        }
    }

    /// Whether there are no cells (never true for a loaded corpus).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Genes `G` of the gene list.
    pub fn n_genes(&self) -> usize {
        match self {
            TrainCorpus::Memory(c) => c.n_genes(),
            TrainCorpus::Packed(c) => c.n_genes(),
        }
    }
}

/// Where the training cells of each update come from.
enum Stream<'a> {
    Memory(TrainOrder, &'a CellCorpus),
    Packed(PackedStream<'a>),
}

impl Stream<'_> {
    /// The micro-batches of stream positions `start..start + n`.
    fn micro_batches(
        &mut self,
        start: u64,
        n: usize,
        batch_size: usize,
        samplers: &Samplers,
    ) -> Result<Vec<RdaBatch>> {
        match self {
            Stream::Memory(order, corpus) => order
                .take(start, n)
                .chunks(batch_size)
                .map(|c| samplers.batch(*corpus, c))
                .collect(),
            Stream::Packed(s) => {
                let cells = s.take(start, n)?;
                let g = s.n_genes();
                cells
                    .chunks(batch_size)
                    .map(|c| samplers.batch_streamed(g, c))
                    .collect()
            }
        }
    }
}

/// A pretraining run.
pub struct PretrainJob {
    /// The configuration.
    pub config: TrainConfig,
    /// The cells.
    pub corpus: TrainCorpus,
    /// The gene list the corpus is aligned to (written as `OUT/genes.tsv`).
    pub genes: GeneVocab,
    /// The output folder.
    pub out: PathBuf,
    /// Continue the run in `out` from its latest checkpoint (a fresh start when it has none).
    pub resume: bool,
    /// This process' place in a multi-node run (**experimental**, `crate::multinode`); `None`
    /// for a run on one machine.
    pub nodes: Option<NodeConfig>,
}

/// What the loop reports while it runs.
#[derive(Debug)]
pub enum Event<'a> {
    /// Before the first update of this process.
    Started {
        /// The first update this process will do (1 for a fresh run).
        first_step: u64,
        /// The last update.
        steps: u64,
        /// Training / validation cells.
        n_train: usize,
        /// Validation cells.
        n_val: usize,
        /// Trainable parameters.
        n_params: usize,
        /// The checkpoint resumed from.
        resumed_from: Option<&'a Path>,
        /// Validation losses of the trivial predictors (fresh runs).
        baselines: Option<&'a Baselines>,
    },
    /// A metrics line was written.
    Step(&'a StepMetrics),
    /// A checkpoint was written.
    Checkpoint {
        /// Its step.
        step: u64,
        /// Its folder.
        dir: &'a Path,
    },
}

/// How a finished run ended.
#[derive(Debug, Clone)]
pub struct Summary {
    /// Updates done.
    pub steps: u64,
    /// Validation loss after the last update.
    pub final_val_loss: f64,
    /// The last checkpoint folder.
    pub checkpoint: PathBuf,
}

/// Masked MSE sum and masked count of the fixed validation examples.
pub fn validation_loss<B: Backend>(
    model: &AidoCell<B>,
    corpus: &dyn CellLookup,
    samplers: &Samplers,
    val: &[usize],
    batch_size: usize,
    device: &B::Device,
) -> Result<f64> {
    let (mut sq, mut n) = (0.0f64, 0usize);
    for chunk in val.chunks(batch_size.max(1)) {
        let cells: Vec<(usize, u64)> = chunk.iter().map(|&c| (c, VALIDATION_EPOCH)).collect();
        let b = samplers.batch(corpus, &cells)?;
        let (x, t, w) = b.tensors::<B>(device);
        let h = model.bert.forward(x, false)?.last_hidden_state;
        let pred = model
            .head(h)
            .ok_or_else(|| TrainError::Config("the model has no masked-value head".into()))?;
        sq += masked_mse(pred, t, w, 1).into_scalar().elem::<f64>();
        n += b.n_masked;
    }
    Ok(sq / n.max(1) as f64)
}

fn non_finite(step: u64, what: &str, value: f64, last: &Option<PathBuf>) -> TrainError {
    TrainError::NonFinite {
        step,
        what: what.to_string(),
        value,
        last_checkpoint: last.clone(),
    }
}

/// Runs (or resumes) a pretraining job, calling `on` with progress. `devices` holds one device
/// per data-parallel peer (`config.data_parallel` of them); the first also runs validation and
/// holds the model between updates.
pub fn pretrain<B>(
    job: PretrainJob,
    devices: &[B::Device],
    on: &mut dyn FnMut(Event<'_>),
) -> Result<Summary>
where
    B: AutodiffBackend,
    B::InnerBackend: Backend,
{
    let PretrainJob {
        config: cfg,
        corpus,
        genes,
        out,
        resume,
        nodes,
    } = job;
    cfg.validate()?;
    if let Some(nc) = &nodes {
        nc.validate()?;
        if devices.len() > 1 {
            return Err(TrainError::Config(
                "a multi-node run uses one device per node: data_parallel must be 1".into(),
            ));
        }
        if cfg.grad_accum < nc.nodes as usize {
            return Err(TrainError::Config(format!(
                "{} nodes need grad_accum ≥ {} (each node takes at least one micro-batch of every update)",
                nc.nodes, nc.nodes
            )));
        }
    }
    if devices.len() != cfg.data_parallel {
        return Err(TrainError::Config(format!(
            "{} devices given for data_parallel = {}",
            devices.len(),
            cfg.data_parallel
        )));
    }
    let device = &devices[0];
    if corpus.n_genes() != genes.len() {
        return Err(TrainError::Config(format!(
            "the corpus is aligned to {} genes but the gene list has {}",
            corpus.n_genes(),
            genes.len()
        )));
    }
    if let TrainCorpus::Packed(p) = &corpus
        && p.genes().names() != genes.names()
    {
        return Err(TrainError::Data {
            path: p.dir().to_path_buf(),
            detail: "the corpus was packed for another gene list than the run's".into(),
        });
    }
    let model_cfg: AidoCellConfig = cfg.model.resolve(genes.len())?;
    fs::create_dir_all(&out).map_err(io(&out))?;

    // Where to start.
    let resume_dir = if resume {
        checkpoint::latest(&out)?
    } else {
        if let Some(d) = checkpoint::latest(&out)? {
            return Err(TrainError::Config(format!(
                "{} already holds a run (latest checkpoint {}): pass `resume` to continue it, or choose another output folder",
                out.display(),
                d.display()
            )));
        }
        None
    };
    let state = match &resume_dir {
        Some(d) => {
            let s = checkpoint::read_state(d)?;
            if s.config != cfg {
                return Err(TrainError::ConfigMismatch {
                    path: d.join("state.json"),
                    saved: serde_json::to_string(&s.config).unwrap_or_default(),
                    given: serde_json::to_string(&cfg).unwrap_or_default(),
                });
            }
            s
        }
        None => TrainState {
            step: 0,
            cells_seen: 0,
            config: cfg.clone(),
            val_loss: None,
        },
    };
    let cfg_json =
        serde_json::to_vec_pretty(&cfg).map_err(|e| TrainError::Config(e.to_string()))?;
    write_atomic(&out.join("train_config.json"), &cfg_json)?;
    genes.write_tsv(out.join("genes.tsv"))?;

    // Model and optimizer (restored with their parameter ids on resume).
    B::seed(device, cfg.seed);
    let mut model: AidoCell<B> = model_cfg.init::<B>(true, device);
    let mut optim = adamw::<B, AidoCell<B>>(&cfg.optim);
    if let Some(d) = &resume_dir {
        model = checkpoint::load_model::<B, _>(d, model, device)?;
        optim = checkpoint::load_optim::<B, _, _>(d, optim, device)?;
    }
    model.bert.set_precision(cfg.precision)?;

    let node = join_node::<B>(&nodes, &model, state.step, device)?;
    // Data parallelism on this machine: persistent replicas, one per device (peer 0's replica is
    // read back for validation and checkpoints).
    let mut replicas = make_replicas::<B, _>(&model, &optim, devices)?;
    let Split { train, val } =
        split_cells(corpus.len(), cfg.val_fraction, cfg.max_val_cells, cfg.seed);
    let metrics_path = out.join("metrics.jsonl");
    let mut log = match &resume_dir {
        Some(_) => MetricsLog::resume(&metrics_path, state.step)?,
        None => MetricsLog::create(&metrics_path)?,
    };
    // A streamed corpus holds in memory only the validation cells and those the baselines
    // use, read once from the shards.
    let subset = match &corpus {
        TrainCorpus::Memory(_) => None,
        TrainCorpus::Packed(p) => {
            let mut ids = val.clone();
            if resume_dir.is_none() {
                ids.extend(gene_mean_cells(train.iter().copied(), train.len()));
            }
            Some(p.gather(&ids)?)
        }
    };
    let (lookup, samplers, mut stream): (&dyn CellLookup, Samplers, Stream<'_>) =
        match (&corpus, &subset) {
            (TrainCorpus::Memory(c), _) => (
                c,
                c.samplers(cfg.rda, cfg.seed)?,
                Stream::Memory(TrainOrder::new(train.clone(), cfg.seed), c),
            ),
            (TrainCorpus::Packed(p), Some(sub)) => (
                sub,
                p.samplers(cfg.rda, cfg.seed)?,
                Stream::Packed(p.stream(&val, cfg.seed, cfg.shuffle_buffer)),
            ),
            (TrainCorpus::Packed(_), None) => {
                return Err(TrainError::Config("packed corpus without its cells".into()));
            }
        };
    let base = if resume_dir.is_none() {
        let b = baselines(lookup, &samplers, &train, &val)?;
        let json = serde_json::to_vec_pretty(&b).map_err(|e| TrainError::Config(e.to_string()))?;
        write_atomic(&out.join("baselines.json"), &json)?;
        Some(b)
    } else {
        None
    };
    let n_train = train.len();
    drop(train);
    on(Event::Started {
        first_step: state.step + 1,
        steps: cfg.steps,
        n_train,
        n_val: val.len(),
        n_params: model.num_params(),
        resumed_from: resume_dir.as_deref(),
        baselines: base.as_ref(),
    });

    let mut last_ckpt = resume_dir.clone();
    let mut val_loss = state.val_loss;
    let mut cells_seen = state.cells_seen;
    let validate = |model: &AidoCell<B>, step: u64, last: &Option<PathBuf>| -> Result<f64> {
        let v = validation_loss(
            &model.valid(),
            lookup,
            &samplers,
            &val,
            cfg.batch_size,
            device,
        )?;
        if v.is_finite() {
            Ok(v)
        } else {
            Err(non_finite(step, "validation loss", v, last))
        }
    };
    // Validation of the initial model (logged with update 1's training loss as step 0).
    let mut pending_step0 = if state.step == 0 {
        Some(validate(&model, 0, &last_ckpt)?)
    } else {
        None
    };
    let cps = cfg.cells_per_step();
    for step in state.step + 1..=cfg.steps {
        let t0 = Instant::now();
        let micro = stream.micro_batches(cells_seen, cps, cfg.batch_size, &samplers)?;
        let lr = learning_rate(&cfg.optim, step, cfg.steps);
        let (loss_sum, grad_norm);
        (model, optim, loss_sum, grad_norm) = if let Some(node) = &node {
            node_update(node, model, optim, &micro, lr, cfg.optim.clip_norm)
                .map_err(|e| with_checkpoint(e, &last_ckpt))?
        } else if let Some(r) = &mut replicas {
            let (l, g) = replica_update(r, micro, lr, cfg.optim.clip_norm)?;
            (model, optim, l, g)
        } else {
            single_update(model, optim, &micro, lr, cfg.optim.clip_norm, device)?
        };
        if !loss_sum.is_finite() {
            return Err(non_finite(step, "training loss", loss_sum, &last_ckpt));
        }
        if !grad_norm.is_finite() {
            return Err(non_finite(step, "gradient norm", grad_norm, &last_ckpt));
        }
        cells_seen += cps as u64;
        let secs = t0.elapsed().as_secs_f64();

        if let Some(v0) = pending_step0.take() {
            let m0 = StepMetrics {
                step: 0,
                train_loss: loss_sum,
                val_loss: Some(v0),
                lr: 0.0,
                grad_norm,
                cells_per_s: 0.0,
                cells_seen: 0,
            };
            log.write(&m0)?;
            on(Event::Step(&m0));
        }
        let is_last = step == cfg.steps;
        let validating = step % cfg.val_every == 0 || is_last;
        let checkpointing = step % cfg.checkpoint_every == 0 || is_last;
        if let Some(r) = &replicas
            && (validating || checkpointing)
        {
            (model, optim) = snapshot(r)?;
        }
        let this_val = if validating {
            let v = validate(&model, step, &last_ckpt)?;
            val_loss = Some(v);
            Some(v)
        } else {
            None
        };
        if step % cfg.log_every == 0 || this_val.is_some() || is_last {
            let m = StepMetrics {
                step,
                train_loss: loss_sum,
                val_loss: this_val,
                lr,
                grad_norm,
                cells_per_s: cps as f64 / secs.max(1e-9),
                cells_seen,
            };
            log.write(&m)?;
            on(Event::Step(&m));
        }
        if checkpointing {
            let st = TrainState {
                step,
                cells_seen,
                config: cfg.clone(),
                val_loss,
            };
            let dir = checkpoint::save::<B, _, _>(&out, &model, &optim, &st, cfg.keep_checkpoints)?;
            save_checkpoint(&model, &model_cfg, &out)?;
            on(Event::Checkpoint { step, dir: &dir });
            last_ckpt = Some(dir);
        }
    }
    let checkpoint = last_ckpt.ok_or_else(|| {
        TrainError::Config(format!(
            "{} was already complete ({} steps): nothing to do",
            out.display(),
            cfg.steps
        ))
    })?;
    Ok(Summary {
        steps: cfg.steps,
        final_val_loss: val_loss.unwrap_or(f64::NAN),
        checkpoint,
    })
}

type Updated<B, O> = (AidoCell<B>, O, f64, f64);

/// Names the last good checkpoint in a multi-node error.
fn with_checkpoint(e: TrainError, last: &Option<PathBuf>) -> TrainError {
    match e {
        TrainError::Node { detail, .. } => TrainError::Node {
            detail,
            last_checkpoint: last.clone(),
        },
        e => e,
    }
}

#[cfg(feature = "collective")]
type MaybeNode<B> = crate::multinode::Node<B>;
#[cfg(not(feature = "collective"))]
type MaybeNode<B> = std::marker::PhantomData<B>;

/// Joins the multi-node run (when `nodes` is given) and checks that every node starts from the
/// same weights.
#[cfg(feature = "collective")]
fn join_node<B: AutodiffBackend>(
    nodes: &Option<NodeConfig>,
    model: &AidoCell<B>,
    step: u64,
    device: &B::Device,
) -> Result<Option<MaybeNode<B>>> {
    let Some(nc) = nodes else { return Ok(None) };
    let node = crate::multinode::Node::<B>::join(nc, device)?;
    node.check_identical(model, step)?;
    Ok(Some(node))
}

#[cfg(not(feature = "collective"))]
fn join_node<B: AutodiffBackend>(
    nodes: &Option<NodeConfig>,
    _model: &AidoCell<B>,
    _step: u64,
    _device: &B::Device,
) -> Result<Option<MaybeNode<B>>> {
    match nodes {
        None => Ok(None),
        Some(_) => Err(TrainError::Config(
            "multi-node training needs aido-train's `collective` feature".into(),
        )),
    }
}

#[cfg(feature = "collective")]
fn node_update<B, O>(
    node: &MaybeNode<B>,
    model: AidoCell<B>,
    optim: O,
    micro: &[RdaBatch],
    lr: f64,
    clip_norm: f64,
) -> Result<Updated<B, O>>
where
    B: AutodiffBackend,
    O: Optimizer<AidoCell<B>, B>,
{
    node.update(model, optim, micro, lr, clip_norm)
}

#[cfg(not(feature = "collective"))]
fn node_update<B, O>(
    _node: &MaybeNode<B>,
    _model: AidoCell<B>,
    _optim: O,
    _micro: &[RdaBatch],
    _lr: f64,
    _clip_norm: f64,
) -> Result<Updated<B, O>>
where
    B: AutodiffBackend,
    O: Optimizer<AidoCell<B>, B>,
{
    Err(TrainError::Config(
        "multi-node training needs aido-train's `collective` feature".into(),
    ))
}

/// Forward, masked MSE normalized by `total_masked` (the masked positions of the whole update),
/// backward: the micro-batch's loss contribution and gradients.
pub(crate) fn micro_step<B: AutodiffBackend>(
    model: &AidoCell<B>,
    b: &RdaBatch,
    total_masked: usize,
    device: &B::Device,
) -> Result<(f64, GradientsParams)> {
    let (x, t, w) = b.tensors::<B>(device);
    let h = model.bert.forward(x, false)?.last_hidden_state;
    let pred = model
        .head(h)
        .ok_or_else(|| TrainError::Config("the model has no masked-value head".into()))?;
    let loss = masked_mse(pred, t, w, total_masked);
    let lv = loss.clone().into_scalar().elem::<f64>();
    Ok((lv, GradientsParams::from_grads(loss.backward(), model)))
}

/// One update on one device: accumulate the micro-batches, clip, step. A non-finite loss or
/// gradient norm is returned *without* stepping, for the caller to report.
fn single_update<B, O>(
    model: AidoCell<B>,
    mut optim: O,
    micro: &[RdaBatch],
    lr: f64,
    clip_norm: f64,
    device: &B::Device,
) -> Result<Updated<B, O>>
where
    B: AutodiffBackend,
    O: Optimizer<AidoCell<B>, B>,
{
    let total_masked: usize = micro.iter().map(|b| b.n_masked).sum();
    let mut accum = GradientsAccumulator::<AidoCell<B>>::new();
    let mut loss_sum = 0.0f64;
    for b in micro {
        let (lv, grads) = micro_step(&model, b, total_masked, device)?;
        loss_sum += lv;
        if !lv.is_finite() {
            return Ok((model, optim, lv, f64::NAN));
        }
        accum.accumulate::<B>(&model, grads);
    }
    let mut grads = accum.grads();
    let grad_norm = clip_global_norm::<B, _>(&model, &mut grads, clip_norm);
    if !grad_norm.is_finite() {
        return Ok((model, optim, loss_sum, grad_norm));
    }
    let model = optim.step(lr, model, grads);
    Ok((model, optim, loss_sum, grad_norm))
}

#[cfg(feature = "collective")]
type MaybeReplicas<B, O> = crate::parallel::Replicas<B, O>;
#[cfg(not(feature = "collective"))]
type MaybeReplicas<B, O> = std::marker::PhantomData<(B, O)>;

/// Persistent replicas when there is more than one device.
#[cfg(feature = "collective")]
fn make_replicas<B, O>(
    model: &AidoCell<B>,
    optim: &O,
    devices: &[B::Device],
) -> Result<Option<MaybeReplicas<B, O>>>
where
    B: AutodiffBackend,
    O: Optimizer<AidoCell<B>, B> + 'static,
{
    if devices.len() < 2 {
        return Ok(None);
    }
    crate::parallel::Replicas::new(model, optim, devices).map(Some)
}

#[cfg(not(feature = "collective"))]
fn make_replicas<B, O>(
    _model: &AidoCell<B>,
    _optim: &O,
    devices: &[B::Device],
) -> Result<Option<MaybeReplicas<B, O>>>
where
    B: AutodiffBackend,
    O: Optimizer<AidoCell<B>, B> + 'static,
{
    if devices.len() < 2 {
        return Ok(None);
    }
    Err(TrainError::Config(
        "data parallelism needs aido-train's `collective` feature".into(),
    ))
}

#[cfg(feature = "collective")]
fn replica_update<B, O>(
    r: &mut MaybeReplicas<B, O>,
    micro: Vec<RdaBatch>,
    lr: f64,
    clip_norm: f64,
) -> Result<(f64, f64)>
where
    B: AutodiffBackend,
    O: Optimizer<AidoCell<B>, B> + 'static,
{
    let s = r.update(micro, lr, clip_norm)?;
    Ok((s.loss, s.grad_norm))
}

#[cfg(not(feature = "collective"))]
fn replica_update<B, O>(
    _r: &mut MaybeReplicas<B, O>,
    _micro: Vec<RdaBatch>,
    _lr: f64,
    _clip_norm: f64,
) -> Result<(f64, f64)> {
    Err(TrainError::Config(
        "data parallelism needs aido-train's `collective` feature".into(),
    ))
}

#[cfg(feature = "collective")]
fn snapshot<B, O>(r: &MaybeReplicas<B, O>) -> Result<(AidoCell<B>, O)>
where
    B: AutodiffBackend,
    O: Optimizer<AidoCell<B>, B> + 'static,
{
    r.snapshot()
}

#[cfg(not(feature = "collective"))]
fn snapshot<B, O>(_r: &MaybeReplicas<B, O>) -> Result<(AidoCell<B>, O)> {
    Err(TrainError::Config(
        "data parallelism needs aido-train's `collective` feature".into(),
    ))
}
