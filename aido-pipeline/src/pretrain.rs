//! Read-depth-aware pretraining as `aido pretrain` runs it: the configuration from defaults, a
//! saved run, a TOML file and explicit settings ([`resolve_config`]), the cells from files or
//! a packed corpus ([`open_corpus`]), and the loop on the backend a device names
//! ([`pretrain_on`]; the loop itself is [`aido_train::pretrain()`]).

use std::path::{Path, PathBuf};

use aido_model::{DeviceKind, Precision};
use aido_tokenize::{GeneIdMode, GeneVocab, ReadOptions};
use aido_train::{
    CellCorpus, PackedCorpus, Preset, PretrainJob, Summary, TrainConfig, TrainCorpus,
};
use burn::backend::Autodiff;
use burn::backend::autodiff::checkpoint::strategy::BalancedCheckpointing;

use crate::Event;
use crate::error::{PipelineError, Result};

/// Settings that override the configuration (`None`: keep it). A preset clears an explicit
/// shape; explicit shape fields override the preset's.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TrainSettings {
    /// Model size preset.
    pub preset: Option<Preset>,
    /// Hidden size.
    pub hidden: Option<usize>,
    /// Blocks.
    pub layers: Option<usize>,
    /// Attention heads.
    pub heads: Option<usize>,
    /// SwiGLU width.
    pub intermediate: Option<usize>,
    /// Optimizer updates.
    pub steps: Option<u64>,
    /// Cells per micro-batch.
    pub batch_size: Option<usize>,
    /// Micro-batches per update.
    pub grad_accum: Option<usize>,
    /// Peak learning rate.
    pub lr: Option<f64>,
    /// Seed.
    pub seed: Option<u64>,
    /// Validation every N updates.
    pub val_every: Option<u64>,
    /// Checkpoint every N updates.
    pub checkpoint_every: Option<u64>,
    /// Data-parallel peers.
    pub data_parallel: Option<usize>,
    /// Shuffle buffer of a packed corpus.
    pub shuffle_buffer: Option<usize>,
    /// Compute precision.
    pub precision: Option<Precision>,
}

/// The run's configuration: the defaults (resuming: the saved run's `train_config.json` in
/// `out`), then the TOML file, then `settings`; validated.
pub fn resolve_config(
    out: &Path,
    toml: Option<&Path>,
    resume: bool,
    settings: &TrainSettings,
) -> Result<TrainConfig> {
    let saved = out.join("train_config.json");
    let mut c = match toml {
        Some(p) => TrainConfig::from_toml(p)?,
        None if resume && saved.exists() => {
            let text = std::fs::read_to_string(&saved).map_err(PipelineError::io(&saved))?;
            serde_json::from_str(&text).map_err(|e| {
                PipelineError::input(
                    saved.display(),
                    format!("not a training configuration: {e}"),
                )
            })?
        }
        None => TrainConfig::default(),
    };
    let s = settings;
    if let Some(p) = s.preset {
        c.model.preset = p;
        c.model.hidden = None;
        c.model.layers = None;
        c.model.heads = None;
        c.model.intermediate = None;
    }
    c.model.hidden = s.hidden.or(c.model.hidden);
    c.model.layers = s.layers.or(c.model.layers);
    c.model.heads = s.heads.or(c.model.heads);
    c.model.intermediate = s.intermediate.or(c.model.intermediate);
    c.steps = s.steps.unwrap_or(c.steps);
    c.batch_size = s.batch_size.unwrap_or(c.batch_size);
    c.grad_accum = s.grad_accum.unwrap_or(c.grad_accum);
    c.optim.lr = s.lr.unwrap_or(c.optim.lr);
    c.seed = s.seed.unwrap_or(c.seed);
    c.val_every = s.val_every.unwrap_or(c.val_every);
    c.checkpoint_every = s.checkpoint_every.unwrap_or(c.checkpoint_every);
    c.data_parallel = s.data_parallel.unwrap_or(c.data_parallel);
    c.shuffle_buffer = s.shuffle_buffer.unwrap_or(c.shuffle_buffer);
    c.precision = s.precision.unwrap_or(c.precision);
    c.validate()?;
    Ok(c)
}

/// Where the cells come from.
#[derive(Debug, Clone)]
pub enum CorpusSource {
    /// Raw-count files read into memory, aligned to a gene list.
    Files {
        /// The files.
        paths: Vec<PathBuf>,
        /// The gene list (TSV).
        genes: PathBuf,
        /// Layer and gene column.
        read: ReadOptions,
        /// How gene names are read.
        gene_id: GeneIdMode,
    },
    /// A packed corpus folder, streamed; its panel is the gene list (a given list must equal
    /// it).
    Packed {
        /// The folder.
        dir: PathBuf,
        /// A gene list to check the panel against.
        genes: Option<PathBuf>,
    },
}

/// The run's gene list and cells. What was read is reported as [`Event::Note`]s.
pub fn open_corpus(
    source: &CorpusSource,
    on_event: &mut dyn FnMut(Event),
) -> Result<(GeneVocab, TrainCorpus)> {
    match source {
        CorpusSource::Packed { dir, genes } => {
            let c = PackedCorpus::open(dir)?;
            if let Some(g) = genes {
                let given = GeneVocab::from_tsv(g)?;
                if given.names() != c.genes().names() {
                    return Err(PipelineError::option(
                        "genes",
                        format!(
                            "{} ({} genes) is not the panel of corpus {} ({} genes, its genes.tsv): leave the gene list out or pack the data for this gene list",
                            g.display(),
                            given.len(),
                            dir.display(),
                            c.n_genes()
                        ),
                    ));
                }
            }
            let ix = c.index();
            on_event(Event::Note(format!(
                "{}: packed corpus of {} cells, {} non-zeros in {} shards, {} genes",
                dir.display(),
                ix.n_cells,
                ix.nnz,
                ix.shards.len(),
                c.n_genes()
            )));
            Ok((c.genes().clone(), c.into()))
        }
        CorpusSource::Files {
            paths,
            genes,
            read,
            gene_id,
        } => {
            let vocab = GeneVocab::from_tsv(genes)?;
            let corpus = CellCorpus::load(paths, &vocab, read, *gene_id)?;
            for s in corpus.sets() {
                if let Some(r) = &s.report {
                    on_event(Event::Note(format!(
                        "{}: {} cells; {r}",
                        s.path.display(),
                        s.cells.len()
                    )));
                }
                if s.skipped_empty > 0 {
                    on_event(Event::Note(format!(
                        "{}: {} cells without counts in the gene list were left out",
                        s.path.display(),
                        s.skipped_empty
                    )));
                }
            }
            Ok((vocab, corpus.into()))
        }
    }
}

/// The lines a terminal shows for a training event (start, validation, checkpoint); `None` for
/// the plain updates a progress bar shows instead.
pub fn event_lines(e: &aido_train::Event<'_>) -> Option<String> {
    use aido_train::Event as E;
    match e {
        E::Started {
            first_step,
            steps,
            n_train,
            n_val,
            n_params,
            resumed_from,
            baselines,
        } => {
            let mut text = format!(
                "pretraining: {n_params} parameters, {n_train} training / {n_val} validation cells, updates {first_step}..={steps}{}",
                resumed_from
                    .map(|p| format!(", resumed from {}", p.display()))
                    .unwrap_or_default()
            );
            if let Some(b) = baselines {
                text.push_str(&format!(
                    "\nvalidation baselines (masked MSE): input value {:.4}, zero {:.4}, gene mean {:.4}, cell mean {:.4}",
                    b.input_value, b.zero, b.gene_mean, b.cell_mean
                ));
            }
            Some(text)
        }
        E::Step(m) => m.val_loss.map(|v| {
            format!(
                "update {}: train loss {:.4}, validation loss {v:.4}",
                m.step, m.train_loss
            )
        }),
        E::Checkpoint { step, dir } => Some(format!("update {step}: checkpoint {}", dir.display())),
    }
}

/// Runs [`aido_train::pretrain()`] on the backend `device` names, with `job.config.data_parallel`
/// devices (CPU: peers sharing the processor; CUDA: GPUs 0..N) and activation checkpointing
/// when the configuration asks for it.
pub fn pretrain_on(
    device: DeviceKind,
    job: PretrainJob,
    on_event: &mut dyn FnMut(aido_train::Event<'_>),
) -> Result<Summary> {
    device.ensure_compiled()?;
    let n = job.config.data_parallel;
    Ok(match device {
        DeviceKind::Cpu if job.config.activation_checkpointing => {
            aido_train::pretrain::<Autodiff<aido_model::Cpu, BalancedCheckpointing>>(
                job,
                &vec![Default::default(); n],
                on_event,
            )?
        }
        DeviceKind::Cpu => aido_train::pretrain::<Autodiff<aido_model::Cpu>>(
            job,
            &vec![Default::default(); n],
            on_event,
        )?,
        #[cfg(feature = "cuda")]
        DeviceKind::Cuda => {
            let devices: Vec<_> = (0..n).map(burn::backend::cuda::CudaDevice::new).collect();
            aido_train::pretrain::<Autodiff<aido_model::backend::Cuda>>(job, &devices, on_event)?
        }
        #[cfg(feature = "wgpu")]
        DeviceKind::Wgpu => {
            if n > 1 {
                return Err(PipelineError::option(
                    "data_parallel",
                    "data parallelism with wgpu is not supported here: use cuda or cpu",
                ));
            }
            aido_train::pretrain::<Autodiff<aido_model::backend::Wgpu>>(
                job,
                &[Default::default()],
                on_event,
            )?
        }
        #[allow(unreachable_patterns)]
        other => {
            return Err(aido_model::ModelError::Device(format!(
                "device {other:?} is not compiled in"
            ))
            .into());
        }
    })
}
