//! # aido-eval — evaluation for AIDO.Cell
//!
//! What the field measures embeddings and predictions with, reproduced to its published
//! definitions, plus the analysis core of the zero-shot protocol and the pictures:
//!
//! - [`metrics`]: ARI, NMI, AMI, homogeneity, completeness (scikit-learn 1.9, exact integer
//!   pair counts), accuracy / macro-F1 / per-class F1 / confusion, silhouette (euclidean and
//!   cosine, in tiles), scib's label and batch ASW, graph connectivity and iLISI / cLISI;
//! - [`preprocess`]: scanpy's expression baseline steps (normalize_total, log1p, seurat HVG,
//!   scale), [`pca`] (covariance eigen route, sklearn's sign rule), [`knn`](mod@knn) (exact, self
//!   included), [`umap`] (fuzzy simplicial set = scanpy's connectivities; seeded,
//!   single-threaded layout), [`leiden`] (RB modularity as leidenalg, the resolution search);
//! - [`pipeline`]: the whole zero-shot clustering protocol on an embedding or on raw counts,
//!   with its report;
//! - [`de`]: scanpy's t-test DE ranking against a reference and the perturbation metrics on
//!   the top DE genes (GEARS's MSE, Pearson of deltas);
//! - [`plot`]: PNG scatter (UMAP) and heatmap (confusion) with an embedded font.
//!
//! Everything is reproducible from a seed and independent of the thread count: threads only
//! ever split outputs, never sums.
//!
//! ```
//! use aido_eval::{Labels, metrics::cluster::adjusted_rand_index};
//! let truth = Labels::from_strings(&["a", "a", "b", "b"]);
//! let pred = Labels::from_strings(&["x", "x", "y", "y"]);
//! assert_eq!(adjusted_rand_index(&truth, &pred)?, 1.0);
//! # Ok::<(), aido_eval::EvalError>(())
//! ```

pub mod de;
pub mod error;
pub mod knn;
pub mod labels;
pub mod leiden;
pub mod linalg;
pub mod metrics;
pub mod palettes;
pub mod pca;
pub mod perturb;
pub mod pipeline;
pub mod plot;
pub mod preprocess;
pub mod sparse;
pub mod umap;

pub use error::{EvalError, Result};
pub use knn::{Knn, knn};
pub use labels::Labels;
pub use sparse::CsrMatrix;

/// A fixed pseudo-random drawing order of `n` points (no group systematically on top).
pub(crate) fn plot_order(n: usize) -> Vec<usize> {
    let mut v: Vec<usize> = (0..n).collect();
    let mut s: u64 = 0x9E37_79B9_7F4A_7C15;
    for i in (1..n).rev() {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        v.swap(i, (s % (i as u64 + 1)) as usize);
    }
    v
}
