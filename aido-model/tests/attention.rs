//! The attention op against the naive f64 formula from the definition
//! (`softmax(q kᵀ/√d) v` and its analytic gradient, `aido_model::attention::reference`), on random inputs of several shapes, through
//! the generic tiled implementation, the backend's own path and `Autodiff<Flex>`.
#![allow(clippy::unwrap_used)]

use aido_model::Cpu;
use aido_model::attention::reference::{naive, random};
use aido_model::attention::{attention, attention_with_lse, default_scale, tiled};
use aido_model::burn::backend::Autodiff;
use aido_model::burn::tensor::{Tensor, TensorData, TensorPrimitive};

type Ad = Autodiff<Cpu>;

fn t4<B: aido_model::burn::tensor::backend::Backend>(v: &[f32], shape: [usize; 4]) -> Tensor<B, 4> {
    Tensor::from_data(TensorData::new(v.to_vec(), shape), &Default::default())
}

fn host<B: aido_model::burn::tensor::backend::Backend, const D: usize>(
    t: Tensor<B, D>,
) -> Vec<f32> {
    t.into_data().convert::<f32>().into_vec().unwrap()
}

fn check(name: &str, got: &[f32], want: &[f64], tol: f64) {
    assert_eq!(got.len(), want.len(), "{name}");
    let scale = want.iter().fold(1.0f64, |m, x| m.max(x.abs()));
    let d = got
        .iter()
        .zip(want)
        .map(|(a, b)| (f64::from(*a) - b).abs())
        .fold(0.0, f64::max);
    assert!(
        d <= tol * scale,
        "{name}: max |Δ| = {d:e} (scale {scale:.3})"
    );
}

/// (batch, heads, seq, head_dim, input magnitude): S below, at, and not a multiple of the tile,
/// head dims 32 and 64, and large inputs (scores up to ~±30) for the online-softmax rescaling.
const SHAPES: [(usize, usize, usize, usize, f32); 6] = [
    (1, 1, 1, 8, 1.0),
    (1, 2, 7, 32, 1.0),
    (2, 2, 37, 32, 1.0),
    (1, 3, 64, 64, 1.0),
    (1, 2, 100, 32, 3.0),
    (1, 1, 65, 64, 0.5),
];

#[test]
fn tiled_forward_and_backward_match_the_naive_formula() {
    for (n, &(b, h, s, d, a)) in SHAPES.iter().enumerate() {
        let len = b * h * s * d;
        let seed = 10 * n as u64;
        let (q, k, v, dout) = (
            random(len, seed, a),
            random(len, seed + 1, a),
            random(len, seed + 2, 1.0),
            random(len, seed + 3, 1.0),
        );
        let want = naive(&q, &k, &v, &dout, b * h, s, d);
        let shape = [b, h, s, d];
        let scale = default_scale(d);
        // Tiles of 16 × 24: several tiles, none aligned with S.
        let (o, lse) = tiled::forward(
            t4::<Cpu>(&q, shape),
            t4(&k, shape),
            t4(&v, shape),
            scale,
            16,
            24,
        );
        let tag = format!("b{b} h{h} s{s} d{d}");
        check(&format!("{tag} out"), &host(o.clone()), &want.out, 2e-5);
        check(&format!("{tag} lse"), &host(lse.clone()), &want.lse, 2e-5);
        let (dq, dk, dv) = tiled::backward(
            t4::<Cpu>(&q, shape),
            t4(&k, shape),
            t4(&v, shape),
            o,
            lse,
            t4(&dout, shape),
            scale,
            16,
            24,
        );
        check(&format!("{tag} dq"), &host(dq), &want.dq, 5e-5);
        check(&format!("{tag} dk"), &host(dk), &want.dk, 5e-5);
        check(&format!("{tag} dv"), &host(dv), &want.dv, 5e-5);
    }
}

#[test]
fn backend_attention_and_autodiff_gradients_match_the_naive_formula() {
    for (n, &(b, h, s, d, a)) in SHAPES.iter().enumerate() {
        let len = b * h * s * d;
        let seed = 100 + 10 * n as u64;
        let (q, k, v, dout) = (
            random(len, seed, a),
            random(len, seed + 1, a),
            random(len, seed + 2, 1.0),
            random(len, seed + 3, 1.0),
        );
        let want = naive(&q, &k, &v, &dout, b * h, s, d);
        let shape = [b, h, s, d];
        let tag = format!("b{b} h{h} s{s} d{d}");
        // Inference path of the CPU backend.
        let o = attention(t4::<Cpu>(&q, shape), t4(&k, shape), t4(&v, shape));
        check(&format!("{tag} cpu out"), &host(o), &want.out, 2e-5);
        let (o, lse) = attention_with_lse(t4::<Cpu>(&q, shape), t4(&k, shape), t4(&v, shape));
        check(&format!("{tag} cpu out+lse"), &host(o), &want.out, 2e-5);
        check(&format!("{tag} cpu lse"), &host(lse), &want.lse, 2e-5);
        // The CUDA/wgpu training forward: fused output + tiled log-sum-exp (run here on CPU).
        let (o, lse) = aido_model::attention::fused_forward_with_lse::<Cpu>(
            t4::<Cpu>(&q, shape).into_primitive().tensor(),
            t4::<Cpu>(&k, shape).into_primitive().tensor(),
            t4::<Cpu>(&v, shape).into_primitive().tensor(),
            default_scale(d),
        );
        let prim = |x| Tensor::<Cpu, 4>::from_primitive(TensorPrimitive::Float(x));
        check(&format!("{tag} fused out"), &host(prim(o)), &want.out, 2e-5);
        let lse = Tensor::<Cpu, 3>::from_primitive(TensorPrimitive::Float(lse));
        check(&format!("{tag} fused lse"), &host(lse), &want.lse, 2e-5);
        // Autodiff: loss = Σ out ∘ dout, so d loss / d out = dout.
        let qa = t4::<Ad>(&q, shape).require_grad();
        let ka = t4::<Ad>(&k, shape).require_grad();
        let va = t4::<Ad>(&v, shape).require_grad();
        let o = attention(qa.clone(), ka.clone(), va.clone());
        check(
            &format!("{tag} autodiff out"),
            &host(o.clone().inner()),
            &want.out,
            2e-5,
        );
        let grads = (o * t4::<Ad>(&dout, shape)).sum().backward();
        check(
            &format!("{tag} autodiff dq"),
            &host(qa.grad(&grads).unwrap()),
            &want.dq,
            5e-5,
        );
        check(
            &format!("{tag} autodiff dk"),
            &host(ka.grad(&grads).unwrap()),
            &want.dk,
            5e-5,
        );
        check(
            &format!("{tag} autodiff dv"),
            &host(va.grad(&grads).unwrap()),
            &want.dv,
            5e-5,
        );
    }
}

/// A whole tiny model (the `tiny_ln_nobias` fixture checkpoint with its head) under
/// `Autodiff<Flex>`: the gradient of `L = Σ head(x) ∘ w` with respect to the input values, which
/// flows back through every attention block's custom backward, against central finite
/// differences of the plain-CPU forward (f32, step 1e-2, so the tolerance is loose).
#[test]
fn whole_model_gradient_matches_finite_differences() {
    use aido_model::load::{LoadMode, load_checkpoint};
    let dir = aido_tokenize::shared::testdata_path("fixtures/aido_cell/tiny_ln_nobias");
    let dev = Default::default();
    let (m_ad, _) = load_checkpoint::<Ad>(&dir, LoadMode::Full, &dev).unwrap();
    let (m, _) = load_checkpoint::<Cpu>(&dir, LoadMode::Full, &dev).unwrap();
    let s = 66;
    // Positive expression-like inputs (away from the −1/−2 mask and pad codes).
    let x: Vec<f32> = random(s, 7, 1.0).iter().map(|v| 1.5 + v).collect();
    let w = random(s, 8, 1.0);
    let loss_cpu = |x: &[f32]| -> f64 {
        let xt = Tensor::<Cpu, 2>::from_data(TensorData::new(x.to_vec(), [1, s]), &dev);
        let h = m.bert.forward(xt, false).unwrap().last_hidden_state;
        let y = host(m.head(h).unwrap());
        y.iter().zip(&w).map(|(a, b)| f64::from(a * b)).sum()
    };
    let xa = Tensor::<Ad, 2>::from_data(TensorData::new(x.clone(), [1, s]), &dev).require_grad();
    let h = m_ad
        .bert
        .forward(xa.clone(), false)
        .unwrap()
        .last_hidden_state;
    let y = m_ad.head(h).unwrap();
    let wt = Tensor::<Ad, 3>::from_data(TensorData::new(w.clone(), [1, s, 1]), &dev);
    let grads = (y * wt).sum().backward();
    let g = host(xa.grad(&grads).unwrap());
    let eps = 1e-2f32;
    let mut largest = 0.0f64;
    for p in [0usize, 5, 17, 40, 63, 64, 65] {
        let (mut up, mut down) = (x.clone(), x.clone());
        up[p] += eps;
        down[p] -= eps;
        let fd = (loss_cpu(&up) - loss_cpu(&down)) / (2.0 * f64::from(eps));
        let ad = f64::from(g[p]);
        assert!(
            (ad - fd).abs() <= 2e-3 + 2e-2 * fd.abs(),
            "position {p}: autodiff {ad:.6}, finite difference {fd:.6}"
        );
        largest = largest.max(fd.abs());
    }
    // The check is not vacuous: the gradients are well above the tolerance.
    assert!(largest > 0.05, "largest |gradient| {largest}");
}
