//! `aido perturb score` against the field's own tools: every number here was computed by
//! cell-eval 0.8.2 with pdex 0.3.0 (and Systema's formulas in numpy) on the same files —
//! `testdata/perturb_score/make_reference.py` wrote `reference.json` — none by this code.
//! The case has ties (log1p of small counts), a knocked-out gene (log2FC −∞), two constant
//! genes, a target outside the panel, and a prediction that confuses two perturbations.
#![allow(clippy::unwrap_used)]

use std::path::PathBuf;

use aido_eval::perturb::differential_expression;
use aido_pipeline::perturb_score::{ScoreOptions, read_score_input, score_files};
use aido_tokenize::shared::testdata_path;
use serde_json::Value;

fn case(f: &str) -> PathBuf {
    testdata_path(&format!("perturb_score/{f}"))
}

fn reference() -> Value {
    serde_json::from_str(&std::fs::read_to_string(case("reference.json")).unwrap()).unwrap()
}

/// A JSON number, or cell-eval's "inf" / "-inf" / "NaN" strings.
fn num(v: &Value) -> f64 {
    match v {
        Value::String(s) => s.parse::<f64>().unwrap(),
        v => v.as_f64().unwrap(),
    }
}

fn close(got: f64, want: f64, tol: f64, what: &str) {
    let ok = if want.is_infinite() || want.is_nan() {
        got == want || (got.is_nan() && want.is_nan())
    } else {
        (got - want).abs() <= tol * want.abs().max(1.0)
    };
    assert!(ok, "{what}: {got} vs cell-eval {want}");
}

#[test]
fn differential_expression_equals_pdex() {
    let r = reference();
    for (file, table) in [("real.h5ad", "de_real"), ("pred.h5ad", "de_pred")] {
        let input = read_score_input(&case(file), &ScoreOptions::default()).unwrap();
        let de = differential_expression(&input.cells).unwrap();
        let rows = r[table].as_array().unwrap();
        assert_eq!(rows.len(), 5 * 16);
        for row in rows {
            let k = input
                .cells
                .names
                .iter()
                .position(|n| n == row["target"].as_str().unwrap())
                .unwrap();
            let g = input
                .genes
                .iter()
                .position(|n| n == row["feature"].as_str().unwrap())
                .unwrap();
            let t = de[k].as_ref().unwrap();
            let what = format!("{file} {} {}", row["target"], row["feature"]);
            close(
                t.p_value[g],
                num(&row["p_value"]),
                1e-9,
                &format!("{what} p"),
            );
            close(t.fdr[g], num(&row["fdr"]), 1e-9, &format!("{what} fdr"));
            close(
                t.statistic[g],
                num(&row["statistic"]),
                0.0,
                &format!("{what} U"),
            );
            close(
                t.log2_fold_change[g],
                num(&row["log2_fold_change"]),
                1e-9,
                &format!("{what} log2FC"),
            );
        }
    }
}

#[test]
fn scores_equal_cell_eval_and_systema() {
    let r = reference();
    let dir = tempfile::tempdir().unwrap();
    let report = dir.path().join("score.json");
    let s = score_files(
        &case("real.h5ad"),
        &case("pred.h5ad"),
        &report,
        &ScoreOptions::default(),
    )
    .unwrap();
    let written: Value = serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
    let tol = 1e-6;
    for (p, m) in &s.per_perturbation {
        let vcc = &r["per_perturbation_vcc"][p];
        let full = &r["per_perturbation_full"][p];
        for k in ["overlap_at_N", "discrimination_score_l1", "mae"] {
            close(num(&m[k]), num(&vcc[k]), tol, &format!("{p} {k}"));
        }
        for k in ["pearson_delta", "mse"] {
            close(num(&m[k]), num(&full[k]), tol, &format!("{p} {k}"));
        }
        close(
            num(&m["pearson_delta_centroid"]),
            num(&r["systema"]["pearson_delta_centroid"][p]),
            tol,
            &format!("{p} pearson_delta_centroid"),
        );
        let own = r["systema"]["centroid_closest_is_own"][p]
            .as_bool()
            .unwrap();
        assert_eq!(
            num(&m["centroid_accuracy"]),
            f64::from(u8::from(own)),
            "{p}"
        );
        assert_eq!(
            m["n_de_real"].as_f64().unwrap(),
            num(&full["de_nsig_counts_real"]),
            "{p}"
        );
        for (k, v) in m {
            close(
                num(&written["per_perturbation"][p][k]),
                num(v),
                1e-12,
                &format!("written {p} {k}"),
            );
        }
    }
    assert_eq!(s.n_perturbations, 5);
    for k in ["overlap_at_N", "discrimination_score_l1", "mae"] {
        close(
            num(&s.mean[k]),
            num(&r["agg_vcc"]["mean"][k]),
            tol,
            &format!("mean {k}"),
        );
        close(
            num(&s.baseline_mean[k]),
            num(&r["baseline_agg_vcc"]["mean"][k]),
            tol,
            &format!("baseline mean {k}"),
        );
    }
    close(
        num(&s.mean["pearson_delta"]),
        num(&r["agg_full"]["mean"]["pearson_delta"]),
        tol,
        "mean pearson_delta",
    );
    close(
        num(&s.mean["centroid_accuracy"]),
        num(&r["systema"]["centroid_accuracy"]),
        tol,
        "centroid_accuracy",
    );
    close(
        num(&s.mean["pearson_delta_centroid"]),
        num(&r["systema"]["pearson_delta_centroid_mean"]),
        tol,
        "mean pearson_delta_centroid",
    );
    for k in [
        "overlap_at_N",
        "discrimination_score_l1",
        "mae",
        "avg_score",
    ] {
        close(
            s.baseline_normalized[k],
            num(&r["score_vcc"][k]),
            tol,
            &format!("baseline_normalized {k}"),
        );
        assert_eq!(
            written["mean"]["baseline_normalized"][k],
            written["baseline_normalized"][k]
        );
    }
}

/// The interface takes the same genes in any order (cell-eval itself refuses a
/// permuted file; the reference records that): the scores are those of the ordered file.
#[test]
fn gene_order_does_not_matter_and_mismatches_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let o = ScoreOptions::default();
    let a = score_files(
        &case("real.h5ad"),
        &case("pred.h5ad"),
        &dir.path().join("a.json"),
        &o,
    )
    .unwrap();
    let b = score_files(
        &case("real.h5ad"),
        &case("pred_permuted.h5ad"),
        &dir.path().join("b.json"),
        &o,
    )
    .unwrap();
    assert_eq!(a.per_perturbation, b.per_perturbation);
    // a control value that is not there, and a column that is not there: named, nothing written
    let out = dir.path().join("c.json");
    let e = score_files(
        &case("real.h5ad"),
        &case("pred.h5ad"),
        &out,
        &ScoreOptions {
            control_value: "ctrl".into(),
            ..ScoreOptions::default()
        },
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("no control cells 'ctrl'") && e.contains("non-targeting"),
        "{e}"
    );
    let e = score_files(
        &case("real.h5ad"),
        &case("pred.h5ad"),
        &out,
        &ScoreOptions {
            perturbation_column: "condition".into(),
            ..ScoreOptions::default()
        },
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("no column 'condition'") && e.contains("target_gene"),
        "{e}"
    );
    assert!(!out.exists());
}

/// A small file: cells labelled `labels` over `genes`, dense values `rows`.
fn small(path: &std::path::Path, genes: &[&str], labels: &[&str], rows: &[Vec<f32>]) {
    use aido_tokenize::h5ad_out::{H5adWriter, XMatrix};
    use aido_tokenize::{ObsColumn, ObsTable};
    let l = aido_eval::Labels::from_strings(labels);
    let mut obs = ObsTable::from_names((0..labels.len()).map(|i| format!("c{i}")).collect());
    obs.columns.push((
        "target_gene".into(),
        ObsColumn::Categorical {
            codes: l.codes.iter().map(|&c| c as i32).collect(),
            categories: l.names,
            ordered: false,
        },
    ));
    let mut w = H5adWriter::new(obs, genes.iter().map(|g| g.to_string()).collect());
    let x = ndarray::Array2::from_shape_vec(
        (rows.len(), genes.len()),
        rows.iter().flatten().copied().collect(),
    )
    .unwrap();
    w.x = Some(XMatrix::Dense(x));
    w.write(path).unwrap();
}

#[test]
fn mismatched_files_are_refused_naming_what_differs() {
    let dir = tempfile::tempdir().unwrap();
    let (real, pred, out) = (
        dir.path().join("r.h5ad"),
        dir.path().join("p.h5ad"),
        dir.path().join("o.json"),
    );
    let labels = ["non-targeting", "non-targeting", "A", "A", "B", "B"];
    let rows: Vec<Vec<f32>> = (0..6)
        .map(|i| vec![0.5 + i as f32 * 0.1, 1.0, 0.3 * (i % 2) as f32])
        .collect();
    small(&real, &["A", "B", "C"], &labels, &rows);
    let o = ScoreOptions::default();
    // other genes
    small(&pred, &["A", "B", "D"], &labels, &rows);
    let e = score_files(&real, &pred, &out, &o).unwrap_err().to_string();
    assert!(
        e.contains("p.h5ad")
            && e.contains("1 missing (C)")
            && e.contains("1 not in the real file (D)"),
        "{e}"
    );
    // a perturbation the prediction lacks, another it adds
    small(
        &pred,
        &["A", "B", "C"],
        &["non-targeting", "non-targeting", "A", "A", "Z", "Z"],
        &rows,
    );
    let e = score_files(&real, &pred, &out, &o).unwrap_err().to_string();
    assert!(
        e.contains("1 without predicted cells (B)") && e.contains("1 without real cells (Z)"),
        "{e}"
    );
    // values that are neither counts nor log1p
    let big: Vec<Vec<f32>> = rows
        .iter()
        .map(|r| r.iter().map(|v| v + 20.25).collect())
        .collect();
    small(&pred, &["A", "B", "C"], &labels, &big);
    let e = score_files(&real, &pred, &out, &o).unwrap_err().to_string();
    assert!(e.contains("neither counts nor log1p"), "{e}");
    assert!(!out.exists());
    // the same file twice: a perfect prediction
    let r = score_files(&real, &real, &out, &o).unwrap();
    for p in ["A", "B"] {
        assert_eq!(r.per_perturbation[p]["mae"], 0.0);
        assert_eq!(r.per_perturbation[p]["discrimination_score_l1"], 1.0);
    }
}
