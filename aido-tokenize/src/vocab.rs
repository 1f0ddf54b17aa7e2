//! The model's gene vocabulary: an ordered gene list whose row order is the sequence position.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::error::{Result, TokenizeError};

/// Number of read-depth positions appended after the genes (T, then S).
pub const N_DEPTH_TOKENS: usize = 2;

/// An ordered gene list: gene `p` of the file is sequence position `p`. Never sorted.
///
/// The format is the one of `OS_scRNA_gene_index.19264.tsv`: a header line `gene_name<TAB>index`,
/// then one gene per line with its 0-based index. Any other panel in the same format works: the
/// model is defined for any list (its position table has `len() + 2` rows).
#[derive(Debug, Clone, PartialEq)]
pub struct GeneVocab {
    names: Vec<String>,
    index: HashMap<String, usize>,
    source: Option<PathBuf>,
}

impl GeneVocab {
    /// Builds a vocabulary from gene names in position order. Duplicate names are an error.
    pub fn from_names(names: Vec<String>) -> Result<Self> {
        Self::build(names, None)
    }

    fn build(names: Vec<String>, source: Option<PathBuf>) -> Result<Self> {
        let err = |detail: String| TokenizeError::Vocabulary {
            path: source
                .clone()
                .unwrap_or_else(|| PathBuf::from("<in-memory vocabulary>")),
            detail,
        };
        if names.is_empty() {
            return Err(err("it lists no genes".into()));
        }
        let mut index = HashMap::with_capacity(names.len());
        for (i, n) in names.iter().enumerate() {
            if n.is_empty() {
                return Err(err(format!("gene {i} has an empty name")));
            }
            if let Some(first) = index.insert(n.clone(), i) {
                return Err(err(format!(
                    "gene '{n}' is listed twice (positions {first} and {i})"
                )));
            }
        }
        Ok(GeneVocab {
            names,
            index,
            source,
        })
    }

    /// Loads a vocabulary TSV (`gene_name<TAB>index` header, then `NAME<TAB>i` rows in order).
    ///
    /// The index column, when present, must equal the row number: the file order *is* the
    /// position order, and an index that disagrees means the file was sorted or edited.
    pub fn from_tsv(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|e| TokenizeError::io(path, e))?;
        Self::from_tsv_text(&text, path)
    }

    /// Parses the text of a vocabulary TSV (the format [`GeneVocab::from_tsv`] reads);
    /// `origin` names it in errors and in [`GeneVocab::source`] (e.g. a list compiled into a
    /// crate).
    pub fn from_tsv_text(text: &str, origin: impl AsRef<Path>) -> Result<Self> {
        let path = origin.as_ref();
        let mut lines = text.lines().enumerate();
        let bad = |line: usize, detail: String| TokenizeError::Parse {
            path: path.to_path_buf(),
            line,
            detail,
        };
        let Some((_, header)) = lines.next() else {
            return Err(TokenizeError::Vocabulary {
                path: path.to_path_buf(),
                detail: "the file is empty".into(),
            });
        };
        let header: Vec<&str> = header.trim_end_matches('\r').split('\t').collect();
        if header.first().map(|h| h.trim()) != Some("gene_name") {
            return Err(bad(
                1,
                format!(
                    "expected the header 'gene_name<TAB>index', found '{}'",
                    header.join("\t")
                ),
            ));
        }
        let has_index = header.get(1).map(|h| h.trim()) == Some("index");
        let mut names = Vec::new();
        for (ln, line) in lines {
            let line = line.trim_end_matches('\r');
            if line.trim().is_empty() {
                continue;
            }
            let mut fields = line.split('\t');
            let name = fields.next().unwrap_or("").trim();
            if has_index {
                let idx = fields.next().map(str::trim).unwrap_or("");
                let parsed: usize = idx.parse().map_err(|_| {
                    bad(
                        ln + 1,
                        format!("index '{idx}' of gene '{name}' is not an integer"),
                    )
                })?;
                if parsed != names.len() {
                    return Err(bad(
                        ln + 1,
                        format!(
                            "gene '{name}' has index {parsed} but is row {}: file order is position order, the list must not be reordered",
                            names.len()
                        ),
                    ));
                }
            }
            names.push(name.to_string());
        }
        Self::build(names, Some(path.to_path_buf()))
    }

    /// Writes the vocabulary in the TSV format [`GeneVocab::from_tsv`] reads.
    pub fn write_tsv(&self, path: impl AsRef<Path>) -> Result<()> {
        crate::io_util::write_atomically(path.as_ref(), |w| {
            writeln!(w, "gene_name\tindex")?;
            for (i, n) in self.names.iter().enumerate() {
                writeln!(w, "{n}\t{i}")?;
            }
            Ok(())
        })
    }

    /// Number of genes `G` (the sequence length is `G + 2`).
    pub fn len(&self) -> usize {
        self.names.len()
    }

    /// Whether the vocabulary is empty (never true for a constructed vocabulary).
    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    /// Sequence length of the model input: genes plus the two depth positions.
    pub fn seq_len(&self) -> usize {
        self.names.len() + N_DEPTH_TOKENS
    }

    /// Gene names in position order.
    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// Position of a gene symbol, if listed.
    pub fn position(&self, gene: &str) -> Option<usize> {
        self.index.get(gene).copied()
    }

    /// The file this vocabulary was read from, if any.
    pub fn source(&self) -> Option<&Path> {
        self.source.as_deref()
    }
}
