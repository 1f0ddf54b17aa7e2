//! Writers and readers agree: simulated data written as h5ad (CSR, dense, CSC), Matrix Market
//! and CSV read back to the same matrix; the streamed safetensors file is a valid safetensors file.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::io::Write;

use aido_tokenize::h5ad_out::{H5adWriter, XMatrix};
use aido_tokenize::safetensors_out::{ExtraTensor, SafetensorsRowWriter};
use aido_tokenize::simulate::{SimulationConfig, simulate, synthetic_gene_names};
use aido_tokenize::{
    GeneVocab, ObsColumn, ReadOptions, TokenizeOptions, Tokenizer, open_source, read_all,
};
use hdf5_pure::{AttrValue, FileBuilder};

fn sim(cells: usize, genes: usize) -> aido_tokenize::simulate::SimulatedData {
    let mut cfg = SimulationConfig::new(cells, 3, 11);
    cfg.n_batches = 2;
    simulate(&cfg, synthetic_gene_names(genes)).unwrap()
}

#[test]
fn simulated_h5ad_roundtrips_with_obs() {
    let dir = tempfile::tempdir().unwrap();
    let s = sim(50, 300);
    let p = dir.path().join("sim.h5ad");
    let mut w = H5adWriter::new(s.obs.clone(), s.genes.clone());
    w.x = Some(XMatrix::Csr {
        csr: s.counts.clone(),
        n_cols: 300,
    });
    w.write(&p).unwrap();
    let mut src = open_source(&p, &ReadOptions::default()).unwrap();
    assert_eq!(src.obs(), &s.obs);
    assert_eq!(src.gene_names(), &s.genes[..]);
    let back = read_all(src.as_mut()).unwrap();
    assert_eq!(back, s.counts);
    // Simulated structure: library sizes within 1k–30k (± NB noise), every type present.
    for i in 0..50 {
        let t: f32 = back.row(i).1.iter().sum();
        assert!((300.0..60_000.0).contains(&t), "cell {i}: total {t}");
    }
    match s.obs.column("cell_type").unwrap() {
        ObsColumn::Categorical {
            codes, categories, ..
        } => {
            assert_eq!(categories.len(), 3);
            assert!((0..3).all(|k| codes.contains(&k)));
        }
        other => panic!("{other:?}"),
    }
    assert!(s.obs.column("batch").is_some());
    // Same seed, same data.
    assert_eq!(sim(50, 300).counts, s.counts);
}

#[test]
fn dense_and_csc_h5ad_read_like_csr() {
    let dir = tempfile::tempdir().unwrap();
    let s = sim(20, 40);
    let dense = s.counts.to_dense(40);
    // Dense X through our writer.
    let flat: Vec<f32> = dense.iter().flatten().copied().collect();
    let arr = ndarray::Array2::from_shape_vec((20, 40), flat).unwrap();
    let p = dir.path().join("dense.h5ad");
    let mut w = H5adWriter::new(s.obs.clone(), s.genes.clone());
    w.x = Some(XMatrix::Dense(arr));
    w.write(&p).unwrap();
    let mut src = open_source(&p, &ReadOptions::default()).unwrap();
    assert_eq!(read_all(src.as_mut()).unwrap().to_dense(40), dense);

    // CSC X (genes compressed), built directly with the HDF5 builder.
    let mut indptr = vec![0i64];
    let (mut idx, mut data) = (vec![], vec![]);
    for g in 0..40 {
        for (c, row) in dense.iter().enumerate() {
            if row[g] != 0.0 {
                idx.push(c as i32);
                data.push(row[g]);
            }
        }
        indptr.push(data.len() as i64);
    }
    let st = |v: &str| AttrValue::VarLenString(v.into());
    let p2 = dir.path().join("csc.h5ad");
    let mut fb = FileBuilder::new();
    fb.set_attr("encoding-type", st("anndata"));
    fb.set_attr("encoding-version", st("0.1.0"));
    let mut x = fb.create_group("X");
    x.set_attr("encoding-type", st("csc_matrix"));
    x.set_attr("encoding-version", st("0.1.0"));
    x.set_attr("shape", AttrValue::I64Array(vec![20, 40]));
    x.create_dataset("data").with_f32_data(&data);
    x.create_dataset("indices").with_i32_data(&idx);
    x.create_dataset("indptr").with_i64_data(&indptr);
    fb.add_group(x.finish());
    for (name, names) in [("obs", &s.obs.names), ("var", &s.genes)] {
        let mut g = fb.create_group(name);
        g.set_attr("encoding-type", st("dataframe"));
        g.set_attr("encoding-version", st("0.2.0"));
        g.set_attr("_index", st("_index"));
        g.set_attr("column-order", AttrValue::VarLenStringArray(vec![]));
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        g.create_dataset("_index")
            .with_vlen_strings(&refs)
            .set_attr("encoding-type", st("string-array"));
        fb.add_group(g.finish());
    }
    fb.write(&p2).unwrap();
    let mut src = open_source(&p2, &ReadOptions::default()).unwrap();
    assert_eq!(read_all(src.as_mut()).unwrap().to_dense(40), dense);
}

#[test]
fn matrix_market_and_csv_read_like_h5ad() {
    let dir = tempfile::tempdir().unwrap();
    let s = sim(15, 25);
    let dense = s.counts.to_dense(25);
    // Matrix Market, genes × cells, entries NOT grouped by cell (forces the in-memory path),
    // plain-text features with (id, name, type) and barcodes.
    let mm = dir.path().join("mm");
    std::fs::create_dir(&mm).unwrap();
    let mut entries = vec![];
    for (c, row) in dense.iter().enumerate() {
        for (g, &v) in row.iter().enumerate() {
            if v != 0.0 {
                entries.push((g + 1, c + 1, v));
            }
        }
    }
    entries.reverse();
    let mut f = std::fs::File::create(mm.join("matrix.mtx")).unwrap();
    writeln!(
        f,
        "%%MatrixMarket matrix coordinate integer general\n%comment\n25 15 {}",
        entries.len()
    )
    .unwrap();
    for (g, c, v) in &entries {
        writeln!(f, "{g} {c} {v}").unwrap();
    }
    let feats: String = s
        .genes
        .iter()
        .map(|g| format!("ID{g}\t{g}\tGene Expression\n"))
        .collect();
    std::fs::write(mm.join("features.tsv"), feats).unwrap();
    std::fs::write(mm.join("barcodes.tsv"), s.obs.names.join("\n") + "\n").unwrap();
    let mut src = open_source(&mm, &ReadOptions::default()).unwrap();
    assert_eq!(src.gene_names(), &s.genes[..]);
    assert_eq!(src.obs().names, s.obs.names);
    assert_eq!(read_all(src.as_mut()).unwrap().to_dense(25), dense);

    // Dense CSV with a cell-name column.
    let csv = dir.path().join("m.csv");
    let mut text = format!("cell,{}\n", s.genes.join(","));
    for (c, row) in dense.iter().enumerate() {
        let vals: Vec<String> = row.iter().map(|v| v.to_string()).collect();
        text += &format!("{},{}\n", s.obs.names[c], vals.join(","));
    }
    std::fs::write(&csv, text).unwrap();
    let mut src = open_source(&csv, &ReadOptions::default()).unwrap();
    assert_eq!(src.gene_names(), &s.genes[..]);
    assert_eq!(src.obs().names, s.obs.names);
    assert_eq!(read_all(src.as_mut()).unwrap().to_dense(25), dense);
}

#[test]
fn streamed_safetensors_is_valid_and_atomic() {
    let dir = tempfile::tempdir().unwrap();
    let s = sim(30, 60);
    let p = dir.path().join("sim.h5ad");
    let mut w = H5adWriter::new(s.obs.clone(), s.genes.clone());
    w.x = Some(XMatrix::Csr {
        csr: s.counts.clone(),
        n_cols: 60,
    });
    w.write(&p).unwrap();
    let vocab = GeneVocab::from_names(s.genes.clone()).unwrap();
    let mut src = open_source(&p, &ReadOptions::default()).unwrap();
    let mut tok = Tokenizer::new(src.as_mut(), &vocab, TokenizeOptions::default()).unwrap();
    let out = dir.path().join("t.safetensors");
    let hint = [ExtraTensor::u8("present", vec![62], &[1; 62])];
    let mut wr =
        SafetensorsRowWriter::create(&out, "values", 62, 30, &hint, BTreeMap::new()).unwrap();
    let mut all = vec![];
    while let Some(b) = tok.next_batch(7).unwrap() {
        wr.write_rows(b.values.as_slice().unwrap()).unwrap();
        all.extend(b.values.iter().copied());
        // Nothing under the final name until finish().
        assert!(!out.exists());
    }
    wr.finish(&[ExtraTensor::u8(
        "present",
        vec![62],
        tok.alignment().present(),
    )])
    .unwrap();
    let bytes = std::fs::read(&out).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let v = st.tensor("values").unwrap();
    assert_eq!(v.shape(), &[30, 62]);
    let got: Vec<f32> = v
        .data()
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    assert_eq!(got, all);
    assert_eq!(st.tensor("present").unwrap().shape(), &[62]);
    // A writer dropped before finish() leaves nothing behind.
    let out2 = dir.path().join("never.safetensors");
    let mut wr =
        SafetensorsRowWriter::create(&out2, "values", 62, 30, &[], BTreeMap::new()).unwrap();
    wr.write_rows(&all[..62]).unwrap();
    drop(wr);
    assert!(!out2.exists());
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .collect();
    assert!(
        leftovers
            .iter()
            .all(|e| !e.file_name().to_string_lossy().contains(".tmp-"))
    );
}
