//! Attention throughput on CPU: ours (`aido_model::attention`, forward and the linear-memory
//! backward) next to burn's built-in (`module::attention` on burn-flex forward; under
//! `Autodiff<Flex>` burn's backward materializes the `S × S` scores) in the same process.
//!
//! ```text
//! cargo run --release --example attention_bench -- [--seq 19266] [--heads 4] [--dim 32]
//!     [--reps 3] [--backward] [--no-anchor]
//! ```
//! One JSON line per implementation and direction: median seconds over `reps` and GFLOP/s,
//! counting `4·S²·D` per head forward and `10·S²·D` backward (the FlashAttention-2 convention:
//! the two forward products recomputed plus three more).

use std::time::Instant;

use aido::model::Cpu;
use aido::model::attention::attention;
use aido::model::burn::backend::Autodiff;
use aido::model::burn::tensor::backend::Backend;
use aido::model::burn::tensor::module;
use aido::model::burn::tensor::ops::AttentionModuleOptions;
use aido::model::burn::tensor::{Distribution, Tensor};
use anyhow::{Context, Result, bail};

type Ad = Autodiff<Cpu>;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn rand4<B: Backend>(shape: [usize; 4]) -> Tensor<B, 4> {
    Tensor::random(shape, Distribution::Normal(0.0, 1.0), &Default::default())
}

fn sync<B: Backend, const D: usize>(t: Tensor<B, D>) {
    // Reading one element forces the computation on lazy backends.
    let _ = t.flatten::<1>(0, D - 1).slice_dim(0, 0..1).into_data();
}

fn forward_time<B: Backend>(shape: [usize; 4], reps: usize, ours: bool) -> f64 {
    let (q, k, v) = (rand4::<B>(shape), rand4::<B>(shape), rand4::<B>(shape));
    let mut times = Vec::new();
    for _ in 0..reps {
        let t0 = Instant::now();
        let o = if ours {
            attention(q.clone(), k.clone(), v.clone())
        } else {
            module::attention(
                q.clone(),
                k.clone(),
                v.clone(),
                None,
                None,
                AttentionModuleOptions::default(),
            )
        };
        sync(o);
        times.push(t0.elapsed().as_secs_f64());
    }
    median(times)
}

/// Backward only: the forward runs untimed before each backward.
fn backward_time(shape: [usize; 4], reps: usize, ours: bool) -> f64 {
    let mut times = Vec::new();
    for _ in 0..reps {
        let q = rand4::<Ad>(shape).require_grad();
        let k = rand4::<Ad>(shape).require_grad();
        let v = rand4::<Ad>(shape).require_grad();
        let o = if ours {
            attention(q.clone(), k.clone(), v.clone())
        } else {
            module::attention(
                q.clone(),
                k.clone(),
                v.clone(),
                None,
                None,
                AttentionModuleOptions::default(),
            )
        };
        let loss = o.sum();
        sync(loss.clone().inner());
        let t0 = Instant::now();
        let grads = loss.backward();
        if let Some(g) = q.grad(&grads) {
            sync(g);
        }
        times.push(t0.elapsed().as_secs_f64());
    }
    median(times)
}

fn main() -> Result<()> {
    let mut seq = 19_266usize;
    let (mut heads, mut dim, mut reps) = (4usize, 32usize, 3usize);
    let (mut backward, mut anchor) = (false, true);
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let mut val = || -> Result<usize> {
            Ok(it
                .next()
                .with_context(|| format!("{a} needs a value"))?
                .parse()?)
        };
        match a.as_str() {
            "--seq" => seq = val()?,
            "--heads" => heads = val()?,
            "--dim" => dim = val()?,
            "--reps" => reps = val()?,
            "--backward" => backward = true,
            "--no-anchor" => anchor = false,
            o => bail!("unknown argument {o}"),
        }
    }
    let shape = [1, heads, seq, dim];
    let flops = (heads * seq * seq * dim) as f64;
    let report = |imp: &str, dir: &str, s: f64, per: f64| {
        println!(
            "{}",
            serde_json::json!({
                "impl": imp, "direction": dir, "seq": seq, "heads": heads, "dim": dim,
                "reps": reps, "median_s": (s * 1e4).round() / 1e4,
                "gflops": ((per * flops / s / 1e9) * 10.0).round() / 10.0,
            })
        );
    };
    report(
        "aido",
        "forward",
        forward_time::<Cpu>(shape, reps, true),
        4.0,
    );
    if anchor {
        report(
            "burn-builtin",
            "forward",
            forward_time::<Cpu>(shape, reps, false),
            4.0,
        );
    }
    if backward {
        report("aido", "backward", backward_time(shape, reps, true), 10.0);
        if anchor {
            report(
                "burn-builtin",
                "backward",
                backward_time(shape, reps, false),
                10.0,
            );
        }
    }
    Ok(())
}
