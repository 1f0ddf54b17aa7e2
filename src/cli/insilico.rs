//! `aido insilico`: flags → [`aido_pipeline::insilico::insilico_file`] (the method is
//! documented there).

use std::path::PathBuf;

use aido_model::burn::prelude::Backend;
use aido_pipeline::insilico::{InsilicoOptions, InsilicoOutput, Targets, insilico_file};
use aido_pipeline::{Event, ModelSource, OnDevice, Pretrained, on_device};
use aido_tasks::insilico::InsilicoMode;
use aido_tokenize::AlignOptions;
use anyhow::Result;
use clap::Args;

use super::{ComputeArgs, EventPrinter, pipeline_error};

/// Flags of `aido insilico`.
#[derive(Args, Clone)]
pub(crate) struct InsilicoArgs {
    /// The model: a checkpoint folder or a Hugging Face id ORG/NAME[@REVISION] (as
    /// `aido embed --model`).
    #[arg(long)]
    pub model: ModelSource,
    /// Input .h5ad (raw counts in X, or --layer).
    #[arg(long)]
    pub input: PathBuf,
    /// Output .h5ad: obs = the cells, var = the perturbed genes, X = the shifts; a TSV summary
    /// beside it (same name, .tsv).
    #[arg(long)]
    pub output: PathBuf,
    /// Comma-separated genes to perturb (symbols of the model's gene list, measured in the file).
    #[arg(
        long,
        value_delimiter = ',',
        required_unless_present = "all_genes",
        conflicts_with = "all_genes"
    )]
    pub perturb_genes: Vec<String>,
    /// Perturb every gene of the model's list that the file measures.
    #[arg(long)]
    pub all_genes: bool,
    /// knockout, or overexpress:FOLD (e.g. overexpress:4).
    #[arg(long, default_value = "knockout")]
    pub mode: String,
    /// Gene list of the checkpoint (default: MODEL/genes.tsv, else the built-in AIDO.Cell
    /// list for a 19,266-position model).
    #[arg(long)]
    pub genes: Option<PathBuf>,
    #[command(flatten)]
    pub read: super::ReadArgs,
    /// Perturb only the first N cells.
    #[arg(long)]
    pub max_cells: Option<usize>,
    /// Perturbed copies per forward pass.
    #[arg(long, default_value_t = 8)]
    pub batch_size: usize,
    #[command(flatten)]
    pub compute: ComputeArgs,
}

struct Run<'a> {
    a: &'a InsilicoArgs,
    pretrained: Pretrained,
    options: InsilicoOptions,
}

impl OnDevice for Run<'_> {
    type Output = InsilicoOutput;
    fn run<B: Backend>(self, device: B::Device) -> aido_pipeline::Result<InsilicoOutput> {
        let a = self.a;
        let t = "{spinner} insilico {msg} [{bar:30}] {pos}/{len} cell×gene ({per_sec}, eta {eta})";
        let pb = super::render::bar(!super::quiet(), 0, t);
        pb.set_message(self.options.mode.label());
        let mut printer = EventPrinter::new(false, "insilico");
        let r = insilico_file::<B>(
            &self.pretrained,
            &a.input,
            &a.read.read_options(),
            &a.output,
            &self.options,
            &device,
            &mut |e| match e {
                Event::Progress { done, total, .. } => {
                    pb.set_length(total as u64);
                    pb.set_position(done as u64);
                }
                e => printer.show(e),
            },
        );
        pb.finish_and_clear();
        r
    }
}

pub(crate) fn cmd_insilico(a: &InsilicoArgs) -> Result<()> {
    a.compute.device.ensure_compiled()?;
    let options = InsilicoOptions {
        targets: if a.all_genes {
            Targets::AllMeasured
        } else {
            Targets::Genes(a.perturb_genes.clone())
        },
        mode: InsilicoMode::parse(&a.mode)?,
        max_cells: a.max_cells,
        batch_size: a.batch_size,
        precision: a.compute.precision,
        align: AlignOptions {
            gene_id: a.read.gene_id,
            ..AlignOptions::default()
        },
    };
    let pretrained = super::render::open_model(&a.model, &a.genes, !super::quiet())?;
    let out = on_device(
        a.compute.device,
        Run {
            a,
            pretrained,
            options,
        },
    )
    .map_err(pipeline_error)?;
    if !super::quiet() {
        let mut lines = out.to_string();
        let ranked = format!("; ranking in {}", a.output.with_extension("tsv").display());
        lines.insert_str(lines.find('\n').unwrap_or(lines.len()), &ranked);
        outln!("wrote {}: {lines}", a.output.display());
    }
    Ok(())
}
