//! The attention op of a backend against the naive f64 formula
//! (`aido_model::attention::reference`): the forward with its log-sum-exp, and the gradients
//! through `Autodiff<backend>` (the training path: forward + linear-memory backward), at
//! S ∈ {1, 7, 64, 65, 300} and head dims 32 and 64, f32. Prints the max |Δ| of out, lse, dq, dk
//! and dv per shape and overall, and exits non-zero when any exceeds 1e-4 (inputs in [-1, 1)).
//!
//! `cargo run --release [--features wgpu|cuda] --example attention_check -- --device cpu|wgpu|cuda`

use std::process::ExitCode;

use aido::model::attention::reference::{max_abs_diff, naive, random};
use aido::model::attention::{AttentionBackend, attention, attention_with_lse};
use aido::model::burn::backend::Autodiff;
use aido::model::burn::tensor::backend::Backend;
use aido::model::burn::tensor::{Tensor, TensorData};

const TOL: f64 = 1e-4;
const SEQS: [usize; 5] = [1, 7, 64, 65, 300];
const HEAD_DIMS: [usize; 2] = [32, 64];

fn t4<B: Backend>(v: &[f32], shape: [usize; 4], device: &B::Device) -> Tensor<B, 4> {
    Tensor::from_data(TensorData::new(v.to_vec(), shape), device)
}

fn host<B: Backend, const D: usize>(t: Tensor<B, D>) -> Vec<f32> {
    t.into_data()
        .convert::<f32>()
        .into_vec()
        .unwrap_or_default()
}

/// Max |Δ| of `[out, lse, dq, dk, dv]` for every shape, on `device`.
fn run<B>(device: &B::Device) -> Vec<(String, [f64; 5])>
where
    B: AttentionBackend,
    Autodiff<B>: AttentionBackend,
{
    let mut rows = Vec::new();
    for &d in &HEAD_DIMS {
        for &s in &SEQS {
            let (b, h) = (1, 2);
            let shape = [b, h, s, d];
            let n = b * h * s * d;
            let seed = (s * 1000 + d) as u64;
            let (q, k, v, dout) = (
                random(n, seed, 1.0),
                random(n, seed + 1, 1.0),
                random(n, seed + 2, 1.0),
                random(n, seed + 3, 1.0),
            );
            let want = naive(&q, &k, &v, &dout, b * h, s, d);
            let (o, lse) = attention_with_lse(
                t4::<B>(&q, shape, device),
                t4::<B>(&k, shape, device),
                t4::<B>(&v, shape, device),
            );
            let (d_out, d_lse) = (
                max_abs_diff(&host(o), &want.out),
                max_abs_diff(&host(lse), &want.lse),
            );
            // Training path: loss = Σ out ∘ dout, so d loss / d out = dout.
            let ad = |x: &[f32]| Tensor::<Autodiff<B>, 4>::from_inner(t4::<B>(x, shape, device));
            let (qa, ka, va) = (
                ad(&q).require_grad(),
                ad(&k).require_grad(),
                ad(&v).require_grad(),
            );
            let o = attention(qa.clone(), ka.clone(), va.clone());
            let grads = (o * ad(&dout)).sum().backward();
            let g = |t: Option<Tensor<B, 4>>, want: &[f64]| match t {
                Some(t) => max_abs_diff(&host(t), want),
                None => f64::INFINITY,
            };
            rows.push((
                format!("S {s:>3}, head dim {d}"),
                [
                    d_out,
                    d_lse,
                    g(qa.grad(&grads), &want.dq),
                    g(ka.grad(&grads), &want.dk),
                    g(va.grad(&grads), &want.dv),
                ],
            ));
        }
    }
    rows
}

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let mut device = "cpu".to_string();
    while let Some(a) = args.next() {
        match (a.as_str(), args.next()) {
            ("--device", Some(d)) => device = d,
            _ => {
                eprintln!("usage: attention_check [--device cpu|wgpu|cuda]");
                return ExitCode::from(2);
            }
        }
    }
    let rows = match device.as_str() {
        "cpu" => run::<aido::model::Cpu>(&Default::default()),
        #[cfg(feature = "wgpu")]
        "wgpu" => run::<aido::model::backend::Wgpu>(&Default::default()),
        #[cfg(feature = "cuda")]
        "cuda" => run::<aido::model::backend::Cuda>(&Default::default()),
        other => {
            eprintln!(
                "device {other} is not compiled in (build with --features wgpu or --features cuda)"
            );
            return ExitCode::from(2);
        }
    };
    println!("attention on {device} vs the f64 formula: max |Δ| (inputs uniform in [-1, 1))");
    println!("| shape | out | lse | dq | dk | dv |\n|---|---|---|---|---|---|");
    let mut worst = 0.0f64;
    for (name, m) in &rows {
        println!(
            "| {name} | {:.1e} | {:.1e} | {:.1e} | {:.1e} | {:.1e} |",
            m[0], m[1], m[2], m[3], m[4]
        );
        worst = m.iter().fold(worst, |w, &x| w.max(x));
    }
    println!("worst {worst:.2e} (limit {TOL:.0e})");
    if worst <= TOL {
        ExitCode::SUCCESS
    } else {
        eprintln!("attention_check: max |Δ| {worst:.2e} is above {TOL:.0e}");
        ExitCode::FAILURE
    }
}
