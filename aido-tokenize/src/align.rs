//! Aligning a dataset's genes to the vocabulary (SPEC-model §2).

use std::collections::HashSet;
use std::fmt;
use std::path::Path;

use crate::error::{Result, TokenizeError};
use crate::vocab::{GeneVocab, N_DEPTH_TOKENS};

/// When an overlap is too small to be plausible.
///
/// The run fails when the matched genes are fewer than `min_fraction` of the data's genes, or
/// fewer than `min(min_genes, n_data / 4)`: the absolute floor is lowered for data with fewer
/// than `4 × min_genes` genes, so that a small targeted panel (e.g. 200 of a 507-feature 10x
/// test panel) is accepted, while Ensembl ids matched against symbols (a handful of hits) or a
/// wrong `--gene-column` are not.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AlignOptions {
    /// Minimum fraction of the data's genes that must be in the vocabulary (default 0.10).
    pub min_fraction: f64,
    /// Minimum number of matched genes (default 1,000; see the type's docs).
    pub min_genes: usize,
}

impl Default for AlignOptions {
    fn default() -> Self {
        AlignOptions {
            min_fraction: 0.10,
            min_genes: 1000,
        }
    }
}

/// The outcome of an alignment, as counts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlignmentReport {
    /// Genes (columns) in the data.
    pub n_data_genes: usize,
    /// Genes in the vocabulary.
    pub n_vocab_genes: usize,
    /// Data genes placed at a vocabulary position (first occurrence of each symbol).
    pub matched: usize,
    /// Vocabulary genes the data lacks (zero-filled, `present = 0`).
    pub missing: usize,
    /// Data genes dropped because their symbol appeared earlier in the data (keep-first).
    pub duplicated: usize,
    /// Data genes dropped because their symbol is not in the vocabulary.
    pub dropped: usize,
    /// Where the data's gene names came from.
    pub column: String,
}

impl fmt::Display for AlignmentReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "gene alignment ({}): {} data genes -> {} matched of {} vocabulary genes ({:.1}% of the vocabulary, {:.1}% of the data); {} vocabulary genes missing (zero-filled); {} duplicated symbols dropped (kept first); {} data genes not in the vocabulary",
            self.column,
            self.n_data_genes,
            self.matched,
            self.n_vocab_genes,
            100.0 * self.matched as f64 / self.n_vocab_genes.max(1) as f64,
            100.0 * self.matched as f64 / self.n_data_genes.max(1) as f64,
            self.missing,
            self.duplicated,
            self.dropped
        )
    }
}

/// Maps a dataset's gene columns onto vocabulary positions.
#[derive(Debug, Clone)]
pub struct GeneAlignment {
    /// For each data gene column, its vocabulary position (or `None` when dropped).
    map: Vec<Option<u32>>,
    /// `[G + 2]`: 1 where the data measured the gene, and 1 for both depth positions.
    present: Vec<u8>,
    report: AlignmentReport,
}

impl GeneAlignment {
    /// Aligns `data_genes` (column order of the data) to `vocab` by exact symbol.
    ///
    /// `file` and `column` only serve the report and error messages.
    pub fn new(
        vocab: &GeneVocab,
        data_genes: &[String],
        column: &str,
        file: &Path,
        opts: &AlignOptions,
    ) -> Result<Self> {
        let mut map = Vec::with_capacity(data_genes.len());
        let mut present = vec![0u8; vocab.seq_len()];
        let mut seen = HashSet::with_capacity(data_genes.len());
        let (mut matched, mut duplicated, mut dropped) = (0, 0, 0);
        for g in data_genes {
            if !seen.insert(g.as_str()) {
                duplicated += 1;
                map.push(None);
                continue;
            }
            match vocab.position(g) {
                Some(p) => {
                    matched += 1;
                    present[p] = 1;
                    map.push(Some(p as u32));
                }
                None => {
                    dropped += 1;
                    map.push(None);
                }
            }
        }
        for p in &mut present[vocab.len()..vocab.len() + N_DEPTH_TOKENS] {
            *p = 1;
        }
        let report = AlignmentReport {
            n_data_genes: data_genes.len(),
            n_vocab_genes: vocab.len(),
            matched,
            missing: vocab.len() - matched,
            duplicated,
            dropped,
            column: column.to_string(),
        };
        let required = opts.required(data_genes.len());
        if matched < required {
            let sample: Vec<&str> = data_genes.iter().take(3).map(String::as_str).collect();
            let hint = if sample.iter().any(|g| g.starts_with("ENS")) {
                format!(
                    "; the names look like Ensembl ids ({}), the vocabulary holds gene symbols: choose a symbol column with --gene-column (e.g. feature_name)",
                    sample.join(", ")
                )
            } else {
                format!("; first data genes: {}", sample.join(", "))
            };
            return Err(TokenizeError::TooLittleOverlap {
                path: file.to_path_buf(),
                matched,
                n_data: data_genes.len(),
                column: column.to_string(),
                required,
                hint,
            });
        }
        Ok(GeneAlignment {
            map,
            present,
            report,
        })
    }

    /// Vocabulary position of data column `j`, if kept.
    #[inline]
    pub fn position(&self, j: usize) -> Option<u32> {
        self.map.get(j).copied().flatten()
    }

    /// The per-position presence mask `[G + 2]` (depth positions are 1).
    pub fn present(&self) -> &[u8] {
        &self.present
    }

    /// The counts of the alignment.
    pub fn report(&self) -> &AlignmentReport {
        &self.report
    }

    /// Number of data gene columns this alignment was built for.
    pub fn n_data_genes(&self) -> usize {
        self.map.len()
    }
}

impl AlignOptions {
    /// The minimum matched-gene count for a dataset with `n_data` genes.
    pub fn required(&self, n_data: usize) -> usize {
        let by_fraction = (self.min_fraction * n_data as f64).ceil() as usize;
        let floor = self.min_genes.min(n_data / 4);
        by_fraction.max(floor).max(1)
    }
}
