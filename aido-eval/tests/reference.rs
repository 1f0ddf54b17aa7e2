//! aido-eval against values computed once by scikit-learn 1.9.1, scib-metrics 0.5.10,
//! umap-learn 0.5.12 and scanpy 1.11.5 (`tools/reference/eval_refs.py`, which also draws the
//! inputs; the numbers are in `tests/reference/eval_refs.json`, versions recorded inside).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use aido_eval::metrics::classify::classification_report;
use aido_eval::metrics::cluster::{
    adjusted_mutual_info, adjusted_rand_index, homogeneity_completeness_v, mutual_info,
    normalized_mutual_info,
};
use aido_eval::metrics::graph::{clisi, graph_connectivity, ilisi, lisi};
use aido_eval::metrics::silhouette::{
    Metric, batch_asw, label_asw, silhouette_samples, silhouette_score,
};
use aido_eval::preprocess::{
    HvgSelection, dense_columns, highly_variable_genes, normalize_log1p, scale,
};
use aido_eval::{Labels, knn};
use aido_tokenize::CsrChunk;
use serde_json::Value;

fn refs() -> Value {
    let p = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/reference/eval_refs.json"
    );
    serde_json::from_str(&std::fs::read_to_string(p).expect("reference JSON")).expect("JSON")
}

fn f(v: &Value) -> f64 {
    v.as_f64().expect("number")
}

fn f32s(v: &Value) -> Vec<f32> {
    v.as_array()
        .expect("array")
        .iter()
        .map(|x| f(x) as f32)
        .collect()
}

fn f64s(v: &Value) -> Vec<f64> {
    v.as_array().expect("array").iter().map(f).collect()
}

fn ints(v: &Value) -> Labels {
    let x: Vec<i64> = v
        .as_array()
        .expect("array")
        .iter()
        .map(|x| x.as_i64().expect("int"))
        .collect();
    Labels::from_ints(&x)
}

fn strs(v: &Value) -> Vec<String> {
    v.as_array()
        .expect("array")
        .iter()
        .map(|x| x.as_str().expect("str").to_string())
        .collect()
}

fn close(a: f64, b: f64, tol: f64, what: &str) {
    assert!(
        (a - b).abs() <= tol,
        "{what}: {a} vs reference {b} (tol {tol})"
    );
}

#[test]
fn label_agreement_equals_sklearn() {
    let r = refs();
    for (name, c) in r["agreement"].as_object().expect("cases") {
        let (t, p) = (ints(&c["true"]), ints(&c["pred"]));
        close(
            adjusted_rand_index(&t, &p).unwrap(),
            f(&c["ari"]),
            1e-12,
            &format!("{name} ARI"),
        );
        close(
            normalized_mutual_info(&t, &p).unwrap(),
            f(&c["nmi"]),
            1e-12,
            &format!("{name} NMI"),
        );
        close(
            adjusted_mutual_info(&t, &p).unwrap(),
            f(&c["ami"]),
            1e-9,
            &format!("{name} AMI"),
        );
        close(
            mutual_info(&t, &p).unwrap(),
            f(&c["mi"]),
            1e-12,
            &format!("{name} MI"),
        );
        let (h, cc, v) = homogeneity_completeness_v(&t, &p).unwrap();
        close(
            h,
            f(&c["homogeneity"]),
            1e-12,
            &format!("{name} homogeneity"),
        );
        close(
            cc,
            f(&c["completeness"]),
            1e-12,
            &format!("{name} completeness"),
        );
        close(v, f(&c["v_measure"]), 1e-12, &format!("{name} V"));
    }
}

#[test]
fn ari_exact_at_a_million_cells() {
    // Two labellings of 10⁶ cells where the pair counts exceed 2⁶³ when squared in u64:
    // the closed form for a labelling against itself is 1 and for a relabelling too.
    let n = 1_000_000usize;
    let t: Vec<u32> = (0..n).map(|i| (i % 7) as u32).collect();
    let p: Vec<u32> = (0..n).map(|i| ((i % 7 + 3) % 7) as u32).collect();
    let a = adjusted_rand_index(&Labels::from_codes(t.clone()), &Labels::from_codes(p)).unwrap();
    assert_eq!(a, 1.0);
    // one cell moved: ARI just below 1 and finite
    let mut q = t.clone();
    q[0] = 1;
    let a = adjusted_rand_index(&Labels::from_codes(t), &Labels::from_codes(q)).unwrap();
    assert!(a < 1.0 && a > 0.99999, "{a}");
}

#[test]
fn classification_equals_sklearn() {
    let r = refs();
    let c = &r["classification"];
    let (t, p) = (strs(&c["true"]), strs(&c["pred"]));
    let rep = classification_report(&t, &p).unwrap();
    close(rep.accuracy, f(&c["accuracy"]), 1e-12, "accuracy");
    close(rep.macro_f1, f(&c["macro_f1"]), 1e-12, "macro F1");
    assert_eq!(rep.confusion.labels, strs(&c["labels"]));
    for (k, v) in c["per_class_f1"].as_object().unwrap() {
        close(rep.per_class_f1[k], f(v), 1e-12, &format!("F1 {k}"));
    }
    // "Mono" is only predicted, never true: it counts with F1 = 0 (sklearn's union of labels)
    assert_eq!(rep.per_class_f1["Mono"], 0.0);
    let want: Vec<Vec<u64>> = c["confusion"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            r.as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_u64().unwrap())
                .collect()
        })
        .collect();
    assert_eq!(rep.confusion.matrix, want);
}

#[test]
fn silhouette_equals_sklearn_and_scib() {
    let r = refs();
    let e = &r["embedding"];
    let x = f32s(&e["x"]);
    let (n, d) = (120, 6);
    let lab = Labels::from_strings(&strs(&e["labels"]));
    let s = silhouette_samples(&x, n, d, &lab, Metric::Euclidean).unwrap();
    for (a, b) in s.iter().zip(f64s(&e["samples_euclidean"])) {
        close(*a, b, 1e-9, "silhouette sample (euclidean)");
    }
    let s = silhouette_samples(&x, n, d, &lab, Metric::Cosine).unwrap();
    for (a, b) in s.iter().zip(f64s(&e["samples_cosine"])) {
        close(*a, b, 1e-9, "silhouette sample (cosine)");
    }
    close(
        silhouette_score(&x, n, d, &lab, Metric::Euclidean).unwrap(),
        f(&e["score_euclidean"]),
        1e-9,
        "score",
    );
    close(
        silhouette_score(&x, n, d, &lab, Metric::Cosine).unwrap(),
        f(&e["score_cosine"]),
        1e-9,
        "cosine score",
    );
    let single = Labels::from_strings(&strs(&e["labels_singleton"]));
    close(
        silhouette_score(&x, n, d, &single, Metric::Euclidean).unwrap(),
        f(&e["score_singleton"]),
        1e-9,
        "singleton",
    );
    // scib-metrics runs in float32 (jax): agreement to 1e-5
    close(
        label_asw(&x, n, d, &lab, Metric::Euclidean).unwrap(),
        f(&e["scib_label_asw"]),
        1e-5,
        "label ASW",
    );
    let batch = Labels::from_strings(&strs(&e["batch"]));
    close(
        batch_asw(&x, n, d, &lab, &batch, Metric::Euclidean).unwrap(),
        f(&e["scib_batch_asw"]),
        1e-5,
        "batch ASW",
    );
    // fewer than 2 labels is an error, not a number
    let one = Labels::from_strings(&vec!["a"; n]);
    assert!(silhouette_score(&x, n, d, &one, Metric::Euclidean).is_err());
}

#[test]
fn graph_metrics_equal_scib() {
    let r = refs();
    let e = &r["embedding"];
    let x = f32s(&e["x"]);
    let lab = Labels::from_strings(&strs(&e["labels"]));
    let batch = Labels::from_strings(&strs(&e["batch"]));
    let k15 = knn(&x, 120, 6, 15).unwrap();
    close(
        graph_connectivity(&k15, &lab).unwrap(),
        f(&e["scib_graph_connectivity"]),
        1e-12,
        "graph connectivity",
    );
    let k90 = knn(&x, 120, 6, 90).unwrap();
    let l = lisi(&k90, &batch, None).unwrap();
    for (a, b) in l.iter().zip(f64s(&e["scib_lisi_batch_cells"])) {
        close(*a, b, 1e-4, "per-cell LISI");
    }
    close(
        ilisi(&k90, &batch).unwrap(),
        f(&e["scib_ilisi"]),
        1e-5,
        "iLISI",
    );
    close(
        clisi(&k90, &lab).unwrap(),
        f(&e["scib_clisi"]),
        1e-5,
        "cLISI",
    );
}

#[test]
fn knn_and_umap_graph_equal_umap_learn() {
    let r = refs();
    let e = &r["embedding"];
    let u = &r["umap"];
    let x = f32s(&e["x"]);
    let k = knn(&x, 120, 6, 15).unwrap();
    // the exact neighbours equal sklearn's brute force
    let want: Vec<u32> = u["knn_indices"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|r| {
            r.as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_u64().unwrap() as u32)
        })
        .collect();
    assert_eq!(k.indices, want);
    let (sig, rho) = aido_eval::umap::smooth_knn_dist(&k);
    for (a, b) in sig.iter().zip(f64s(&u["sigmas"])) {
        close(f64::from(*a), b, 1e-5 * b.abs().max(1.0), "sigma");
    }
    for (a, b) in rho.iter().zip(f64s(&u["rhos"])) {
        close(f64::from(*a), b, 1e-6, "rho");
    }
    let g = aido_eval::umap::fuzzy_simplicial_set(&k);
    let indptr: Vec<usize> = u["indptr"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap() as usize)
        .collect();
    let indices: Vec<u32> = u["indices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap() as u32)
        .collect();
    assert_eq!(g.indptr, indptr);
    assert_eq!(g.indices, indices);
    for (a, b) in g.data.iter().zip(f64s(&u["data"])) {
        close(f64::from(*a), b, 1e-5, "connectivity");
    }
    let (a, b) = aido_eval::umap::find_ab_params(1.0, 0.5);
    close(a, f(&u["a"]), 1e-6, "a");
    close(b, f(&u["b"]), 1e-6, "b");
}

#[test]
fn pca_equals_sklearn_arpack() {
    let r = refs();
    let p = &r["pca"];
    let x = f32s(&p["x"]);
    let fit = aido_eval::pca::pca(&x, 200, 30, 10).unwrap();
    for (a, b) in fit.variance.iter().zip(f64s(&p["variance"])) {
        close(*a, b, 1e-5 * b, "explained variance");
    }
    for (a, b) in fit.variance_ratio.iter().zip(f64s(&p["variance_ratio"])) {
        close(*a, b, 1e-6, "variance ratio");
    }
    // signs follow sklearn's svd_flip, so loadings and scores match with their signs
    for (a, b) in fit.components.iter().zip(f64s(&p["components"])) {
        close(f64::from(*a), b, 1e-4, "loading");
    }
    let scale = f64s(&p["scores"])
        .iter()
        .fold(0.0f64, |m, v| m.max(v.abs()));
    for (a, b) in fit.scores.iter().zip(f64s(&p["scores"])) {
        close(f64::from(*a), b, 1e-4 * scale, "score");
    }
}

fn counts(v: &Value, n: usize, g: usize) -> CsrChunk {
    let dense = f32s(v);
    let mut c = CsrChunk {
        first_cell: 0,
        indptr: vec![0],
        ..Default::default()
    };
    for i in 0..n {
        for j in 0..g {
            let x = dense[i * g + j];
            if x != 0.0 {
                c.indices.push(j as u32);
                c.data.push(x);
            }
        }
        c.indptr.push(c.data.len());
    }
    c
}

#[test]
fn hvg_and_scale_equal_scanpy() {
    let r = refs();
    let h = &r["hvg"];
    let (n, g) = (150, 300);
    let c = counts(&h["counts"], n, g);
    let log = normalize_log1p(&c, 1e4);
    let hv = highly_variable_genes(&log, g, HvgSelection::default()).unwrap();
    let want: Vec<bool> = h["highly_variable"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_bool().unwrap())
        .collect();
    assert_eq!(hv.highly_variable, want);
    for (a, b) in hv.means.iter().zip(f64s(&h["means"])) {
        close(*a, b, 1e-6 * b.abs().max(1.0), "HVG mean");
    }
    for (j, (a, b)) in hv
        .dispersions_norm
        .iter()
        .zip(h["dispersions_norm"].as_array().unwrap())
        .enumerate()
    {
        match b.as_f64() {
            Some(b) => close(
                *a,
                b,
                1e-5 * b.abs().max(1.0),
                &format!("normalized dispersion {j}"),
            ),
            None => assert!(a.is_nan(), "gene {j}: {a} where scanpy has NaN"),
        }
    }
    let top = highly_variable_genes(&log, g, HvgSelection::Top(40)).unwrap();
    let want: Vec<bool> = h["top40"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_bool().unwrap())
        .collect();
    assert_eq!(top.highly_variable, want);
    let sel = hv.selected();
    for (clip, key) in [(None, "scaled_row0"), (Some(1.0f32), "scaled_clip_row0")] {
        let mut x = dense_columns(&log, g, &sel);
        scale(&mut x, n, sel.len(), clip);
        for (a, b) in x[..sel.len()].iter().zip(f64s(&h[key])) {
            close(f64::from(*a), b, 1e-5, key);
        }
    }
}
