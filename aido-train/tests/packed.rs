//! Packed corpora (`aido_train::packed`): `pack` keeps exactly the cells, rows and presence masks
//! `CellCorpus::load` reads from the same files; the streamed order with a full buffer is the
//! in-memory order, with a small one it visits every training cell once per epoch and is a pure
//! function of the stream position (exact resume); truncated or corrupt shards are refused
//! naming them. The expectations come from the in-memory corpus (`CellCorpus::load`, the path
//! `aido pretrain --data` has always used) and from the format's definition.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use aido_tokenize::h5ad_out::{H5adWriter, XMatrix};
use aido_tokenize::simulate::{SimulationConfig, simulate, synthetic_gene_names};
use aido_tokenize::{GeneIdMode, GeneVocab, ReadOptions};
use aido_train::data::{TrainOrder, split_cells};
use aido_train::{CellCorpus, PackOptions, PackedCorpus, TrainError, pack};

/// Writes a simulated h5ad of `n` cells over `genes`; the first `zero_cells` cells get no
/// counts at all (left out by both readers).
fn write_h5ad(path: &Path, n: usize, genes: Vec<String>, seed: u64, zero_cells: usize) {
    let mut sim = simulate(&SimulationConfig::new(n, 3, seed), genes).unwrap();
    let c = &mut sim.counts;
    for i in 0..zero_cells {
        for v in &mut c.data[c.indptr[i]..c.indptr[i + 1]] {
            *v = 0.0;
        }
    }
    let n_cols = sim.genes.len();
    let mut w = H5adWriter::new(sim.obs, sim.genes);
    w.x = Some(XMatrix::Csr {
        csr: sim.counts,
        n_cols,
    });
    w.write(path).unwrap();
}

/// Two files over a 40-gene panel: the second lacks the panel's last 5 genes and has 2 empty
/// cells.
fn inputs(dir: &Path) -> (Vec<PathBuf>, GeneVocab) {
    let names = synthetic_gene_names(40);
    let (a, b) = (dir.join("a.h5ad"), dir.join("b.h5ad"));
    write_h5ad(&a, 23, names.clone(), 1, 0);
    write_h5ad(&b, 31, names[..35].to_vec(), 2, 2);
    (vec![a, b], GeneVocab::from_names(names).unwrap())
}

fn packed(dir: &Path, per_shard: usize) -> (PackedCorpus, CellCorpus) {
    let (files, vocab) = inputs(dir);
    let out = dir.join("corpus");
    let opts = PackOptions {
        cells_per_shard: per_shard,
        ..PackOptions::default()
    };
    pack(&files, &vocab, &opts, &out, &mut |_| {}).unwrap();
    let mem = CellCorpus::load(&files, &vocab, &ReadOptions::default(), GeneIdMode::Auto).unwrap();
    (PackedCorpus::open(&out).unwrap(), mem)
}

#[test]
fn a_packed_corpus_holds_the_cells_the_in_memory_corpus_reads() {
    let dir = tempfile::tempdir().unwrap();
    let (p, mem) = packed(dir.path(), 7);
    assert_eq!(p.len(), mem.len());
    assert_eq!(p.len(), 23 + 31 - 2);
    assert_eq!(p.index().shards.len(), p.len().div_ceil(7));
    assert_eq!(p.index().files[1].skipped_empty, 2);
    for (s, set) in mem.sets().iter().enumerate() {
        assert_eq!(p.present()[s], set.present, "presence mask of file {s}");
    }
    let mut seen = 0;
    for s in 0..p.index().shards.len() {
        p.read_shard(s, &mut |id, file, row, counts| {
            let (c, set) = mem.cell(id);
            assert_eq!((set, c), (file, counts.as_slice()), "cell {id}");
            assert_eq!(
                mem.source_cell(id),
                (file, row as usize),
                "row of cell {id}"
            );
            seen += 1;
        })
        .unwrap();
    }
    assert_eq!(seen, mem.len());
    assert_eq!(
        p.index().nnz as usize,
        (0..mem.len()).map(|i| mem.cell(i).0.len()).sum::<usize>()
    );
    p.verify().unwrap();
    // The panel is written beside the index, readable by --genes.
    let g = GeneVocab::from_tsv(p.dir().join("genes.tsv")).unwrap();
    assert_eq!(g.names(), p.genes().names());
}

#[test]
fn a_full_buffer_streams_the_in_memory_order() {
    let dir = tempfile::tempdir().unwrap();
    let (p, mem) = packed(dir.path(), 5);
    let split = split_cells(p.len(), 0.1, 512, 9);
    let mut order = TrainOrder::new(split.train.clone(), 9);
    let mut stream = p.stream(&split.val, 9, 1_000);
    let n = 3 * split.train.len() + 4;
    let want = order.take(0, n);
    let got = stream.take(0, n).unwrap();
    for (w, g) in want.iter().zip(&got) {
        assert_eq!((w.0, w.1), (g.id, g.epoch));
        let (c, set) = mem.cell(g.id);
        assert_eq!((c, set), (g.counts.as_slice(), g.set));
    }
    assert_eq!(got.len(), n);
}

#[test]
fn a_small_buffer_visits_each_training_cell_once_per_epoch_as_a_function_of_position() {
    let dir = tempfile::tempdir().unwrap();
    let (p, _) = packed(dir.path(), 7);
    let split = split_cells(p.len(), 0.1, 512, 4);
    let n_train = split.train.len();
    let mut stream = p.stream(&split.val, 4, 6);
    let all = stream.take(0, 3 * n_train).unwrap();
    let train: BTreeSet<usize> = split.train.iter().copied().collect();
    let mut orders = Vec::new();
    for e in 0..3 {
        let ep = &all[e * n_train..(e + 1) * n_train];
        assert!(ep.iter().all(|c| c.epoch == e as u64));
        let ids: Vec<usize> = ep.iter().map(|c| c.id).collect();
        let set: BTreeSet<usize> = ids.iter().copied().collect();
        assert_eq!(set, train, "epoch {e} visits every training cell once");
        assert_eq!(ids.len(), n_train);
        orders.push(ids);
    }
    assert_ne!(orders[0], orders[1], "epochs are shuffled differently");
    // Resuming anywhere (mid-window, mid-epoch) continues the same stream.
    for start in [1u64, 5, 13, n_train as u64 - 1, n_train as u64 + 7] {
        let mut fresh = p.stream(&split.val, 4, 6);
        let part = fresh.take(start, 9).unwrap();
        assert_eq!(
            part,
            all[start as usize..start as usize + 9],
            "from {start}"
        );
    }
}

fn shard_path(p: &PackedCorpus, s: usize) -> PathBuf {
    p.dir().join(&p.index().shards[s].file)
}

#[test]
fn a_truncated_shard_is_refused_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let (p, _) = packed(dir.path(), 7);
    let path = shard_path(&p, 2);
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
    let e = PackedCorpus::open(p.dir()).unwrap_err().to_string();
    assert!(
        e.contains("shard-00002.bin.gz") && e.contains("truncated"),
        "{e}"
    );
}

#[test]
fn a_corrupt_shard_is_refused_when_read() {
    let dir = tempfile::tempdir().unwrap();
    let (p, _) = packed(dir.path(), 7);
    let path = shard_path(&p, 1);
    let mut bytes = std::fs::read(&path).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x5a;
    std::fs::write(&path, &bytes).unwrap();
    // Same size: opening passes, reading the shard does not.
    let p = PackedCorpus::open(p.dir()).unwrap();
    let e = p.verify().unwrap_err();
    assert!(matches!(e, TrainError::Data { .. }), "{e:?}");
    let e = e.to_string();
    assert!(
        e.contains("shard-00001.bin.gz") && e.contains("corrupt shard 1"),
        "{e}"
    );
    let split = split_cells(p.len(), 0.1, 512, 4);
    let mut s = p.stream(&split.val, 4, 1_000);
    assert!(s.take(0, 1).is_err(), "the stream reads the corrupt shard");
}

#[test]
fn an_altered_index_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (p, _) = packed(dir.path(), 7);
    let ip = p.dir().join("index.json");
    let text = std::fs::read_to_string(&ip).unwrap();
    let mut v: serde_json::Value = serde_json::from_str(&text).unwrap();
    v["shards"].as_array_mut().unwrap().remove(3);
    std::fs::write(&ip, serde_json::to_string(&v).unwrap()).unwrap();
    let e = PackedCorpus::open(p.dir()).unwrap_err().to_string();
    assert!(e.contains("index.json") && e.contains("shards[3]"), "{e}");
    std::fs::remove_file(&ip).unwrap();
    let e = PackedCorpus::open(p.dir()).unwrap_err().to_string();
    assert!(e.contains("not a packed corpus"), "{e}");
}

#[test]
fn pack_refuses_an_existing_folder_and_leaves_nothing_behind_on_bad_input() {
    let dir = tempfile::tempdir().unwrap();
    let (files, vocab) = inputs(dir.path());
    let out = dir.path().join("corpus");
    std::fs::create_dir(&out).unwrap();
    let e = pack(&files, &vocab, &PackOptions::default(), &out, &mut |_| {}).unwrap_err();
    assert!(e.to_string().contains("already exists"), "{e}");
    std::fs::remove_dir(&out).unwrap();

    // Normalized values (not raw counts) are refused, naming the file; no folder is left.
    let bad = dir.path().join("normalized.h5ad");
    let mut sim = simulate(&SimulationConfig::new(10, 2, 5), vocab.names().to_vec()).unwrap();
    for v in &mut sim.counts.data {
        *v = (*v + 1.0).ln();
    }
    let n_cols = sim.genes.len();
    let mut w = H5adWriter::new(sim.obs, sim.genes);
    w.x = Some(XMatrix::Csr {
        csr: sim.counts,
        n_cols,
    });
    w.write(&bad).unwrap();
    let e = pack(
        &[files[0].clone(), bad],
        &vocab,
        &PackOptions::default(),
        &out,
        &mut |_| {},
    )
    .unwrap_err();
    assert!(e.to_string().contains("normalized.h5ad"), "{e}");
    let left: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("corpus"))
        .collect();
    assert!(left.is_empty(), "left behind: {left:?}");
}
