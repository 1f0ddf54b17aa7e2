//! `aido insilico`: flags → [`aido_pipeline::insilico::insilico_file`] (the method is
//! documented there).

use std::path::PathBuf;

use aido_model::burn::prelude::Backend;
use aido_pipeline::insilico::{InsilicoOptions, InsilicoOutput, Targets, insilico_file, ranking};
use aido_pipeline::{Event, ModelSource, OnDevice, OpenOptions, Pretrained, on_device};
use aido_tasks::insilico::InsilicoMode;
use aido_tokenize::{AlignOptions, ReadOptions};
use anyhow::Result;
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};

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
    /// Read `layers/NAME` instead of X.
    #[arg(long)]
    pub layer: Option<String>,
    /// var column with the gene symbols (default: the var index).
    #[arg(long)]
    pub gene_column: Option<String>,
    /// How the gene names are read: `symbol`, `ensembl`, `auto` (each name by its shape) or `exact` (exact symbols only, the authors' preprocessing).
    #[arg(long, default_value = "auto")]
    pub gene_id: aido_tokenize::GeneIdMode,
    /// Perturb only the first N cells.
    #[arg(long)]
    pub max_cells: Option<usize>,
    /// Perturbed copies per forward pass.
    #[arg(long, default_value_t = 8)]
    pub batch_size: usize,
    #[command(flatten)]
    pub compute: ComputeArgs,
    /// No progress bar or summary on the terminal.
    #[arg(long)]
    pub quiet: bool,
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
        let pb = if a.quiet {
            ProgressBar::hidden()
        } else {
            let pb = ProgressBar::new(0);
            if let Ok(style) = ProgressStyle::with_template(
                "{spinner} insilico {msg} [{bar:30}] {pos}/{len} cell×gene ({per_sec}, eta {eta})",
            ) {
                pb.set_style(style.progress_chars("=> "));
            }
            pb.set_message(self.options.mode.label());
            pb
        };
        let mut printer = EventPrinter::new(false, "insilico");
        let r = insilico_file::<B>(
            &self.pretrained,
            &a.input,
            &ReadOptions {
                gene_column: a.gene_column.clone(),
                layer: a.layer.clone(),
            },
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
            gene_id: a.gene_id,
            ..AlignOptions::default()
        },
    };
    let mut events = EventPrinter::new(!a.quiet, "download");
    let pretrained = Pretrained::open(
        &a.model,
        &OpenOptions {
            genes: a.genes.clone(),
            hub: None,
        },
        &mut |e| events.show(e),
    )
    .map_err(pipeline_error)?;
    drop(events);
    let out = on_device(
        a.compute.device,
        Run {
            a,
            pretrained,
            options,
        },
    )
    .map_err(pipeline_error)?;
    if !a.quiet {
        let r = &out.report;
        let (n, k) = (r.cells, r.genes);
        outln!(
            "wrote {}: shifts [{n} cells × {k} genes] ({} perturbed copies embedded, {} knockouts of unexpressed genes = 0, {} cells skipped with < 2 expressed genes) in {:.1} s ({:.1} ms per cell×gene computed); ranking in {}",
            a.output.display(),
            r.computed,
            n * k - r.computed,
            r.cells_skipped_fewer_than_2_genes,
            r.seconds,
            1e3 * r.seconds / r.computed.max(1) as f64,
            a.output.with_extension("tsv").display()
        );
        for &t in ranking(&out).iter().take(5) {
            outln!(
                "  {:<16} mean shift {:.3e} ({} cells express it)",
                out.genes[t],
                out.mean_shift[t],
                out.n_expressed[t]
            );
        }
    }
    Ok(())
}
