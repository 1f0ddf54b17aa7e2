//! Tokenization throughput (cells/s): read an h5ad of simulated raw counts (CSR, ~5% dense,
//! 19,264 genes named after the vocabulary), align, validate and normalize into `[B, 19266]`.
//!
//! `cargo bench --bench tokenize` (env `AIDO_BENCH_CELLS`, default 10,000 cells). The Python
//! anchor measured side by side is `benches/python/preprocess_anchor.py` (see docs/BENCHMARKS.md).

use std::hint::black_box;

use aido::tokenize::h5ad_out::{H5adWriter, XMatrix};
use aido::tokenize::simulate::{SimulationConfig, simulate};
use aido::tokenize::{GeneVocab, ReadOptions, TokenizeOptions, Tokenizer, open_source};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

fn bench(c: &mut Criterion) {
    let n: usize = std::env::var("AIDO_BENCH_CELLS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10_000);
    let genes: Vec<String> = (0..19_264).map(|i| format!("GENE{i}")).collect();
    let vocab = GeneVocab::from_names(genes.clone()).expect("vocabulary");
    let mut cfg = SimulationConfig::new(n, 8, 42);
    cfg.library_median = 1500.0;
    let sim = simulate(&cfg, genes.clone()).expect("simulation");
    let nnz = sim.counts.data.len();
    eprintln!(
        "simulated {n} cells × 19,264 genes, {:.2}% dense",
        100.0 * nnz as f64 / (n as f64 * 19_264.0)
    );
    let dir = std::env::temp_dir().join(format!("aido-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join("bench.h5ad");
    let mut w = H5adWriter::new(sim.obs, genes);
    w.x = Some(XMatrix::Csr {
        csr: sim.counts,
        n_cols: 19_264,
    });
    w.write(&path).expect("write h5ad");

    let mut g = c.benchmark_group("tokenize");
    g.sample_size(10);
    g.throughput(Throughput::Elements(n as u64));
    g.bench_function("h5ad_csr_10k_cells_19264_genes", |b| {
        b.iter(|| {
            let mut src = open_source(&path, &ReadOptions::default()).expect("open");
            let mut tok =
                Tokenizer::new(src.as_mut(), &vocab, TokenizeOptions::default()).expect("align");
            let mut acc = 0.0f32;
            while let Some(batch) = tok.next_batch(256).expect("batch") {
                acc += batch.values[(0, 19_264)];
            }
            black_box(acc)
        })
    });
    g.finish();
    let _ = std::fs::remove_dir_all(&dir);
}

criterion_group!(benches, bench);
criterion_main!(benches);
