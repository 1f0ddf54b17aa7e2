//! The zero-shot clustering protocol (SPEC-tasks §2, scFoundation's as AIDO.Cell followed it)
//! on an embedding, and the same pipeline on raw counts as the expression baseline:
//!
//! - embedding: standardize (scanpy `scale`) → PCA (50) → exact kNN (15, self included) →
//!   UMAP connectivities → Leiden (resolution given, or searched until the number of
//!   clusters equals the number of labels) → UMAP layout;
//! - expression: normalize_total (1e4) → log1p → seurat HVG → scale → the same steps.
//!
//! [`cluster`] returns everything a results file needs (scanpy's names: `X_pca`,
//! `X_umap`, `connectivities`, `distances`, the Leiden labels); [`score`] computes the
//! report's metrics against labels (and batches) on the PCA space.

use std::time::Instant;

use aido_tokenize::CsrChunk;

use crate::error::{EvalError, Result, check_finite};
use crate::knn::{Knn, knn};
use crate::labels::Labels;
use crate::leiden::{LeidenResult, ResolutionSearch, leiden_at, search_resolution};
use crate::metrics::cluster::{ClusterAgreement, agreement};
use crate::metrics::graph::{graph_connectivity, ilisi};
use crate::metrics::silhouette::{Metric, batch_asw, silhouette_score};
use crate::pca::{Pca, pca};
use crate::preprocess::{
    Hvg, HvgSelection, check_counts, dense_columns, highly_variable_genes,
    normalize_log1p_in_place, scale,
};
use crate::sparse::CsrMatrix;
use crate::umap::{UmapConfig, distance_graph, fuzzy_simplicial_set, umap_layout};

/// What the clustering is asked to find.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ClusterTarget {
    /// Search the resolution until there are this many clusters.
    NClusters(usize),
    /// Leiden at this resolution.
    Resolution(f64),
}

/// Settings of [`cluster`] (scanpy's defaults where scanpy has one).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ClusterConfig {
    /// Principal components (capped at `min(n_cells, n_features) − 1`).
    pub n_pcs: usize,
    /// Neighbours of the kNN graph, self included.
    pub n_neighbors: usize,
    /// Seed of Leiden and UMAP.
    pub seed: u64,
    /// Resolution or cluster count.
    pub target: ClusterTarget,
    /// Leiden runs allowed in the resolution search.
    pub max_search_steps: usize,
    /// Whether to compute the UMAP layout.
    pub umap: bool,
    /// UMAP settings (its seed is `seed`).
    pub umap_config: UmapConfig,
    /// Clip of `scale` (`None`: scanpy's default, no clip).
    pub scale_max_value: Option<f32>,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            n_pcs: 50,
            n_neighbors: 15,
            seed: 0,
            target: ClusterTarget::Resolution(1.0),
            max_search_steps: 40,
            umap: true,
            umap_config: UmapConfig::default(),
            scale_max_value: None,
        }
    }
}

/// Settings of the expression baseline's preprocessing.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ExpressionConfig {
    /// `normalize_total` target (the protocol: 1e4; scanpy's own default is the median).
    pub target_sum: f64,
    /// HVG selection (scanpy's seurat cut-offs by default).
    pub hvg: HvgSelection,
}

impl Default for ExpressionConfig {
    fn default() -> Self {
        ExpressionConfig {
            target_sum: 1e4,
            hvg: HvgSelection::default(),
        }
    }
}

/// The input of [`cluster`].
pub enum ClusterInput<'a> {
    /// A cell embedding, row-major `n × d` (standardized before the PCA).
    Embedding {
        /// Values.
        x: &'a [f32],
        /// Cells.
        n: usize,
        /// Dimensions.
        d: usize,
    },
    /// A representation used as it is, row-major `n × d`: no standardization, no PCA; the kNN
    /// graph, Leiden and UMAP run on it (`sc.pp.neighbors(use_rep=…)`).
    Representation {
        /// Values.
        x: &'a [f32],
        /// Cells.
        n: usize,
        /// Dimensions.
        d: usize,
    },
    /// Raw counts, cells × genes (normalized in place: the counts are consumed).
    Expression {
        /// Counts.
        counts: CsrChunk,
        /// Genes (columns).
        n_genes: usize,
        /// Preprocessing settings.
        config: ExpressionConfig,
    },
}

/// Seconds spent in each stage.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct StageSeconds {
    /// Normalization, log1p, HVG and scaling (or the standardization of an embedding).
    pub preprocess: f64,
    /// PCA.
    pub pca: f64,
    /// Exact kNN.
    pub neighbors: f64,
    /// Connectivities (fuzzy simplicial set).
    pub connectivities: f64,
    /// Leiden (with the resolution search).
    pub leiden: f64,
    /// UMAP layout.
    pub umap: f64,
}

/// Everything [`cluster`] computed.
#[derive(Debug, Clone)]
pub struct ClusterOutput {
    /// The PCA (scores = `X_pca`); `None` for a [`ClusterInput::Representation`].
    pub pca: Option<Pca>,
    /// The representation itself (values, dimensions) when it was used as it is.
    pub representation: Option<(Vec<f32>, usize)>,
    /// The kNN graph on the PCA scores.
    pub knn: Knn,
    /// scanpy's `connectivities`.
    pub connectivities: CsrMatrix,
    /// scanpy's `distances` (kNN distances without the self edge).
    pub distances: CsrMatrix,
    /// The clustering.
    pub leiden: LeidenResult,
    /// The resolution search, when one ran.
    pub search: Option<ResolutionSearch>,
    /// `X_umap`, when asked.
    pub umap: Option<Vec<[f32; 2]>>,
    /// The HVG step of the expression baseline.
    pub hvg: Option<Hvg>,
    /// Seconds per stage.
    pub seconds: StageSeconds,
}

impl ClusterOutput {
    /// The space the graph, the UMAP and the metrics used: the PCA scores `[n × k]`, or the
    /// representation used as it is; with its dimension.
    pub fn space(&self) -> (&[f32], usize) {
        match (&self.pca, &self.representation) {
            (Some(p), _) => (&p.scores, p.n_comps),
            (None, Some((x, d))) => (x, *d),
            (None, None) => (&[], 0),
        }
    }
}

/// Runs the protocol. `n_neighbors` and `n_pcs` are capped by the number of cells.
pub fn cluster(input: ClusterInput<'_>, cfg: &ClusterConfig) -> Result<ClusterOutput> {
    if cfg.n_neighbors < 2 {
        return Err(EvalError::InvalidArgument(format!(
            "n_neighbors must be at least 2 (self included), got {}",
            cfg.n_neighbors
        )));
    }
    if cfg.n_pcs == 0 {
        return Err(EvalError::InvalidArgument(
            "n_pcs must be at least 1".into(),
        ));
    }
    let mut seconds = StageSeconds::default();
    let t = Instant::now();
    let mut as_is = false;
    let (x, n, d, hvg) = match input {
        ClusterInput::Representation { x, n, d } => {
            if x.len() != n * d {
                return Err(EvalError::LengthMismatch {
                    what: "representation values against cells × dimensions".into(),
                    a: x.len(),
                    b: n * d,
                });
            }
            check_finite("the representation", x, d)?;
            as_is = true;
            (x.to_vec(), n, d, None)
        }
        ClusterInput::Embedding { x, n, d } => {
            if x.len() != n * d {
                return Err(EvalError::LengthMismatch {
                    what: "embedding values against cells × dimensions".into(),
                    a: x.len(),
                    b: n * d,
                });
            }
            check_finite("the embedding", x, d)?;
            let mut y = x.to_vec();
            scale(&mut y, n, d, cfg.scale_max_value);
            (y, n, d, None)
        }
        ClusterInput::Expression {
            counts,
            n_genes,
            config,
        } => {
            check_counts(&counts)?;
            let n = counts.n_cells();
            let mut log = counts;
            normalize_log1p_in_place(&mut log, config.target_sum);
            let hvg = highly_variable_genes(&log, n_genes, config.hvg)?;
            let sel = hvg.selected();
            if sel.len() < 2 {
                return Err(EvalError::InvalidArgument(format!(
                    "only {} highly variable genes were selected: too few for a PCA",
                    sel.len()
                )));
            }
            let mut y = dense_columns(&log, n_genes, &sel);
            drop(log);
            scale(&mut y, n, sel.len(), cfg.scale_max_value);
            (y, n, sel.len(), Some(hvg))
        }
    };
    if n < 3 {
        return Err(EvalError::InvalidArgument(format!(
            "clustering needs at least 3 cells, got {n}"
        )));
    }
    seconds.preprocess = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let (p, representation) = if as_is {
        (None, Some((x, d)))
    } else {
        let p = pca(&x, n, d, cfg.n_pcs)?;
        drop(x);
        (Some(p), None)
    };
    seconds.pca = t.elapsed().as_secs_f64();
    let (space, dims): (&[f32], usize) = match (&p, &representation) {
        (Some(p), _) => (&p.scores, p.n_comps),
        (None, Some((x, d))) => (x, *d),
        (None, None) => (&[], 0),
    };
    let t = Instant::now();
    let g = knn(space, n, dims, cfg.n_neighbors.min(n))?;
    seconds.neighbors = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let conn = fuzzy_simplicial_set(&g);
    let dist = distance_graph(&g);
    seconds.connectivities = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let (leiden, search) = match cfg.target {
        ClusterTarget::Resolution(r) => (leiden_at(&conn, r, cfg.seed)?, None),
        ClusterTarget::NClusters(k) => {
            let s = search_resolution(&conn, k, cfg.seed, cfg.max_search_steps)?;
            (s.best.clone(), Some(s))
        }
    };
    seconds.leiden = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let umap = if cfg.umap {
        let uc = UmapConfig {
            seed: cfg.seed,
            ..cfg.umap_config.clone()
        };
        Some(umap_layout(&conn, space, dims, &uc)?)
    } else {
        None
    };
    seconds.umap = t.elapsed().as_secs_f64();
    Ok(ClusterOutput {
        pca: p,
        representation,
        knn: g,
        connectivities: conn,
        distances: dist,
        leiden,
        search,
        umap,
        hvg,
        seconds,
    })
}

/// The metrics of a clustering report.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ClusterScores {
    /// Agreement of the clusters with the labels.
    #[serde(flatten)]
    pub agreement: ClusterAgreement,
    /// Silhouette of the labels on the PCA space (euclidean, in [−1, 1]).
    pub silhouette: f64,
    /// scib's label ASW `(silhouette + 1) / 2`.
    pub label_asw: f64,
    /// scib's batch ASW (with batches).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub batch_asw: Option<f64>,
    /// scib's graph connectivity on the 15-NN graph (with batches).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub graph_connectivity: Option<f64>,
    /// scib's scaled iLISI on the 90-NN graph (with batches).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ilisi: Option<f64>,
}

/// Scores a clustering against `labels` (and `batches`), on `space` (row-major `n × d`,
/// normally the PCA scores the clustering used). `knn15` may pass the clustering's graph when
/// it has 15 neighbours.
pub fn score(
    space: &[f32],
    n: usize,
    d: usize,
    clusters: &Labels,
    labels: &Labels,
    batches: Option<&Labels>,
    knn15: Option<&Knn>,
) -> Result<ClusterScores> {
    let agreement = agreement(labels, clusters)?;
    let silhouette = silhouette_score(space, n, d, labels, Metric::Euclidean)?;
    let mut s = ClusterScores {
        agreement,
        silhouette,
        label_asw: (silhouette + 1.0) / 2.0,
        batch_asw: None,
        graph_connectivity: None,
        ilisi: None,
    };
    if let Some(b) = batches {
        let m = integration(space, n, d, labels, b, knn15)?;
        s.batch_asw = Some(m.batch_asw);
        s.graph_connectivity = Some(m.graph_connectivity);
        s.ilisi = Some(m.ilisi);
    }
    Ok(s)
}

/// scib's batch-integration metrics of an embedding.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct IntegrationScores {
    /// Batch ASW.
    pub batch_asw: f64,
    /// Graph connectivity (15-NN).
    pub graph_connectivity: f64,
    /// Scaled iLISI (90-NN, perplexity 30).
    pub ilisi: f64,
}

/// Batch ASW, graph connectivity and iLISI of `space` (row-major `n × d`).
pub fn integration(
    space: &[f32],
    n: usize,
    d: usize,
    labels: &Labels,
    batches: &Labels,
    knn15: Option<&Knn>,
) -> Result<IntegrationScores> {
    let batch = batch_asw(space, n, d, labels, batches, Metric::Euclidean)?;
    let own;
    let g15 = match knn15 {
        Some(g) if g.k == 15.min(n) => g,
        _ => {
            own = knn(space, n, d, 15)?;
            &own
        }
    };
    let gc = graph_connectivity(g15, labels)?;
    let g90 = knn(space, n, d, 90)?;
    let il = ilisi(&g90, batches)?;
    Ok(IntegrationScores {
        batch_asw: batch,
        graph_connectivity: gc,
        ilisi: il,
    })
}

/// Silhouette (euclidean and cosine) and label ASW of an embedding as it is.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct EmbeddingScores {
    /// Euclidean silhouette of the labels.
    pub silhouette: f64,
    /// Cosine silhouette of the labels.
    pub silhouette_cosine: f64,
    /// scib's label ASW (euclidean).
    pub label_asw: f64,
}

/// [`EmbeddingScores`] of `x` (row-major `n × d`).
pub fn embedding_scores(x: &[f32], n: usize, d: usize, labels: &Labels) -> Result<EmbeddingScores> {
    let s = silhouette_score(x, n, d, labels, Metric::Euclidean)?;
    Ok(EmbeddingScores {
        silhouette: s,
        silhouette_cosine: silhouette_score(x, n, d, labels, Metric::Cosine)?,
        label_asw: (s + 1.0) / 2.0,
    })
}
