//! Graph-based integration metrics of scib-metrics: graph connectivity and LISI.

use crate::error::{EvalError, Result};
use crate::knn::Knn;
use crate::labels::Labels;

fn check(knn: &Knn, labels: &Labels, what: &str) -> Result<()> {
    if knn.n != labels.len() {
        return Err(EvalError::LengthMismatch {
            what: format!("{what}: labels against kNN graph cells"),
            a: labels.len(),
            b: knn.n,
        });
    }
    Ok(())
}

/// Sizes of the strongly connected components of a directed graph (adjacency lists),
/// by an iterative Tarjan.
fn scc_sizes(adj: &[Vec<u32>]) -> Vec<usize> {
    let n = adj.len();
    let mut index = vec![u32::MAX; n];
    let mut low = vec![0u32; n];
    let mut on_stack = vec![false; n];
    let mut stack: Vec<u32> = Vec::new();
    let mut sizes = Vec::new();
    let mut next = 0u32;
    let mut call: Vec<(u32, usize)> = Vec::new();
    for root in 0..n {
        if index[root] != u32::MAX {
            continue;
        }
        call.push((root as u32, 0));
        while let Some(&(v, pos)) = call.last() {
            let vi = v as usize;
            if index[vi] == u32::MAX {
                index[vi] = next;
                low[vi] = next;
                next += 1;
                stack.push(v);
                on_stack[vi] = true;
            }
            if pos < adj[vi].len() {
                if let Some(top) = call.last_mut() {
                    top.1 += 1;
                }
                let w = adj[vi][pos] as usize;
                if index[w] == u32::MAX {
                    call.push((w as u32, 0));
                } else if on_stack[w] {
                    low[vi] = low[vi].min(index[w]);
                }
                continue;
            }
            // v is finished
            call.pop();
            if let Some(&(parent, _)) = call.last() {
                let p = parent as usize;
                low[p] = low[p].min(low[vi]);
            }
            if low[vi] == index[vi] {
                let mut size = 0;
                while let Some(w) = stack.pop() {
                    on_stack[w as usize] = false;
                    size += 1;
                    if w == v {
                        break;
                    }
                }
                sizes.push(size);
            }
        }
    }
    sizes
}

/// scib's graph connectivity: for each label, the fraction of its cells in the largest
/// strongly connected component of the directed kNN graph restricted to the label; the mean
/// over labels. `knn` is the 15-neighbour graph (self included, as scanpy and pynndescent).
pub fn graph_connectivity(knn: &Knn, labels: &Labels) -> Result<f64> {
    check(knn, labels, "graph connectivity")?;
    let mut scores = Vec::new();
    for code in 0..labels.names.len() as u32 {
        let members: Vec<usize> = (0..knn.n).filter(|&i| labels.codes[i] == code).collect();
        if members.is_empty() {
            continue;
        }
        let mut local = vec![u32::MAX; knn.n];
        for (li, &i) in members.iter().enumerate() {
            local[i] = li as u32;
        }
        let adj: Vec<Vec<u32>> = members
            .iter()
            .map(|&i| {
                knn.row(i)
                    .iter()
                    .filter_map(|&j| {
                        let l = local[j as usize];
                        (l != u32::MAX).then_some(l)
                    })
                    .collect()
            })
            .collect();
        let sizes = scc_sizes(&adj);
        let largest = sizes.into_iter().max().unwrap_or(0);
        scores.push(largest as f64 / members.len() as f64);
    }
    if scores.is_empty() {
        return Err(EvalError::LabelCount {
            metric: "graph connectivity",
            need: "at least 1".into(),
            got: 0,
        });
    }
    Ok(scores.iter().sum::<f64>() / scores.len() as f64)
}

/// Per-cell LISI (inverse Simpson index of `labels` among a cell's neighbours, weighted by a
/// Gaussian kernel on the distances whose precision β is bisected until the entropy equals
/// `ln(perplexity)`, tolerance 1e-5, at most 50 steps), as scib-metrics `lisi_knn`. The cell
/// itself is left out of its own neighbourhood. A cell whose weights vanish gets −1 (scib's
/// convention). `perplexity = None`: ⌊k / 3⌋.
pub fn lisi(knn: &Knn, labels: &Labels, perplexity: Option<f64>) -> Result<Vec<f64>> {
    check(knn, labels, "LISI")?;
    let perplexity = perplexity.unwrap_or((knn.k as f64 / 3.0).floor());
    if perplexity <= 0.0 {
        return Err(EvalError::InvalidArgument(format!(
            "LISI perplexity {perplexity} (kNN with {} neighbours)",
            knn.k
        )));
    }
    let target = perplexity.ln();
    let n_labels = labels.names.len();
    let mut out = Vec::with_capacity(knn.n);
    let mut p = vec![0.0f64; knn.k];
    for i in 0..knn.n {
        let idx = knn.row(i);
        let dist: Vec<f64> = knn.row_distances(i).iter().map(|&v| f64::from(v)).collect();
        let keep: Vec<bool> = idx.iter().map(|&j| j as usize != i).collect();
        let hbeta = |beta: f64, p: &mut [f64]| -> f64 {
            let mut sum = 0.0;
            let mut wsum = 0.0;
            for ((pj, &dj), &k) in p.iter_mut().zip(&dist).zip(&keep) {
                *pj = if k { (-dj * beta).exp() } else { 0.0 };
                sum += *pj;
                wsum += dj * *pj;
            }
            if sum == 0.0 {
                p.iter_mut().for_each(|v| *v = 0.0);
                return 0.0;
            }
            p.iter_mut().for_each(|v| *v /= sum);
            sum.ln() + beta * wsum / sum
        };
        let mut beta = 1.0f64;
        let (mut bmin, mut bmax) = (f64::NEG_INFINITY, f64::INFINITY);
        let mut h = hbeta(beta, &mut p);
        let mut diff = h - target;
        let mut tries = 0;
        while diff.abs() >= 1e-5 && tries < 50 {
            if diff > 0.0 {
                bmin = beta;
                beta = if bmax == f64::INFINITY {
                    beta * 2.0
                } else {
                    (beta + bmax) / 2.0
                };
            } else {
                bmax = beta;
                beta = if bmin == f64::NEG_INFINITY {
                    beta / 2.0
                } else {
                    (beta + bmin) / 2.0
                };
            }
            h = hbeta(beta, &mut p);
            diff = h - target;
            tries += 1;
        }
        let simpson = if h == 0.0 {
            -1.0
        } else {
            let mut per = vec![0.0f64; n_labels];
            for (&j, &pj) in idx.iter().zip(&p) {
                per[labels.codes[j as usize] as usize] += pj;
            }
            per.iter().map(|v| v * v).sum()
        };
        out.push(1.0 / simpson);
    }
    Ok(out)
}

/// numpy's `nanmedian`: the median of the non-NaN values (mean of the middle two for an even
/// count); NaN when there are none.
pub fn nanmedian(v: &[f64]) -> f64 {
    let mut x: Vec<f64> = v.iter().copied().filter(|a| !a.is_nan()).collect();
    if x.is_empty() {
        return f64::NAN;
    }
    x.sort_by(f64::total_cmp);
    let m = x.len() / 2;
    if x.len() % 2 == 1 {
        x[m]
    } else {
        (x[m - 1] + x[m]) / 2.0
    }
}

/// scib's scaled iLISI: `(median LISI of the batches − 1) / (n_batches − 1)`, in [0, 1],
/// higher = batches better mixed. `knn` is the 90-neighbour graph (self included).
pub fn ilisi(knn: &Knn, batches: &Labels) -> Result<f64> {
    let nb = batches.n_distinct();
    if nb < 2 {
        return Err(EvalError::LabelCount {
            metric: "iLISI",
            need: "at least 2 batches".into(),
            got: nb,
        });
    }
    let m = nanmedian(&lisi(knn, batches, None)?);
    Ok((m - 1.0) / (nb as f64 - 1.0))
}

/// scib's scaled cLISI: `(n_labels − median LISI of the labels) / (n_labels − 1)`, higher =
/// labels better separated.
pub fn clisi(knn: &Knn, labels: &Labels) -> Result<f64> {
    let nl = labels.n_distinct();
    if nl < 2 {
        return Err(EvalError::LabelCount {
            metric: "cLISI",
            need: "at least 2 labels".into(),
            got: nl,
        });
    }
    let m = nanmedian(&lisi(knn, labels, None)?);
    Ok((nl as f64 - m) / (nl as f64 - 1.0))
}
