//! `aido predict`: flags → [`aido_pipeline::annotate::predict_file`].

use std::path::PathBuf;

use aido_model::burn::prelude::Backend;
use aido_pipeline::annotate::{PredictOptions, PredictReport, predict_file};
use aido_pipeline::{Event, OnDevice, on_device};
use anyhow::Result;
use clap::Args;

use super::{ComputeArgs, EventPrinter, InputArgs, pipeline_error};

/// Flags of `aido predict`.
#[derive(Args, Clone)]
pub(crate) struct PredictArgs {
    /// Classifier folder written by `aido finetune` (OUTDIR/classifier).
    #[arg(long)]
    pub model: PathBuf,
    #[command(flatten)]
    pub input: InputArgs,
    /// Output .h5ad: the whole input (h5ad) plus obs/aido_cell_type,
    /// obs/aido_cell_type_confidence, obsm/aido_cell_type_proba, uns/aido_cell_type_classes.
    #[arg(long)]
    pub output: PathBuf,
    /// The prefix of the results (scanpy's key_added; default aido_cell_type): obs/KEY,
    /// obs/KEY_confidence, obsm/KEY_proba, uns/KEY_classes, uns/KEY_model. Existing entries
    /// of those names are replaced, and the run says so.
    #[arg(long, value_name = "KEY")]
    pub key_added: Option<String>,
    /// Cells per forward pass.
    #[arg(long, default_value_t = 16)]
    pub batch_size: usize,
    /// Predict only the first N cells (a trial run on a large file: the output then holds
    /// those cells only, never the whole input).
    #[arg(long, value_name = "N")]
    pub max_cells: Option<usize>,
    #[command(flatten)]
    pub compute: ComputeArgs,
}

struct PredictRun<'a> {
    a: &'a PredictArgs,
    options: PredictOptions,
    verbose: bool,
}

impl OnDevice for PredictRun<'_> {
    type Output = PredictReport;
    fn run<B: Backend>(self, device: B::Device) -> aido_pipeline::Result<PredictReport> {
        let a = self.a;
        let mut events = EventPrinter::new(self.verbose, "predict");
        predict_file::<B>(
            &a.model,
            &a.input.input,
            &a.input.read_options(),
            &a.output,
            &self.options,
            &device,
            &mut |e| match e {
                Event::Aligned(_) => {}
                e => events.show(e),
            },
        )
    }
}

/// Runs `aido predict`.
pub(crate) fn cmd_predict(a: &PredictArgs, verbose: bool) -> Result<usize> {
    a.compute.device.ensure_compiled()?;
    let options = PredictOptions {
        batch_size: a.batch_size,
        precision: a.compute.precision,
        tokenize: a.input.options()?,
        max_cells: a.max_cells,
        key_added: a.key_added.clone(),
    };
    let r = on_device(
        a.compute.device,
        PredictRun {
            a,
            options,
            verbose,
        },
    )
    .map_err(pipeline_error)?;
    if verbose {
        outln!("wrote {}: {r}", a.output.display());
    }
    Ok(r.cells_predicted)
}
