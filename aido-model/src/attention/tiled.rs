//! The generic attention implementation from burn tensor ops: tiles over queries and keys with
//! an online softmax (forward) and the FlashAttention-2 recomputation (backward). Memory is
//! `O(tile_q · tile_k)` per batch × head beyond the `O(S · head_dim)` inputs and outputs.
//!
//! It runs on any backend and is the reference the specialised kernels are tested against (with
//! a naive f64 formula as the outside reference).

use burn::tensor::Tensor;
use burn::tensor::backend::Backend;

fn ranges(n: usize, tile: usize) -> impl Iterator<Item = std::ops::Range<usize>> {
    let tile = tile.max(1);
    (0..n).step_by(tile).map(move |s| s..(s + tile).min(n))
}

/// `q: [B, H, Sq, D]`, `k, v: [B, H, Sk, D]` → `(out [B, H, Sq, D], lse [B, H, Sq])`, where
/// `lse` is the natural log-sum-exp of each row of `scale · q kᵀ`.
pub fn forward<B: Backend>(
    q: Tensor<B, 4>,
    k: Tensor<B, 4>,
    v: Tensor<B, 4>,
    scale: f32,
    tile_q: usize,
    tile_k: usize,
) -> (Tensor<B, 4>, Tensor<B, 3>) {
    let [b, h, sq, d] = q.dims();
    let [_, _, sk, dv] = v.dims();
    let q = q * scale;
    let kt = k.swap_dims(2, 3); // [B, H, D, Sk]
    let mut outs = Vec::new();
    let mut lses = Vec::new();
    for qr in ranges(sq, tile_q) {
        let qi = q.clone().slice([0..b, 0..h, qr.clone(), 0..d]);
        // Running max m, denominator l and numerator acc of the online softmax.
        let mut state: Option<(Tensor<B, 4>, Tensor<B, 4>, Tensor<B, 4>)> = None;
        for kr in ranges(sk, tile_k) {
            let kj = kt.clone().slice([0..b, 0..h, 0..d, kr.clone()]);
            let vj = v.clone().slice([0..b, 0..h, kr, 0..dv]);
            let s = qi.clone().matmul(kj); // [B, H, tq, tk]
            let mj = s.clone().max_dim(3); // [B, H, tq, 1]
            state = Some(match state {
                None => {
                    let p = (s - mj.clone()).exp();
                    let l = p.clone().sum_dim(3);
                    (mj, l, p.matmul(vj))
                }
                Some((m, l, acc)) => {
                    let mn = m.clone().max_pair(mj);
                    let alpha = (m - mn.clone()).exp();
                    let p = (s - mn.clone()).exp();
                    let l = l * alpha.clone() + p.clone().sum_dim(3);
                    (mn, l, acc * alpha + p.matmul(vj))
                }
            });
        }
        if let Some((m, l, acc)) = state {
            let t = qr.len();
            outs.push(acc / l.clone());
            lses.push((m + l.log()).reshape([b, h, t]));
        }
    }
    (Tensor::cat(outs, 2), Tensor::cat(lses, 2))
}

/// Gradients of [`forward`]: `(dq, dk, dv)` from `q, k, v`, the saved `out` and `lse`, and the
/// output gradient `dout`. Scores are recomputed per `tile_q × tile_k` tile:
/// `P = exp(scale·q kᵀ − lse)`, `dV += Pᵀ dO`, `dP = dO vᵀ`, `dS = P ∘ (dP − rowsum(dO ∘ O))`,
/// `dQ += scale · dS k`, `dK += scale · dSᵀ q`.
#[allow(clippy::too_many_arguments)]
pub fn backward<B: Backend>(
    q: Tensor<B, 4>,
    k: Tensor<B, 4>,
    v: Tensor<B, 4>,
    out: Tensor<B, 4>,
    lse: Tensor<B, 3>,
    dout: Tensor<B, 4>,
    scale: f32,
    tile_q: usize,
    tile_k: usize,
) -> (Tensor<B, 4>, Tensor<B, 4>, Tensor<B, 4>) {
    let [b, h, sq, d] = q.dims();
    let [_, _, sk, dv] = v.dims();
    let delta = (dout.clone() * out).sum_dim(3); // [B, H, Sq, 1]
    let lse = lse.reshape([b, h, sq, 1]);
    let qs = q.clone() * scale;
    let q_tiles: Vec<_> = ranges(sq, tile_q).collect();
    let mut dq: Vec<Option<Tensor<B, 4>>> = vec![None; q_tiles.len()];
    let mut dks = Vec::new();
    let mut dvs = Vec::new();
    for kr in ranges(sk, tile_k) {
        let kj = k.clone().slice([0..b, 0..h, kr.clone(), 0..d]);
        let vj = v.clone().slice([0..b, 0..h, kr, 0..dv]);
        let mut dk_j: Option<Tensor<B, 4>> = None;
        let mut dv_j: Option<Tensor<B, 4>> = None;
        for (i, qr) in q_tiles.iter().enumerate() {
            let qi = qs.clone().slice([0..b, 0..h, qr.clone(), 0..d]);
            let doi = dout.clone().slice([0..b, 0..h, qr.clone(), 0..dv]);
            let li = lse.clone().slice([0..b, 0..h, qr.clone(), 0..1]);
            let di = delta.clone().slice([0..b, 0..h, qr.clone(), 0..1]);
            let p = (qi.clone().matmul(kj.clone().swap_dims(2, 3)) - li).exp(); // [B,H,tq,tk]
            let pt = p.clone().swap_dims(2, 3);
            let dv_add = pt.matmul(doi.clone());
            let dp = doi.matmul(vj.clone().swap_dims(2, 3));
            let ds = p * (dp - di);
            let dq_add = ds.clone().matmul(kj.clone()) * scale;
            // dK = scale · dSᵀ q = dSᵀ (scale · q).
            let dk_add = ds.swap_dims(2, 3).matmul(qi);
            dq[i] = Some(match dq[i].take() {
                None => dq_add,
                Some(a) => a + dq_add,
            });
            dk_j = Some(dk_j.map_or(dk_add.clone(), |a| a + dk_add));
            dv_j = Some(dv_j.map_or(dv_add.clone(), |a| a + dv_add));
        }
        dks.extend(dk_j);
        dvs.extend(dv_j);
    }
    let dq: Vec<Tensor<B, 4>> = dq.into_iter().flatten().collect();
    (Tensor::cat(dq, 2), Tensor::cat(dks, 2), Tensor::cat(dvs, 2))
}

/// Only the log-sum-exp `[B, H, Sq]` of the rows of `scale · q kᵀ`, tiled like [`forward`]
/// (for backends whose fused forward kernel does not return it).
pub fn logsumexp<B: Backend>(
    q: Tensor<B, 4>,
    k: Tensor<B, 4>,
    scale: f32,
    tile_q: usize,
    tile_k: usize,
) -> Tensor<B, 3> {
    let [b, h, sq, d] = q.dims();
    let sk = k.dims()[2];
    let q = q * scale;
    let kt = k.swap_dims(2, 3);
    let mut lses = Vec::new();
    for qr in ranges(sq, tile_q) {
        let t = qr.len();
        let qi = q.clone().slice([0..b, 0..h, qr, 0..d]);
        let mut state: Option<(Tensor<B, 4>, Tensor<B, 4>)> = None;
        for kr in ranges(sk, tile_k) {
            let s = qi.clone().matmul(kt.clone().slice([0..b, 0..h, 0..d, kr]));
            let mj = s.clone().max_dim(3);
            state = Some(match state {
                None => {
                    let l = (s - mj.clone()).exp().sum_dim(3);
                    (mj, l)
                }
                Some((m, l)) => {
                    let mn = m.clone().max_pair(mj);
                    let l = l * (m - mn.clone()).exp() + (s - mn.clone()).exp().sum_dim(3);
                    (mn, l)
                }
            });
        }
        if let Some((m, l)) = state {
            lses.push((m + l.log()).reshape([b, h, t]));
        }
    }
    Tensor::cat(lses, 2)
}
