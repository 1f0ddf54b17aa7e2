//! Model input written to a file: what `aido tokenize` runs ([`tokenize_file`]).

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Instant;

use aido_tokenize::safetensors_out::{ExtraTensor, SafetensorsRowWriter};
use aido_tokenize::{GeneVocab, ReadOptions, TokenizeOptions, Tokenizer, open_source};
use serde::Serialize;

use crate::Event;
use crate::error::{PipelineError, Result};

/// What [`tokenize_file`] wrote.
#[derive(Debug, Clone, Serialize)]
pub struct TokenizeReport {
    /// Cells read.
    pub cells_read: usize,
    /// Cells written.
    pub cells_written: usize,
    /// Cells skipped for having no counts in the list's genes.
    pub cells_skipped_empty: usize,
    /// Positions per cell (genes + 2).
    pub seq_len: usize,
    /// Gene positions measured in the input.
    pub present: usize,
    /// Seconds taken.
    pub seconds: f64,
}

impl std::fmt::Display for TokenizeReport {
    /// The tensors written and the rate.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (n, s) = (self.cells_written, self.seq_len);
        write!(
            f,
            "values [{n}, {s}] f32, present [{s}] u8 ({} positions present), cell_index [{n}]; {} cells in {:.2} s ({:.0} cells/s)",
            self.present,
            self.cells_read,
            self.seconds,
            self.cells_read as f64 / self.seconds.max(1e-9)
        )
    }
}

/// Tokenizes `input` against `vocab` (named `genes` in the metadata) into `output`
/// (safetensors: `values [cells, genes + 2]` f32, `present [genes + 2]` u8, `cell_index`),
/// streamed in windows of `batch_size` cells and written atomically. `depth_floor` is recorded
/// as given.
#[allow(clippy::too_many_arguments)]
pub fn tokenize_file(
    input: &Path,
    read: &ReadOptions,
    vocab: &GeneVocab,
    genes: &str,
    options: &TokenizeOptions,
    depth_floor: &str,
    batch_size: usize,
    output: &Path,
    on_event: &mut dyn FnMut(Event),
) -> Result<TokenizeReport> {
    if batch_size == 0 {
        return Err(PipelineError::option("batch_size", "must be at least 1"));
    }
    crate::output::check_writable(output, "output")?;
    let mut source = open_source(input, read)?;
    let n_cells = source.n_cells();
    let t0 = Instant::now();
    let mut tok = Tokenizer::new(source.as_mut(), vocab, *options)?;
    on_event(Event::Aligned(tok.report().clone()));
    let present = tok.alignment().present().to_vec();
    let mut meta = BTreeMap::new();
    meta.insert("input".to_string(), input.display().to_string());
    meta.insert("gene_vocabulary".to_string(), genes.to_string());
    meta.insert("gene_column".to_string(), tok.report().column.clone());
    meta.insert("gene_id".to_string(), tok.report().gene_id.clone());
    meta.insert("depth_floor".to_string(), depth_floor.to_string());
    meta.insert(
        "format".to_string(),
        "aido-tokenize values [cells, genes+2] (T, S depth last)".to_string(),
    );
    let hint = [
        ExtraTensor::u8("present", vec![present.len()], &present),
        ExtraTensor::i64("cell_index", vec![n_cells], &vec![0; n_cells]),
    ];
    let mut writer =
        SafetensorsRowWriter::create(output, "values", vocab.seq_len(), n_cells, &hint, meta)?;
    let mut kept: Vec<i64> = Vec::with_capacity(n_cells);
    while let Some(batch) = tok.next_batch(batch_size)? {
        let vals = batch
            .values
            .as_slice()
            .ok_or_else(|| PipelineError::option("internal", "non-contiguous batch"))?;
        writer.write_rows(vals)?;
        kept.extend(batch.cells.iter().map(|&c| c as i64));
        on_event(Event::Progress {
            stage: "tokenize",
            done: tok.stats().cells_read,
            total: n_cells,
        });
    }
    let stats = tok.stats().clone();
    writer.finish(&[
        ExtraTensor::u8("present", vec![present.len()], &present),
        ExtraTensor::i64("cell_index", vec![kept.len()], &kept),
    ])?;
    if let Some(w) = stats.non_integer_warning() {
        on_event(Event::Note(w));
    }
    on_event(Event::Wrote {
        path: output.to_path_buf(),
        what: "values, present, cell_index".into(),
    });
    Ok(TokenizeReport {
        cells_read: stats.cells_read,
        cells_written: stats.cells_written,
        cells_skipped_empty: stats.cells_skipped_empty,
        seq_len: vocab.seq_len(),
        present: present.iter().filter(|&&p| p == 1).count(),
        seconds: t0.elapsed().as_secs_f64(),
    })
}
