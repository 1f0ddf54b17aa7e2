//! Cells per second into the pretraining loop, two ways over the same cells: tokenizing the
//! h5ad files on the fly (open, align, validate, as `aido pretrain --data` reads them) and
//! streaming a packed corpus of them (`aido pack`, read as `aido pretrain --corpus` does,
//! through the shuffle buffer). Median of `--reps` passes each; prints one JSON line.
//!
//! `cargo run --release --example corpus_throughput -- --corpus DIR --genes GENES.tsv
//!  [--reps 3] [--buffer 10000] FILE.h5ad...`

use std::path::PathBuf;
use std::time::Instant;

use aido::tokenize::{GeneIdMode, GeneVocab, ReadOptions, Tokenizer, open_source};
use aido::train::PackedCorpus;
use aido::train::data::corpus_tokenize_options;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let (mut corpus, mut genes, mut reps, mut buffer, mut files) =
        (None, None, 3usize, 10_000usize, Vec::<PathBuf>::new());
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut val = || args.next().ok_or(format!("{a} needs a value"));
        match a.as_str() {
            "--corpus" => corpus = Some(PathBuf::from(val()?)),
            "--genes" => genes = Some(PathBuf::from(val()?)),
            "--reps" => reps = val()?.parse()?,
            "--buffer" => buffer = val()?.parse()?,
            _ => files.push(PathBuf::from(a)),
        }
    }
    let (Some(corpus), Some(genes)) = (corpus, genes) else {
        return Err("usage: corpus_throughput --corpus DIR --genes GENES.tsv FILE...".into());
    };
    let vocab = GeneVocab::from_tsv(&genes)?;
    let opts = corpus_tokenize_options(&vocab, GeneIdMode::Auto);
    let (mut h5ad, mut packed, mut n_cells) = (Vec::new(), Vec::new(), 0usize);
    for _ in 0..reps.max(1) {
        let t0 = Instant::now();
        let mut n = 0usize;
        for f in &files {
            let mut src = open_source(f, &ReadOptions::default())?;
            let mut tok = Tokenizer::new(src.as_mut(), &vocab, opts)?;
            while let Some(b) = tok.next_batch(1024)? {
                n += b.counts.len();
            }
        }
        h5ad.push(n as f64 / t0.elapsed().as_secs_f64());

        let t0 = Instant::now();
        let c = PackedCorpus::open(&corpus)?;
        let mut stream = c.stream(&[], 0, buffer);
        let total = c.len();
        let mut read = 0usize;
        while read < total {
            let k = 1024.min(total - read);
            read += stream.take(read as u64, k)?.len();
        }
        packed.push(read as f64 / t0.elapsed().as_secs_f64());
        if read != n {
            return Err(format!("the corpus holds {read} cells, the files {n}").into());
        }
        n_cells = n;
    }
    println!(
        "{{\"cells\": {n_cells}, \"reps\": {reps}, \"buffer\": {buffer}, \"h5ad_tokenize_cells_per_s\": {:.0}, \"packed_stream_cells_per_s\": {:.0}}}",
        median(h5ad),
        median(packed)
    );
    Ok(())
}
