//! The README's library snippet, compiled and run: `tests/readme.rs` checks that README.md shows
//! exactly the lines between the `README:` markers below, and runs this program on a fixture
//! checkpoint.
//!
//! ```sh
//! cargo run --release --example readme_library -- MODEL_DIR GENES.tsv CELLS.h5ad
//! ```
use std::path::Path;

// README: library
use aido_model::{
    Cpu, Embedder, GeneVocab, LoadMode, Pooling, ReadOptions, TokenizeOptions, Tokenizer,
    load_checkpoint, open_source,
};

fn embed_file(
    model_dir: &Path,
    genes: &Path,
    cells: &Path,
) -> Result<(), Box<dyn std::error::Error>> {
    let vocab = GeneVocab::from_tsv(genes)?;
    let mut src = open_source(cells, &ReadOptions::default())?;
    let mut tok = Tokenizer::new(src.as_mut(), &vocab, TokenizeOptions::default())?;
    println!("{}", tok.report()); // genes matched by symbol / Ensembl id / alias
    let device = Default::default();
    let (model, _cfg) = load_checkpoint::<Cpu>(model_dir, LoadMode::EncoderOnly, &device)?;
    let present = tok.alignment().present().to_vec();
    let embedder = Embedder::new(model.bert, device, present, Pooling::PresentMean)?;
    while let Some(batch) = tok.next_batch(8)? {
        let emb = embedder.embed(&batch.values)?; // batch.values [B, G + 2] → emb.cells [B, H]
        println!("{} cells → {:?}", batch.values.nrows(), emb.cells.dim());
    }
    Ok(())
}
// README: end

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [model, genes, cells] = args.as_slice() else {
        return Err("usage: readme_library MODEL_DIR GENES.tsv CELLS.h5ad".into());
    };
    embed_file(Path::new(model), Path::new(genes), Path::new(cells))
}
