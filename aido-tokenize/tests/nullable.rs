//! Nullable obs columns keep their missing values through reading, selecting and writing.
//!
//! The input `tests/data/nullable_obs.h5ad` was written by anndata 0.12.19
//! (`tools/reference/make_nullable_obs.py`): pandas `Int64`, `boolean` and `string` columns with
//! every third cell (i % 3 == 1) missing, values `10 i`, `i even`, `s{i}`.
#![allow(clippy::unwrap_used)]

use aido_tokenize::h5ad_out::H5adWriter;
use aido_tokenize::{ObsColumn, ReadOptions, open_source};

fn input() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/nullable_obs.h5ad")
}

fn check(obs: &aido_tokenize::ObsTable, cells: &[usize]) {
    let col = |n: &str| obs.column(n).unwrap();
    for (r, &i) in cells.iter().enumerate() {
        let missing = i % 3 == 1;
        for name in ["n_int", "n_bool", "n_str"] {
            assert_eq!(
                col(name).is_missing(r),
                missing,
                "{name} row {r} (cell {i})"
            );
        }
        let want = |v: String| if missing { String::new() } else { v };
        assert_eq!(col("n_int").display(r), want((10 * i).to_string()));
        assert_eq!(col("n_bool").display(r), want((i % 2 == 0).to_string()));
        assert_eq!(col("n_str").display(r), want(format!("s{i}")));
    }
    assert!(matches!(col("n_int"), ObsColumn::NullableInt { .. }));
    assert!(matches!(col("n_bool"), ObsColumn::NullableBool { .. }));
    assert!(matches!(col("n_str"), ObsColumn::NullableStr { .. }));
}

#[test]
fn nullable_columns_are_read_with_their_mask() {
    let src = open_source(input(), &ReadOptions::default()).unwrap();
    check(src.obs(), &(0..12).collect::<Vec<_>>());
}

#[test]
fn selected_and_written_columns_keep_the_mask() {
    let dir = tempfile::tempdir().unwrap();
    let src = open_source(input(), &ReadOptions::default()).unwrap();
    // The rows `aido embed --skip-empty` would keep: obs is selected, then written anew.
    let keep = [0usize, 1, 4, 5, 7, 11];
    let obs = src.obs().select(&keep);
    check(&obs, &keep);
    let out = dir.path().join("out.h5ad");
    let mut w = H5adWriter::new(obs, Vec::new());
    w.obsm
        .push(("X_test".into(), ndarray::Array2::zeros((keep.len(), 2))));
    w.write(&out).unwrap();
    check(&aido_tokenize::h5ad::read_obs(&out).unwrap(), &keep);
    // Checked once with anndata 0.12.19: `ad.read_h5ad(out).obs` gives Int64 / boolean /
    // string columns with <NA> at rows 1, 2 and 4 (cells 1, 4 and 7).
    if let Ok(dir) = std::env::var("AIDO_KEEP_EDIT_OUTPUT") {
        std::fs::copy(&out, std::path::Path::new(&dir).join("nullable_out.h5ad")).unwrap();
    }
}
