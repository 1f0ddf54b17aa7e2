//! Attention forward on CPU at S = 1,024 and 4,096 (4 heads × 32, batch 1): ours
//! (`aido_model::attention`) next to burn's built-in `module::attention` on burn-flex.
//! Throughput is reported in elements so criterion prints S²-scaled rates; GFLOP/s =
//! 4·S²·D·heads / time. The full-context (19,266) numbers come from
//! `examples/attention_bench.rs` (seconds per call make criterion's sampling impractical).
//!
//! `cargo bench --bench attention`

use std::hint::black_box;

use aido::model::Cpu;
use aido::model::attention::attention;
use aido::model::burn::tensor::module;
use aido::model::burn::tensor::ops::AttentionModuleOptions;
use aido::model::burn::tensor::{Distribution, Tensor};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("attention_forward_4x32");
    g.sample_size(10);
    for seq in [1024usize, 4096] {
        let shape = [1, 4, seq, 32];
        let r =
            || Tensor::<Cpu, 4>::random(shape, Distribution::Normal(0.0, 1.0), &Default::default());
        let (q, k, v) = (r(), r(), r());
        g.throughput(Throughput::Elements((4 * seq * seq * 32 * 4) as u64));
        g.bench_with_input(BenchmarkId::new("aido", seq), &seq, |b, _| {
            b.iter(|| black_box(attention(q.clone(), k.clone(), v.clone()).into_data()))
        });
        g.bench_with_input(BenchmarkId::new("burn-builtin", seq), &seq, |b, _| {
            b.iter(|| {
                black_box(
                    module::attention(
                        q.clone(),
                        k.clone(),
                        v.clone(),
                        None,
                        None,
                        AttentionModuleOptions::default(),
                    )
                    .into_data(),
                )
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
