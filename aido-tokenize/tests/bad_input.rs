//! Every kind of bad input gives a typed error naming the file, object, cell or gene.
#![allow(clippy::unwrap_used)]

use std::path::Path;

use aido_tokenize::h5ad_out::{H5adWriter, XMatrix};
use aido_tokenize::{
    CsrChunk, EmptyCellPolicy, GeneVocab, NonIntegerPolicy, ObsTable, ReadOptions, TokenizeError,
    TokenizeOptions, Tokenizer, open_source,
};
use hdf5_pure::{AttrValue, FileBuilder};

fn genes(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("G{i}")).collect()
}

/// A valid CSR h5ad with the given rows (dense, cells × genes).
fn write_h5ad(path: &Path, rows: &[Vec<f32>]) {
    let g = rows[0].len();
    let mut csr = CsrChunk {
        first_cell: 0,
        indptr: vec![0],
        ..Default::default()
    };
    for r in rows {
        for (j, &v) in r.iter().enumerate() {
            if v != 0.0 {
                csr.indices.push(j as u32);
                csr.data.push(v);
            }
        }
        csr.indptr.push(csr.data.len());
    }
    let obs = ObsTable::from_names((0..rows.len()).map(|i| format!("c{i}")).collect());
    let mut w = H5adWriter::new(obs, genes(g));
    w.x = Some(XMatrix::Csr { csr, n_cols: g });
    w.write(path).unwrap();
}

fn tokenize(path: &Path, vocab: &GeneVocab, opts: TokenizeOptions) -> Result<usize, TokenizeError> {
    let mut src = open_source(path, &ReadOptions::default())?;
    let mut tok = Tokenizer::new(src.as_mut(), vocab, opts)?;
    let mut n = 0;
    while let Some(b) = tok.next_batch(2)? {
        n += b.values.nrows();
    }
    Ok(n)
}

fn vocab(n: usize) -> GeneVocab {
    GeneVocab::from_names(genes(n)).unwrap()
}

#[test]
fn missing_file() {
    let err = open_source("/nonexistent/x.h5ad", &ReadOptions::default())
        .err()
        .unwrap();
    assert!(matches!(err, TokenizeError::NotFound { .. }), "{err}");
    assert!(err.to_string().contains("/nonexistent/x.h5ad"));
}

#[test]
fn not_hdf5_and_truncated() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("fake.h5ad");
    std::fs::write(&p, b"this is not an HDF5 file at all").unwrap();
    let err = open_source(&p, &ReadOptions::default()).err().unwrap();
    assert!(matches!(err, TokenizeError::NotHdf5 { .. }), "{err}");

    let good = dir.path().join("good.h5ad");
    write_h5ad(&good, &[vec![1.0, 2.0, 0.0], vec![0.0, 3.0, 4.0]]);
    let bytes = std::fs::read(&good).unwrap();
    for cut in [100usize, bytes.len() / 2, bytes.len() - 10] {
        let t = dir.path().join(format!("trunc{cut}.h5ad"));
        std::fs::write(&t, &bytes[..cut]).unwrap();
        let res = open_source(&t, &ReadOptions::default()).and_then(|mut s| {
            aido_tokenize::read_all(s.as_mut())?;
            Ok(())
        });
        let err = res
            .err()
            .unwrap_or_else(|| panic!("truncation at {cut} bytes was not detected"));
        assert!(err.to_string().contains("trunc"), "{err}");
    }
}

#[test]
fn missing_x_names_the_object_and_the_layers() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("nox.h5ad");
    let mut w = H5adWriter::new(ObsTable::from_names(vec!["a".into()]), genes(2));
    w.x = None;
    w.write(&p).unwrap();
    let err = open_source(&p, &ReadOptions::default()).err().unwrap();
    assert!(
        matches!(&err, TokenizeError::Missing { object, .. } if object == "X"),
        "{err}"
    );
    let err = open_source(
        &p,
        &ReadOptions {
            gene_column: None,
            layer: Some("counts".into()),
            raw: false,
        },
    )
    .err()
    .unwrap();
    assert!(err.to_string().contains("layers/counts"), "{err}");
}

fn raw_h5ad(path: &Path, x_enc: &str, indptr: &[i64], indices: &[i32], data: &[f32]) {
    let s = |v: &str| AttrValue::VarLenString(v.into());
    let mut fb = FileBuilder::new();
    fb.set_attr("encoding-type", s("anndata"));
    fb.set_attr("encoding-version", s("0.1.0"));
    let mut x = fb.create_group("X");
    x.set_attr("encoding-type", s(x_enc));
    x.set_attr("encoding-version", s("0.1.0"));
    x.set_attr("shape", AttrValue::I64Array(vec![2, 3]));
    x.create_dataset("data").with_f32_data(data);
    x.create_dataset("indices").with_i32_data(indices);
    x.create_dataset("indptr").with_i64_data(indptr);
    fb.add_group(x.finish());
    for (name, n) in [("obs", 2usize), ("var", 3)] {
        let mut g = fb.create_group(name);
        g.set_attr("encoding-type", s("dataframe"));
        g.set_attr("encoding-version", s("0.2.0"));
        g.set_attr("_index", s("_index"));
        g.set_attr("column-order", AttrValue::VarLenStringArray(vec![]));
        let names: Vec<String> = if name == "var" {
            genes(n)
        } else {
            (0..n).map(|i| format!("c{i}")).collect()
        };
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        g.create_dataset("_index")
            .with_vlen_strings(&refs)
            .set_attr("encoding-type", s("string-array"));
        fb.add_group(g.finish());
    }
    fb.write(path).unwrap();
}

#[test]
fn unknown_encoding_and_legacy_files() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("coo.h5ad");
    raw_h5ad(&p, "coo_matrix", &[0, 1, 2], &[0, 1], &[1.0, 2.0]);
    let err = open_source(&p, &ReadOptions::default()).err().unwrap();
    assert!(
        matches!(&err, TokenizeError::UnsupportedEncoding { encoding, .. } if encoding == "coo_matrix"),
        "{err}"
    );

    // A pre-0.7 file: obs stored as a compound dataset, X without encoding attributes.
    let legacy = dir.path().join("legacy.h5ad");
    let mut fb = FileBuilder::new();
    fb.create_dataset("X")
        .with_f32_data(&[1.0, 2.0])
        .with_shape(&[1, 2]);
    fb.create_dataset("obs").with_i32_data(&[0]);
    fb.create_dataset("var").with_i32_data(&[0, 1]);
    fb.write(&legacy).unwrap();
    let err = open_source(&legacy, &ReadOptions::default()).err().unwrap();
    assert!(err.to_string().contains("pre-0.7"), "{err}");
}

#[test]
fn inconsistent_csr_arrays() {
    let dir = tempfile::tempdir().unwrap();
    // data and indices of different lengths.
    let p = dir.path().join("a.h5ad");
    raw_h5ad(&p, "csr_matrix", &[0, 1, 2], &[0, 1], &[1.0, 2.0, 3.0]);
    let err = open_source(&p, &ReadOptions::default()).err().unwrap();
    assert!(
        matches!(&err, TokenizeError::ShapeMismatch { object, .. } if object == "X/data"),
        "{err}"
    );
    // indptr too short for the shape.
    let p = dir.path().join("b.h5ad");
    raw_h5ad(&p, "csr_matrix", &[0, 2], &[0, 1], &[1.0, 2.0]);
    let err = open_source(&p, &ReadOptions::default()).err().unwrap();
    assert!(
        matches!(&err, TokenizeError::ShapeMismatch { object, .. } if object == "X/indptr"),
        "{err}"
    );
    // indptr ends beyond data.
    let p = dir.path().join("c.h5ad");
    raw_h5ad(&p, "csr_matrix", &[0, 1, 5], &[0, 1], &[1.0, 2.0]);
    let err = open_source(&p, &ReadOptions::default()).err().unwrap();
    assert!(err.to_string().contains("indptr runs from 0 to 5"), "{err}");
    // A gene index beyond the shape.
    let p = dir.path().join("d.h5ad");
    raw_h5ad(&p, "csr_matrix", &[0, 1, 2], &[0, 7], &[1.0, 2.0]);
    let mut src = open_source(&p, &ReadOptions::default()).unwrap();
    let err = aido_tokenize::read_all(src.as_mut()).err().unwrap();
    assert!(err.to_string().contains("gene index 7"), "{err}");
}

#[test]
fn invalid_counts_name_cell_and_gene() {
    let dir = tempfile::tempdir().unwrap();
    for (bad, what) in [(-1.0f32, "-1"), (f32::NAN, "NaN"), (f32::INFINITY, "inf")] {
        let p = dir.path().join(format!("bad_{what}.h5ad"));
        write_h5ad(&p, &[vec![1.0, 2.0, 3.0], vec![4.0, bad, 1.0]]);
        let err = tokenize(&p, &vocab(3), TokenizeOptions::default()).unwrap_err();
        match &err {
            TokenizeError::InvalidCount {
                cell,
                cell_name,
                gene,
                ..
            } => {
                assert_eq!((*cell, cell_name.as_str(), gene.as_str()), (1, "c1", "G1"));
            }
            other => panic!("expected InvalidCount, got {other}"),
        }
    }
}

#[test]
fn non_integer_counts_warn_or_fail() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("frac.h5ad");
    write_h5ad(&p, &[vec![1.0, 2.5, 3.0], vec![4.0, 1.0, 1.0]]);
    assert_eq!(
        tokenize(&p, &vocab(3), TokenizeOptions::default()).unwrap(),
        2
    );
    let strict = TokenizeOptions {
        non_integer: NonIntegerPolicy::Error,
        ..Default::default()
    };
    let err = tokenize(&p, &vocab(3), strict).unwrap_err();
    assert!(
        matches!(&err, TokenizeError::NonIntegerCount { cell: 0, gene, .. } if gene == "G1"),
        "{err}"
    );
}

#[test]
fn empty_cells_fail_or_are_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("empty.h5ad");
    // Cell 1 only has counts in gene G3, which the vocabulary (G0..G2) lacks: aligned total 0.
    write_h5ad(
        &p,
        &[
            vec![1.0, 2.0, 3.0, 0.0],
            vec![0.0, 0.0, 0.0, 5.0],
            vec![1.0, 0.0, 0.0, 0.0],
        ],
    );
    let v = vocab(3);
    let err = tokenize(&p, &v, TokenizeOptions::default()).unwrap_err();
    assert!(
        matches!(&err, TokenizeError::EmptyCells { count: 1, examples, .. } if examples.contains("'c1'")),
        "{err}"
    );
    let skip = TokenizeOptions {
        empty: EmptyCellPolicy::Skip,
        ..Default::default()
    };
    let mut src = open_source(&p, &ReadOptions::default()).unwrap();
    let mut tok = Tokenizer::new(src.as_mut(), &v, skip).unwrap();
    let b = tok.next_batch(10).unwrap().unwrap();
    assert_eq!(b.cells, vec![0, 2]);
    assert_eq!(tok.stats().cells_skipped_empty, 1);
    assert!(b.values.iter().all(|x| x.is_finite()));
}

#[test]
fn no_gene_overlap() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("ens.h5ad");
    write_h5ad(&p, &[vec![1.0, 2.0], vec![3.0, 4.0]]);
    let other = GeneVocab::from_names(vec!["ENSG1".into(), "ENSG2".into()]).unwrap();
    let err = tokenize(&p, &other, TokenizeOptions::default()).unwrap_err();
    assert!(
        matches!(&err, TokenizeError::TooLittleOverlap { matched: 0, .. }),
        "{err}"
    );
}

#[test]
fn vocabulary_errors() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("v.tsv");
    std::fs::write(&p, "gene_name\tindex\nA\t0\nB\t2\n").unwrap();
    let err = GeneVocab::from_tsv(&p).unwrap_err();
    assert!(
        matches!(&err, TokenizeError::Parse { line: 3, .. }),
        "{err}"
    );
    std::fs::write(&p, "gene_name\tindex\nA\t0\nA\t1\n").unwrap();
    assert!(
        GeneVocab::from_tsv(&p)
            .unwrap_err()
            .to_string()
            .contains("listed twice")
    );
    std::fs::write(&p, "symbol\nA\n").unwrap();
    assert!(GeneVocab::from_tsv(&p).is_err());
}

/// A Matrix Market size line is untrusted: a huge announced size is a typed error, not an
/// allocation that aborts the process (before the fix, `vec![0; n_cells]` from the size line).
#[test]
fn mtx_size_line_is_bounded() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("features.tsv"), "G0\tG0\nG1\tG1\n").unwrap();
    let cases = [
        ("2 99999999999999999 1\n1 1 3\n", "more than"),
        ("2 3 7\n1 1 3\n", "cannot fit"),
        ("2 3 2\n1 1 3\n", "the file holds 1"),
    ];
    for (body, needle) in cases {
        std::fs::write(
            dir.path().join("matrix.mtx"),
            format!("%%MatrixMarket matrix coordinate integer general\n{body}"),
        )
        .unwrap();
        let e = open_source(dir.path(), &ReadOptions::default())
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains(needle), "{needle}: {e}");
    }
}
