//! Zero-shot clustering (PCA → kNN → Leiden → UMAP) of an embedding or of the expression
//! baseline, with metrics against labels ([`cluster_embedding`], [`cluster_counts`],
//! [`cluster_file`]), and the metrics of columns already there ([`evaluate`],
//! [`evaluate_file`]). Results follow scanpy's names and encodings.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use aido_eval::pipeline::{
    ClusterConfig, ClusterInput, ClusterOutput, ClusterScores, ClusterTarget, ExpressionConfig,
    cluster, embedding_scores, integration, score,
};
use aido_eval::plot::scatter_png_coloured;
use aido_eval::preprocess::HvgSelection;
use aido_eval::{CsrMatrix, Labels};
use aido_tokenize::h5ad::read_obs;
use aido_tokenize::h5ad_edit::{H5adAdditions, SparseCsr, UnsValue, write_input_plus};
use aido_tokenize::{CsrChunk, ObsColumn, ObsTable, ReadOptions, open_source, read_all};
use ndarray::{Array2, ArrayView2};
use serde::Serialize;
use serde_json::{Value, json};

use crate::Event;
use crate::error::{PipelineError, Result};
use crate::matrix::CountsMatrix;
use crate::obs::{check_finite, obs_labels, obsm_matrix, write_json};

/// How to cluster (defaults = `aido cluster`'s, scanpy's).
#[derive(Debug, Clone, PartialEq)]
pub struct ClusterOptions {
    /// obs column with the true labels (ARI/NMI/AMI, silhouette, label ASW).
    pub label_column: Option<String>,
    /// obs column with batches (batch ASW, graph connectivity, iLISI; needs labels).
    pub batch_column: Option<String>,
    /// Search the Leiden resolution until there are N clusters (default with labels: their
    /// number).
    pub n_clusters: Option<usize>,
    /// Leiden at this resolution (default without labels: 1.0).
    pub resolution: Option<f64>,
    /// Principal components (default 50).
    pub n_pcs: usize,
    /// Neighbours of the kNN graph, self included as scanpy counts (default 15).
    pub n_neighbors: usize,
    /// Seed of Leiden and UMAP (default 0).
    pub seed: u64,
    /// Expression baseline: the `n` genes of highest normalized dispersion (scanpy's seurat
    /// flavour with `n_top_genes`, ties at the cut kept as scanpy keeps them) instead of
    /// scanpy's default cut-offs (`None`).
    pub n_top_genes: Option<usize>,
    /// Clip the standardized values to `±scale_max` (scanpy's `scale(max_value=…)`; `None`:
    /// scanpy's default, no clip).
    pub scale_max: Option<f32>,
    /// An embedding: build the graph on it as it is, like `sc.pp.neighbors(use_rep=…)`, instead
    /// of standardizing it and taking `n_pcs` principal components first (the protocol of the
    /// AIDO.Cell and scFoundation papers, the default). No `X_pca` is written then.
    pub use_rep_as_is: bool,
    /// Write the results under this name, as scanpy's `key_added` does (`None`: the default
    /// names; see [`ClusterKeys`]).
    pub key_added: Option<String>,
}

/// Where the results of a clustering run are written, as scanpy names them.
///
/// Default (`key_added` `None`): `obs/aido_leiden`, `uns/aido_leiden`,
/// `uns/aido_leiden_colors`; `uns/neighbors` with `obsp/connectivities` and `obsp/distances`
/// (as `sc.pp.neighbors`); `obsm/X_pca`, `varm/PCs`, `uns/pca` (as `sc.pp.pca`);
/// `obsm/X_umap` (as `sc.tl.umap`).
///
/// With `key_added` `K`: `obs/K`, `uns/K`, `uns/K_colors` (as `sc.tl.leiden(key_added=K)`);
/// `uns/K_neighbors` with `obsp/K_neighbors_connectivities` and `obsp/K_neighbors_distances`
/// (as `sc.pp.neighbors(key_added="K_neighbors")`, so `sc.tl.leiden(neighbors_key=
/// "K_neighbors")` reads them); `obsm/K_pca`, `varm/K_pca`, `uns/K_pca` (as
/// `sc.pp.pca(key_added="K_pca")`); `obsm/K_umap` (`sc.pl.embedding(basis="K_umap")`). The
/// HVG columns of `var` have no key in scanpy and keep their names.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ClusterKeys {
    /// The obs column of the clusters (and the uns entry of their parameters).
    pub clusters: String,
    /// Their colours in uns.
    pub colors: String,
    /// The uns entry of the neighbour graph.
    pub neighbors: String,
    /// Its obsp connectivities.
    pub connectivities: String,
    /// Its obsp distances.
    pub distances: String,
    /// The obsm scores of the PCA.
    pub pca_obsm: String,
    /// Its varm loadings.
    pub pca_varm: String,
    /// Its uns entry (variances).
    pub pca_uns: String,
    /// The obsm UMAP coordinates.
    pub umap: String,
}

impl ClusterKeys {
    /// The names for `key_added` (`None`: the defaults).
    pub fn new(key_added: Option<&str>) -> ClusterKeys {
        match key_added {
            None => ClusterKeys {
                clusters: "aido_leiden".into(),
                colors: "aido_leiden_colors".into(),
                neighbors: "neighbors".into(),
                connectivities: "connectivities".into(),
                distances: "distances".into(),
                pca_obsm: "X_pca".into(),
                pca_varm: "PCs".into(),
                pca_uns: "pca".into(),
                umap: "X_umap".into(),
            },
            Some(k) => ClusterKeys {
                clusters: k.to_string(),
                colors: format!("{k}_colors"),
                neighbors: format!("{k}_neighbors"),
                connectivities: format!("{k}_neighbors_connectivities"),
                distances: format!("{k}_neighbors_distances"),
                pca_obsm: format!("{k}_pca"),
                pca_varm: format!("{k}_pca"),
                pca_uns: format!("{k}_pca"),
                umap: format!("{k}_umap"),
            },
        }
    }
}

impl Default for ClusterOptions {
    fn default() -> Self {
        ClusterOptions {
            label_column: None,
            batch_column: None,
            n_clusters: None,
            resolution: None,
            n_pcs: 50,
            n_neighbors: 15,
            seed: 0,
            n_top_genes: None,
            scale_max: None,
            use_rep_as_is: false,
            key_added: None,
        }
    }
}

/// One resolution tried by the search.
#[derive(Debug, Clone, Serialize)]
pub struct ResolutionTry {
    /// The resolution.
    pub resolution: f64,
    /// Clusters it gave.
    pub n_clusters: usize,
}

/// What clustering found (`aido cluster --report`).
#[derive(Debug, Clone, Serialize)]
pub struct ClusterReport {
    /// Cells.
    pub n_cells: usize,
    /// Leiden clusters.
    pub n_clusters: usize,
    /// The resolution used.
    pub resolution: f64,
    /// Adjusted Rand index against the labels.
    pub ari: Option<f64>,
    /// Normalized mutual information (arithmetic).
    pub nmi: Option<f64>,
    /// Adjusted mutual information.
    pub ami: Option<f64>,
    /// Homogeneity.
    pub homogeneity: Option<f64>,
    /// Completeness.
    pub completeness: Option<f64>,
    /// Silhouette of the labels in the PCA space.
    pub silhouette: Option<f64>,
    /// Label ASW (scib).
    pub label_asw: Option<f64>,
    /// Batch ASW (scib).
    pub batch_asw: Option<f64>,
    /// Graph connectivity (scib).
    pub graph_connectivity: Option<f64>,
    /// iLISI (scib).
    pub ilisi: Option<f64>,
    /// Seconds taken.
    pub seconds: f64,
    /// The number of clusters searched for.
    pub target_n_clusters: Option<usize>,
    /// Whether the search hit it exactly.
    pub exact_n_clusters: Option<bool>,
    /// The resolutions tried.
    pub resolution_search: Option<Vec<ResolutionTry>>,
    /// Seconds per stage.
    pub stage_seconds: BTreeMap<String, f64>,
    /// The space the metrics were computed in.
    pub metrics_space: String,
    /// Where the results were written.
    pub keys: ClusterKeys,
    /// The settings of the run.
    pub settings: Value,
}

impl std::fmt::Display for ClusterReport {
    /// What a terminal shows: clusters, resolution and time, then the metrics when labels were
    /// given.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let exact = match (self.exact_n_clusters, self.target_n_clusters) {
            (Some(false), Some(k)) => format!(" (no resolution gave exactly {k}; closest kept)"),
            _ => String::new(),
        };
        let k = self.settings["n_pcs_used"].as_u64().unwrap_or(0);
        let pca = if self.settings["use_rep_as_is"].as_bool() == Some(true) {
            String::new()
        } else {
            format!(", obsm/{} [{} × {k}]", self.keys.pca_obsm, self.n_cells)
        };
        write!(
            f,
            "obs/{} ({} cluster{} at resolution {:.4}{exact}){pca}, obsm/{}; {:.1} s",
            self.keys.clusters,
            self.n_clusters,
            if self.n_clusters == 1 { "" } else { "s" },
            self.resolution,
            self.keys.umap,
            self.seconds
        )?;
        if let (Some(ari), Some(nmi), Some(ami), Some(sil), Some(asw)) = (
            self.ari,
            self.nmi,
            self.ami,
            self.silhouette,
            self.label_asw,
        ) {
            write!(
                f,
                "\n  ARI {ari:.4}  NMI {nmi:.4}  AMI {ami:.4}  silhouette {sil:.4}  label ASW {asw:.4}"
            )?;
            if let (Some(b), Some(g), Some(i)) =
                (self.batch_asw, self.graph_connectivity, self.ilisi)
            {
                write!(
                    f,
                    "  batch ASW {b:.4}  graph connectivity {g:.4}  iLISI {i:.4}"
                )?;
            }
        }
        Ok(())
    }
}

/// The cells to cluster.
#[derive(Debug, Clone)]
pub enum Cells<'a> {
    /// An embedding `[n, d]` (e.g. `obsm/X_aido_cell`), named by its key.
    Embedding {
        /// Its obsm key.
        key: String,
        /// The values.
        x: ArrayView2<'a, f32>,
    },
    /// Raw counts for the expression baseline (normalize 1e4, log1p, seurat HVG, scale, PCA).
    Counts {
        /// What they are (`X`, `layers/counts`).
        what: String,
        /// The counts, cells as rows.
        counts: CsrChunk,
        /// Genes (columns).
        n_genes: usize,
    },
}

/// A clustering run's results.
#[derive(Debug, Clone)]
pub struct Clustered {
    /// Everything computed (PCA, kNN, graphs, Leiden, UMAP, HVG).
    pub output: ClusterOutput,
    /// The metrics, with labels.
    pub scores: Option<ClusterScores>,
    /// The labels the metrics used.
    pub labels: Option<(String, Labels)>,
    /// The results under scanpy's names ([`ClusterKeys`]: by default `obs/aido_leiden`,
    /// `obsm/X_pca`, `obsm/X_umap`, `obsp/connectivities` float32 and `obsp/distances` float64
    /// with int32 indices, `uns/neighbors`, `uns/pca`, `uns/aido_leiden`; with the expression
    /// baseline `var` `highly_variable`, `means`, `dispersions`, `dispersions_norm` and
    /// `varm/PCs`).
    pub additions: H5adAdditions,
    /// The report.
    pub report: ClusterReport,
}

fn opt_check(options: &ClusterOptions) -> Result<()> {
    if options.n_clusters == Some(0) {
        return Err(PipelineError::option("n_clusters", "must be at least 1"));
    }
    if options.n_clusters.is_some() && options.resolution.is_some() {
        return Err(PipelineError::option(
            "n_clusters",
            "give a number of clusters or a resolution, not both",
        ));
    }
    if let Some(r) = options.resolution
        && !(r.is_finite() && r >= 0.0)
    {
        return Err(PipelineError::option(
            "resolution",
            format!("must be a finite number ≥ 0, got {r}"),
        ));
    }
    if options.n_top_genes.is_some_and(|n| n < 2) {
        return Err(PipelineError::option(
            "n_top_genes",
            "must be at least 2 (a PCA needs two genes)",
        ));
    }
    if let Some(v) = options.scale_max
        && !(v.is_finite() && v > 0.0)
    {
        return Err(PipelineError::option(
            "scale_max",
            format!("must be a finite number > 0, got {v}"),
        ));
    }
    if let Some(k) = &options.key_added {
        crate::output::check_key_name(k, "key_added")?;
        for (col, option) in [
            (&options.label_column, "label_column"),
            (&options.batch_column, "batch_column"),
        ] {
            if col.as_deref() == Some(k.as_str()) {
                return Err(PipelineError::option(
                    "key_added",
                    format!(
                        "'{k}' is the {} (obs/{k}): the clusters would replace it; choose another key",
                        option.replace('_', " ")
                    ),
                ));
            }
        }
    } else if options.label_column.as_deref() == Some("aido_leiden") {
        return Err(PipelineError::option(
            "key_added",
            "the label column is obs/aido_leiden, where the clusters are written: give another key (`key_added`)",
        ));
    }
    Ok(())
}

/// Clusters `cells` whose `obs` is `obs`; `n_vars` is the number of genes of the data (for the
/// `var`/`varm` additions of the expression baseline); `input` names the data in errors.
pub fn cluster_cells(
    cells: Cells<'_>,
    obs: &ObsTable,
    n_vars: usize,
    input: &str,
    options: &ClusterOptions,
    on_event: &mut dyn FnMut(Event),
) -> Result<Clustered> {
    let t0 = Instant::now();
    opt_check(options)?;
    let labels = options
        .label_column
        .as_ref()
        .map(|c| obs_labels(obs, &input, c).map(|l| (c.clone(), l)))
        .transpose()?;
    let batches = options
        .batch_column
        .as_ref()
        .map(|c| obs_labels(obs, &input, c))
        .transpose()?;
    if batches.is_some() && labels.is_none() {
        return Err(PipelineError::option(
            "batch_column",
            "needs a label column (batch ASW and graph connectivity are computed within labels)",
        ));
    }
    let target = match (options.n_clusters, options.resolution, &labels) {
        (Some(k), _, _) => ClusterTarget::NClusters(k),
        (None, Some(r), _) => ClusterTarget::Resolution(r),
        (None, None, Some((_, l))) => ClusterTarget::NClusters(l.n_distinct()),
        (None, None, None) => ClusterTarget::Resolution(1.0),
    };
    let cfg = ClusterConfig {
        n_pcs: options.n_pcs,
        n_neighbors: options.n_neighbors,
        seed: options.seed,
        target,
        scale_max_value: options.scale_max,
        ..ClusterConfig::default()
    };
    let (out, mode, source) = match cells {
        Cells::Embedding { key, x } => {
            check_finite(x, &input, &key, obs)?;
            let (n, d) = x.dim();
            on_event(Event::Note(format!(
                "clustering obsm/{key} [{n} × {d}] of {input}"
            )));
            let x = x.as_standard_layout();
            let xs = x
                .as_slice()
                .ok_or_else(|| PipelineError::option("internal", "embedding layout"))?;
            let cells = if options.use_rep_as_is {
                ClusterInput::Representation { x: xs, n, d }
            } else {
                ClusterInput::Embedding { x: xs, n, d }
            };
            let o = cluster(cells, &cfg)
                .map_err(|e| PipelineError::input(input, format!("obsm/{key}: {e}")))?;
            (o, "embedding", format!("obsm/{key}"))
        }
        Cells::Counts {
            what,
            counts,
            n_genes,
        } => {
            if options.use_rep_as_is {
                return Err(PipelineError::option(
                    "use_rep_as_is",
                    "applies to an embedding (`embedding`), not to the expression baseline",
                ));
            }
            on_event(Event::Note(format!(
                "expression baseline on {what} [{} × {n_genes}] of {input}",
                counts.n_cells()
            )));
            let o = cluster(
                ClusterInput::Expression {
                    counts,
                    n_genes,
                    config: ExpressionConfig {
                        hvg: options
                            .n_top_genes
                            .map_or_else(HvgSelection::default, HvgSelection::Top),
                        ..ExpressionConfig::default()
                    },
                },
                &cfg,
            )
            .map_err(|e| PipelineError::input(input, format!("{what}: {e}")))?;
            (o, "expression", what)
        }
    };
    let t_read_and_cluster = t0.elapsed().as_secs_f64();
    let n = out.knn.n;
    let (space, k) = out.space();
    let t_score = Instant::now();
    let scores = match &labels {
        Some((col, l)) => Some(
            score(
                space,
                n,
                k,
                &Labels::from_codes(out.leiden.labels.clone()),
                l,
                batches.as_ref(),
                Some(&out.knn),
            )
            .map_err(|e| PipelineError::input(input, format!("scoring against obs/{col}: {e}")))?,
        ),
        None => None,
    };
    let score_seconds = t_score.elapsed().as_secs_f64();
    let keys = ClusterKeys::new(options.key_added.as_deref());
    let mut additions = additions(&out, options.seed, &source, n_vars, &keys)?;
    // scanpy's colours for the clusters, in category order, so that `sc.pl.umap` shows what
    // the PNG of `cluster_file` shows.
    additions.uns.push((
        keys.colors.clone(),
        UnsValue::StrArray(aido_eval::palettes::scanpy_colors(out.leiden.n_clusters)),
    ));
    let exact = out.search.as_ref().map(|s| s.exact);
    let s = &out.seconds;
    let read_seconds = t_read_and_cluster
        - (s.preprocess + s.pca + s.neighbors + s.connectivities + s.leiden + s.umap);
    let stage_seconds = [
        ("read", read_seconds),
        ("preprocess", s.preprocess),
        ("pca", s.pca),
        ("neighbors", s.neighbors),
        ("connectivities", s.connectivities),
        ("leiden", s.leiden),
        ("umap", s.umap),
        ("metrics", score_seconds),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    let report = ClusterReport {
        n_cells: n,
        n_clusters: out.leiden.n_clusters,
        resolution: out.leiden.resolution,
        ari: scores.as_ref().map(|s| s.agreement.ari),
        nmi: scores.as_ref().map(|s| s.agreement.nmi),
        ami: scores.as_ref().map(|s| s.agreement.ami),
        homogeneity: scores.as_ref().map(|s| s.agreement.homogeneity),
        completeness: scores.as_ref().map(|s| s.agreement.completeness),
        silhouette: scores.as_ref().map(|s| s.silhouette),
        label_asw: scores.as_ref().map(|s| s.label_asw),
        batch_asw: scores.as_ref().and_then(|s| s.batch_asw),
        graph_connectivity: scores.as_ref().and_then(|s| s.graph_connectivity),
        ilisi: scores.as_ref().and_then(|s| s.ilisi),
        seconds: t0.elapsed().as_secs_f64(),
        target_n_clusters: match target {
            ClusterTarget::NClusters(k) => Some(k),
            ClusterTarget::Resolution(_) => None,
        },
        exact_n_clusters: exact,
        resolution_search: out.search.as_ref().map(|s| {
            s.tried
                .iter()
                .map(|&(resolution, n_clusters)| ResolutionTry {
                    resolution,
                    n_clusters,
                })
                .collect()
        }),
        stage_seconds,
        metrics_space: if out.pca.is_some() {
            format!("{} ({k} components)", keys.pca_obsm)
        } else {
            format!("{source} as is ({k} dimensions)")
        },
        settings: json!({
            "input": input,
            "mode": mode,
            "source": source,
            "label_column": options.label_column,
            "batch_column": options.batch_column,
            "n_pcs": options.n_pcs,
            "n_pcs_used": k,
            "n_neighbors": out.knn.k,
            "seed": options.seed,
            "n_hvg": out.hvg.as_ref().map(|h| h.selected().len()),
            "target_sum": if mode == "expression" { json!(1e4) } else { Value::Null },
            "hvg": match (mode, options.n_top_genes) {
                ("expression", None) => json!("seurat, scanpy defaults (min_mean 0.0125, max_mean 3, min_disp 0.5)"),
                ("expression", Some(t)) => json!(format!("seurat, n_top_genes {t} (ties at the cut kept)")),
                _ => Value::Null,
            },
            "n_top_genes": options.n_top_genes,
            "scale_max": options.scale_max,
            "use_rep_as_is": options.use_rep_as_is,
            "key_added": options.key_added,
            "standardize": if options.use_rep_as_is { "none (the representation as is, no PCA)".to_string() } else { match options.scale_max {
                None => "zero mean, unit variance (ddof 1), no clip".to_string(),
                Some(v) => format!("zero mean, unit variance (ddof 1), clipped to ±{v}"),
            }},
            "leiden": "RB configuration (modularity), n_iterations -1 (until no improvement), single-clustering 0.7.0",
            "umap": {"min_dist": 0.5, "spread": 1.0, "n_epochs": if n <= 10_000 { 500 } else { 200 }, "init": "spectral"},
            "aido_version": env!("CARGO_PKG_VERSION"),
        }),
        keys,
    };
    Ok(Clustered {
        output: out,
        scores,
        labels,
        additions,
        report,
    })
}

/// Clusters an embedding held in memory (rows = the cells of `obs`).
pub fn cluster_embedding(
    key: &str,
    x: ArrayView2<'_, f32>,
    obs: &ObsTable,
    n_vars: usize,
    options: &ClusterOptions,
    on_event: &mut dyn FnMut(Event),
) -> Result<Clustered> {
    cluster_cells(
        Cells::Embedding {
            key: key.to_string(),
            x,
        },
        obs,
        n_vars,
        "<in-memory embedding>",
        options,
        on_event,
    )
}

/// The expression baseline on a counts matrix held in memory.
pub fn cluster_counts(
    matrix: &CountsMatrix<'_>,
    what: &str,
    options: &ClusterOptions,
    on_event: &mut dyn FnMut(Event),
) -> Result<Clustered> {
    let mut src = matrix.source();
    let counts = read_all(&mut src)?;
    let n_genes = matrix.genes().len();
    cluster_cells(
        Cells::Counts {
            what: what.to_string(),
            counts,
            n_genes,
        },
        matrix.obs(),
        n_genes,
        what,
        options,
        on_event,
    )
}

/// An `obsp` matrix as scanpy's `pp.neighbors` writes it: int32 indices and indptr,
/// float32 connectivities, float64 distances.
fn sparse(m: &CsrMatrix, data_f64: bool) -> SparseCsr {
    SparseCsr {
        n_rows: m.n,
        n_cols: m.n,
        indptr: m.indptr.clone(),
        indices: m.indices.clone(),
        data: m.data.clone(),
        data_f64,
    }
}

fn f64s(v: &[f64]) -> UnsValue {
    UnsValue::F64Array(v.to_vec())
}

/// The results of a clustering run, under scanpy's names.
fn additions(
    out: &ClusterOutput,
    seed: u64,
    source: &str,
    n_vars: usize,
    keys: &ClusterKeys,
) -> Result<H5adAdditions> {
    let n = out.knn.n;
    let (_, k) = out.space();
    // The graph's representation, as scanpy records it: X_pca, or the obsm key used as is.
    let use_rep = match &out.pca {
        Some(_) => keys.pca_obsm.clone(),
        None => source.trim_start_matches("obsm/").to_string(),
    };
    let shape = |_| PipelineError::option("internal", "result shape");
    let mut add = H5adAdditions::default();
    add.obs.push((
        keys.clusters.clone(),
        ObsColumn::Categorical {
            codes: out.leiden.labels.iter().map(|&c| c as i32).collect(),
            categories: (0..out.leiden.n_clusters).map(|c| c.to_string()).collect(),
            ordered: false,
        },
    ));
    if let Some(p) = &out.pca {
        add.obsm.push((
            keys.pca_obsm.clone(),
            Array2::from_shape_vec((n, k), p.scores.clone()).map_err(shape)?,
        ));
    }
    if let Some(u) = &out.umap {
        add.obsm.push((
            keys.umap.clone(),
            Array2::from_shape_vec((n, 2), u.iter().flat_map(|p| [p[0], p[1]]).collect())
                .map_err(shape)?,
        ));
    }
    add.obsp.push((
        keys.connectivities.clone(),
        sparse(&out.connectivities, false),
    ));
    add.obsp
        .push((keys.distances.clone(), sparse(&out.distances, true)));
    add.uns.push((
        keys.neighbors.clone(),
        UnsValue::Dict(vec![
            (
                "connectivities_key".into(),
                keys.connectivities.as_str().into(),
            ),
            ("distances_key".into(), keys.distances.as_str().into()),
            (
                "params".into(),
                UnsValue::Dict(vec![
                    ("n_neighbors".into(), UnsValue::I64(out.knn.k as i64)),
                    ("method".into(), "umap".into()),
                    ("metric".into(), "euclidean".into()),
                    ("random_state".into(), UnsValue::I64(seed as i64)),
                    ("n_pcs".into(), UnsValue::I64(k as i64)),
                    ("use_rep".into(), use_rep.into()),
                ]),
            ),
        ]),
    ));
    if let Some(p) = &out.pca {
        add.uns.push((
            keys.pca_uns.clone(),
            UnsValue::Dict(vec![
                ("variance".into(), f64s(&p.variance)),
                ("variance_ratio".into(), f64s(&p.variance_ratio)),
                (
                    "params".into(),
                    UnsValue::Dict(vec![
                        ("zero_center".into(), UnsValue::Bool(true)),
                        (
                            "use_highly_variable".into(),
                            UnsValue::Bool(out.hvg.is_some()),
                        ),
                        ("source".into(), source.into()),
                    ]),
                ),
            ]),
        ));
    }
    add.uns.push((
        keys.clusters.clone(),
        UnsValue::Dict(vec![(
            "params".into(),
            UnsValue::Dict(vec![
                ("resolution".into(), UnsValue::F64(out.leiden.resolution)),
                ("random_state".into(), UnsValue::I64(seed as i64)),
                ("n_iterations".into(), UnsValue::I64(-1)),
                ("objective".into(), "RBConfiguration (modularity)".into()),
                ("source".into(), source.into()),
            ]),
        )]),
    ));
    if let Some(h) = &out.hvg {
        if h.highly_variable.len() != n_vars {
            return Err(PipelineError::option(
                "internal",
                format!(
                    "HVG over {} genes, var has {n_vars}",
                    h.highly_variable.len()
                ),
            ));
        }
        add.var.push((
            "highly_variable".into(),
            ObsColumn::Bool(h.highly_variable.clone()),
        ));
        // What scanpy's highly_variable_genes records beside its columns
        // (`sc.pl.highly_variable_genes` reads the flavour from it).
        add.uns.push((
            "hvg".into(),
            UnsValue::Dict(vec![("flavor".into(), "seurat".into())]),
        ));
        add.var
            .push(("means".into(), ObsColumn::Float(h.means.clone())));
        add.var.push((
            "dispersions".into(),
            ObsColumn::Float(h.dispersions.clone()),
        ));
        add.var.push((
            "dispersions_norm".into(),
            ObsColumn::Float(h.dispersions_norm.clone()),
        ));
        // scanpy's varm/PCs: loadings over all genes, zero outside the HVGs
        if let Some(pca) = &out.pca {
            let sel = h.selected();
            let mut pcs = Array2::<f32>::zeros((n_vars, k));
            for (r, &g) in sel.iter().enumerate() {
                for c in 0..k {
                    pcs[[g, c]] = pca.components[c * sel.len() + r];
                }
            }
            add.varm.push((keys.pca_varm.clone(), pcs));
        }
    }
    Ok(add)
}

/// What [`cluster_file`] reads and writes besides the h5ad.
#[derive(Debug, Clone, Default)]
pub struct ClusterFiles {
    /// Cluster this obsm matrix; `None`: the expression baseline on raw counts.
    pub embedding: Option<String>,
    /// With the expression baseline: the counts' layer and gene column.
    pub read: ReadOptions,
    /// Write the report (JSON) here.
    pub report: Option<PathBuf>,
    /// Draw the UMAP coloured by the labels (or the clusters) into this PNG.
    pub umap_png: Option<PathBuf>,
}

fn ensure_h5ad(p: &Path, option: &'static str) -> Result<()> {
    let ok = p
        .extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| e.eq_ignore_ascii_case("h5ad"));
    if !ok {
        return Err(PipelineError::option(
            option,
            format!("{}: an .h5ad file is needed", p.display()),
        ));
    }
    Ok(())
}

/// The input's own `uns["<col>_colors"]` when it gives a parseable colour for each of the
/// `n` categories (what scanpy keeps); `None` otherwise.
fn existing_colours(input: &Path, col: &str, n: usize) -> Option<Vec<String>> {
    let h5 = aido_tokenize::h5::H5::open(input).ok()?;
    let colours = h5.read_strings(&format!("uns/{col}_colors")).ok()?;
    (colours.len() >= n
        && colours
            .iter()
            .all(|c| aido_eval::palettes::parse_hex(c).is_some()))
    .then_some(colours)
}

/// Where this h5ad might keep raw counts: its layers, and whether `raw/X` holds counts
/// (integers ≥ 0 in its first 1,000 cells), with the option that reads each.
fn count_sources(input: &Path) -> String {
    let Ok(h5) = aido_tokenize::h5::H5::open(input) else {
        return String::new();
    };
    let layers = if h5.is_group("layers") {
        h5.members("layers")
            .map(|(g, d)| g.into_iter().chain(d).collect::<Vec<_>>())
            .unwrap_or_default()
    } else {
        Vec::new()
    };
    let layers = if layers.is_empty() {
        "The file has no layers".to_string()
    } else {
        format!(
            "The file's layers: {} (read one with `layer`)",
            layers.join(", ")
        )
    };
    let raw = if !(h5.is_group("raw/X") || h5.is_dataset("raw/X")) {
        "no raw/X".to_string()
    } else {
        let opts = ReadOptions {
            raw: true,
            ..ReadOptions::default()
        };
        let first = open_source(input, &opts).and_then(|mut s| s.next_chunk(1000));
        match first {
            Ok(Some(c)) if aido_eval::preprocess::check_counts(&c).is_ok() => {
                "raw/X holds counts (read it with `use_raw`)".to_string()
            }
            Ok(_) => "raw/X does not hold counts either".to_string(),
            Err(e) => format!("raw/X cannot be read ({e})"),
        }
    };
    format!("{layers}; {raw}.")
}

/// Refuses a picture path that does not end in `.png` (the only format written).
fn ensure_png(p: &Path, option: &'static str) -> Result<()> {
    let ok = p
        .extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| e.eq_ignore_ascii_case("png"));
    if !ok {
        return Err(PipelineError::Output {
            option,
            path: p.to_path_buf(),
            detail: "pictures are written as PNG: give a .png file name".into(),
        });
    }
    Ok(())
}

/// Clusters an h5ad file's embedding (or its counts) and writes the whole input plus the
/// results ([`Clustered::additions`]) to `output`, and the report / UMAP picture where asked.
/// What `aido cluster` runs.
pub fn cluster_file(
    input: &Path,
    output: &Path,
    files: &ClusterFiles,
    options: &ClusterOptions,
    on_event: &mut dyn FnMut(Event),
) -> Result<Clustered> {
    let t0 = Instant::now();
    ensure_h5ad(input, "input")?;
    ensure_h5ad(output, "output")?;
    // Every output is checked before any computation, so that they appear together or not at
    // all (a missing folder for the picture or the report no longer fails after the h5ad).
    crate::output::check_writable(output, "output")?;
    if let Some(png) = &files.umap_png {
        ensure_png(png, "umap_png")?;
        crate::output::check_writable(png, "umap_png")?;
    }
    if let Some(r) = &files.report {
        crate::output::check_writable(r, "report")?;
    }
    if files.embedding.is_some() && (files.read.layer.is_some() || files.read.gene_column.is_some())
    {
        return Err(PipelineError::option(
            "layer",
            "the layer and gene column apply to the expression baseline only",
        ));
    }
    opt_check(options)?;
    let obs = read_obs(input)?;
    let name = input.display().to_string();
    let mut c = match &files.embedding {
        Some(key) => {
            let m = obsm_matrix(input, key, &obs)?;
            let n_vars = open_source(input, &ReadOptions::default())?
                .gene_names()
                .len();
            cluster_cells(
                Cells::Embedding {
                    key: key.clone(),
                    x: m.view(),
                },
                &obs,
                n_vars,
                &name,
                options,
                on_event,
            )?
        }
        None => {
            let mut src = open_source(input, &files.read)?;
            let g = src.gene_names().len();
            let counts = read_all(src.as_mut())?;
            drop(src);
            let what = match (&files.read.layer, files.read.raw) {
                (Some(l), _) => format!("layers/{l}"),
                (None, true) => "raw/X".to_string(),
                (None, false) => "X".to_string(),
            };
            // Raw counts or nothing: refused before any computation, naming where counts
            // might be in this file.
            if let Err(e) = aido_eval::preprocess::check_counts(&counts) {
                return Err(PipelineError::input(
                    input.display(),
                    format!("{what}: {e}. {}", count_sources(input)),
                ));
            }
            cluster_cells(
                Cells::Counts {
                    what,
                    counts,
                    n_genes: g,
                },
                &obs,
                g,
                &name,
                options,
                on_event,
            )?
        }
    };
    // results into the user's file, then the picture and the report
    let t_write = Instant::now();
    // scanpy's colours for the clusters (in the additions already) and the label column, in
    // category order, written to uns["<key>_colors"] so that `sc.pl.umap` shows what the PNG
    // shows (a label column's own colours in the input are kept and used).
    let k = c.output.leiden.n_clusters;
    let cluster_colours = aido_eval::palettes::scanpy_colors(k);
    let label_plot = match &c.labels {
        Some((col, l)) => {
            let groups = obs
                .column(col)
                .and_then(|oc| Labels::in_category_order(oc).ok())
                .unwrap_or_else(|| l.clone());
            let n = groups.names.len();
            let colours = match existing_colours(input, col, n) {
                Some(own) => own,
                None => {
                    let colours = aido_eval::palettes::scanpy_colors(n);
                    c.additions
                        .uns
                        .push((format!("{col}_colors"), UnsValue::StrArray(colours.clone())));
                    colours
                }
            };
            Some((groups, col.clone(), colours))
        }
        None => None,
    };
    // The picture first, under a temporary name: the outputs appear together or not at all.
    let png_tmp = match &files.umap_png {
        Some(png) => {
            let coords = c
                .output
                .umap
                .as_ref()
                .ok_or_else(|| PipelineError::option("internal", "no UMAP"))?;
            let (groups, by, colours) = match label_plot {
                Some(p) => p,
                None => {
                    let mut g = Labels::from_codes(c.output.leiden.labels.clone());
                    g.names = (0..k).map(|i| format!("cluster {i}")).collect();
                    (g, c.report.keys.clusters.clone(), cluster_colours)
                }
            };
            let src = files
                .embedding
                .clone()
                .unwrap_or_else(|| "expression".to_string());
            let title = format!(
                "UMAP of {src}, coloured by {by} ({} cells)",
                c.report.n_cells
            );
            let tmp = aido_tokenize::io_util::temp_sibling(png);
            scatter_png_coloured(&tmp, coords, &groups, &colours, &title, "UMAP")?;
            Some((tmp, png))
        }
        None => None,
    };
    crate::output::note_replaced(input, &c.additions, on_event);
    if let Err(e) = write_input_plus(input, output, &c.additions) {
        if let Some((tmp, _)) = &png_tmp {
            let _ = std::fs::remove_file(tmp);
        }
        return Err(e.into());
    }
    if let Some((tmp, png)) = png_tmp {
        std::fs::rename(&tmp, png).map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            PipelineError::io(png)(e)
        })?;
    }
    c.report
        .stage_seconds
        .insert("write".into(), t_write.elapsed().as_secs_f64());
    c.report.seconds = t0.elapsed().as_secs_f64();
    if let Value::Object(m) = &mut c.report.settings {
        m.insert("output".into(), json!(output.display().to_string()));
        m.insert("embedding".into(), json!(files.embedding));
        m.insert("layer".into(), json!(files.read.layer));
    }
    if let Some(r) = &files.report {
        write_json(r, &c.report)?;
    }
    let keys = &c.report.keys;
    on_event(Event::Wrote {
        path: output.to_path_buf(),
        what: match c.output.pca {
            Some(_) => format!(
                "obs/{}, obsm/{}, obsm/{}",
                keys.clusters, keys.pca_obsm, keys.umap
            ),
            None => format!("obs/{}, obsm/{}", keys.clusters, keys.umap),
        },
    });
    Ok(c)
}

/// What to evaluate.
#[derive(Debug, Clone, Default)]
pub struct EvaluateOptions {
    /// obs column with the true labels.
    pub label_column: String,
    /// obs column with clusters: ari, nmi, ami, homogeneity, completeness.
    pub cluster_column: Option<String>,
    /// obs column with predicted labels: accuracy, macro_f1, per_class_f1, confusion.
    pub prediction_column: Option<String>,
    /// obsm matrix: silhouette, silhouette_cosine, label_asw.
    pub embedding: Option<String>,
    /// obs column with batches (with an embedding): batch_asw, graph_connectivity, ilisi.
    pub batch_column: Option<String>,
}

/// The metrics of [`evaluate`]: metric name → value (numbers, or per-class maps and the
/// confusion matrix), plus `n_cells`, `seconds` and `settings`.
#[derive(Debug, Clone, Serialize)]
pub struct EvaluateReport {
    /// The metrics.
    #[serde(flatten)]
    pub metrics: BTreeMap<String, Value>,
}

impl std::fmt::Display for EvaluateReport {
    /// One line per headline metric present (`  ari: 0.8123`).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let keys = [
            "ari",
            "nmi",
            "ami",
            "accuracy",
            "macro_f1",
            "silhouette",
            "label_asw",
            "batch_asw",
            "graph_connectivity",
            "ilisi",
        ];
        let lines: Vec<String> = keys
            .iter()
            .filter_map(|k| {
                self.metrics
                    .get(*k)
                    .and_then(Value::as_f64)
                    .map(|v| format!("  {k}: {v:.4}"))
            })
            .collect();
        f.write_str(&lines.join("\n"))
    }
}

/// The metrics of columns (and an embedding) already computed; `embedding` holds the matrix
/// `options.embedding` names.
pub fn evaluate(
    obs: &ObsTable,
    embedding: Option<ArrayView2<'_, f32>>,
    input: &str,
    options: &EvaluateOptions,
) -> Result<EvaluateReport> {
    if options.cluster_column.is_none()
        && options.prediction_column.is_none()
        && options.embedding.is_none()
    {
        return Err(PipelineError::option(
            "cluster_column",
            "nothing to evaluate: give a cluster column, a prediction column and/or an embedding",
        ));
    }
    if options.batch_column.is_some() && options.embedding.is_none() {
        return Err(PipelineError::option(
            "batch_column",
            "needs an embedding (the batch metrics are computed on an embedding)",
        ));
    }
    let t0 = Instant::now();
    let labels = obs_labels(obs, &input, &options.label_column)?;
    let mut report = BTreeMap::new();
    report.insert("n_cells".to_string(), json!(labels.len()));
    if let Some(c) = &options.cluster_column {
        let cl = obs_labels(obs, &input, c)?;
        let s = aido_eval::metrics::cluster::agreement(&labels, &cl)?;
        for (k, v) in [
            ("ari", s.ari),
            ("nmi", s.nmi),
            ("ami", s.ami),
            ("homogeneity", s.homogeneity),
            ("completeness", s.completeness),
        ] {
            report.insert(k.to_string(), json!(v));
        }
    }
    if let Some(c) = &options.prediction_column {
        let p = obs_labels(obs, &input, c)?;
        let truth: Vec<&str> = (0..labels.len()).map(|i| labels.name_of(i)).collect();
        let pred: Vec<&str> = (0..p.len()).map(|i| p.name_of(i)).collect();
        let r = aido_eval::metrics::classify::classification_report(&truth, &pred)?;
        report.insert("accuracy".into(), json!(r.accuracy));
        report.insert("macro_f1".into(), json!(r.macro_f1));
        report.insert("per_class_f1".into(), json!(r.per_class_f1));
        report.insert("confusion".into(), json!(r.confusion));
    }
    if let (Some(key), Some(m)) = (&options.embedding, embedding) {
        check_finite(m, &input, key, obs)?;
        let (n, d) = m.dim();
        let x = m.as_standard_layout();
        let x = x
            .as_slice()
            .ok_or_else(|| PipelineError::option("internal", "embedding layout"))?;
        let ctx = |e: aido_eval::EvalError| {
            PipelineError::input(
                input,
                format!("obsm/{key} against obs/{}: {e}", options.label_column),
            )
        };
        let s = embedding_scores(x, n, d, &labels).map_err(ctx)?;
        report.insert("silhouette".into(), json!(s.silhouette));
        report.insert("silhouette_cosine".into(), json!(s.silhouette_cosine));
        report.insert("label_asw".into(), json!(s.label_asw));
        if let Some(b) = &options.batch_column {
            let batches = obs_labels(obs, &input, b)?;
            let s = integration(x, n, d, &labels, &batches, None).map_err(ctx)?;
            report.insert("batch_asw".into(), json!(s.batch_asw));
            report.insert("graph_connectivity".into(), json!(s.graph_connectivity));
            report.insert("ilisi".into(), json!(s.ilisi));
        }
    }
    report.insert("seconds".into(), json!(t0.elapsed().as_secs_f64()));
    report.insert(
        "settings".into(),
        json!({
            "input": input,
            "label_column": options.label_column,
            "cluster_column": options.cluster_column,
            "prediction_column": options.prediction_column,
            "embedding": options.embedding,
            "batch_column": options.batch_column,
            "definitions": "scikit-learn 1.9 (ARI, NMI/AMI arithmetic, F1 over the union of labels), scib-metrics (ASW rescaled, graph connectivity 15-NN, iLISI 90-NN perplexity 30)",
        }),
    );
    Ok(EvaluateReport { metrics: report })
}

/// [`evaluate`] on an h5ad file, writing the report (JSON). What `aido evaluate` runs.
pub fn evaluate_file(
    input: &Path,
    report: &Path,
    options: &EvaluateOptions,
) -> Result<EvaluateReport> {
    ensure_h5ad(input, "input")?;
    crate::output::check_writable(report, "report")?;
    let obs = read_obs(input)?;
    let m = match &options.embedding {
        Some(key) => Some(obsm_matrix(input, key, &obs)?),
        None => None,
    };
    let r = evaluate(
        &obs,
        m.as_ref().map(|m| m.view()),
        &input.display().to_string(),
        options,
    )?;
    write_json(report, &r)?;
    Ok(r)
}
