//! f32 vs bf16 attention throughput:
//! `cargo run --release --example bf16_attention_bench -- [--threads N] [--seq 19266] [--bh 4] [--dims 32,64] [--reps 3]`
//!
//! For each head dim, times the forward and the backward of the f32 AVX-512 path
//! ([`KernelPath::Avx512`], falling back to the best f32 path) and of the best bf16 path
//! ([`KernelPath::detect_bf16`]: `Avx512Bf16`, or the portable `ScalarBf16` on CPUs without
//! AVX512-BF16), on the same random inputs (the bf16 run gets them rounded to bf16). Prints
//! one line per (dtype, direction, head dim) with the median and minimum wall time over the
//! repetitions (after one warm-up call) and GFLOP/s of the median.
//!
//! Then, per path, the softmax exponential alone (`aido_kernels::exp2_in_place`, the kernels'
//! own instructions) over `bh·seq²` values, cache-resident, on the same threads, as a share
//! of the forward and backward times (each pass evaluates one exponential per score): an
//! upper bound of what the exponentials cost inside the kernels.
//!
//! FLOP convention (FlashAttention-2's): forward `4·bh·seq²·head_dim` (two matrix products),
//! backward `10·bh·seq²·head_dim` (five products; the scores and `P` are recomputed, which
//! is not counted).

use aido_kernels::{
    AttnShape, KernelPath, exp2_in_place, f32_slice_to_bf16, flash_backward_bf16_with,
    flash_backward_with, flash_forward_bf16_with, flash_forward_with,
};
use std::time::Instant;

/// Median and minimum of `reps` timed calls of `f`, after one untimed warm-up call.
fn time(reps: usize, mut f: impl FnMut()) -> (f64, f64) {
    f();
    let mut t: Vec<f64> = (0..reps)
        .map(|_| {
            let s = Instant::now();
            f();
            s.elapsed().as_secs_f64()
        })
        .collect();
    t.sort_by(|a, b| a.total_cmp(b));
    (t[t.len() / 2], t[0])
}

fn main() {
    let mut threads = 0usize;
    let mut seq = 19266usize;
    let mut bh = 4usize;
    let mut dims = vec![32usize, 64];
    let mut reps = 3usize;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut val = || {
            args.next()
                .unwrap_or_else(|| panic!("{a} needs an argument"))
        };
        let num = |s: String| -> usize {
            s.parse()
                .unwrap_or_else(|_| panic!("expected an integer, got {s}"))
        };
        match a.as_str() {
            "--threads" => threads = num(val()),
            "--seq" => seq = num(val()),
            "--bh" => bh = num(val()),
            "--reps" => reps = num(val()).max(1),
            "--dims" => dims = val().split(',').map(|s| num(s.to_string())).collect(),
            other => panic!("unknown argument {other}"),
        }
    }
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .expect("cannot build the rayon pool");
    let f32_path = if KernelPath::Avx512.is_supported() {
        KernelPath::Avx512
    } else {
        KernelPath::detect()
    };
    let bf16_path = KernelPath::detect_bf16();
    println!(
        "threads={} bh={bh} seq={seq} reps={reps} f32 path={f32_path} bf16 path={bf16_path}",
        pool.current_num_threads()
    );
    println!("FLOPs: forward 4·bh·seq²·d, backward 10·bh·seq²·d");

    for &d in &dims {
        let n = bh * seq * d;
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
        let g: Vec<f32> = (0..n).map(|_| rnd()).collect();
        let (qh, kh, vh, gh) = (
            f32_slice_to_bf16(&q),
            f32_slice_to_bf16(&k),
            f32_slice_to_bf16(&v),
            f32_slice_to_bf16(&g),
        );
        let shape = AttnShape {
            bh,
            seq,
            head_dim: d,
        };
        let scale = 1.0 / (d as f32).sqrt();
        let mut out = vec![0.0f32; n];
        let mut lse = vec![0.0f32; bh * seq];
        let (mut dq, mut dk, mut dv) = (vec![0.0f32; n], vec![0.0f32; n], vec![0.0f32; n]);
        let work = (bh * seq * seq * d) as f64;
        let line = |dtype: &str, dir: &str, (med, min): (f64, f64), flops: f64| {
            println!(
                "{dtype:>4} {dir:<8} d={d:<3} median {med:8.4} s  min {min:8.4} s  {:7.1} GFLOP/s",
                flops / med / 1e9
            );
            med
        };
        // The exponential alone: bh·seq² evaluations (one per score, as each pass computes),
        // in cache-resident chunks of scores in the softmax's range, on the same threads.
        let exp_time = |path: KernelPath| {
            const CHUNK: usize = 16_384;
            let chunks = (bh * seq * seq).div_ceil(CHUNK);
            time(reps, || {
                use rayon::prelude::*;
                // Filled once per thread; later calls take 2^x of the previous results
                // (values in (0, 2]: the same instructions, no special cases).
                (0..chunks).into_par_iter().for_each_init(
                    || {
                        (0..CHUNK)
                            .map(|j| -((j % 64) as f32) * 0.25)
                            .collect::<Vec<f32>>()
                    },
                    |buf, _| {
                        exp2_in_place(path, buf).expect("exp2 path supported");
                        std::hint::black_box(&buf);
                    },
                );
            })
            .0
        };
        pool.install(|| {
            let t = time(reps, || {
                flash_forward_with(f32_path, &q, &k, &v, shape, scale, &mut out, &mut lse)
                    .expect("f32 forward failed");
            });
            let f32_fwd = line("f32", "forward", t, 4.0 * work);
            let t = time(reps, || {
                flash_backward_with(
                    f32_path, &q, &k, &v, &out, &g, &lse, shape, scale, &mut dq, &mut dk, &mut dv,
                )
                .expect("f32 backward failed");
            });
            let f32_bwd = line("f32", "backward", t, 10.0 * work);
            let t = time(reps, || {
                flash_forward_bf16_with(bf16_path, &qh, &kh, &vh, shape, scale, &mut out, &mut lse)
                    .expect("bf16 forward failed");
            });
            let bf16_fwd = line("bf16", "forward", t, 4.0 * work);
            let t = time(reps, || {
                flash_backward_bf16_with(
                    bf16_path, &qh, &kh, &vh, &out, &gh, &lse, shape, scale, &mut dq, &mut dk,
                    &mut dv,
                )
                .expect("bf16 backward failed");
            });
            let bf16_bwd = line("bf16", "backward", t, 10.0 * work);
            // Each pass evaluates one exponential per score (the backward recomputes P).
            for (dtype, path, fwd, bwd) in [
                ("f32", f32_path, f32_fwd, f32_bwd),
                ("bf16", bf16_path, bf16_fwd, bf16_bwd),
            ] {
                let e = exp_time(path);
                println!(
                    "{dtype:>4} exp2     d={d:<3} {e:8.4} s for bh·seq² values ({path}): {:.0}% of the forward, {:.0}% of the backward",
                    100.0 * e / fwd,
                    100.0 * e / bwd
                );
            }
        });
    }
}
