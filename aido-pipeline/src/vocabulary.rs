//! The AIDO.Cell gene list compiled into the crate (`data/OS_scRNA_gene_index.19264.tsv`; source,
//! licence and checksums in `data/README.md`): the released checkpoints do not carry it.

use aido_tokenize::GeneVocab;

use crate::error::Result;

/// The list's text, as shipped by the model authors.
pub const BUILTIN_TSV: &str = include_str!("../data/OS_scRNA_gene_index.19264.tsv");

/// The name the built-in list goes by in reports and errors.
pub const BUILTIN_NAME: &str = "built-in OS_scRNA_gene_index.19264.tsv";

/// Genes in the built-in list (the released models have these + 2 positions).
pub const BUILTIN_GENES: usize = 19_264;

/// The built-in 19,264-gene AIDO.Cell vocabulary.
pub fn builtin() -> Result<GeneVocab> {
    Ok(GeneVocab::from_tsv_text(BUILTIN_TSV, BUILTIN_NAME)?)
}
