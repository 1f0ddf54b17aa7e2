//! `aido tokenize` and `aido simulate`: flags → [`aido_pipeline::tokenize`] and
//! [`aido_pipeline::simulate`].

use std::path::PathBuf;

use aido_pipeline::vocabulary;
use aido_tokenize::GeneVocab;
use aido_tokenize::simulate::{SimulationConfig, synthetic_gene_names};
use anyhow::{Result, bail};
use clap::Args;

use super::{EventPrinter, InputArgs, pipeline_error};

#[derive(Args)]
pub(crate) struct TokenizeArgs {
    #[command(flatten)]
    input: InputArgs,
    /// Gene vocabulary TSV (`gene_name<TAB>index`, file order = position order; default: the
    /// built-in 19,264-gene AIDO.Cell list of the released models).
    #[arg(long)]
    genes: Option<PathBuf>,
    /// Cells per read window.
    #[arg(long, default_value_t = 256)]
    batch_size: usize,
    /// Output .safetensors file.
    #[arg(long)]
    output: PathBuf,
}

#[derive(Args)]
pub(crate) struct SimulateArgs {
    /// Number of cells (cell-type data; with --perturbations see --control-cells).
    #[arg(long, required_unless_present = "perturbations")]
    pub cells: Option<usize>,
    /// Write a perturbation screen instead: this many perturbed genes (default 40), each alone
    /// and in --doubles pairs, effects spreading through co-regulated gene programs
    /// (obs/condition `ctrl`, `A+ctrl`, `A+B`; var/program).
    #[arg(long, num_args = 0..=1, default_missing_value = "40")]
    pub perturbations: Option<usize>,
    /// Perturbation screen: two-gene conditions.
    #[arg(long, default_value_t = 40)]
    doubles: usize,
    /// Perturbation screen: control cells.
    #[arg(long, default_value_t = 600)]
    control_cells: usize,
    /// Perturbation screen: cells per condition.
    #[arg(long, default_value_t = 40)]
    cells_per_condition: usize,
    /// Perturbation screen: also write its control cells alone to this .h5ad (e.g. to pretrain
    /// a backbone on them).
    #[arg(long)]
    controls_out: Option<PathBuf>,
    /// Perturbation screen: gene programs (25 genes each).
    #[arg(long, default_value_t = 8)]
    programs: usize,
    /// Number of genes (required without --vocabulary; with it, a seeded subset of that size).
    #[arg(long)]
    genes: Option<usize>,
    /// Number of cell types.
    #[arg(long, default_value_t = 5)]
    cell_types: usize,
    /// Number of batches (adds `obs/batch` and a per-batch gene effect when > 1).
    #[arg(long, default_value_t = 1)]
    batches: usize,
    /// RNG seed.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Output .h5ad.
    #[arg(long)]
    output: PathBuf,
    /// Also write the synthetic gene panel in the vocabulary TSV format.
    #[arg(long)]
    panel_out: Option<PathBuf>,
    /// Draw gene names from this vocabulary instead of a synthetic panel.
    #[arg(long)]
    vocabulary: Option<PathBuf>,
    /// Median library size in UMIs (log-normal, clipped to 1k–30k).
    #[arg(long, default_value_t = 5000.0)]
    median_umis: f64,
}

pub(crate) fn cmd_tokenize(a: &TokenizeArgs) -> Result<()> {
    let (vocab, genes) = match &a.genes {
        Some(p) => (GeneVocab::from_tsv(p)?, p.display().to_string()),
        None => (
            vocabulary::builtin().map_err(pipeline_error)?,
            vocabulary::BUILTIN_NAME.to_string(),
        ),
    };
    let mut events = EventPrinter::new(true, "tokenize");
    let r = aido_pipeline::tokenize::tokenize_file(
        &a.input.input,
        &a.input.read_options(),
        &vocab,
        &genes,
        &a.input.options()?,
        &a.input.depth_floor,
        a.batch_size,
        &a.output,
        &mut |e| match e {
            aido_pipeline::Event::Aligned(r) => outln!("{r}"),
            e => events.show(e),
        },
    )
    .map_err(pipeline_error)?;
    drop(events);
    if r.cells_skipped_empty > 0 {
        outln!(
            "skipped {} cells with no counts in the aligned genes",
            r.cells_skipped_empty
        );
    }
    outln!("wrote {}: {r}", a.output.display());
    Ok(())
}

pub(crate) fn cmd_simulate(a: &SimulateArgs) -> Result<()> {
    if let Some(perturbed) = a.perturbations {
        if a.vocabulary.is_some() {
            bail!("--perturbations writes synthetic gene names: --vocabulary does not apply");
        }
        let cfg = aido_tasks::perturb_sim::PerturbSimConfig {
            genes: a.genes.unwrap_or(400),
            programs: a.programs,
            control_cells: a.control_cells,
            cells_per_condition: a.cells_per_condition,
            perturbed_genes: perturbed,
            doubles: a.doubles,
            library_median: a.median_umis,
            seed: a.seed,
            ..Default::default()
        };
        let sim = aido_pipeline::simulate::write_screen(&cfg, &a.output, a.controls_out.as_deref())
            .map_err(pipeline_error)?;
        if let Some(p) = &a.controls_out {
            outln!(
                "wrote the {} control cells to {}",
                sim.control_cells,
                p.display()
            );
        }
        outln!(
            "wrote {}: {sim} (control, {} singles, {} doubles)",
            a.output.display(),
            cfg.perturbed_genes,
            cfg.doubles
        );
        if let Some(p) = &a.panel_out {
            GeneVocab::from_names(sim.genes)?.write_tsv(p)?;
            outln!("wrote the gene panel to {}", p.display());
        }
        return Ok(());
    }
    let Some(n_cells) = a.cells else {
        bail!("simulate needs --cells N");
    };
    let genes = match (&a.vocabulary, a.genes) {
        (Some(v), n) => {
            aido_pipeline::simulate::genes_from_vocabulary(&GeneVocab::from_tsv(v)?, n, a.seed)
                .map_err(pipeline_error)?
        }
        (None, Some(n)) => synthetic_gene_names(n),
        (None, None) => bail!("simulate needs --genes N (or --vocabulary GENES.tsv)"),
    };
    let mut cfg = SimulationConfig::new(n_cells, a.cell_types, a.seed);
    cfg.n_batches = a.batches;
    cfg.library_median = a.median_umis;
    let sim =
        aido_pipeline::simulate::write_cells(&cfg, genes, &a.output).map_err(pipeline_error)?;
    if let Some(p) = &a.panel_out {
        GeneVocab::from_names(sim.genes.clone())?.write_tsv(p)?;
    }
    outln!(
        "wrote {}: {sim} ({} cell types)",
        a.output.display(),
        a.cell_types
    );
    if let Some(p) = &a.panel_out {
        outln!("wrote the gene panel to {}", p.display());
    }
    Ok(())
}
