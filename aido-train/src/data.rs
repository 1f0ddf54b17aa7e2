//! The training corpus: cells of raw counts aligned to the run's gene list, held in memory as
//! sparse rows, a seeded train/validation split, and the order in which training cells are
//! visited.
//!
//! The order is a pure function of `(seed, position in the stream)`: cell `k` of the stream is
//! cell `perm_e[k mod n]` of the training split, `e = k div n` being the epoch and `perm_e` a
//! permutation seeded by `(seed, e)`. A run's data position is therefore just the number of
//! cells consumed, and resuming needs no loader state beyond it.

use std::path::PathBuf;

use aido_rda::{RdaBatch, RdaConfig, RdaSampler};
use aido_tokenize::simulate::permutation;
use aido_tokenize::{
    AlignOptions, AlignmentReport, EmptyCellPolicy, GeneIdMode, GeneVocab, NonIntegerPolicy,
    ReadOptions, TokenizeOptions, Tokenizer, open_source,
};

use crate::{Result, TrainError};

/// The RDA epoch used for validation examples: a fixed draw, the same at every evaluation.
pub const VALIDATION_EPOCH: u64 = u64::MAX;

/// One input file, aligned.
#[derive(Debug, Clone)]
pub struct DataSet {
    /// Where the cells came from.
    pub path: PathBuf,
    /// Presence mask over the gene list `[G + 2]` (1 = the file measures the gene).
    pub present: Vec<u8>,
    /// Aligned raw counts per cell: `(gene position, count)`.
    pub cells: Vec<Vec<(u32, f32)>>,
    /// Row of each cell in its file (cells without counts in the gene list are left out, so
    /// this maps back to the file's `obs`).
    pub source_cells: Vec<usize>,
    /// The alignment report.
    pub report: Option<AlignmentReport>,
    /// Cells dropped because none of their counts fall in the gene list.
    pub skipped_empty: usize,
}

/// All cells of a run, over one gene list.
#[derive(Debug, Clone)]
pub struct CellCorpus {
    n_genes: usize,
    sets: Vec<DataSet>,
    /// Global cell id → `(set, row)`.
    index: Vec<(u32, u32)>,
}

/// Alignment thresholds for a training gene list: the defaults for the whole vocabulary; for a
/// shorter panel, at least half of the panel must be measured.
pub fn align_options(vocab: &GeneVocab) -> AlignOptions {
    if vocab.len() >= 10_000 {
        AlignOptions::default()
    } else {
        AlignOptions {
            min_fraction: 0.0,
            min_genes: (vocab.len() / 2).max(1),
            ..AlignOptions::default()
        }
    }
}

impl CellCorpus {
    /// Reads every file (any format `aido_tokenize::open_source` knows), aligning it to `vocab`.
    /// Cells with no counts in the gene list are dropped and counted; a non-integer value (a
    /// normalized matrix, not raw counts) is an error naming the file, cell and gene.
    ///
    /// `gene_id` says how the files' gene names are read (symbols, Ensembl IDs, or each by its
    /// shape: [`GeneIdMode::Auto`]).
    pub fn load(
        paths: &[PathBuf],
        vocab: &GeneVocab,
        read: &ReadOptions,
        gene_id: GeneIdMode,
    ) -> Result<Self> {
        if paths.is_empty() {
            return Err(TrainError::Config("no data file given".into()));
        }
        // Read-depth-aware examples thin raw counts binomially: normalized or log-transformed
        // input (non-integer values) cannot be used, and is refused naming the value.
        let opts = TokenizeOptions {
            align: AlignOptions {
                gene_id,
                ..align_options(vocab)
            },
            empty: EmptyCellPolicy::Skip,
            non_integer: NonIntegerPolicy::Error,
            ..TokenizeOptions::default()
        };
        let mut sets = Vec::with_capacity(paths.len());
        for path in paths {
            let mut source = open_source(path, read)?;
            let mut tok = Tokenizer::new(source.as_mut(), vocab, opts)?;
            let (mut cells, mut source_cells) = (Vec::new(), Vec::new());
            while let Some(batch) = tok.next_batch(1024)? {
                cells.extend(batch.counts);
                source_cells.extend(batch.cells);
            }
            sets.push(DataSet {
                path: path.clone(),
                present: tok.alignment().present().to_vec(),
                report: Some(tok.report().clone()),
                skipped_empty: tok.stats().cells_skipped_empty,
                cells,
                source_cells,
            });
        }
        Self::from_sets(vocab.len(), sets)
    }

    /// A corpus from data sets already in memory (e.g. simulated counts).
    pub fn from_sets(n_genes: usize, sets: Vec<DataSet>) -> Result<Self> {
        let mut index = Vec::new();
        for (s, set) in sets.iter().enumerate() {
            if set.present.len() != n_genes + 2 {
                return Err(TrainError::Data {
                    path: set.path.clone(),
                    detail: format!(
                        "presence mask of {} positions for {n_genes} genes (+2 depth tokens)",
                        set.present.len()
                    ),
                });
            }
            for (r, c) in set.cells.iter().enumerate() {
                if let Some(&(p, _)) = c.iter().find(|&&(p, _)| p as usize >= n_genes) {
                    return Err(TrainError::Data {
                        path: set.path.clone(),
                        detail: format!("cell {r}: gene position {p} outside {n_genes} genes"),
                    });
                }
                index.push((s as u32, r as u32));
            }
        }
        if index.len() < 2 {
            return Err(TrainError::Data {
                path: sets.first().map(|s| s.path.clone()).unwrap_or_default(),
                detail: format!(
                    "{} usable cells: at least 2 are needed (one to train, one to validate)",
                    index.len()
                ),
            });
        }
        Ok(CellCorpus {
            n_genes,
            sets,
            index,
        })
    }

    /// Number of cells.
    pub fn len(&self) -> usize {
        self.index.len()
    }

    /// Whether there are no cells (never true for a constructed corpus).
    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    /// Genes `G` of the gene list.
    pub fn n_genes(&self) -> usize {
        self.n_genes
    }

    /// The input files.
    pub fn sets(&self) -> &[DataSet] {
        &self.sets
    }

    /// `(data set, row in its file)` of global cell `id`.
    pub fn source_cell(&self, id: usize) -> (usize, usize) {
        let (s, r) = self.index[id];
        let set = &self.sets[s as usize];
        (
            s as usize,
            set.source_cells
                .get(r as usize)
                .copied()
                .unwrap_or(r as usize),
        )
    }

    /// Raw counts and the data set of global cell `id`.
    pub fn cell(&self, id: usize) -> (&[(u32, f32)], usize) {
        let (s, r) = self.index[id];
        (&self.sets[s as usize].cells[r as usize], s as usize)
    }

    /// Seeded split: `min(round(fraction · n), max_val)` validation cells (at least 1, and at
    /// least 1 training cell remains), both lists in ascending order.
    pub fn split(&self, val_fraction: f64, max_val: usize, seed: u64) -> Split {
        let n = self.len();
        let n_val = ((val_fraction * n as f64).round() as usize)
            .min(max_val)
            .clamp(1, n - 1);
        let perm = permutation(n, seed ^ SPLIT_SALT);
        let mut val: Vec<usize> = perm[..n_val].to_vec();
        let mut train: Vec<usize> = perm[n_val..].to_vec();
        val.sort_unstable();
        train.sort_unstable();
        Split { train, val }
    }

    /// One RDA sampler per data set (each with its own presence mask), sharing `cfg` and `seed`.
    pub fn samplers(&self, cfg: RdaConfig, seed: u64) -> Result<Samplers> {
        let s = self
            .sets
            .iter()
            .map(|set| RdaSampler::new(cfg, seed, &set.present))
            .collect::<aido_rda::Result<Vec<_>>>()?;
        Ok(Samplers(s))
    }
}

/// Mixed into the seed of the split, so that it differs from the seeds of the data order.
const SPLIT_SALT: u64 = 0x5b11_7000_0000_0001;

/// Train and validation cell ids.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Split {
    /// Training cells.
    pub train: Vec<usize>,
    /// Validation cells.
    pub val: Vec<usize>,
}

/// The per-data-set RDA samplers of a corpus.
#[derive(Debug, Clone)]
pub struct Samplers(pub Vec<RdaSampler>);

impl Samplers {
    /// The stacked RDA batch of `cells` (global ids) drawn at `epochs[i]`.
    pub fn batch(&self, corpus: &CellCorpus, cells: &[(usize, u64)]) -> Result<RdaBatch> {
        let seq = corpus.n_genes() + 2;
        let ex = cells
            .iter()
            .map(|&(id, epoch)| {
                let (counts, set) = corpus.cell(id);
                self.0[set].example(epoch, id, counts)
            })
            .collect::<aido_rda::Result<Vec<_>>>()?;
        Ok(RdaBatch::stack(&ex, seq)?)
    }
}

/// The stream of training cells: see the module docs.
#[derive(Debug, Clone)]
pub struct TrainOrder {
    train: Vec<usize>,
    seed: u64,
    cached: Option<(u64, Vec<usize>)>,
}

impl TrainOrder {
    /// The order over `train` cell ids.
    pub fn new(train: Vec<usize>, seed: u64) -> Self {
        TrainOrder {
            train,
            seed,
            cached: None,
        }
    }

    /// `(cell id, epoch)` of stream positions `start..start + n`.
    pub fn take(&mut self, start: u64, n: usize) -> Vec<(usize, u64)> {
        let len = self.train.len() as u64;
        (start..start + n as u64)
            .map(|k| {
                let epoch = k / len;
                let perm = match &self.cached {
                    Some((e, p)) if *e == epoch => p,
                    _ => {
                        let p = permutation(self.train.len(), self.seed.rotate_left(17) ^ epoch);
                        &self.cached.insert((epoch, p)).1
                    }
                };
                (self.train[perm[(k % len) as usize]], epoch)
            })
            .collect()
    }
}
