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
/// shorter panel, at least half of the panel must be measured
/// ([`AlignOptions::for_vocab`], the rule inference applies too).
pub fn align_options(vocab: &GeneVocab) -> AlignOptions {
    AlignOptions::default().for_vocab(vocab)
}

/// How training corpora are read (by [`CellCorpus::load`] and by `aido pack`, which must agree
/// cell for cell): aligned to `vocab` with [`align_options`], cells without counts in the gene
/// list skipped, and non-integer values refused. Read-depth-aware examples thin raw counts
/// binomially, so normalized or log-transformed input cannot be used.
pub fn corpus_tokenize_options(vocab: &GeneVocab, gene_id: GeneIdMode) -> TokenizeOptions {
    TokenizeOptions {
        align: AlignOptions {
            gene_id,
            ..align_options(vocab)
        },
        empty: EmptyCellPolicy::Skip,
        non_integer: NonIntegerPolicy::Error,
        ..TokenizeOptions::default()
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
        let opts = corpus_tokenize_options(vocab, gene_id);
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
        split_cells(self.len(), val_fraction, max_val, seed)
    }

    /// One RDA sampler per data set (each with its own presence mask), sharing `cfg` and `seed`.
    pub fn samplers(&self, cfg: RdaConfig, seed: u64) -> Result<Samplers> {
        Samplers::new(self.sets.iter().map(|s| s.present.as_slice()), cfg, seed)
    }
}

/// The seeded split of `n` cells (global ids `0..n`): see [`CellCorpus::split`]. `n ≥ 2`.
pub fn split_cells(n: usize, val_fraction: f64, max_val: usize, seed: u64) -> Split {
    let n_val = ((val_fraction * n as f64).round() as usize)
        .min(max_val)
        .clamp(1, n.saturating_sub(1).max(1));
    let perm = permutation(n, seed ^ SPLIT_SALT);
    let mut val: Vec<usize> = perm[..n_val.min(n)].to_vec();
    let mut train: Vec<usize> = perm[n_val.min(n)..].to_vec();
    val.sort_unstable();
    train.sort_unstable();
    Split { train, val }
}

/// Random access to the raw counts of cells by global id: a whole [`CellCorpus`], or the
/// cells of a streamed corpus that are held in memory ([`CellSubset`]: the validation cells and
/// those the baselines use).
pub trait CellLookup {
    /// Genes `G` of the gene list.
    fn n_genes(&self) -> usize;
    /// Presence mask `[G + 2]` of data set `set`.
    fn present(&self, set: usize) -> &[u8];
    /// Raw counts and the data set of global cell `id`.
    fn lookup(&self, id: usize) -> Result<(&[(u32, f32)], usize)>;
}

impl CellLookup for CellCorpus {
    fn n_genes(&self) -> usize {
        self.n_genes
    }

    fn present(&self, set: usize) -> &[u8] {
        &self.sets[set].present
    }

    fn lookup(&self, id: usize) -> Result<(&[(u32, f32)], usize)> {
        if id >= self.index.len() {
            return Err(TrainError::Config(format!(
                "cell {id} is not in the corpus of {} cells",
                self.index.len()
            )));
        }
        Ok(self.cell(id))
    }
}

/// Some cells of a corpus, by global id, with the presence masks of all its data sets.
#[derive(Debug, Clone, Default)]
pub struct CellSubset {
    n_genes: usize,
    present: Vec<Vec<u8>>,
    cells: std::collections::BTreeMap<usize, (usize, Vec<(u32, f32)>)>,
}

impl CellSubset {
    /// An empty subset over `n_genes` genes and the data sets' presence masks.
    pub fn new(n_genes: usize, present: Vec<Vec<u8>>) -> Self {
        CellSubset {
            n_genes,
            present,
            cells: Default::default(),
        }
    }

    /// Adds cell `id` of data set `set`.
    pub fn insert(&mut self, id: usize, set: usize, counts: Vec<(u32, f32)>) {
        self.cells.insert(id, (set, counts));
    }

    /// Cells held.
    pub fn len(&self) -> usize {
        self.cells.len()
    }

    /// Whether no cell is held.
    pub fn is_empty(&self) -> bool {
        self.cells.is_empty()
    }
}

impl CellLookup for CellSubset {
    fn n_genes(&self) -> usize {
        self.n_genes
    }

    fn present(&self, set: usize) -> &[u8] {
        &self.present[set]
    }

    fn lookup(&self, id: usize) -> Result<(&[(u32, f32)], usize)> {
        self.cells
            .get(&id)
            .map(|(s, c)| (c.as_slice(), *s))
            .ok_or_else(|| TrainError::Config(format!("cell {id} is not held in memory")))
    }
}

/// A training cell read from a stream, with the epoch it is visited in.
#[derive(Debug, Clone, PartialEq)]
pub struct StreamCell {
    /// Global cell id.
    pub id: usize,
    /// Epoch of this visit (seeds its RDA example).
    pub epoch: u64,
    /// Data set (input file) of the cell.
    pub set: usize,
    /// Aligned raw counts `(gene position, count)`.
    pub counts: Vec<(u32, f32)>,
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
    /// One sampler per presence mask (data set), sharing `cfg` and `seed`.
    pub fn new<'a>(
        present: impl IntoIterator<Item = &'a [u8]>,
        cfg: RdaConfig,
        seed: u64,
    ) -> Result<Self> {
        let s = present
            .into_iter()
            .map(|p| RdaSampler::new(cfg, seed, p))
            .collect::<aido_rda::Result<Vec<_>>>()?;
        Ok(Samplers(s))
    }

    /// The stacked RDA batch of `cells` (`(global id, epoch)`).
    pub fn batch(&self, corpus: &dyn CellLookup, cells: &[(usize, u64)]) -> Result<RdaBatch> {
        let seq = corpus.n_genes() + 2;
        let mut ex = Vec::with_capacity(cells.len());
        for &(id, epoch) in cells {
            let (counts, set) = corpus.lookup(id)?;
            ex.push(self.0[set].example(epoch, id, counts)?);
        }
        Ok(RdaBatch::stack(&ex, seq)?)
    }

    /// The stacked RDA batch of streamed cells over `n_genes` genes: the same examples as
    /// [`Samplers::batch`] gives for the same `(id, epoch)`.
    pub fn batch_streamed(&self, n_genes: usize, cells: &[StreamCell]) -> Result<RdaBatch> {
        let ex = cells
            .iter()
            .map(|c| {
                self.0
                    .get(c.set)
                    .ok_or_else(|| aido_rda::RdaError::Cell {
                        cell: c.id,
                        detail: format!("data set {} has no sampler", c.set),
                    })
                    .and_then(|s| s.example(c.epoch, c.id, &c.counts))
            })
            .collect::<aido_rda::Result<Vec<_>>>()?;
        Ok(RdaBatch::stack(&ex, n_genes + 2)?)
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
