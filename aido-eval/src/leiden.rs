//! Leiden community detection on the connectivity graph, as scanpy's `tl.leiden` (leidenalg's
//! `RBConfigurationVertexPartition`, weights used, iterated until a pass finds no improvement)
//! through the `single-clustering` crate, and the resolution search of the zero-shot
//! clustering protocol (SPEC-tasks §2).

use single_clustering::community_search::leiden::{LeidenConfig, ObjectiveKind, leiden};
use single_clustering::network::CSRNetwork;

use crate::error::{EvalError, Result};
use crate::sparse::CsrMatrix;

/// A clustering of the cells.
#[derive(Debug, Clone, PartialEq)]
pub struct LeidenResult {
    /// Cluster of every cell, `0..n_clusters`, numbered by decreasing size (ties: by the
    /// lowest cell), as scanpy renames leidenalg's clusters.
    pub labels: Vec<u32>,
    /// Number of clusters.
    pub n_clusters: usize,
    /// The resolution used.
    pub resolution: f64,
}

fn network(g: &CsrMatrix) -> Result<CSRNetwork> {
    CSRNetwork::from_csr_parts(g.indptr.clone(), g.indices.clone(), g.data.clone(), None)
        .map_err(|e| EvalError::Numerics(format!("building the Leiden graph: {e}")))
}

fn relabel_by_size(labels: &[usize]) -> (Vec<u32>, usize) {
    let k = labels.iter().copied().max().map_or(0, |m| m + 1);
    let mut size = vec![0usize; k];
    let mut first = vec![usize::MAX; k];
    for (i, &l) in labels.iter().enumerate() {
        size[l] += 1;
        first[l] = first[l].min(i);
    }
    let mut order: Vec<usize> = (0..k).filter(|&c| size[c] > 0).collect();
    order.sort_by(|&a, &b| size[b].cmp(&size[a]).then(first[a].cmp(&first[b])));
    let mut new = vec![0u32; k];
    for (r, &c) in order.iter().enumerate() {
        new[c] = r as u32;
    }
    (labels.iter().map(|&l| new[l]).collect(), order.len())
}

/// Leiden at one resolution with a seed (RB configuration model; `n_iterations = -1`
/// semantics: passes until one finds nothing).
pub fn leiden_at(g: &CsrMatrix, resolution: f64, seed: u64) -> Result<LeidenResult> {
    let net = network(g)?;
    run(&net, resolution, seed)
}

fn run(net: &CSRNetwork, resolution: f64, seed: u64) -> Result<LeidenResult> {
    let cfg = LeidenConfig {
        objective: ObjectiveKind::Rb { resolution },
        seed: Some(seed),
        n_iterations: 1000,
        patience: 1,
        ..Default::default()
    };
    let c = leiden(net, &cfg).map_err(|e| EvalError::Numerics(format!("Leiden: {e}")))?;
    let (labels, n_clusters) = relabel_by_size(c.labels());
    Ok(LeidenResult {
        labels,
        n_clusters,
        resolution,
    })
}

/// The outcome of [`search_resolution`].
#[derive(Debug, Clone, PartialEq)]
pub struct ResolutionSearch {
    /// The chosen clustering.
    pub best: LeidenResult,
    /// Whether it has exactly the asked number of clusters.
    pub exact: bool,
    /// Every `(resolution, n_clusters)` tried, in order.
    pub tried: Vec<(f64, usize)>,
}

/// Bisects the resolution in `[0, 2]` (widened up to 10 while too few clusters) until Leiden
/// gives `target` clusters, at most `max_steps` runs. When no resolution gives exactly
/// `target`, the run whose count is closest (ties: the smaller resolution) is kept and
/// `exact` is false.
pub fn search_resolution(
    g: &CsrMatrix,
    target: usize,
    seed: u64,
    max_steps: usize,
) -> Result<ResolutionSearch> {
    if target == 0 {
        return Err(EvalError::InvalidArgument(
            "the resolution search needs a target of at least 1 cluster".into(),
        ));
    }
    let net = network(g)?;
    let mut tried = Vec::new();
    let mut best: Option<LeidenResult> = None;
    fn consider(
        r: LeidenResult,
        target: usize,
        best: &mut Option<LeidenResult>,
        tried: &mut Vec<(f64, usize)>,
    ) {
        tried.push((r.resolution, r.n_clusters));
        let better = match best {
            None => true,
            Some(b) => {
                let (db, dr) = (b.n_clusters.abs_diff(target), r.n_clusters.abs_diff(target));
                dr < db || (dr == db && r.resolution < b.resolution)
            }
        };
        if better {
            *best = Some(r);
        }
    }
    let (mut lo, mut hi) = (0.0f64, 2.0f64);
    let mut steps = 0;
    // widen the upper end while it gives too few clusters
    loop {
        let r = run(&net, hi, seed)?;
        steps += 1;
        let k = r.n_clusters;
        consider(r, target, &mut best, &mut tried);
        if k >= target || hi >= 10.0 || steps >= max_steps {
            break;
        }
        lo = hi;
        hi = (hi * 2.0).min(10.0);
    }
    let done = |b: &Option<LeidenResult>| b.as_ref().is_some_and(|b| b.n_clusters == target);
    while !done(&best) && steps < max_steps && hi - lo > 1e-6 {
        let mid = 0.5 * (lo + hi);
        let r = run(&net, mid, seed)?;
        steps += 1;
        let k = r.n_clusters;
        consider(r, target, &mut best, &mut tried);
        if k < target {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    let best = best.ok_or_else(|| EvalError::Numerics("no Leiden run".into()))?;
    let exact = best.n_clusters == target;
    Ok(ResolutionSearch { best, exact, tried })
}
