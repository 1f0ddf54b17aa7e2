//! # aido-tokenize — the AIDO.Cell data layer
//!
//! Turns single-cell count files into exactly the input AIDO.Cell expects: one row of
//! `G + 2` scalars per cell (the `G` vocabulary genes in file order, then the T and S read-depth
//! tokens), plus a per-position `present` mask. It does not depend on burn: everything here is
//! plain host arrays (`ndarray`, `Vec`).
//!
//! - [`vocab`]: the gene vocabulary (`OS_scRNA_gene_index.19264.tsv` or any panel in its format).
//! - Readers, all behind [`CellSource`] and streaming in cell windows: [`h5ad`] (AnnData ≥ 0.8:
//!   CSR, CSC, dense `X` or `layers/<name>`), [`tenx`] (Cell Ranger HDF5 v2/v3), [`mtx`]
//!   (Matrix Market folders), [`delimited`] (dense CSV/TSV). [`open_source`] picks one by path.
//! - [`align`]: gene alignment by symbol, Ensembl ID or HGNC alias ([`gene_ids`], a table
//!   compiled in from org.Hs.eg.db) with a per-route report and plausibility thresholds.
//! - [`preprocess`]: `ln(1 + c/total·1e4)`, depth tokens `max(log10 total, floor)`, clip 20.
//! - [`tokenizer`]: validation (negative/NaN/non-integer counts, empty cells) and batching.
//! - Writers: [`h5ad_out`] (a new AnnData file with `obs` copied and `obsm` matrices) and
//!   [`safetensors_out`] (streamed tensors).
//! - [`simulate`]: synthetic raw counts with known cell types, the embedded default data.
//!
//! ```no_run
//! use aido_tokenize::{GeneVocab, ReadOptions, TokenizeOptions, Tokenizer, open_source};
//! let vocab = GeneVocab::from_tsv("OS_scRNA_gene_index.19264.tsv")?;
//! let mut source = open_source("cells.h5ad", &ReadOptions::default())?;
//! let mut tok = Tokenizer::new(source.as_mut(), &vocab, TokenizeOptions::default())?;
//! println!("{}", tok.report());
//! while let Some(batch) = tok.next_batch(256)? {
//!     assert_eq!(batch.values.ncols(), vocab.seq_len()); // [B, 19266]
//! }
//! # Ok::<(), aido_tokenize::TokenizeError>(())
//! ```

pub mod align;
pub mod delimited;
pub mod error;
pub mod gene_ids;
// Internal (the HDF5 layer): public only for this workspace's tests, not a stable API.
#[doc(hidden)]
pub mod h5;
pub mod h5ad;
pub mod h5ad_edit;
pub mod h5ad_out;
pub mod io_util;
pub mod mtx;
pub mod preprocess;
pub mod safetensors_out;
// Internal (locating `testdata/` and `../shared`): public only for this workspace's tests, not a stable API.
#[doc(hidden)]
pub mod shared;
pub mod simulate;
pub mod source;
pub mod tenx;
pub mod tokenizer;
pub mod vocab;

pub use align::{AlignOptions, AlignmentReport, GeneAlignment};
pub use error::{Result, TokenizeError};
pub use gene_ids::{GeneIdMode, GeneIdTable};
pub use preprocess::{MASK_VALUE, PAD_VALUE, PreprocessConfig};
pub use source::{
    CellSource, CsrChunk, InputFormat, ObsColumn, ObsTable, ReadOptions, open_source, read_all,
};
pub use tokenizer::{
    EmptyCellPolicy, NonIntegerPolicy, TokenBatch, TokenizeOptions, TokenizeStats, Tokenizer,
};
pub use vocab::{GeneVocab, N_DEPTH_TOKENS};
