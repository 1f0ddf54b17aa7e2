//! Dense products and the symmetric eigen-decomposition, on `faer` (pure Rust).
//!
//! Every product here splits its *output* between threads, never a sum, so results do not
//! depend on the number of threads.

use faer::{Accum, Mat, MatMut, MatRef, Par, Side};

use crate::error::{EvalError, Result};

/// `out[m × n] = a[m × d] · b[n × d]ᵀ` (row-major slices), single-threaded: callers
/// parallelize over row blocks.
pub fn matmul_nt<T>(a: &[T], m: usize, b: &[T], n: usize, d: usize, out: &mut [T])
where
    T: faer::traits::ComplexField + Copy,
{
    debug_assert_eq!(a.len(), m * d);
    debug_assert_eq!(b.len(), n * d);
    debug_assert_eq!(out.len(), m * n);
    let ar = MatRef::from_row_major_slice(a, m, d);
    let br = MatRef::from_row_major_slice(b, n, d);
    let dst = MatMut::from_row_major_slice_mut(out, m, n);
    faer::linalg::matmul::matmul(
        dst,
        Accum::Replace,
        ar,
        br.transpose(),
        T::one_impl(),
        Par::Seq,
    );
}

/// `xᵀx` of a row-major `n × d` f32 matrix whose rows are first shifted by `-shift`,
/// accumulated in f64 over blocks of rows (f32 products within a block of 4,096 rows).
/// Threads split the `d × d` output only.
pub fn gram_f64(x: &[f32], n: usize, d: usize, shift: Option<&[f64]>) -> Vec<f64> {
    const BLOCK: usize = 4096;
    let mut acc = vec![0.0f64; d * d];
    let mut block = vec![0.0f32; BLOCK.min(n.max(1)) * d];
    let mut g = Mat::<f32>::zeros(d, d);
    let par = Par::rayon(0);
    let mut r0 = 0;
    while r0 < n {
        let rows = BLOCK.min(n - r0);
        let blk = &mut block[..rows * d];
        blk.copy_from_slice(&x[r0 * d..(r0 + rows) * d]);
        if let Some(s) = shift {
            for row in blk.chunks_exact_mut(d) {
                for (v, &m) in row.iter_mut().zip(s) {
                    *v = (f64::from(*v) - m) as f32;
                }
            }
        }
        let br = MatRef::from_row_major_slice(&*blk, rows, d);
        faer::linalg::matmul::matmul(g.as_mut(), Accum::Replace, br.transpose(), br, 1.0f32, par);
        for i in 0..d {
            for j in 0..d {
                acc[i * d + j] += f64::from(g[(i, j)]);
            }
        }
        r0 += rows;
    }
    acc
}

/// Eigenpairs of a symmetric `d × d` matrix (row-major), eigenvalues in **descending** order;
/// `vectors[k]` is the unit eigenvector of `values[k]`.
pub fn symmetric_eigen(a: &[f64], d: usize) -> Result<(Vec<f64>, Vec<Vec<f64>>)> {
    let m = MatRef::from_row_major_slice(a, d, d);
    let evd = m
        .self_adjoint_eigen(Side::Lower)
        .map_err(|e| EvalError::Numerics(format!("symmetric eigen-decomposition: {e:?}")))?;
    let s = evd.S();
    let u = evd.U();
    let mut order: Vec<usize> = (0..d).collect();
    let vals: Vec<f64> = (0..d).map(|i| s[i]).collect();
    order.sort_by(|&i, &j| vals[j].total_cmp(&vals[i]).then(i.cmp(&j)));
    let values = order.iter().map(|&i| vals[i]).collect();
    let vectors = order
        .iter()
        .map(|&k| (0..d).map(|r| u[(r, k)]).collect())
        .collect();
    Ok((values, vectors))
}
