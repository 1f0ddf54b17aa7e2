//! Benchmark: `cargo run --release --example attn_bench -- --seq 19266 --bh 4 --dim 32 --reps 5 [--backward] [--path scalar|avx2|avx512]`
//!
//! Prints one JSON line with the median wall time and GFLOP/s. FLOPs are counted as
//! `4·seq²·head_dim` per (b,h) for the forward and `10·seq²·head_dim` for the backward
//! (FlashAttention-2 convention; the backward actually executes 14·seq²·head_dim because it
//! recomputes the scores in both of its passes).

use aido_kernels::{AttnShape, KernelPath, flash_backward_with, flash_forward_with};
use std::time::Instant;

fn main() {
    let mut seq = 4096usize;
    let mut bh = 4usize;
    let mut dim = 32usize;
    let mut reps = 5usize;
    let mut backward = false;
    let mut path = KernelPath::detect();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut num = |name: &str| -> usize {
            args.next()
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("{name} needs an integer argument"))
        };
        match a.as_str() {
            "--seq" => seq = num("--seq"),
            "--bh" => bh = num("--bh"),
            "--dim" => dim = num("--dim"),
            "--reps" => reps = num("--reps").max(1),
            "--backward" => backward = true,
            "--path" => {
                path = match args.next().as_deref() {
                    Some("scalar") => KernelPath::Scalar,
                    Some("avx2") => KernelPath::Avx2Fma,
                    Some("avx512") => KernelPath::Avx512,
                    other => panic!("unknown path {other:?}"),
                }
            }
            other => panic!("unknown argument {other}"),
        }
    }

    let n = bh * seq * dim;
    let mut state = 0x1234_5678_9abc_def0u64;
    let mut rnd = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        ((state >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    };
    let q: Vec<f32> = (0..n).map(|_| rnd()).collect();
    let k: Vec<f32> = (0..n).map(|_| rnd()).collect();
    let v: Vec<f32> = (0..n).map(|_| rnd()).collect();
    let dout: Vec<f32> = (0..n).map(|_| rnd()).collect();
    let shape = AttnShape {
        bh,
        seq,
        head_dim: dim,
    };
    let scale = 1.0 / (dim as f32).sqrt();
    let mut out = vec![0.0f32; n];
    let mut lse = vec![0.0f32; bh * seq];
    let (mut dq, mut dk, mut dv) = (vec![0.0f32; n], vec![0.0f32; n], vec![0.0f32; n]);

    let run_fwd = |out: &mut [f32], lse: &mut [f32]| {
        flash_forward_with(path, &q, &k, &v, shape, scale, out, lse).expect("forward failed");
    };
    // Warm-up (and the forward results needed by the backward).
    run_fwd(&mut out, &mut lse);
    let mut times = Vec::with_capacity(reps);
    for _ in 0..reps {
        let t = Instant::now();
        if backward {
            flash_backward_with(
                path, &q, &k, &v, &out, &dout, &lse, shape, scale, &mut dq, &mut dk, &mut dv,
            )
            .expect("backward failed");
        } else {
            run_fwd(&mut out, &mut lse);
        }
        times.push(t.elapsed().as_secs_f64());
    }
    times.sort_by(|a, b| a.total_cmp(b));
    let median = times[times.len() / 2];
    let flops_per = if backward { 10.0 } else { 4.0 };
    let flops = flops_per * (bh as f64) * (seq as f64) * (seq as f64) * (dim as f64);
    let checksum: f64 = if backward {
        dq.iter().chain(&dk).chain(&dv).map(|&x| x as f64).sum()
    } else {
        out.iter().map(|&x| x as f64).sum()
    };
    println!(
        "{{\"op\":\"{}\",\"path\":\"{:?}\",\"threads\":{},\"bh\":{},\"seq\":{},\"dim\":{},\"reps\":{},\"median_s\":{:.6},\"min_s\":{:.6},\"gflops\":{:.2},\"checksum\":{:.6e}}}",
        if backward { "backward" } else { "forward" },
        path,
        rayon::current_num_threads(),
        bh,
        seq,
        dim,
        reps,
        median,
        times[0],
        flops / median / 1e9,
        checksum
    );
}
