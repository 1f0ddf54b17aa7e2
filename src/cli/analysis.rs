//! `aido cluster` and `aido evaluate`: flags → [`aido_pipeline::cluster`].

use std::path::PathBuf;

use aido_pipeline::cluster::{
    ClusterFiles, ClusterOptions, EvaluateOptions, cluster_file, evaluate_file,
};
use aido_tokenize::ReadOptions;
use anyhow::Result;
use clap::Args;

use super::pipeline_error;

/// Flags of `aido cluster`: what to cluster is `--embedding KEY` or `--expression`, exactly
/// one (a missing choice names both).
#[derive(Args, Clone, Debug)]
#[command(group(clap::ArgGroup::new("what").required(true).args(["embedding", "expression"])))]
pub(crate) struct ClusterArgs {
    /// Input .h5ad.
    #[arg(long)]
    pub input: PathBuf,
    /// Output .h5ad: the whole input plus obs/aido_leiden, obsm/X_pca, obsm/X_umap (and
    /// scanpy's obsp/connectivities, obsp/distances, uns/neighbors, uns/pca).
    #[arg(long)]
    pub output: PathBuf,
    /// Cluster this obsm matrix (e.g. X_aido_cell from `aido embed`). It is standardized and
    /// reduced to --n-pcs principal components before the kNN graph (the protocol of the
    /// AIDO.Cell and scFoundation papers); --use-rep-as-is uses it as it is instead.
    #[arg(long)]
    pub embedding: Option<String>,
    /// With --embedding: build the kNN graph on the embedding as it is, like
    /// `sc.pp.neighbors(adata, use_rep=KEY)` (no standardization, no PCA, no X_pca written).
    #[arg(long, requires = "embedding")]
    pub use_rep_as_is: bool,
    /// Run the expression baseline on raw counts (X or --layer): normalize 1e4, log1p,
    /// seurat HVG (scanpy's default cut-offs, or --n-top-genes), scale (no clip, or
    /// --scale-max), PCA.
    #[arg(long)]
    pub expression: bool,
    /// obs column with the true labels (ARI/NMI/AMI, silhouette, label ASW).
    #[arg(long)]
    pub label_column: Option<String>,
    /// obs column with batches (batch ASW, graph connectivity, iLISI).
    #[arg(long)]
    pub batch_column: Option<String>,
    /// Search the Leiden resolution until there are N clusters (default with
    /// --label-column: the number of labels).
    #[arg(long, conflicts_with = "resolution")]
    pub n_clusters: Option<usize>,
    /// Leiden at this resolution (default without --label-column: 1.0).
    #[arg(long)]
    pub resolution: Option<f64>,
    /// Principal components.
    #[arg(long, default_value_t = 50)]
    pub n_pcs: usize,
    /// Neighbours of the kNN graph (self included, as scanpy).
    #[arg(long, default_value_t = 15)]
    pub n_neighbors: usize,
    /// Seed of Leiden and UMAP.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// With --expression: keep the N genes of highest normalized dispersion (scanpy's
    /// `highly_variable_genes(flavor="seurat", n_top_genes=N)`, as most tutorials run it)
    /// instead of scanpy's default cut-offs.
    #[arg(long, value_name = "N")]
    pub n_top_genes: Option<usize>,
    /// Clip the standardized values to ±V (scanpy's `pp.scale(max_value=V)`; tutorials use
    /// 10). Default: no clip, as scanpy.
    #[arg(long, value_name = "V")]
    pub scale_max: Option<f32>,
    /// With --expression: read layers/NAME instead of X.
    #[arg(long, conflicts_with = "use_raw")]
    pub layer: Option<String>,
    /// With --expression: read raw/X (with raw/var's genes) instead of X, where scanpy keeps
    /// the counts after normalizing X (`adata.raw`).
    #[arg(long)]
    pub use_raw: bool,
    /// With --expression: var column with the gene names.
    #[arg(long)]
    pub gene_column: Option<String>,
    /// Write the report (JSON) here.
    #[arg(long)]
    pub report: Option<PathBuf>,
    /// Draw the UMAP coloured by the label column (or the clusters) into this PNG.
    #[arg(long)]
    pub umap_png: Option<PathBuf>,
    /// Write the results under this name, as scanpy's key_added: obs/KEY and uns/KEY (the
    /// clusters, as `sc.tl.leiden(key_added=KEY)`), uns/KEY_colors, uns/KEY_neighbors with
    /// obsp/KEY_neighbors_connectivities and obsp/KEY_neighbors_distances (`sc.tl.leiden(
    /// neighbors_key="KEY_neighbors")` reads them), obsm/KEY_pca, varm/KEY_pca, uns/KEY_pca
    /// and obsm/KEY_umap (`sc.pl.embedding(adata, basis="KEY_umap")`). Default: aido_leiden,
    /// neighbors, X_pca, PCs, pca and X_umap. Existing entries of those names are replaced,
    /// and the run says so.
    #[arg(long, value_name = "KEY")]
    pub key_added: Option<String>,
}

/// Flags of `aido evaluate`.
#[derive(Args, Clone, Debug)]
pub(crate) struct EvaluateArgs {
    /// Input .h5ad.
    #[arg(long)]
    pub input: PathBuf,
    /// obs column with the true labels.
    #[arg(long)]
    pub label_column: String,
    /// Write the report (JSON) here.
    #[arg(long)]
    pub report: PathBuf,
    /// obs column with clusters: ari, nmi, ami, homogeneity, completeness.
    #[arg(long)]
    pub cluster_column: Option<String>,
    /// obs column with predicted labels: accuracy, macro_f1, per_class_f1, confusion.
    #[arg(long)]
    pub prediction_column: Option<String>,
    /// obsm matrix: silhouette, silhouette_cosine, label_asw.
    #[arg(long)]
    pub embedding: Option<String>,
    /// obs column with batches (with --embedding): batch_asw, graph_connectivity, ilisi.
    #[arg(long)]
    pub batch_column: Option<String>,
}

/// Runs `aido cluster`.
pub(crate) fn cmd_cluster(a: &ClusterArgs, verbose: bool) -> Result<()> {
    let files = ClusterFiles {
        embedding: a.embedding.clone(),
        read: ReadOptions {
            gene_column: a.gene_column.clone(),
            layer: a.layer.clone(),
            raw: a.use_raw,
        },
        report: a.report.clone(),
        umap_png: a.umap_png.clone(),
    };
    let options = ClusterOptions {
        label_column: a.label_column.clone(),
        batch_column: a.batch_column.clone(),
        n_clusters: a.n_clusters,
        resolution: a.resolution,
        n_pcs: a.n_pcs,
        n_neighbors: a.n_neighbors,
        seed: a.seed,
        n_top_genes: a.n_top_genes,
        scale_max: a.scale_max,
        use_rep_as_is: a.use_rep_as_is,
        key_added: a.key_added.clone(),
    };
    let c = cluster_file(&a.input, &a.output, &files, &options, &mut |e| {
        if let aido_pipeline::Event::Note(n) = e
            && verbose
        {
            eprintln!("{}", super::render::flags_named(&n));
        }
    })
    .map_err(pipeline_error)?;
    if verbose {
        outln!("wrote {}: {}", a.output.display(), c.report);
    }
    Ok(())
}

/// Runs `aido evaluate`.
pub(crate) fn cmd_evaluate(a: &EvaluateArgs) -> Result<()> {
    let options = EvaluateOptions {
        label_column: a.label_column.clone(),
        cluster_column: a.cluster_column.clone(),
        prediction_column: a.prediction_column.clone(),
        embedding: a.embedding.clone(),
        batch_column: a.batch_column.clone(),
    };
    let r = evaluate_file(&a.input, &a.report, &options).map_err(pipeline_error)?;
    outln!("wrote {}", a.report.display());
    let lines = r.to_string();
    if !lines.is_empty() {
        outln!("{lines}");
    }
    Ok(())
}
