//! Timed tokenization of one file, in-process, output discarded (the same work as the Python
//! anchor `benches/python/preprocess_anchor.py`: read, align, normalize). Prints one JSON line.
//!
//! `cargo run --release --example tokenize_throughput -- FILE GENES.tsv`

use std::time::Instant;

use aido::tokenize::{GeneVocab, ReadOptions, TokenizeOptions, Tokenizer, open_source};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    if args.len() != 3 {
        return Err("usage: tokenize_throughput FILE GENES.tsv".into());
    }
    let t0 = Instant::now();
    let vocab = GeneVocab::from_tsv(&args[2])?;
    let mut src = open_source(&args[1], &ReadOptions::default())?;
    let mut tok = Tokenizer::new(src.as_mut(), &vocab, TokenizeOptions::default())?;
    let mut checksum = 0.0f64;
    while let Some(b) = tok.next_batch(256)? {
        checksum += b
            .values
            .column(vocab.len())
            .iter()
            .map(|&v| f64::from(v))
            .sum::<f64>();
    }
    let dt = t0.elapsed().as_secs_f64();
    let n = tok.stats().cells_written;
    println!(
        "{{\"impl\": \"aido-tokenize\", \"cells\": {n}, \"seconds\": {dt:.4}, \"cells_per_s\": {:.1}, \"checksum\": {checksum}}}",
        n as f64 / dt
    );
    Ok(())
}
