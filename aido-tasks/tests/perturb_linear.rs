//! The linear baseline of Ahlmann-Eltze, Huber & Anders (Nature Methods 2025) against the
//! paper's formula written out in numpy (`testdata/perturb_linear/make_reference.py`: `W` by
//! `numpy.linalg.solve` on the same G, Y_c and P, and the fitted model's predictions), and
//! Systema's matching mean against its definition.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;

use aido_tasks::perturb::{Condition, ConditionTruth, PertGroup, SplitPart};
use aido_tasks::perturb_linear::{
    LinearConfig, LinearModel, matching_mean, read_perturbation_embedding,
};
use aido_tokenize::shared::testdata_path;
use serde_json::Value;

fn reference() -> Value {
    let p = testdata_path("perturb_linear/reference.json");
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

fn matrix(v: &Value) -> (Vec<f64>, usize, usize) {
    let rows = v.as_array().unwrap();
    let c = rows[0].as_array().unwrap().len();
    let flat = rows
        .iter()
        .flat_map(|r| r.as_array().unwrap().iter().map(|x| x.as_f64().unwrap()))
        .collect();
    (flat, rows.len(), c)
}

fn rel_close(got: &[f64], want: &[f64], tol: f64, what: &str) {
    assert_eq!(got.len(), want.len(), "{what}");
    let scale = want.iter().fold(0.0f64, |m, x| m.max(x.abs()));
    for (i, (a, b)) in got.iter().zip(want).enumerate() {
        assert!(
            (a - b).abs() <= tol * scale,
            "{what}[{i}]: {a} vs numpy {b} (scale {scale})"
        );
    }
}

fn truth(name: &str, part: Option<SplitPart>, mean: Vec<f64>, n_cells: usize) -> ConditionTruth {
    ConditionTruth {
        condition: Condition::parse(name, "ctrl").unwrap(),
        part,
        group: PertGroup::SeenSingle,
        mean,
        top_de: Vec::new(),
        n_cells,
    }
}

#[test]
fn coefficients_equal_numpy_solve() {
    let r = reference();
    let (g, n, kg) = matrix(&r["G"]);
    let (p, kp, t) = matrix(&r["P"]);
    let (yc, _, t2) = matrix(&r["Yc"]);
    assert_eq!(t, t2);
    let w = LinearModel::solve_w(&g, n, kg, &yc, t, &p, kp, r["ridge"].as_f64().unwrap()).unwrap();
    let (want, _, _) = matrix(&r["W"]);
    rel_close(&w, &want, 1e-9, "W");
}

#[test]
fn fitted_model_predicts_as_numpy() {
    let r = reference();
    let genes: Vec<String> = r["genes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g.as_str().unwrap().to_string())
        .collect();
    let truths: Vec<ConditionTruth> = r["train"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(name, m)| {
            let mean = m
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_f64().unwrap())
                .collect();
            truth(name, Some(SplitPart::Train), mean, 10)
        })
        .collect();
    let cfg = LinearConfig {
        k: r["k"].as_u64().unwrap() as usize,
        ridge: r["ridge"].as_f64().unwrap(),
    };
    let m = LinearModel::fit(&truths, &genes, None, None, cfg).unwrap();
    assert_eq!((m.kg, m.kp), (10, 10));
    for (name, want) in r["predictions"].as_object().unwrap() {
        let want: Vec<f64> = want
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap())
            .collect();
        let got = m.predict(&Condition::parse(name, "ctrl").unwrap()).unwrap();
        rel_close(&got, &want, 1e-9, name);
    }
    // a gene without an embedding row has no prediction; a perturbation embedding given as a
    // table is used as it is (here: G's own rows, so the predictions are unchanged)
    let (gm, _, k) = matrix(&r["G"]);
    let table: BTreeMap<String, Vec<f64>> = genes
        .iter()
        .enumerate()
        .map(|(i, g)| (g.clone(), gm[i * k..(i + 1) * k].to_vec()))
        .collect();
    let ext = LinearModel::fit(&truths, &genes, None, Some(&table), cfg).unwrap();
    let name = "g0+g14";
    rel_close(
        &ext.predict(&Condition::parse(name, "ctrl").unwrap())
            .unwrap(),
        &m.predict(&Condition::parse(name, "ctrl").unwrap()).unwrap(),
        1e-9,
        "external = own rows",
    );
    let mut partial = table.clone();
    partial.remove("g14");
    let ext = LinearModel::fit(&truths, &genes, None, Some(&partial), cfg).unwrap();
    assert!(
        ext.predict(&Condition::parse(name, "ctrl").unwrap())
            .is_none()
    );
}

/// Systema's matching mean: a double of two training singles → the mean of their centroids;
/// otherwise the cell-weighted mean of all perturbed training cells.
#[test]
fn matching_mean_follows_systema() {
    let train = Some(SplitPart::Train);
    let truths = vec![
        truth("A+ctrl", train, vec![1.0, 3.0], 10),
        truth("B+ctrl", train, vec![3.0, 5.0], 30),
        truth("C+ctrl", Some(SplitPart::Test), vec![9.0, 9.0], 5),
    ];
    let p = |n: &str| matching_mean(&Condition::parse(n, "ctrl").unwrap(), &truths).unwrap();
    assert_eq!(p("A+B"), vec![2.0, 4.0]);
    // (10·[1,3] + 30·[3,5]) / 40
    assert_eq!(p("C+ctrl"), vec![2.5, 4.5]);
    assert_eq!(p("A+C"), vec![2.5, 4.5]);
}

#[test]
fn perturbation_embedding_files_are_checked() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("e.tsv");
    std::fs::write(&f, "gene\tpc1\tpc2\nA\t1\t2\nB\t3\t4\n").unwrap();
    let m = read_perturbation_embedding(&f).unwrap();
    assert_eq!(m["B"], vec![3.0, 4.0]);
    for (text, needle) in [
        (
            "A\t1\t2\nB\t3\n",
            "line 2: gene B has 1 values, the rows before 2",
        ),
        ("A\t1\nA\t2\n", "gene A appears twice"),
        ("A\t1\nB\tx\n", "line 2: gene B: a value is not a number"),
        ("# nothing\n", "no gene rows"),
    ] {
        std::fs::write(&f, text).unwrap();
        let e = read_perturbation_embedding(&f).unwrap_err().to_string();
        assert!(e.contains(needle) && e.contains("e.tsv"), "{e}");
    }
}
