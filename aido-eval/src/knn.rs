//! Exact k-nearest neighbours (Euclidean), self included, as scanpy's brute-force path.
//!
//! Candidates come from batched f32 products `‖x‖² + ‖y‖² − 2x·y` in tiles (row blocks run in
//! parallel, each single-threaded, so the result does not depend on the thread count); the
//! best `k + 8` candidates of each row are then re-ranked with distances recomputed exactly in
//! f64, which keeps the order correct where the f32 expansion loses digits. Ties are broken by
//! the lower cell index. Memory: the `n × k` result plus one tile per thread.

use rayon::prelude::*;

use crate::error::{EvalError, Result, check_finite};
use crate::linalg::matmul_nt;

/// The neighbours of every cell, nearest first (the cell itself is first, at distance 0,
/// unless an exact duplicate with a lower index ties with it).
#[derive(Debug, Clone, PartialEq)]
pub struct Knn {
    /// Number of cells.
    pub n: usize,
    /// Neighbours per cell (self included).
    pub k: usize,
    /// `[n × k]` row-major neighbour indices.
    pub indices: Vec<u32>,
    /// `[n × k]` row-major Euclidean distances.
    pub distances: Vec<f32>,
}

impl Knn {
    /// Neighbour indices of cell `i`.
    pub fn row(&self, i: usize) -> &[u32] {
        &self.indices[i * self.k..(i + 1) * self.k]
    }

    /// Distances of cell `i`'s neighbours.
    pub fn row_distances(&self, i: usize) -> &[f32] {
        &self.distances[i * self.k..(i + 1) * self.k]
    }

    /// The first `k` neighbours of each cell (a smaller graph from a larger search).
    pub fn truncate(&self, k: usize) -> Knn {
        let k = k.min(self.k);
        let mut indices = Vec::with_capacity(self.n * k);
        let mut distances = Vec::with_capacity(self.n * k);
        for i in 0..self.n {
            indices.extend_from_slice(&self.row(i)[..k]);
            distances.extend_from_slice(&self.row_distances(i)[..k]);
        }
        Knn {
            n: self.n,
            k,
            indices,
            distances,
        }
    }
}

const ROWS: usize = 256;
const COLS: usize = 4096;
const MARGIN: usize = 8;

fn exact_dist2(a: &[f32], b: &[f32]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(&x, &y)| {
            let d = f64::from(x) - f64::from(y);
            d * d
        })
        .sum()
}

/// Exact `k` nearest neighbours of every row of the row-major `n × d` matrix `x` (self
/// included, as scanpy's `n_neighbors`). `k` is capped at `n`.
pub fn knn(x: &[f32], n: usize, d: usize, k: usize) -> Result<Knn> {
    search(x, n, x, n, d, k, true)
}

/// Exact `k` nearest reference rows (`reference: nr × d`) of every query row
/// (`queries: nq × d`), nearest first, ties by the lower reference index: a kNN classifier's
/// neighbour search (scikit-learn's `KNeighborsClassifier`, brute force). `k` is capped at
/// `nr`; [`Knn::n`] is `nq`.
pub fn knn_query(
    queries: &[f32],
    nq: usize,
    reference: &[f32],
    nr: usize,
    d: usize,
    k: usize,
) -> Result<Knn> {
    search(queries, nq, reference, nr, d, k, false)
}

fn search(
    q: &[f32],
    nq: usize,
    x: &[f32],
    n: usize,
    d: usize,
    k: usize,
    same: bool,
) -> Result<Knn> {
    for (what, m, rows) in [("query", q, nq), ("reference", x, n)] {
        if m.len() != rows * d {
            return Err(EvalError::LengthMismatch {
                what: format!("kNN {what} values against rows × columns"),
                a: m.len(),
                b: rows * d,
            });
        }
    }
    if k == 0 {
        return Err(EvalError::InvalidArgument("kNN with k = 0".into()));
    }
    if n == 0 {
        return Err(EvalError::InvalidArgument(
            "kNN with no reference rows".into(),
        ));
    }
    check_finite("the kNN input", x, d)?;
    if !same {
        check_finite("the kNN queries", q, d)?;
    }
    let k = k.min(n);
    let cand = (k + MARGIN).min(n);
    let norms: Vec<f32> = x
        .chunks_exact(d.max(1))
        .map(|r| r.iter().map(|v| v * v).sum())
        .collect();
    let blocks: Vec<(usize, usize)> = (0..nq)
        .step_by(ROWS)
        .map(|r0| (r0, ROWS.min(nq - r0)))
        .collect();
    let parts: Vec<(Vec<u32>, Vec<f32>)> = blocks
        .par_iter()
        .map(|&(r0, rows)| {
            let a = &q[r0 * d..(r0 + rows) * d];
            let mut tile = vec![0.0f32; rows * COLS];
            // Per row: the current best candidates as (approx. dist² − ‖x_i‖², index), sorted.
            let mut best: Vec<Vec<(f32, u32)>> = vec![Vec::with_capacity(cand + 1); rows];
            let mut c0 = 0;
            while c0 < n {
                let cols = COLS.min(n - c0);
                let t = &mut tile[..rows * cols];
                matmul_nt(a, rows, &x[c0 * d..(c0 + cols) * d], cols, d, t);
                for (r, b) in best.iter_mut().enumerate() {
                    // ‖x_i‖² is the same for the whole row: rank by ‖x_j‖² − 2 x_i·x_j
                    let trow = &mut t[r * cols..(r + 1) * cols];
                    for (v, &nb) in trow.iter_mut().zip(&norms[c0..c0 + cols]) {
                        *v = nb - 2.0 * *v;
                    }
                    let mut j0 = 0;
                    for chunk in trow.chunks(16) {
                        let thr = if b.len() == cand {
                            b[cand - 1].0
                        } else {
                            f32::INFINITY
                        };
                        let lo = chunk.iter().copied().fold(f32::INFINITY, f32::min);
                        if lo <= thr {
                            for (jj, &key) in chunk.iter().enumerate() {
                                if b.len() == cand && key > b[cand - 1].0 {
                                    continue;
                                }
                                let idx = (c0 + j0 + jj) as u32;
                                let pos = b.partition_point(|&(dv, iv)| (dv, iv) < (key, idx));
                                b.insert(pos, (key, idx));
                                if b.len() > cand {
                                    b.pop();
                                }
                            }
                        }
                        j0 += chunk.len();
                    }
                }
                c0 += cols;
            }
            let mut ind = Vec::with_capacity(rows * k);
            let mut dis = Vec::with_capacity(rows * k);
            for (r, b) in best.into_iter().enumerate() {
                let i = r0 + r;
                let xi = &q[i * d..(i + 1) * d];
                let mut exact: Vec<(f64, u32)> = b
                    .into_iter()
                    .map(|(_, j)| {
                        let dd = if same && j as usize == i {
                            0.0
                        } else {
                            exact_dist2(xi, &x[j as usize * d..(j as usize + 1) * d])
                        };
                        (dd, j)
                    })
                    .collect();
                exact.sort_by(|p, q| p.0.total_cmp(&q.0).then(p.1.cmp(&q.1)));
                for &(dd, j) in exact.iter().take(k) {
                    ind.push(j);
                    dis.push(dd.sqrt() as f32);
                }
            }
            (ind, dis)
        })
        .collect();
    let mut indices = Vec::with_capacity(nq * k);
    let mut distances = Vec::with_capacity(nq * k);
    for (i, dd) in parts {
        indices.extend(i);
        distances.extend(dd);
    }
    Ok(Knn {
        n: nq,
        k,
        indices,
        distances,
    })
}
