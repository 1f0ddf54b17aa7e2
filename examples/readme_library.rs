//! The README's library snippet, compiled and run: `tests/readme.rs` checks that README.md shows
//! exactly the lines between the `README:` markers below, and runs this program on a checkpoint.
//!
//! ```sh
//! cargo run --release --example readme_library -- MODEL CELLS.h5ad OUT.h5ad
//! ```
// README: library
use std::path::Path;

use aido_model::{Cpu, ReadOptions};
use aido_pipeline::embed::{EmbedOptions, OutputKind, embed_file, embed_matrix};
use aido_pipeline::{CountsMatrix, Event, OpenOptions, Pretrained, Values};

fn embed(model: &str, cells: &Path, out: &Path) -> Result<(), Box<dyn std::error::Error>> {
    // A checkpoint folder or a Hugging Face id ("genbio-ai/AIDO.Cell-3M", through the hub cache;
    // the released models get the built-in 19,264-gene list).
    let model = Pretrained::open_str(model, &OpenOptions::default(), &mut |_| {})?;
    let device = Default::default();
    let mut events = |e: Event| match e {
        Event::Aligned(report) => println!("{report}"), // genes matched by symbol / Ensembl id / alias
        Event::Note(warning) => eprintln!("{warning}"),
        _ => {}
    };
    let options = EmbedOptions::default(); // present-mean pooling, batches of 8, f32
    // File to file: the input h5ad plus obsm/X_aido_cell, written atomically.
    let (read, kind) = (ReadOptions::default(), OutputKind::WholeInput);
    let r = embed_file::<Cpu>(
        &model,
        cells,
        &read,
        out,
        kind,
        None,
        &options,
        &device,
        &mut events,
    )?;
    println!(
        "{} cells → obsm/X_aido_cell [{} × {}]",
        r.cells_in, r.cells_embedded, r.hidden
    );
    // In memory: arrays you already hold (CSR or dense, any integer or float type), not copied.
    let genes = model.vocab.names().to_vec();
    let counts: Vec<u32> = (0..2 * genes.len()).map(|i| (i % 7) as u32).collect(); // 2 cells
    let cells = CountsMatrix::dense(genes, Values::U32(&counts), None)?;
    let emb = embed_matrix::<Cpu>(&model, &cells, &options, &device, &mut events)?;
    println!("in memory: {:?} cell embeddings", emb.cells.dim()); // [2, H]
    Ok(())
}
// README: end

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [model, cells, out] = args.as_slice() else {
        return Err("usage: readme_library MODEL CELLS.h5ad OUT.h5ad".into());
    };
    embed(model, Path::new(cells), Path::new(out))
}
