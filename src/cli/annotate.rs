//! `aido finetune` and `aido predict`: flags → [`aido_pipeline::annotate`].

use std::path::PathBuf;

use aido_model::Pooling;
use aido_model::burn::backend::Autodiff;
use aido_model::burn::prelude::Backend;
use aido_pipeline::annotate::{FinetuneOptions, FinetuneReport, SplitChoice, finetune_file};
use aido_pipeline::{Event, ModelSource, OnDevice, Pretrained, on_device};
use aido_tasks::ClassWeights;
use anyhow::Result;
use clap::Args;

use super::{ComputeArgs, EventPrinter, InputArgs, pipeline_error};

/// Flags of `aido finetune`.
#[derive(Args, Clone)]
pub(crate) struct FinetuneArgs {
    /// The pretrained model: a checkpoint folder or a Hugging Face id ORG/NAME[@REVISION]
    /// (as `aido embed --model`).
    #[arg(long)]
    pub model: ModelSource,
    #[command(flatten)]
    pub input: InputArgs,
    /// obs column with the cell types.
    #[arg(long)]
    pub label_column: String,
    /// Output folder: report.json, confusion.png, classifier/, checkpoints/.
    #[arg(long)]
    pub out: PathBuf,
    /// obs column holding train / val / test for every cell (instead of a random split).
    #[arg(long, conflicts_with_all = ["val_fraction", "test_fraction"])]
    pub split_column: Option<String>,
    /// Fraction of every class held out for validation (model selection).
    #[arg(long, default_value_t = 0.1)]
    pub val_fraction: f64,
    /// Fraction of every class held out for the test.
    #[arg(long, default_value_t = 0.2)]
    pub test_fraction: f64,
    /// Seed of the split, the head's initialization, the epoch order and dropout.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Gene vocabulary TSV of the checkpoint (default: MODEL/genes.tsv, else the built-in
    /// AIDO.Cell list for a 19,266-position model).
    #[arg(long)]
    pub genes: Option<PathBuf>,
    /// What of the backbone trains: frozen (head only), last:K (the paper: last:1), full,
    /// lora:R[:ALPHA].
    #[arg(long, default_value = "last:1")]
    pub trainable: String,
    /// Pooling of the encoder output: max (over genes, the paper's head), mean, present-mean.
    #[arg(long, default_value = "max")]
    pub pooling: Pooling,
    /// Width of the head's hidden layer.
    #[arg(long, default_value_t = 256)]
    pub head_hidden: usize,
    /// Dropout after the head's ReLU.
    #[arg(long, default_value_t = 0.0)]
    pub dropout: f64,
    /// Leave out the head's non-affine batch norm (scFoundation's head; on by default: it
    /// removes the component all cells' pooled embeddings share, which otherwise dominates
    /// them and stalls the head — see docs/BENCHMARKS.md).
    #[arg(long)]
    pub no_batch_norm: bool,
    /// Class weights of the loss: capped:CAP (min(N_max/N_i, CAP)), balanced, none.
    #[arg(long, default_value = "capped:50")]
    pub class_weights: ClassWeights,
    /// Maximum epochs.
    #[arg(long, default_value_t = 20)]
    pub epochs: usize,
    /// Cells per update.
    #[arg(long, default_value_t = 16)]
    pub batch_size: usize,
    /// Learning rate (AdamW, constant).
    #[arg(long, default_value_t = 1e-3)]
    pub lr: f64,
    /// Stop after this many epochs without a better validation macro-F1 (0: never).
    #[arg(long, default_value_t = 5)]
    pub patience: usize,
    /// Also run the expression baselines (logistic regression and 10-NN on 50 PCs) on the
    /// same split.
    #[arg(long)]
    pub baselines: bool,
    #[command(flatten)]
    pub compute: ComputeArgs,
    /// Continue the run in OUTDIR from its last epoch checkpoint (same flags and data).
    #[arg(long)]
    pub resume: bool,
    /// Recompute the frozen part of the backbone every epoch instead of caching it.
    #[arg(long)]
    pub no_cache: bool,
    /// Largest frozen-prefix cache in GiB (default: half of the available memory); a larger
    /// one is not built and every epoch recomputes the backbone.
    #[arg(long)]
    pub cache_limit_gb: Option<f64>,
}

struct FinetuneRun<'a> {
    a: &'a FinetuneArgs,
    pretrained: Pretrained,
    options: FinetuneOptions,
    verbose: bool,
}

impl OnDevice for FinetuneRun<'_> {
    type Output = FinetuneReport;
    fn run<B: Backend>(self, device: B::Device) -> aido_pipeline::Result<FinetuneReport> {
        let a = self.a;
        let mut printer = EventPrinter::new(self.verbose, "finetune");
        let t = "{msg} [{bar:30}] {pos}/{len} cells ({per_sec}, eta {eta})";
        let pb = super::render::bar(self.verbose, 0, t);
        let epochs = self.options.epochs;
        let r = finetune_file::<Autodiff<B>>(
            &self.pretrained,
            &a.input.input,
            &a.input.read_options(),
            &a.label_column,
            &a.out,
            &self.options,
            &device,
            &mut |e| match e {
                Event::Finetune(e) => {
                    use aido_tasks::Event as F;
                    if let Some(line) = aido_pipeline::annotate::event_line(&e) {
                        pb.println(line);
                    }
                    let (done, total, msg) = match e {
                        F::Caching { done, total } => {
                            (done, total, "caching the frozen blocks".into())
                        }
                        F::Update {
                            epoch,
                            done,
                            total,
                            loss,
                        } => (
                            done,
                            total,
                            format!("epoch {epoch}/{epochs} loss {loss:.4}"),
                        ),
                        F::Epoch(_) | F::Resumed { .. } => return,
                    };
                    pb.set_length(total as u64);
                    pb.set_position(done as u64);
                    pb.set_message(msg);
                }
                Event::Note(n) if !self.verbose && n.starts_with("note:") => {}
                Event::Note(n) if !self.verbose && n.starts_with("baselines on") => {}
                Event::Progress { .. } => {}
                other => printer.show(other),
            },
        );
        pb.finish_and_clear();
        r
    }
}

/// Runs `aido finetune`.
pub(crate) fn cmd_finetune(a: &FinetuneArgs, verbose: bool) -> Result<()> {
    a.compute.device.ensure_compiled()?;
    let options = FinetuneOptions {
        trainable: a.trainable.clone(),
        pooling: a.pooling,
        head_hidden: a.head_hidden,
        dropout: a.dropout,
        batch_norm: !a.no_batch_norm,
        class_weights: a.class_weights,
        split: match &a.split_column {
            Some(c) => SplitChoice::Column(c.clone()),
            None => SplitChoice::Fractions {
                val: a.val_fraction,
                test: a.test_fraction,
            },
        },
        seed: a.seed,
        epochs: a.epochs,
        batch_size: a.batch_size,
        lr: a.lr,
        patience: a.patience,
        baselines: a.baselines,
        precision: a.compute.precision,
        resume: a.resume,
        cache: !a.no_cache,
        cache_limit: a.cache_limit_gb.map(|g| (g * 1024f64.powi(3)) as u64),
        tokenize: a.input.options()?,
    };
    let pretrained = super::render::open_model(&a.model, &a.genes, verbose)?;
    let report = on_device(
        a.compute.device,
        FinetuneRun {
            a,
            pretrained,
            options,
            verbose,
        },
    )
    .map_err(pipeline_error)?;
    if verbose {
        outln!(
            "test ({} cells): macro-F1 {:.4}, accuracy {:.4} (best epoch {}); wrote {}/report.json, confusion.png, classifier/",
            report.n_test,
            report.test.macro_f1,
            report.test.accuracy,
            report.best_epoch,
            a.out.display()
        );
        if let Some(b) = &report.baselines {
            for name in ["logreg_pca", "knn_pca"] {
                outln!(
                    "baseline {name}: macro-F1 {:.4}, accuracy {:.4}",
                    b[name]["macro_f1"].as_f64().unwrap_or(f64::NAN),
                    b[name]["accuracy"].as_f64().unwrap_or(f64::NAN)
                );
            }
        }
    }
    Ok(())
}
