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
mod embed;
mod insilico;
mod perturb;
mod pretrain;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use aido_tokenize::{
    AlignOptions, EmptyCellPolicy, GeneIdMode, GeneVocab, NonIntegerPolicy, PreprocessConfig,
    ReadOptions, TokenizeOptions, Tokenizer,
    h5ad_out::{H5adWriter, XMatrix},
    open_source,
    safetensors_out::{ExtraTensor, SafetensorsRowWriter},
    simulate::{SimulationConfig, simulate, synthetic_gene_names},
};
use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};

#[derive(Parser)]
#[command(
    name = "aido",
    version,
    about = "AIDO.Cell single-cell foundation model SDK"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Tokenize a single-cell file into AIDO.Cell model input (safetensors: `values`, `present`).
    Tokenize(TokenizeArgs),
    /// Write a synthetic raw-count h5ad with known cell types.
    Simulate(SimulateArgs),
    /// Cell (and gene) embeddings of a single-cell file with an AIDO.Cell checkpoint.
    Embed(embed::EmbedArgs),
    /// Assemble the shards of `aido embed --shard I/N` into one output (the bytes one
    /// unsharded run writes).
    Merge(embed::MergeArgs),
    /// Align and validate raw-count files once into a packed corpus (compressed sparse shards
    /// plus an index) that `pretrain --corpus` streams.
    Pack(pretrain::PackArgs),
    /// Read-depth-aware pretraining from raw counts (resumable; writes a checkpoint `embed` loads).
    Pretrain(pretrain::PretrainArgs),
    /// Experimental: the orchestrator a multi-node `pretrain --nodes N` registers with.
    Orchestrator(pretrain::OrchestratorArgs),
    /// Zero-shot clustering of an embedding (or the expression baseline): PCA → kNN → Leiden →
    /// UMAP, results added to the user's h5ad, metrics against labels.
    Cluster(analysis::ClusterArgs),
    /// Metrics of columns already in an h5ad (clusters, predictions, an embedding).
    Evaluate(analysis::EvaluateArgs),
    /// Cell-type annotation: fine-tune the encoder with the paper's head on labelled cells
    /// (report, confusion matrix, a classifier folder for `predict`).
    Finetune(annotate::FinetuneArgs),
    /// Label new cells with a classifier from `finetune`; results added to the user's h5ad.
    Predict(annotate::PredictArgs),
    /// Perturbation response (GEARS): `perturb fit` on a screen, `perturb predict` for new
    /// combinations.
    #[command(subcommand)]
    Perturb(perturb::PerturbCommand),
    /// In-silico knockout / over-expression through the encoder: the cosine shift of every
    /// cell's embedding per perturbed gene.
    Insilico(insilico::InsilicoArgs),
    /// Run the end-to-end default on embedded simulated data (no files needed).
    Demo(DemoArgs),
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
    #[arg(long)]
    layer: Option<String>,
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
    /// Minimum matched genes (lowered to half the data's genes for small panels).
    #[arg(long, default_value_t = 1000)]
    min_overlap_genes: usize,
    /// Minimum fraction of the data's genes found in the vocabulary.
    #[arg(long, default_value_t = 0.10)]
    min_overlap_fraction: f64,
}

impl InputArgs {
    fn options(&self) -> Result<TokenizeOptions> {
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

    /// [`options`](Self::options) for a model's gene list: for a panel (fewer than 10,000
    /// genes) the overlap is judged against the genes the model uses, as in pretraining — at
    /// least half of the panel measured — not against the data's (often ~20k) genes.
    fn options_for(&self, vocab: &GeneVocab) -> Result<TokenizeOptions> {
        let mut o = self.options()?;
        if vocab.len() < 10_000 {
            o.align = AlignOptions {
                gene_id: self.gene_id,
                ..aido_train::data::align_options(vocab)
            };
        }
        Ok(o)
    }

    fn read_options(&self) -> ReadOptions {
        ReadOptions {
            gene_column: self.gene_column.clone(),
            layer: self.layer.clone(),
        }
    }
}

#[derive(Args)]
struct TokenizeArgs {
    #[command(flatten)]
    input: InputArgs,
    /// Gene vocabulary TSV (`gene_name<TAB>index`, file order = position order).
    #[arg(long)]
    genes: PathBuf,
    /// Cells per read window.
    #[arg(long, default_value_t = 256)]
    batch_size: usize,
    /// Output .safetensors file.
    #[arg(long)]
    output: PathBuf,
}

#[derive(Args)]
struct SimulateArgs {
    /// Number of cells (cell-type data; with --perturbations see --control-cells).
    #[arg(long, required_unless_present = "perturbations")]
    cells: Option<usize>,
    /// Write a perturbation screen instead: this many perturbed genes (default 40), each alone
    /// and in --doubles pairs, effects spreading through co-regulated gene programs
    /// (obs/condition `ctrl`, `A+ctrl`, `A+B`; var/program).
    #[arg(long, num_args = 0..=1, default_missing_value = "40")]
    perturbations: Option<usize>,
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

#[derive(Args)]
struct DemoArgs {
    /// Cells to simulate.
    #[arg(long, default_value_t = 400)]
    cells: usize,
    /// Genes in the synthetic panel (the model's sequence is this + 2).
    #[arg(long, default_value_t = 1000)]
    genes: usize,
    /// Keep the demo's files in this folder (default: a temporary folder, removed afterwards).
    #[arg(long)]
    out: Option<PathBuf>,
    /// RNG seed.
    #[arg(long, default_value_t = 7)]
    seed: u64,
    /// Pretraining updates of the demo model.
    #[arg(long, default_value_t = 60)]
    steps: u64,
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
    let res = match cli.command {
        Command::Tokenize(a) => cmd_tokenize(&a),
        Command::Simulate(a) => cmd_simulate(&a),
        Command::Embed(a) => embed::cmd_embed(&a, true).map(|_| ()),
        Command::Merge(a) => embed::cmd_merge(&a),
        Command::Pack(a) => pretrain::cmd_pack(&a),
        Command::Pretrain(a) => pretrain::cmd_pretrain(&a).map(|_| ()),
        Command::Orchestrator(a) => pretrain::cmd_orchestrator(&a),
        Command::Cluster(a) => analysis::cmd_cluster(&a, true).map(|_| ()),
        Command::Evaluate(a) => analysis::cmd_evaluate(&a),
        Command::Finetune(a) => annotate::cmd_finetune(&a, true).map(|_| ()),
        Command::Predict(a) => annotate::cmd_predict(&a, true).map(|_| ()),
        Command::Perturb(c) => perturb::cmd_perturb(&c, true).map(|_| ()),
        Command::Insilico(a) => insilico::cmd_insilico(&a).map(|_| ()),
        Command::Demo(a) => cmd_demo(&a),
    };
    match res {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            for cause in e.chain().skip(1) {
                eprintln!("  caused by: {cause}");
            }
            ExitCode::FAILURE
        }
    }
}

pub(crate) fn progress(n: u64, what: &str) -> ProgressBar {
    let pb = ProgressBar::new(n);
    if let Ok(style) = ProgressStyle::with_template(
        "{spinner} {msg} [{bar:30}] {pos}/{len} cells ({per_sec}, eta {eta})",
    ) {
        pb.set_style(style.progress_chars("=> "));
    }
    pb.set_message(what.to_string());
    pb
}

fn cmd_tokenize(a: &TokenizeArgs) -> Result<()> {
    tokenize_to_safetensors(&a.input, &a.genes, a.batch_size, &a.output, true)
}

pub(crate) fn tokenize_to_safetensors(
    a: &InputArgs,
    genes: &Path,
    batch_size: usize,
    output: &Path,
    verbose: bool,
) -> Result<()> {
    if batch_size == 0 {
        bail!("--batch-size must be at least 1");
    }
    let opts = a.options()?;
    let vocab = GeneVocab::from_tsv(genes)?;
    let mut source = open_source(&a.input, &a.read_options())?;
    let n_cells = source.n_cells();
    let t0 = Instant::now();
    let mut tok = Tokenizer::new(source.as_mut(), &vocab, opts)?;
    if verbose {
        outln!("{}", tok.report());
    }
    let present = tok.alignment().present().to_vec();
    let mut meta = std::collections::BTreeMap::new();
    meta.insert("input".to_string(), a.input.display().to_string());
    meta.insert("gene_vocabulary".to_string(), genes.display().to_string());
    meta.insert("gene_column".to_string(), tok.report().column.clone());
    meta.insert("gene_id".to_string(), tok.report().gene_id.clone());
    meta.insert("depth_floor".to_string(), a.depth_floor.clone());
    meta.insert(
        "format".to_string(),
        "aido-tokenize values [cells, genes+2] (T, S depth last)".to_string(),
    );
    let hint = [
        ExtraTensor::u8("present", vec![present.len()], &present),
        ExtraTensor::i64("cell_index", vec![n_cells], &vec![0; n_cells]),
    ];
    let mut writer =
        SafetensorsRowWriter::create(output, "values", vocab.seq_len(), n_cells, &hint, meta)?;
    let pb = if verbose {
        progress(n_cells as u64, "tokenize")
    } else {
        ProgressBar::hidden()
    };
    let mut kept: Vec<i64> = Vec::with_capacity(n_cells);
    while let Some(batch) = tok.next_batch(batch_size)? {
        let vals = batch
            .values
            .as_slice()
            .context("internal: non-contiguous batch")?;
        writer.write_rows(vals)?;
        kept.extend(batch.cells.iter().map(|&c| c as i64));
        pb.set_position(tok.stats().cells_read as u64);
    }
    pb.finish_and_clear();
    let stats = tok.stats().clone();
    writer.finish(&[
        ExtraTensor::u8("present", vec![present.len()], &present),
        ExtraTensor::i64("cell_index", vec![kept.len()], &kept),
    ])?;
    let seconds = t0.elapsed().as_secs_f64();
    if verbose {
        if let Some(w) = stats.non_integer_warning() {
            eprintln!("{w}");
        }
        if stats.cells_skipped_empty > 0 {
            outln!(
                "skipped {} cells with no counts in the aligned genes",
                stats.cells_skipped_empty
            );
        }
        outln!(
            "wrote {}: values [{}, {}] f32, present [{}] u8 ({} positions present), cell_index [{}]; {} cells in {:.2} s ({:.0} cells/s)",
            output.display(),
            stats.cells_written,
            vocab.seq_len(),
            present.len(),
            present.iter().filter(|&&p| p == 1).count(),
            stats.cells_written,
            stats.cells_read,
            seconds,
            stats.cells_read as f64 / seconds.max(1e-9)
        );
    }
    Ok(())
}

fn cmd_simulate(a: &SimulateArgs) -> Result<()> {
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
        let sim_genes =
            perturb::write_simulated_screen(&cfg, &a.output, a.controls_out.as_deref())?;
        if let Some(p) = &a.panel_out {
            GeneVocab::from_names(sim_genes)?.write_tsv(p)?;
            outln!("wrote the gene panel to {}", p.display());
        }
        return Ok(());
    }
    let Some(n_cells) = a.cells else {
        bail!("simulate needs --cells N");
    };
    let genes: Vec<String> = match (&a.vocabulary, a.genes) {
        (Some(v), n) => {
            let vocab = GeneVocab::from_tsv(v)?;
            match n {
                None => vocab.names().to_vec(),
                Some(n) if n > vocab.len() => bail!(
                    "--genes {n} exceeds the {} genes of {}",
                    vocab.len(),
                    v.display()
                ),
                Some(n) => {
                    // A seeded subset, kept in vocabulary order: real data measure only part of the list.
                    let mut pick =
                        aido_tokenize::simulate::permutation(vocab.len(), a.seed ^ 0x9e37_79b9);
                    pick.truncate(n);
                    pick.sort_unstable();
                    pick.into_iter().map(|i| vocab.names()[i].clone()).collect()
                }
            }
        }
        (None, Some(n)) => synthetic_gene_names(n),
        (None, None) => bail!("simulate needs --genes N (or --vocabulary GENES.tsv)"),
    };
    let mut cfg = SimulationConfig::new(n_cells, a.cell_types, a.seed);
    cfg.n_batches = a.batches;
    cfg.library_median = a.median_umis;
    let sim = simulate(&cfg, genes)?;
    let nnz = sim.counts.data.len();
    let n_genes = sim.genes.len();
    if let Some(p) = &a.panel_out {
        GeneVocab::from_names(sim.genes.clone())?.write_tsv(p)?;
    }
    let mut w = H5adWriter::new(sim.obs, sim.genes);
    w.x = Some(XMatrix::Csr {
        csr: sim.counts,
        n_cols: n_genes,
    });
    w.uns.push(("aido_simulation".into(), format!("{cfg:?}")));
    w.write(&a.output)?;
    outln!(
        "wrote {}: {} cells × {} genes, {} cell types, {} non-zero ({:.2}% dense)",
        a.output.display(),
        n_cells,
        n_genes,
        a.cell_types,
        nnz,
        100.0 * nnz as f64 / (n_cells * n_genes).max(1) as f64
    );
    if let Some(p) = &a.panel_out {
        outln!("wrote the gene panel to {}", p.display());
    }
    Ok(())
}

fn cmd_demo(a: &DemoArgs) -> Result<()> {
    let tmp;
    let dir = match &a.out {
        Some(d) => {
            std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
            d.clone()
        }
        None => {
            tmp = tempdir()?;
            tmp.path().to_path_buf()
        }
    };
    outln!(
        "aido demo: simulate → pretrain a tiny model (RDA) → embed → cluster, next to the expression baseline (files in {})",
        dir.display()
    );
    let data = dir.join("demo.h5ad");
    let panel = dir.join("demo_genes.tsv");
    cmd_simulate(&SimulateArgs {
        cells: Some(a.cells),
        perturbations: None,
        doubles: 40,
        control_cells: 600,
        cells_per_condition: 40,
        programs: 8,
        controls_out: None,
        genes: Some(a.genes),
        cell_types: 5,
        batches: 2,
        seed: a.seed,
        output: data.clone(),
        panel_out: Some(panel.clone()),
        vocabulary: None,
        median_umis: 5000.0,
    })?;
    // Short RDA pretraining of a tiny model over the simulated panel.
    let model_dir = dir.join("demo_model");
    let pre = pretrain::PretrainArgs {
        data: vec![data.clone()],
        corpus: None,
        genes: Some(panel.clone()),
        out: model_dir.clone(),
        preset: Some(aido_train::Preset::Tiny),
        hidden: None,
        layers: None,
        heads: None,
        intermediate: None,
        steps: Some(a.steps),
        batch_size: Some(8),
        grad_accum: None,
        lr: Some(1e-3),
        seed: Some(a.seed),
        val_every: Some(a.steps.div_ceil(2).max(1)),
        checkpoint_every: Some(a.steps.max(1)),
        data_parallel: None,
        shuffle_buffer: None,
        precision: None,
        config: None,
        resume: false,
        gene_column: None,
        gene_id: GeneIdMode::Auto,
        layer: None,
        device: aido_model::DeviceKind::Cpu,
        quiet: false,
        nodes: None,
        node_rank: None,
        orchestrator: None,
        bind: None,
        node_timeout: 600,
    };
    if model_dir.exists() {
        std::fs::remove_dir_all(&model_dir)
            .with_context(|| format!("removing the previous demo model {}", model_dir.display()))?;
    }
    pretrain::cmd_pretrain(&pre)?;
    let out = dir.join("demo_embeddings.h5ad");
    let args = embed::EmbedArgs {
        model: model_dir.clone(),
        input: InputArgs {
            input: data,
            gene_column: None,
            gene_id: GeneIdMode::Auto,
            layer: None,
            depth_floor: "5".into(),
            strict: true,
            allow_non_integer: false,
            skip_empty: false,
            min_overlap_genes: 1000,
            min_overlap_fraction: 0.1,
        },
        genes: Some(panel.clone()),
        pooling: aido_model::Pooling::PresentMean,
        batch_size: 16,
        device: aido_model::DeviceKind::Cpu,
        precision: aido_model::Precision::F32,
        output: out.clone(),
        embeddings_only: false,
        gene_embeddings: Vec::new(),
        shard: None,
    };
    let s = embed::cmd_embed(&args, false)?;
    outln!(
        "embedded {} cells → obsm/X_aido_cell [{} × {}] in {} ({:.1} cells/s)",
        s.cells,
        s.cells,
        s.hidden,
        out.display(),
        s.cells as f64 / s.seconds.max(1e-9)
    );
    // The paper's first result: zero-shot clustering of the embeddings, next to the
    // expression baseline on the same cells.
    let mut rows = Vec::new();
    for (what, embedding) in [
        ("AIDO.Cell embedding", Some("X_aido_cell")),
        ("expression baseline", None),
    ] {
        let tag = if embedding.is_some() {
            "embedding"
        } else {
            "expression"
        };
        let args = analysis::ClusterArgs {
            input: out.clone(),
            output: dir.join(format!("demo_{tag}_clusters.h5ad")),
            embedding: embedding.map(str::to_string),
            expression: embedding.is_none(),
            label_column: Some("cell_type".into()),
            batch_column: Some("batch".into()),
            n_clusters: None,
            resolution: None,
            n_pcs: 50,
            n_neighbors: 15,
            seed: 0,
            layer: None,
            gene_column: None,
            report: Some(dir.join(format!("demo_{tag}_report.json"))),
            umap_png: Some(dir.join(format!("demo_{tag}_umap.png"))),
        };
        let r = analysis::cmd_cluster(&args, false)?;
        rows.push((what, r));
    }
    outln!(
        "zero-shot clustering against the simulated cell types (Leiden searched to 5 clusters):"
    );
    outln!(
        "  {:<22} {:>8} {:>7} {:>7} {:>10} {:>10}",
        "",
        "clusters",
        "ARI",
        "NMI",
        "label ASW",
        "batch ASW"
    );
    for (what, r) in &rows {
        let g = |k: &str| {
            r.report
                .get(k)
                .and_then(serde_json::Value::as_f64)
                .unwrap_or(f64::NAN)
        };
        outln!(
            "  {what:<22} {:>8} {:>7.3} {:>7.3} {:>10.3} {:>10.3}",
            r.n_clusters,
            r.ari.unwrap_or(f64::NAN),
            r.nmi.unwrap_or(f64::NAN),
            g("label_asw"),
            g("batch_asw")
        );
    }
    outln!(
        "UMAPs: {} and {}",
        dir.join("demo_embedding_umap.png").display(),
        dir.join("demo_expression_umap.png").display()
    );
    if a.out.is_none() {
        outln!("(files were in a temporary folder; pass --out DIR to keep them)");
    }
    Ok(())
}

/// A temporary folder removed on drop.
pub(crate) struct TempDir(PathBuf);

impl TempDir {
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub(crate) fn tempdir() -> Result<TempDir> {
    let base = std::env::temp_dir();
    for i in 0..100u32 {
        let p = base.join(format!("aido-demo-{}-{i}", std::process::id()));
        if std::fs::create_dir(&p).is_ok() {
            return Ok(TempDir(p));
        }
    }
    bail!("could not create a temporary folder in {}", base.display())
}
