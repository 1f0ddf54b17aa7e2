//! Packed corpora: pretraining data aligned and validated once (`aido pack`), stored as
//! compressed sparse shards plus an index, and streamed by `aido pretrain --corpus` with memory
//! bounded by the shuffle buffer and the batch, not by the corpus.
//!
//! # Layout of a corpus folder
//!
//! - `index.json` ([`PackIndex`]): the gene panel, every input file (cells kept, cells without
//!   counts in the panel, the genes it does not measure, its alignment report), and every shard
//!   (first cell, cells, non-zeros, bytes, CRC-32 of the compressed file).
//! - `genes.tsv`: the panel, readable by `--genes` of the other commands.
//! - `shard-NNNNN.bin.gz`: one gzip stream of little-endian records: the magic `AIDOSHD1`, the
//!   format version (`u32`) and the shard's first global cell id (`u64`); per cell a tag byte
//!   `1`, the input file (`u32`), the cell's row in that file (`u64`), its non-zeros `k` (`u32`)
//!   and `k` pairs of gene position (`u32`) and raw count (`f32`); then a tag byte `0`, the
//!   shard's cells and non-zeros (`u64`, `u64`) and the magic `AIDOEND1`.
//!
//! Cells get the global ids [`crate::CellCorpus::load`] gives the same files (files in order, cells
//! without counts in the panel left out), so the split, the validation examples and the
//! baselines of a packed corpus are those of `--data` on the same files.
//!
//! # The streamed order
//!
//! The training cells (all but the validation split) are visited epoch after epoch. In epoch
//! `e` the shards are taken in a seeded order; the training cells, in that shard order, are cut
//! into windows of `shuffle_buffer` cells; the cells of a window are sorted by id and visited
//! in a seeded permutation of the window. Stream position `k` therefore names one cell as a pure
//! function of `(seed, shuffle_buffer, k)`: resuming needs only the number of cells consumed,
//! and a window is read from the (at most a few) shards it overlaps when the stream reaches it.
//! With a buffer of at least the training cells the order is exactly that of the in-memory
//! corpus ([`crate::data::TrainOrder`]).
//!
//! A shard is read through to its end every time, so its gzip CRC, its end marker and the
//! index's byte count and CRC-32 are checked at each use: a corrupt or truncated shard is an
//! error naming it, never a silently short epoch.

use std::fs::{self, File};
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use aido_rda::RdaConfig;
use aido_tokenize::simulate::permutation;
use aido_tokenize::{GeneIdMode, GeneVocab, ReadOptions, Tokenizer, open_source};
use flate2::read::GzDecoder;
use flate2::write::GzEncoder;
use flate2::{Compression, CrcReader, CrcWriter};
use serde::{Deserialize, Serialize};

use crate::data::{CellSubset, Samplers, StreamCell, corpus_tokenize_options};
use crate::{Result, TrainError};

/// The index file of a corpus folder.
pub const INDEX_FILE: &str = "index.json";
/// The `format` field of an index.
pub const FORMAT: &str = "aido-packed-corpus";
/// The format version written and read.
pub const VERSION: u32 = 1;

const SHARD_MAGIC: &[u8; 8] = b"AIDOSHD1";
const SHARD_END: &[u8; 8] = b"AIDOEND1";
/// Mixed into the seed of the shard order.
const SHARD_SALT: u64 = 0x5a4d_0000_0000_0002;

/// The index of a packed corpus (`index.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PackIndex {
    /// Always [`FORMAT`].
    pub format: String,
    /// The format version ([`VERSION`]).
    pub version: u32,
    /// The tool that wrote it.
    pub created_by: String,
    /// The gene panel, in model order.
    pub genes: Vec<String>,
    /// Cells.
    pub n_cells: u64,
    /// Non-zero counts.
    pub nnz: u64,
    /// The shard size asked for.
    pub cells_per_shard: usize,
    /// How the inputs were read.
    pub read: PackRead,
    /// The input files, in global-id order.
    pub files: Vec<PackedFile>,
    /// The shards, in global-id order.
    pub shards: Vec<ShardEntry>,
}

/// How the inputs of a corpus were read.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PackRead {
    /// `--gene-column`.
    pub gene_column: Option<String>,
    /// `--layer`.
    pub layer: Option<String>,
    /// `--gene-id`.
    pub gene_id: String,
}

/// One input file of a corpus.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PackedFile {
    /// The path as given to `aido pack`.
    pub path: PathBuf,
    /// Cells kept.
    pub cells: u64,
    /// Cells left out because none of their counts fall in the panel.
    pub skipped_empty: u64,
    /// Positions of the `G + 2` model inputs the file does not measure.
    pub absent: Vec<u32>,
    /// The alignment report.
    pub alignment: String,
}

/// One shard of a corpus.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShardEntry {
    /// File name inside the corpus folder.
    pub file: String,
    /// Global id of its first cell.
    pub first_cell: u64,
    /// Cells.
    pub n_cells: u64,
    /// Non-zero counts.
    pub nnz: u64,
    /// Size of the compressed file.
    pub bytes: u64,
    /// CRC-32 of the compressed file.
    pub crc32: u32,
}

/// Options of [`pack`].
#[derive(Debug, Clone)]
pub struct PackOptions {
    /// Cells per shard (≥ 1).
    pub cells_per_shard: usize,
    /// How the files are read (`--gene-column`, `--layer`).
    pub read: ReadOptions,
    /// How gene names are matched.
    pub gene_id: GeneIdMode,
}

impl Default for PackOptions {
    fn default() -> Self {
        PackOptions {
            cells_per_shard: 10_000,
            read: ReadOptions::default(),
            gene_id: GeneIdMode::Auto,
        }
    }
}

fn io_err(path: &Path) -> impl Fn(io::Error) -> TrainError + '_ {
    move |e| TrainError::Io {
        path: path.to_path_buf(),
        source: e,
    }
}

fn data_err(path: &Path, detail: impl Into<String>) -> TrainError {
    TrainError::Data {
        path: path.to_path_buf(),
        detail: detail.into(),
    }
}

/// A shard being written.
struct ShardWriter {
    path: PathBuf,
    enc: GzEncoder<CrcWriter<BufWriter<File>>>,
    first_cell: u64,
    n_cells: u64,
    nnz: u64,
    buf: Vec<u8>,
}

impl ShardWriter {
    fn create(path: PathBuf, first_cell: u64) -> Result<Self> {
        let f = File::create(&path).map_err(io_err(&path))?;
        let mut enc = GzEncoder::new(CrcWriter::new(BufWriter::new(f)), Compression::fast());
        let mut head = Vec::with_capacity(20);
        head.extend_from_slice(SHARD_MAGIC);
        head.extend_from_slice(&VERSION.to_le_bytes());
        head.extend_from_slice(&first_cell.to_le_bytes());
        enc.write_all(&head).map_err(io_err(&path))?;
        Ok(ShardWriter {
            path,
            enc,
            first_cell,
            n_cells: 0,
            nnz: 0,
            buf: Vec::new(),
        })
    }

    fn push(&mut self, file: u32, row: u64, counts: &[(u32, f32)]) -> Result<()> {
        self.buf.clear();
        self.buf.push(1);
        self.buf.extend_from_slice(&file.to_le_bytes());
        self.buf.extend_from_slice(&row.to_le_bytes());
        self.buf
            .extend_from_slice(&(counts.len() as u32).to_le_bytes());
        for &(p, v) in counts {
            self.buf.extend_from_slice(&p.to_le_bytes());
            self.buf.extend_from_slice(&v.to_le_bytes());
        }
        self.enc.write_all(&self.buf).map_err(io_err(&self.path))?;
        self.n_cells += 1;
        self.nnz += counts.len() as u64;
        Ok(())
    }

    fn finish(mut self) -> Result<ShardEntry> {
        let mut tail = Vec::with_capacity(25);
        tail.push(0);
        tail.extend_from_slice(&self.n_cells.to_le_bytes());
        tail.extend_from_slice(&self.nnz.to_le_bytes());
        tail.extend_from_slice(SHARD_END);
        self.enc.write_all(&tail).map_err(io_err(&self.path))?;
        let crc = self.enc.finish().map_err(io_err(&self.path))?;
        let (sum, bytes) = (crc.crc().sum(), crc.crc().amount());
        let file = crc.into_inner().into_inner().map_err(|e| TrainError::Io {
            path: self.path.clone(),
            source: e.into_error(),
        })?;
        file.sync_all().map_err(io_err(&self.path))?;
        Ok(ShardEntry {
            file: self
                .path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
            first_cell: self.first_cell,
            n_cells: self.n_cells,
            nnz: self.nnz,
            bytes: u64::from(bytes),
            crc32: sum,
        })
    }
}

/// Aligns and validates `paths` against `vocab` (as [`crate::CellCorpus::load`] does) and writes
/// the corpus folder `out`: see the module docs. The folder is written under a temporary name
/// and renamed when complete; an existing `out` is refused. `on_file` is called after each
/// input file.
pub fn pack(
    paths: &[PathBuf],
    vocab: &GeneVocab,
    opts: &PackOptions,
    out: &Path,
    on_file: &mut dyn FnMut(&PackedFile),
) -> Result<PackIndex> {
    if paths.is_empty() {
        return Err(TrainError::Config("no data file given".into()));
    }
    if opts.cells_per_shard == 0 {
        return Err(TrainError::Config("cells_per_shard must be ≥ 1".into()));
    }
    if out.exists() {
        return Err(data_err(
            out,
            "already exists: choose another corpus folder (a corpus is written once)",
        ));
    }
    let name = out
        .file_name()
        .ok_or_else(|| data_err(out, "not a folder name"))?
        .to_string_lossy()
        .into_owned();
    let tmp = out.with_file_name(format!(".{name}.partial-{}", std::process::id()));
    if tmp.exists() {
        fs::remove_dir_all(&tmp).map_err(io_err(&tmp))?;
    }
    fs::create_dir_all(&tmp).map_err(io_err(&tmp))?;
    let result = pack_into(paths, vocab, opts, &tmp, on_file).and_then(|index| {
        fs::rename(&tmp, out).map_err(io_err(out))?;
        Ok(index)
    });
    if result.is_err() {
        let _ = fs::remove_dir_all(&tmp);
    }
    result
}

fn pack_into(
    paths: &[PathBuf],
    vocab: &GeneVocab,
    opts: &PackOptions,
    dir: &Path,
    on_file: &mut dyn FnMut(&PackedFile),
) -> Result<PackIndex> {
    let tok_opts = corpus_tokenize_options(vocab, opts.gene_id);
    let shard_path = |i: usize| dir.join(format!("shard-{i:05}.bin.gz"));
    let (mut shards, mut files) = (Vec::new(), Vec::with_capacity(paths.len()));
    let (mut n_cells, mut nnz) = (0u64, 0u64);
    let mut writer: Option<ShardWriter> = None;
    for (f, path) in paths.iter().enumerate() {
        let mut source = open_source(path, &opts.read)?;
        let mut tok = Tokenizer::new(source.as_mut(), vocab, tok_opts)?;
        let mut kept = 0u64;
        while let Some(batch) = tok.next_batch(1024)? {
            for (counts, &row) in batch.counts.iter().zip(&batch.cells) {
                let w = match &mut writer {
                    Some(w) => w,
                    None => writer.insert(ShardWriter::create(shard_path(shards.len()), n_cells)?),
                };
                w.push(f as u32, row as u64, counts)?;
                n_cells += 1;
                kept += 1;
                nnz += counts.len() as u64;
                if w.n_cells as usize == opts.cells_per_shard
                    && let Some(w) = writer.take()
                {
                    shards.push(w.finish()?);
                }
            }
        }
        let absent = tok
            .alignment()
            .present()
            .iter()
            .enumerate()
            .filter(|&(_, &p)| p == 0)
            .map(|(i, _)| i as u32)
            .collect();
        let pf = PackedFile {
            path: path.clone(),
            cells: kept,
            skipped_empty: tok.stats().cells_skipped_empty as u64,
            absent,
            alignment: tok.report().to_string(),
        };
        on_file(&pf);
        files.push(pf);
    }
    if let Some(w) = writer.take() {
        shards.push(w.finish()?);
    }
    if n_cells < 2 {
        return Err(data_err(
            &paths[0],
            format!(
                "{n_cells} usable cells in all inputs: at least 2 are needed (one to train, one to validate)"
            ),
        ));
    }
    let index = PackIndex {
        format: FORMAT.into(),
        version: VERSION,
        created_by: format!("aido-train {}", env!("CARGO_PKG_VERSION")),
        genes: vocab.names().to_vec(),
        n_cells,
        nnz,
        cells_per_shard: opts.cells_per_shard,
        read: PackRead {
            gene_column: opts.read.gene_column.clone(),
            layer: opts.read.layer.clone(),
            gene_id: opts.gene_id.to_string(),
        },
        files,
        shards,
    };
    vocab.write_tsv(dir.join("genes.tsv"))?;
    let json = serde_json::to_vec_pretty(&index).map_err(|e| TrainError::Config(e.to_string()))?;
    let ip = dir.join(INDEX_FILE);
    let mut f = File::create(&ip).map_err(io_err(&ip))?;
    f.write_all(&json).map_err(io_err(&ip))?;
    f.sync_all().map_err(io_err(&ip))?;
    Ok(index)
}

/// An opened packed corpus: the index, checked against the shard files on disk.
#[derive(Debug, Clone)]
pub struct PackedCorpus {
    dir: PathBuf,
    index: PackIndex,
    genes: GeneVocab,
    present: Vec<Vec<u8>>,
}

impl PackedCorpus {
    /// Opens the corpus folder `dir`: the index must parse and be consistent, and every shard
    /// must exist with the size the index records (a truncated shard is refused here, naming
    /// it; its contents are checked when it is read).
    pub fn open(dir: &Path) -> Result<Self> {
        let ip = dir.join(INDEX_FILE);
        if !ip.exists() {
            return Err(data_err(
                dir,
                format!("not a packed corpus: no {INDEX_FILE} (write one with `aido pack`)"),
            ));
        }
        let text = fs::read(&ip).map_err(io_err(&ip))?;
        let index: PackIndex = serde_json::from_slice(&text)
            .map_err(|e| data_err(&ip, format!("not a corpus index: {e}")))?;
        if index.format != FORMAT || index.version != VERSION {
            return Err(data_err(
                &ip,
                format!(
                    "format {:?} version {}: this build reads {FORMAT:?} version {VERSION}",
                    index.format, index.version
                ),
            ));
        }
        let genes = GeneVocab::from_names(index.genes.clone())?;
        let seq = genes.len() + 2;
        let mut present = Vec::with_capacity(index.files.len());
        let mut file_cells = 0u64;
        for (i, f) in index.files.iter().enumerate() {
            let mut p = vec![1u8; seq];
            for &a in &f.absent {
                *p.get_mut(a as usize).ok_or_else(|| {
                    data_err(
                        &ip,
                        format!("files[{i}].absent: position {a} outside the {seq} model inputs"),
                    )
                })? = 0;
            }
            present.push(p);
            file_cells += f.cells;
        }
        let (mut next, mut nnz) = (0u64, 0u64);
        for (i, s) in index.shards.iter().enumerate() {
            if s.file.is_empty() || s.file.contains(['/', '\\']) || s.file.starts_with('.') {
                return Err(data_err(
                    &ip,
                    format!(
                        "shards[{i}].file {:?} is not a file name in the corpus folder",
                        s.file
                    ),
                ));
            }
            if s.first_cell != next || s.n_cells == 0 {
                return Err(data_err(
                    &ip,
                    format!(
                        "shards[{i}] ({}) starts at cell {} with {} cells; cell {next} was expected next",
                        s.file, s.first_cell, s.n_cells
                    ),
                ));
            }
            next += s.n_cells;
            nnz += s.nnz;
            let sp = dir.join(&s.file);
            let len = fs::metadata(&sp)
                .map_err(|e| data_err(&sp, format!("shard {i} of the index: {e}")))?
                .len();
            if len != s.bytes {
                return Err(data_err(
                    &sp,
                    format!(
                        "shard {i} is truncated or altered: {len} bytes, the index records {}",
                        s.bytes
                    ),
                ));
            }
        }
        if next != index.n_cells || file_cells != index.n_cells || nnz != index.nnz {
            return Err(data_err(
                &ip,
                format!(
                    "inconsistent counts: n_cells {}, nnz {}; the shards hold {next} cells and {nnz} non-zeros, the files {file_cells} cells",
                    index.n_cells, index.nnz
                ),
            ));
        }
        if index.n_cells < 2 {
            return Err(data_err(&ip, "fewer than 2 cells"));
        }
        Ok(PackedCorpus {
            dir: dir.to_path_buf(),
            index,
            genes,
            present,
        })
    }

    /// The corpus folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The index.
    pub fn index(&self) -> &PackIndex {
        &self.index
    }

    /// The gene panel.
    pub fn genes(&self) -> &GeneVocab {
        &self.genes
    }

    /// Genes `G` of the panel.
    pub fn n_genes(&self) -> usize {
        self.genes.len()
    }

    /// Cells.
    pub fn len(&self) -> usize {
        self.index.n_cells as usize
    }

    /// Whether there are no cells (never true for an opened corpus).
    pub fn is_empty(&self) -> bool {
        self.index.n_cells == 0
    }

    /// Presence masks `[G + 2]` of the input files.
    pub fn present(&self) -> &[Vec<u8>] {
        &self.present
    }

    /// One RDA sampler per input file, as [`crate::CellCorpus::samplers`] gives.
    pub fn samplers(&self, cfg: RdaConfig, seed: u64) -> Result<Samplers> {
        Samplers::new(self.present.iter().map(Vec::as_slice), cfg, seed)
    }

    /// Reads shard `s` through to its end, verifying it, and calls `cell(global id, file,
    /// row, counts)` for each of its cells in order.
    pub fn read_shard(
        &self,
        s: usize,
        cell: &mut dyn FnMut(usize, usize, u64, Vec<(u32, f32)>),
    ) -> Result<()> {
        let entry = self
            .index
            .shards
            .get(s)
            .ok_or_else(|| TrainError::Config(format!("shard {s} is not in the index")))?;
        let path = self.dir.join(&entry.file);
        let bad = |detail: String| data_err(&path, format!("corrupt shard {s}: {detail}"));
        let f = File::open(&path).map_err(io_err(&path))?;
        let mut r = BufReader::with_capacity(1 << 16, GzDecoder::new(CrcReader::new(f)));
        let rd = |r: &mut dyn Read, buf: &mut [u8]| -> Result<()> {
            r.read_exact(buf).map_err(|e| match e.kind() {
                io::ErrorKind::UnexpectedEof => bad("truncated (the data ends early)".into()),
                _ => bad(e.to_string()),
            })
        };
        let mut head = [0u8; 20];
        rd(&mut r, &mut head)?;
        if &head[..8] != SHARD_MAGIC {
            return Err(bad("not a corpus shard (wrong magic)".into()));
        }
        let version = u32::from_le_bytes([head[8], head[9], head[10], head[11]]);
        let first = u64::from_le_bytes(head[12..20].try_into().unwrap_or_default());
        if version != VERSION || first != entry.first_cell {
            return Err(bad(format!(
                "version {version}, first cell {first}; the index says version {VERSION}, first cell {}",
                entry.first_cell
            )));
        }
        let (n_genes, n_files) = (self.n_genes() as u32, self.index.files.len() as u32);
        let (mut n, mut nnz) = (0u64, 0u64);
        let mut rec = [0u8; 16];
        let mut pairs = Vec::new();
        loop {
            let mut tag = [0u8; 1];
            rd(&mut r, &mut tag)?;
            match tag[0] {
                1 => {
                    rd(&mut r, &mut rec)?;
                    let file = u32::from_le_bytes(rec[..4].try_into().unwrap_or_default());
                    let row = u64::from_le_bytes(rec[4..12].try_into().unwrap_or_default());
                    let k = u32::from_le_bytes(rec[12..16].try_into().unwrap_or_default());
                    if file >= n_files || k > n_genes || n >= entry.n_cells {
                        return Err(bad(format!(
                            "cell {} of the shard: file {file}, {k} non-zeros (the corpus has {n_files} files, {n_genes} genes, the shard {} cells)",
                            n, entry.n_cells
                        )));
                    }
                    pairs.resize(k as usize * 8, 0);
                    rd(&mut r, &mut pairs)?;
                    let mut counts = Vec::with_capacity(k as usize);
                    for c in pairs.chunks_exact(8) {
                        let p = u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
                        let v = f32::from_le_bytes([c[4], c[5], c[6], c[7]]);
                        if p >= n_genes || !v.is_finite() || v < 0.0 {
                            return Err(bad(format!(
                                "cell {} (row {row} of {}): gene position {p}, count {v}",
                                entry.first_cell + n,
                                self.index.files[file as usize].path.display()
                            )));
                        }
                        counts.push((p, v));
                    }
                    cell((entry.first_cell + n) as usize, file as usize, row, counts);
                    n += 1;
                    nnz += u64::from(k);
                }
                0 => {
                    let mut tail = [0u8; 24];
                    rd(&mut r, &mut tail)?;
                    let tn = u64::from_le_bytes(tail[..8].try_into().unwrap_or_default());
                    let tz = u64::from_le_bytes(tail[8..16].try_into().unwrap_or_default());
                    if &tail[16..] != SHARD_END
                        || (tn, tz) != (n, nnz)
                        || (n, nnz) != (entry.n_cells, entry.nnz)
                    {
                        return Err(bad(format!(
                            "{n} cells and {nnz} non-zeros read; the end marker says {tn} and {tz}, the index {} and {}",
                            entry.n_cells, entry.nnz
                        )));
                    }
                    break;
                }
                t => return Err(bad(format!("unknown record tag {t}"))),
            }
        }
        // The end of the gzip stream (its own CRC is checked here), then the whole file's.
        let mut extra = [0u8; 1];
        match r.read(&mut extra) {
            Ok(0) => {}
            Ok(_) => return Err(bad("data after the end marker".into())),
            Err(e) => return Err(bad(e.to_string())),
        }
        let mut crc = r.into_inner().into_inner();
        io::copy(&mut crc, &mut io::sink()).map_err(io_err(&path))?;
        let (sum, amount) = (crc.crc().sum(), u64::from(crc.crc().amount()));
        if (sum, amount) != (entry.crc32, entry.bytes) {
            return Err(bad(format!(
                "checksum {sum:08x} over {amount} bytes; the index records {:08x} over {}",
                entry.crc32, entry.bytes
            )));
        }
        Ok(())
    }

    /// Reads every shard, verifying each (see [`PackedCorpus::read_shard`]).
    pub fn verify(&self) -> Result<()> {
        for s in 0..self.index.shards.len() {
            self.read_shard(s, &mut |_, _, _, _| {})?;
        }
        Ok(())
    }

    /// The cells `ids` (global ids, any order), read from the shards that hold them.
    pub fn gather(&self, ids: &[usize]) -> Result<CellSubset> {
        let mut want = ids.to_vec();
        want.sort_unstable();
        want.dedup();
        let mut out = CellSubset::new(self.n_genes(), self.present.clone());
        if let Some(&last) = want.last()
            && last >= self.len()
        {
            return Err(TrainError::Config(format!(
                "cell {last} is not in the corpus of {} cells",
                self.len()
            )));
        }
        for s in 0..self.index.shards.len() {
            let e = &self.index.shards[s];
            let (lo, hi) = (e.first_cell as usize, (e.first_cell + e.n_cells) as usize);
            let (a, b) = (
                want.partition_point(|&i| i < lo),
                want.partition_point(|&i| i < hi),
            );
            if a == b {
                continue;
            }
            let part = &want[a..b];
            self.read_shard(s, &mut |id, file, _, counts| {
                if part.binary_search(&id).is_ok() {
                    out.insert(id, file, counts);
                }
            })?;
        }
        Ok(out)
    }

    /// The training stream over all cells but `val` (see the module docs).
    pub fn stream(&self, val: &[usize], seed: u64, shuffle_buffer: usize) -> PackedStream<'_> {
        let mut val = val.to_vec();
        val.sort_unstable();
        val.dedup();
        let train_per_shard: Vec<usize> = self
            .index
            .shards
            .iter()
            .map(|e| {
                let (lo, hi) = (e.first_cell as usize, (e.first_cell + e.n_cells) as usize);
                (hi - lo) - (val.partition_point(|&i| i < hi) - val.partition_point(|&i| i < lo))
            })
            .collect();
        let n_train = train_per_shard.iter().sum();
        PackedStream {
            corpus: self,
            val,
            train_per_shard,
            n_train,
            seed,
            buffer: shuffle_buffer.max(1),
            window: None,
        }
    }
}

/// A cell held in the shuffle buffer: global id, input file, raw counts.
type WindowCell = (usize, usize, Vec<(u32, f32)>);

/// The streamed order of a packed corpus' training cells: see the module docs.
pub struct PackedStream<'a> {
    corpus: &'a PackedCorpus,
    val: Vec<usize>,
    train_per_shard: Vec<usize>,
    n_train: usize,
    seed: u64,
    buffer: usize,
    /// `(epoch, window, cells in visiting order)`.
    window: Option<(u64, u64, Vec<WindowCell>)>,
}

impl PackedStream<'_> {
    /// Training cells.
    pub fn n_train(&self) -> usize {
        self.n_train
    }

    /// Genes `G` of the panel.
    pub fn n_genes(&self) -> usize {
        self.corpus.n_genes()
    }

    /// Shard order of `epoch`.
    fn shard_order(&self, epoch: u64) -> Vec<usize> {
        permutation(
            self.train_per_shard.len(),
            self.seed.rotate_left(17) ^ epoch ^ SHARD_SALT,
        )
    }

    fn load_window(&self, epoch: u64, w: u64) -> Result<Vec<WindowCell>> {
        let lo = w as usize * self.buffer;
        let hi = (lo + self.buffer).min(self.n_train);
        let mut items: Vec<WindowCell> = Vec::with_capacity(hi - lo);
        let mut c = 0usize;
        for s in self.shard_order(epoch) {
            let t = self.train_per_shard[s];
            let (a, b) = (lo.max(c), hi.min(c + t));
            if a < b {
                // Train cells a - c .. b - c (local train ranks) of shard s.
                let (ra, rb) = (a - c, b - c);
                let mut rank = 0usize;
                let val = &self.val;
                self.corpus.read_shard(s, &mut |id, file, _, counts| {
                    if val.binary_search(&id).is_err() {
                        if (ra..rb).contains(&rank) {
                            items.push((id, file, counts));
                        }
                        rank += 1;
                    }
                })?;
            }
            c += t;
            if c >= hi {
                break;
            }
        }
        items.sort_unstable_by_key(|x| x.0);
        let perm = permutation(
            items.len(),
            self.seed.rotate_left(17) ^ epoch ^ w.wrapping_mul(0x9e37_79b9_7f4a_7c15),
        );
        let mut slots: Vec<Option<_>> = items.into_iter().map(Some).collect();
        Ok(perm.into_iter().filter_map(|j| slots[j].take()).collect())
    }

    /// The cells at stream positions `start..start + n`.
    pub fn take(&mut self, start: u64, n: usize) -> Result<Vec<StreamCell>> {
        let len = self.n_train as u64;
        if len == 0 {
            return Err(TrainError::Config(
                "the corpus has no training cells".into(),
            ));
        }
        let mut out = Vec::with_capacity(n);
        for k in start..start + n as u64 {
            let (epoch, o) = (k / len, k % len);
            let (w, i) = (o / self.buffer as u64, (o % self.buffer as u64) as usize);
            let hit = matches!(&self.window, Some((e, ww, _)) if *e == epoch && *ww == w);
            if !hit {
                self.window = None;
                let cells = self.load_window(epoch, w)?;
                self.window = Some((epoch, w, cells));
            }
            let cells = self.window.as_ref().map(|x| &x.2);
            let (id, set, counts) = cells.and_then(|c| c.get(i)).ok_or_else(|| {
                TrainError::Config(format!(
                    "stream position {k}: window {w} of epoch {epoch} is short"
                ))
            })?;
            out.push(StreamCell {
                id: *id,
                epoch,
                set: *set,
                counts: counts.clone(),
            });
        }
        Ok(out)
    }
}
