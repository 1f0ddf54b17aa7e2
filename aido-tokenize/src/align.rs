//! Aligning a dataset's genes to the vocabulary (SPEC-model §2): by symbol, Ensembl ID or
//! HGNC alias ([`crate::gene_ids`]).

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::path::Path;

use crate::error::{Result, TokenizeError};
use crate::gene_ids::{GeneIdMode, GeneIdTable, SymbolHit, looks_like_ensembl};
use crate::vocab::{GeneVocab, N_DEPTH_TOKENS};

/// When an overlap is too small to be plausible, and how gene names are read.
///
/// The run fails when the matched genes are fewer than `min_fraction` of the data's genes, or
/// fewer than `min(min_genes, n_data / 4)`: the absolute floor is lowered for data with fewer
/// than `4 × min_genes` genes, so that a small targeted panel (e.g. 200 of a 507-feature 10x
/// test panel) is accepted, while a wrong `--gene-column` (a handful of hits) is not.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AlignOptions {
    /// Minimum fraction of the data's genes that must be in the vocabulary (default 0.10).
    pub min_fraction: f64,
    /// Minimum number of matched genes (default 1,000; see the type's docs).
    pub min_genes: usize,
    /// How the names are interpreted: symbols, Ensembl IDs, or each by its shape (default).
    pub gene_id: GeneIdMode,
}

impl Default for AlignOptions {
    fn default() -> Self {
        AlignOptions {
            min_fraction: 0.10,
            min_genes: 1000,
            gene_id: GeneIdMode::Auto,
        }
    }
}

impl AlignOptions {
    /// These options as they apply to a model's gene list: for a panel (fewer than 10,000
    /// genes, e.g. a model pretrained on a 512-gene panel) the overlap is judged against the
    /// genes the model uses — at least half of the panel measured, no fraction of the data's
    /// (often ~20k) genes required — as in pretraining; for a whole-transcriptome list they are
    /// returned unchanged. The one rule every consumer of a checkpoint applies (inference,
    /// training corpora, the CLI, the library).
    pub fn for_vocab(self, vocab: &crate::GeneVocab) -> AlignOptions {
        if vocab.len() < 10_000 {
            AlignOptions {
                min_fraction: 0.0,
                min_genes: (vocab.len() / 2).max(1),
                gene_id: self.gene_id,
            }
        } else {
            self
        }
    }
}

/// The outcome of an alignment, as counts.
///
/// Every data gene is counted once: `matched + duplicated + ambiguous + dropped ==
/// n_data_genes`, and `matched == by_symbol + by_ensembl + by_alias`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlignmentReport {
    /// Genes (columns) in the data.
    pub n_data_genes: usize,
    /// Genes in the vocabulary.
    pub n_vocab_genes: usize,
    /// Data genes placed at a vocabulary position (each position at most once).
    pub matched: usize,
    /// … of which by the exact vocabulary symbol.
    pub by_symbol: usize,
    /// … of which by Ensembl gene ID (through the identifier table).
    pub by_ensembl: usize,
    /// … of which by a renamed symbol: the data's symbol and the vocabulary's are the official
    /// symbol and an unambiguous alias of the same gene.
    pub by_alias: usize,
    /// Vocabulary genes the data lacks (zero-filled, `present = 0`).
    pub missing: usize,
    /// Data genes dropped because their name, or the vocabulary position it leads to, appeared
    /// earlier in the data (keep-first; exact symbols and Ensembl IDs take precedence over
    /// aliases).
    pub duplicated: usize,
    /// Data genes dropped because their alias or Ensembl ID leads to more than one gene.
    pub ambiguous: usize,
    /// Data genes dropped because they are not in the vocabulary by any route.
    pub dropped: usize,
    /// Where the data's gene names came from.
    pub column: String,
    /// How the names were read: `symbol`, `ensembl`, or `auto (…)` with what the column holds.
    pub gene_id: String,
}

impl fmt::Display for AlignmentReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "gene alignment ({}, gene ids: {}): {} data genes -> {} matched of {} vocabulary genes ({:.1}% of the vocabulary, {:.1}% of the data; {} by symbol, {} by Ensembl id, {} by alias); {} vocabulary genes missing (zero-filled); {} duplicates dropped (kept first); {} ambiguous ids dropped; {} data genes not in the vocabulary",
            self.column,
            self.gene_id,
            self.n_data_genes,
            self.matched,
            self.n_vocab_genes,
            100.0 * self.matched as f64 / self.n_vocab_genes.max(1) as f64,
            100.0 * self.matched as f64 / self.n_data_genes.max(1) as f64,
            self.by_symbol,
            self.by_ensembl,
            self.by_alias,
            self.missing,
            self.duplicated,
            self.ambiguous,
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

/// Vocabulary positions reachable from identifier-table genes: each vocabulary symbol is
/// resolved to its gene(s) (official symbol first; an unambiguous alias only where no other
/// vocabulary symbol is that gene's official one, and no two alias-resolved vocabulary symbols
/// claim the same gene).
fn vocab_by_gene(vocab: &GeneVocab, table: &GeneIdTable) -> HashMap<u32, u32> {
    let mut by_gene: HashMap<u32, u32> = HashMap::with_capacity(vocab.len());
    let mut via_alias: HashMap<u32, Option<u32>> = HashMap::new();
    for (p, sym) in vocab.names().iter().enumerate() {
        match table.resolve_symbol(sym) {
            SymbolHit::Official(rows) => {
                for &g in rows {
                    by_gene.entry(g).or_insert(p as u32);
                }
            }
            SymbolHit::Alias(g) => {
                via_alias
                    .entry(g)
                    .and_modify(|e| *e = None)
                    .or_insert(Some(p as u32));
            }
            SymbolHit::Ambiguous(_) | SymbolHit::Unknown => {}
        }
    }
    for (g, p) in via_alias {
        if let Some(p) = p {
            by_gene.entry(g).or_insert(p);
        }
    }
    by_gene
}

type Lookup = (&'static GeneIdTable, HashMap<u32, u32>);

fn lookup<'a>(slot: &'a mut Option<Lookup>, vocab: &GeneVocab) -> &'a Lookup {
    slot.get_or_insert_with(|| {
        let t = GeneIdTable::builtin();
        (t, vocab_by_gene(vocab, t))
    })
}

/// The single vocabulary position `genes` lead to: `Ok(Some)`, `Ok(None)` (none), or `Err(n)`
/// when they lead to `n > 1` distinct positions.
fn single_position(
    genes: &[u32],
    by_gene: &HashMap<u32, u32>,
) -> std::result::Result<Option<u32>, usize> {
    let mut found: Vec<u32> = genes
        .iter()
        .filter_map(|g| by_gene.get(g).copied())
        .collect();
    found.sort_unstable();
    found.dedup();
    match found.len() {
        0 => Ok(None),
        1 => Ok(Some(found[0])),
        n => Err(n),
    }
}

impl GeneAlignment {
    /// Aligns `data_genes` (column order of the data) to `vocab`.
    ///
    /// Routes, in order of precedence: the exact vocabulary symbol; an Ensembl gene ID
    /// (version ignored) through the built-in [`GeneIdTable`]; then, for names still unmatched,
    /// a renamed symbol (the official symbol or an unambiguous alias of a gene a vocabulary
    /// symbol also names). [`AlignOptions::gene_id`] restricts the routes. A vocabulary
    /// position is filled at most once (keep-first in column order, exact routes before
    /// aliases). `file` and `column` only serve the report and error messages.
    pub fn new(
        vocab: &GeneVocab,
        data_genes: &[String],
        column: &str,
        file: &Path,
        opts: &AlignOptions,
    ) -> Result<Self> {
        let mode = opts.gene_id;
        let n = data_genes.len();
        let mut map: Vec<Option<u32>> = vec![None; n];
        let mut taken = vec![false; vocab.len()];
        let mut seen = HashSet::with_capacity(n);
        let (mut by_symbol, mut by_ensembl, mut by_alias) = (0, 0, 0);
        let (mut duplicated, mut ambiguous, mut dropped) = (0, 0, 0);
        let n_ensembl_shaped = data_genes.iter().filter(|g| looks_like_ensembl(g)).count();
        // The identifier table and the vocabulary's genes, built on first need.
        let mut table: Option<Lookup> = None;
        let mut deferred = Vec::new();
        // Pass 1: exact symbols and Ensembl ids, in column order.
        for (j, g) in data_genes.iter().enumerate() {
            if !seen.insert(g.as_str()) {
                duplicated += 1;
                continue;
            }
            let exact = if mode == GeneIdMode::Ensembl {
                None
            } else {
                vocab.position(g)
            };
            let hit = if let Some(p) = exact {
                Some((p as u32, &mut by_symbol))
            } else if matches!(mode, GeneIdMode::Auto | GeneIdMode::Ensembl)
                && looks_like_ensembl(g)
            {
                let (t, by_gene) = lookup(&mut table, vocab);
                match single_position(t.resolve_ensembl(g), by_gene) {
                    Ok(Some(p)) => Some((p, &mut by_ensembl)),
                    Ok(None) => {
                        dropped += 1;
                        None
                    }
                    Err(_) => {
                        ambiguous += 1;
                        None
                    }
                }
            } else {
                if matches!(mode, GeneIdMode::Ensembl | GeneIdMode::Exact) {
                    dropped += 1;
                } else {
                    deferred.push(j);
                }
                None
            };
            if let Some((p, counter)) = hit {
                if std::mem::replace(&mut taken[p as usize], true) {
                    duplicated += 1;
                } else {
                    *counter += 1;
                    map[j] = Some(p);
                }
            }
        }
        // Pass 2: renamed symbols for what is still unmatched.
        for j in deferred {
            let (t, by_gene) = lookup(&mut table, vocab);
            let resolved = match t.resolve_symbol(&data_genes[j]) {
                SymbolHit::Official(rows) => single_position(rows, by_gene),
                SymbolHit::Alias(g) => single_position(&[g], by_gene),
                SymbolHit::Ambiguous(k) => Err(k),
                SymbolHit::Unknown => Ok(None),
            };
            match resolved {
                Ok(Some(p)) if taken[p as usize] => duplicated += 1,
                Ok(Some(p)) => {
                    taken[p as usize] = true;
                    by_alias += 1;
                    map[j] = Some(p);
                }
                Ok(None) => dropped += 1,
                Err(_) => ambiguous += 1,
            }
        }
        let mut present = vec![0u8; vocab.seq_len()];
        for (p, &t) in taken.iter().enumerate() {
            present[p] = t as u8;
        }
        for p in &mut present[vocab.len()..vocab.len() + N_DEPTH_TOKENS] {
            *p = 1;
        }
        let matched = by_symbol + by_ensembl + by_alias;
        let mostly_ensembl = 2 * n_ensembl_shaped > n;
        let gene_id = match mode {
            GeneIdMode::Auto if mostly_ensembl => {
                format!("auto: Ensembl ids ({n_ensembl_shaped} of {n} names)")
            }
            GeneIdMode::Auto => format!(
                "auto: symbols ({} of {n} names are Ensembl ids)",
                n_ensembl_shaped
            ),
            m => m.as_str().to_string(),
        };
        let report = AlignmentReport {
            n_data_genes: n,
            n_vocab_genes: vocab.len(),
            matched,
            by_symbol,
            by_ensembl,
            by_alias,
            missing: vocab.len() - matched,
            duplicated,
            ambiguous,
            dropped,
            column: column.to_string(),
            gene_id,
        };
        let required = opts.required(n);
        if matched < required {
            let sample: Vec<&str> = data_genes.iter().take(3).map(String::as_str).collect();
            let hint = if matches!(mode, GeneIdMode::Symbol | GeneIdMode::Exact) && mostly_ensembl {
                format!(
                    "; the names look like Ensembl ids ({}) but `gene_id` {} was given: use `gene_id` ensembl (or auto), or a symbol column with `gene_column` (e.g. feature_name)",
                    sample.join(", "),
                    mode
                )
            } else if mode == GeneIdMode::Ensembl && !mostly_ensembl {
                format!(
                    "; `gene_id` ensembl was given but the names do not look like Ensembl ids ({}): use `gene_id` symbol (or auto), or an id column with `gene_column`",
                    sample.join(", ")
                )
            } else {
                format!(
                    "; first data genes: {} ({} by symbol, {} by Ensembl id, {} by alias)",
                    sample.join(", "),
                    by_symbol,
                    by_ensembl,
                    by_alias
                )
            };
            return Err(TokenizeError::TooLittleOverlap {
                path: file.to_path_buf(),
                matched,
                n_data: n,
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
