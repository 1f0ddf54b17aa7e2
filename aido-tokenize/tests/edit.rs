//! The input file plus results (`h5ad_edit::write_input_plus`): on the real files of
//! `testdata/data` (written by anndata/h5py) and on a file this crate wrote, every input
//! object reads back unchanged and the additions are there. (anndata 0.12.19 reading the
//! outputs was checked by hand: see aido-eval's docs; CI has no Python.)
#![allow(clippy::unwrap_used)]

use aido_tokenize::h5ad::{read_obs, read_obsm};
use aido_tokenize::h5ad_edit::{H5adAdditions, SparseCsr, UnsValue, write_input_plus};
use aido_tokenize::h5ad_out::{H5adWriter, XMatrix};
use aido_tokenize::shared::testdata_path;
use aido_tokenize::simulate::{SimulationConfig, simulate, synthetic_gene_names};
use aido_tokenize::{ObsColumn, ReadOptions, open_source, read_all};
use ndarray::Array2;

fn additions(n: usize, n_vars: usize) -> H5adAdditions {
    let codes: Vec<i32> = (0..n).map(|i| (i % 3) as i32).collect();
    let m = Array2::from_shape_fn((n, 4), |(i, j)| (i * 4 + j) as f32 * 0.5);
    let ptr: Vec<usize> = (0..=n).map(|i| i.min(n - 1)).collect();
    H5adAdditions {
        obs: vec![(
            "aido_leiden".into(),
            ObsColumn::Categorical {
                codes,
                categories: vec!["0".into(), "1".into(), "2".into()],
                ordered: false,
            },
        )],
        var: vec![(
            "highly_variable".into(),
            ObsColumn::Bool((0..n_vars).map(|j| j % 2 == 0).collect()),
        )],
        obsm: vec![
            ("X_pca".into(), m.clone()),
            ("X_umap".into(), m.slice(ndarray::s![.., ..2]).to_owned()),
        ],
        varm: vec![],
        obsp: vec![(
            "connectivities".into(),
            SparseCsr {
                n_rows: n,
                n_cols: n,
                indptr: ptr,
                indices: (0..n - 1).map(|i| ((i + 1) % n) as u32).collect(),
                data: vec![0.5; n - 1],
                data_f64: false,
            },
        )],
        uns: vec![(
            "aido_cluster".into(),
            UnsValue::Dict(vec![
                ("resolution".into(), UnsValue::F64(0.75)),
                ("n_neighbors".into(), UnsValue::I64(15)),
                ("method".into(), UnsValue::Str("leiden".into())),
                ("variance_ratio".into(), UnsValue::F64Array(vec![0.5, 0.25])),
            ]),
        )],
    }
}

/// Every dataset (raw bytes) and attribute of `a` is in `b` unchanged, except the
/// `column-order` of `obs`/`var`, which gains the new columns.
fn same_tree(a: &hdf5_pure::File, b: &hdf5_pure::File, group: &str) {
    let ga = if group.is_empty() {
        a.root()
    } else {
        a.group(group).unwrap()
    };
    let gb = if group.is_empty() {
        b.root()
    } else {
        b.group(group).unwrap()
    };
    for (k, v) in ga.attrs().unwrap() {
        if k == "column-order" && (group == "obs" || group == "var") {
            continue;
        }
        assert_eq!(
            gb.attrs().unwrap().get(&k),
            Some(&v),
            "attribute {group}@{k}"
        );
    }
    for d in ga.datasets().unwrap() {
        let p = if group.is_empty() {
            d.clone()
        } else {
            format!("{group}/{d}")
        };
        let (x, y) = (a.dataset(&p).unwrap(), b.dataset(&p).unwrap());
        assert_eq!(x.read_raw().unwrap(), y.read_raw().unwrap(), "dataset {p}");
        assert_eq!(x.attrs().unwrap(), y.attrs().unwrap(), "attributes of {p}");
    }
    for sub in ga.groups().unwrap() {
        let p = if group.is_empty() {
            sub.clone()
        } else {
            format!("{group}/{sub}")
        };
        same_tree(a, b, &p);
    }
}

fn check(input: &std::path::Path) {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.h5ad");
    let mut src = open_source(input, &ReadOptions::default()).unwrap();
    let (n, g) = (src.n_cells(), src.gene_names().len());
    let x_in = read_all(src.as_mut()).unwrap();
    let obs_in = src.obs().clone();
    write_input_plus(input, &out, &additions(n, g)).unwrap();
    // everything of the input is unchanged
    let mut back = open_source(&out, &ReadOptions::default()).unwrap();
    assert_eq!(back.gene_names(), src.gene_names());
    assert_eq!(read_all(back.as_mut()).unwrap(), x_in);
    let obs = read_obs(&out).unwrap();
    assert_eq!(obs.names, obs_in.names);
    for (k, c) in &obs_in.columns {
        assert_eq!(obs.column(k), Some(c), "obs column {k}");
    }
    same_tree(
        &hdf5_pure::File::open(input).unwrap(),
        &hdf5_pure::File::open(&out).unwrap(),
        "",
    );
    // the additions are there
    assert_eq!(obs.columns.last().unwrap().0, "aido_leiden");
    assert_eq!(obs.column("aido_leiden").unwrap().display(4), "1");
    let m = read_obsm(&out, "X_pca").unwrap();
    assert_eq!(m.dim(), (n, 4));
    assert_eq!(m[[3, 1]], 6.5);
    assert_eq!(read_obsm(&out, "X_umap").unwrap().dim(), (n, 2));
    // writing again over the output replaces the entries instead of failing
    write_input_plus(&out, &out, &additions(n, g)).unwrap();
    assert_eq!(read_obsm(&out, "X_pca").unwrap(), m);
    let leftovers: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
    assert_eq!(leftovers.len(), 1, "only the output remains");
    // for a by-hand check with anndata: AIDO_KEEP_EDIT_OUTPUT=folder
    if let Ok(keep) = std::env::var("AIDO_KEEP_EDIT_OUTPUT") {
        let name = input.file_name().unwrap().to_string_lossy().to_string();
        std::fs::copy(
            &out,
            std::path::Path::new(&keep).join(format!("plus_{name}")),
        )
        .unwrap();
    }
}

#[test]
fn real_anndata_files_keep_everything() {
    check(&testdata_path("data/zheng68k.h5ad"));
    check(&testdata_path("data/cellxgene.h5ad"));
    check(&testdata_path("data/sciplex3.h5ad"));
    // written by anndata 0.12.19 with layers, raw, obsm, varm, obsp, varp and nested uns
    // (tools/reference/make_anndata_full.py)
    check(std::path::Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/anndata_full.h5ad"
    )));
}

#[test]
fn own_files_keep_everything() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = SimulationConfig::new(40, 3, 5);
    cfg.n_batches = 2;
    let s = simulate(&cfg, synthetic_gene_names(60)).unwrap();
    let p = dir.path().join("sim.h5ad");
    let mut w = H5adWriter::new(s.obs, s.genes);
    w.x = Some(XMatrix::Csr {
        csr: s.counts,
        n_cols: 60,
    });
    w.write(&p).unwrap();
    check(&p);
}

#[test]
fn bad_additions_write_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.h5ad");
    let input = testdata_path("data/zheng68k.h5ad");
    let mut a = additions(165, 9621);
    a.obsm.push(("X_bad".into(), Array2::zeros((10, 2))));
    let e = write_input_plus(&input, &out, &a).unwrap_err().to_string();
    assert!(e.contains("obsm 'X_bad' has 10 rows for 165 cells"), "{e}");
    let mut a = additions(165, 9621);
    a.obsm[0].0 = "a/b".into();
    assert!(write_input_plus(&input, &out, &a).is_err());
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    let e = read_obsm(&input, "X_aido_cell").unwrap_err().to_string();
    assert!(e.contains("obsm/X_aido_cell"), "{e}");
}
