//! Perturbation conditions, GEARS's splits and the DE metric, against values computed once with
//! GEARS's own `DataSplitter` (cell-gears 0.1.2), numpy 2.2.6 and scanpy 1.11.5 by
//! `tools/reference/perturb_refs.py` (stored in `tests/reference/perturb_refs.json`).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::needless_range_loop)]

use aido_eval::de::{mse_on, pearson_delta_on, rank_by_abs, welch_t};
use aido_tasks::perturb::{
    Condition, NumpyRandomState, PertGroup, SplitPart, coexpression_cells, coexpression_graph,
    combo_split, read_gene_graph, simulation_split,
};
use serde_json::Value;

fn refs() -> Value {
    serde_json::from_str(include_str!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/reference/perturb_refs.json"
    )))
    .expect("perturb_refs.json parses")
}

fn usizes(v: &Value) -> Vec<usize> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as usize)
        .collect()
}

#[test]
fn numpy_legacy_draws_are_reproduced() {
    for case in refs()["numpy_rng"].as_array().unwrap() {
        let seed = case["seed"].as_u64().unwrap() as u32;
        let n = case["n"].as_u64().unwrap() as usize;
        assert_eq!(
            NumpyRandomState::new(seed).permutation(n),
            usizes(&case["permutation"]),
            "np.random.seed({seed}); permutation({n})"
        );
        assert_eq!(
            NumpyRandomState::new(seed).randint(n, 25),
            usizes(&case["randint"]),
            "np.random.seed({seed}); randint(0, {n}, 25)"
        );
    }
}

fn conditions(r: &Value) -> Vec<Condition> {
    r["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| Condition::parse(c.as_str().unwrap(), "ctrl").unwrap())
        .collect()
}

#[test]
fn splits_equal_gears_data_splitter() {
    let r = refs();
    let conds = conditions(&r);
    for case in r["splits"].as_array().unwrap() {
        let name = case["split"].as_str().unwrap();
        let seed = case["seed"].as_u64().unwrap() as u32;
        let split = match name {
            "simulation" => simulation_split(&conds, seed, 0.75, 0.75).unwrap(),
            s => combo_split(&conds, s[10..].parse().unwrap(), seed).unwrap(),
        };
        for (cond, want) in case["assignment"].as_object().unwrap() {
            let got = split.part[cond].map(SplitPart::as_str);
            assert_eq!(got, want.as_str(), "{name} seed {seed}: condition {cond}");
        }
        for key in ["test_subgroup", "val_subgroup"] {
            let Some(groups) = case.get(key) else {
                continue;
            };
            for (g, members) in groups.as_object().unwrap() {
                let group = PertGroup::parse(g).unwrap();
                for m in members.as_array().unwrap() {
                    assert_eq!(split.group[m.as_str().unwrap()], group, "{name} {key} {m}");
                }
            }
        }
    }
}

#[test]
fn condition_names_parse_or_are_refused_by_name() {
    let c = Condition::parse("ctrl+KLF1", "ctrl").unwrap();
    assert_eq!(c.genes, vec!["KLF1"]);
    assert!(Condition::parse("CEBPB+OSR2", "ctrl").unwrap().is_double());
    assert!(Condition::parse("ctrl", "ctrl").unwrap().is_control());
    for bad in ["KLF1", "ctrl+ctrl", "A+A", "A+B+C", "+A"] {
        let e = Condition::parse(bad, "ctrl").unwrap_err().to_string();
        assert!(e.contains(bad), "{bad}: {e}");
    }
}

#[test]
fn de_ranking_and_metric_equal_scanpy_and_numpy() {
    let r = refs();
    let de = &r["de"];
    let counts: Vec<Vec<f64>> = de["counts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|row| {
            row.as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_f64().unwrap())
                .collect()
        })
        .collect();
    let labels: Vec<&str> = de["labels"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    let genes = counts[0].len();
    // ln(1 + count / total · 1e4), as the reference script normalizes.
    let lognorm: Vec<Vec<f64>> = counts
        .iter()
        .map(|row| {
            let t: f64 = row.iter().sum();
            row.iter().map(|c| (c / t * 1e4).ln_1p()).collect()
        })
        .collect();
    let rows_of = |g: &str| -> Vec<f64> {
        lognorm
            .iter()
            .zip(&labels)
            .filter(|(_, l)| **l == g)
            .flat_map(|(r, _)| r.iter().copied())
            .collect()
    };
    let mean_of = |x: &[f64]| -> Vec<f64> {
        let n = x.len() / genes;
        (0..genes)
            .map(|g| x.chunks_exact(genes).map(|r| r[g]).sum::<f64>() / n as f64)
            .collect()
    };
    let ctrl = rows_of("ctrl");
    let ctrl_mean = mean_of(&ctrl);
    for group in ["A+ctrl", "A+B"] {
        let want = &de["ranking"][group];
        let order = usizes(&want["order"]);
        let scores: Vec<f64> = want["scores"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap())
            .collect();
        let x = rows_of(group);
        let t = welch_t(&x, &ctrl, genes).unwrap();
        for (g, s) in order.iter().zip(&scores) {
            assert!(
                (t[*g] - s).abs() < 1e-6 * s.abs().max(1.0),
                "{group} gene {g}: {} vs scanpy {s}",
                t[*g]
            );
        }
        let ours = rank_by_abs(&t);
        // Positions with a distinct |t| must agree (scanpy's order among exact ties is arbitrary).
        for i in 0..20 {
            let distinct = (i == 0 || (scores[i - 1].abs() - scores[i].abs()).abs() > 1e-9)
                && (scores[i].abs() - scores[i + 1].abs()).abs() > 1e-9;
            if distinct {
                assert_eq!(ours[i], order[i], "{group} rank {i}");
            }
        }
        let top: Vec<usize> = ours[..20].to_vec();
        let pred: Vec<f64> = de["prediction"][group]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap())
            .collect();
        let truth = mean_of(&x);
        let m = &de["metric"][group];
        let mse = mse_on(&pred, &truth, &top).unwrap();
        let pr = pearson_delta_on(&pred, &truth, &ctrl_mean, &top).unwrap();
        assert!(
            (mse - m["mse_top20_de"].as_f64().unwrap()).abs() < 1e-9,
            "{group} mse {mse}"
        );
        assert!(
            (pr - m["pearson_delta"].as_f64().unwrap()).abs() < 1e-9,
            "{group} pearson {pr}"
        );
    }
}

#[test]
fn coexpression_graph_equals_gears() {
    let r = refs();
    let co = &r["coexpression"];
    let rows: Vec<Vec<f64>> = co["expression"]
        .as_array()
        .unwrap()
        .iter()
        .map(|row| {
            row.as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_f64().unwrap())
                .collect()
        })
        .collect();
    let genes = rows[0].len();
    let conds: Vec<Condition> = co["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| Condition::parse(c.as_str().unwrap(), "ctrl").unwrap())
        .collect();
    // The reference's split: every condition is training.
    let mut split = aido_tasks::perturb::PerturbSplit::default();
    for c in &conds {
        split.part.insert(c.name.clone(), Some(SplitPart::Train));
    }
    let refs_: Vec<&Condition> = conds.iter().collect();
    let cells = coexpression_cells(&refs_, &split, false);
    assert_eq!(
        cells.len(),
        50,
        "control + the training single, not the double"
    );
    let x: Vec<f64> = cells
        .iter()
        .flat_map(|&c| rows[c].iter().copied())
        .collect();
    let got = coexpression_graph(&x, genes, co["threshold"].as_f64().unwrap(), 5).unwrap();
    let want: Vec<(usize, usize, f64)> = co["edges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e[0].as_u64().unwrap() as usize,
                e[1].as_u64().unwrap() as usize,
                e[2].as_f64().unwrap(),
            )
        })
        .collect();
    assert_eq!(got.len(), want.len());
    for (s, t, w) in want {
        let e = got
            .iter()
            .find(|e| e.source == s && e.target == t)
            .unwrap_or_else(|| panic!("edge {s} → {t} missing"));
        assert!(
            (e.weight - w).abs() < 1e-9,
            "{s} → {t}: {} vs {w}",
            e.weight
        );
    }
}

#[test]
fn shipped_go_graph_reads_and_bad_graph_files_are_refused_by_line() {
    let path = std::path::Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/data/go_jaccard_top20.tsv.gz"
    ));
    let genes: Vec<String> = ["CEBPB", "CEBPA", "ATF3", "TP53", "NOT_A_GENE"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let (edges, dropped) = read_gene_graph(path, &genes).unwrap();
    // data/README.md: 386,662 edges (21 per target at most, the target itself included).
    assert_eq!(edges.len() + dropped, 386_662);
    for t in 0..4 {
        assert!(
            edges
                .iter()
                .any(|e| e.source == t && e.target == t && e.weight == 1.0),
            "{}: self-loop",
            genes[t]
        );
    }
    assert!(
        edges.iter().any(|e| e.source == 1 && e.target == 0),
        "CEBPA → CEBPB"
    );
    // Over all its genes: every edge kept, the measured genes first, then the rest.
    let (all, nodes) = aido_tasks::perturb::read_gene_graph_over(path, &genes).unwrap();
    assert_eq!(all.len(), 386_662);
    assert_eq!(&nodes[..5], &genes[..]);
    assert!(nodes.len() > 18_000, "{} nodes", nodes.len());
    assert!(
        all.iter()
            .all(|e| e.source < nodes.len() && e.target < nodes.len())
    );
    let cebpb: Vec<&str> = all
        .iter()
        .filter(|e| e.target == 0)
        .map(|e| nodes[e.source].as_str())
        .collect();
    assert_eq!(cebpb.len(), 21, "top 20 partners and itself");
    assert!(cebpb.contains(&"CEBPA"));
    let (go, go_nodes) = aido_tasks::perturb::go_graph_over(&genes).unwrap();
    assert_eq!((go.len(), go_nodes.len()), (all.len(), nodes.len()));
    let dir = tempfile::tempdir().unwrap();
    for (body, needle) in [
        ("a\tb\tw\nA\tB\t1\n", "line 1"),
        ("gene_a\tgene_b\tweight\nCEBPB\tATF3\n", "line 2"),
        ("gene_a\tgene_b\tweight\nCEBPB\tATF3\tNaN\n", "line 2"),
        (
            "gene_a\tgene_b\tweight\nCEBPB\tATF3\t0.5\nCEBPB\tTP53\tx\n",
            "line 3",
        ),
    ] {
        let p = dir.path().join("g.tsv");
        std::fs::write(&p, body).unwrap();
        let e = read_gene_graph(&p, &genes).unwrap_err().to_string();
        assert!(e.contains(needle) && e.contains("g.tsv"), "{e}");
    }
}

#[test]
fn baselines_follow_their_definitions_and_groups_average_conditions() {
    use aido_tasks::perturb::{Baseline, ConditionTruth, baseline_prediction, score_groups};
    use std::collections::BTreeMap;
    let control = vec![1.0, 2.0, 3.0];
    let truth = |name: &str, part, group, mean: Vec<f64>| ConditionTruth {
        condition: Condition::parse(name, "ctrl").unwrap(),
        part,
        group,
        mean,
        top_de: vec![0, 1, 2],
        n_cells: 10,
    };
    let truths = vec![
        truth(
            "A+ctrl",
            Some(SplitPart::Train),
            PertGroup::SeenSingle,
            vec![2.0, 2.0, 3.0],
        ),
        truth(
            "B+ctrl",
            Some(SplitPart::Train),
            PertGroup::SeenSingle,
            vec![1.0, 4.0, 3.0],
        ),
        truth(
            "A+B",
            Some(SplitPart::Test),
            PertGroup::ComboSeen2,
            vec![2.0, 4.0, 3.5],
        ),
        truth(
            "C+ctrl",
            Some(SplitPart::Test),
            PertGroup::UnseenSingle,
            vec![1.0, 2.0, 1.0],
        ),
    ];
    let ab = &truths[2].condition;
    // additive: c + (a − c) + (b − c) = (1+1+0, 2+0+2, 3+0+0)
    assert_eq!(
        baseline_prediction(Baseline::Additive, ab, &control, &truths),
        Some(vec![2.0, 4.0, 3.0])
    );
    assert_eq!(
        baseline_prediction(Baseline::Additive, &truths[3].condition, &control, &truths),
        None
    );
    // mean delta: c + mean of the two training changes ((1,0,0) and (0,2,0)) / 2
    assert_eq!(
        baseline_prediction(Baseline::MeanDelta, ab, &control, &truths),
        Some(vec![1.5, 3.0, 3.0])
    );
    let mut pred = BTreeMap::new();
    pred.insert("A+B".to_string(), vec![2.0, 4.0, 3.0]);
    pred.insert("C+ctrl".to_string(), vec![1.0, 2.0, 3.0]);
    let s = score_groups(&truths, SplitPart::Test, &control, &pred).unwrap();
    // A+B: squared errors (0, 0, 0.25) / 3; C+ctrl: (0, 0, 4) / 3, a constant predicted change → r = 0.
    assert!((s[&PertGroup::ComboSeen2].mse_top20_de - 0.25 / 3.0).abs() < 1e-12);
    assert!((s[&PertGroup::UnseenSingle].mse_top20_de - 4.0 / 3.0).abs() < 1e-12);
    assert_eq!(s[&PertGroup::UnseenSingle].pearson_delta, 0.0);
    assert_eq!(s[&PertGroup::ComboSeen2].n_conditions, 1);
    assert!(
        !s.contains_key(&PertGroup::SeenSingle),
        "training conditions are not scored as test"
    );
}

#[test]
fn condition_scores_are_computed_by_hand_and_groups_are_their_means() {
    use aido_tasks::perturb::{ConditionTruth, group_means, score_conditions};
    use std::collections::BTreeMap;
    let control = vec![1.0, 2.0, 3.0];
    let truth = |name: &str, part, group, mean: Vec<f64>| ConditionTruth {
        condition: Condition::parse(name, "ctrl").unwrap(),
        part,
        group,
        mean,
        top_de: vec![0, 1, 2],
        n_cells: 10,
    };
    let (tr, te) = (Some(SplitPart::Train), Some(SplitPart::Test));
    let truths = vec![
        truth("A+ctrl", tr, PertGroup::SeenSingle, vec![2.0, 2.0, 3.0]),
        truth("B+ctrl", tr, PertGroup::SeenSingle, vec![1.0, 4.0, 3.0]),
        truth("C+ctrl", te, PertGroup::UnseenSingle, vec![1.0, 2.0, 1.0]),
        truth("D+ctrl", te, PertGroup::UnseenSingle, vec![3.0, 2.0, 3.0]),
    ];
    let mut pred = BTreeMap::new();
    pred.insert("C+ctrl".to_string(), vec![1.0, 2.0, 3.0]);
    pred.insert("D+ctrl".to_string(), vec![3.0, 2.0, 3.0]);
    let s = score_conditions(&truths, SplitPart::Test, &control, &pred, None).unwrap();
    assert_eq!(s.len(), 2);
    let (c, d) = (&s[0], &s[1]);
    assert_eq!(
        (c.condition.as_str(), d.condition.as_str()),
        ("C+ctrl", "D+ctrl")
    );
    // Worked by hand from the definitions (GEARS, Ahlmann-Eltze, Systema):
    // C: errors (0, 0, 2) → MSE 4/3, L2 2; a constant predicted change → Pearson Δ 0;
    //    centroid reference = mean of the training centroids (1.5, 3, 3): predicted change
    //    (−0.5, −1, 0) vs true (−0.5, −1, −2) → r = −3/√21; the prediction is as far from D's
    //    truth (4) as from its own (4) → not strictly closest → 0.
    // D: exact → MSE 0, L2 0, Pearson Δ 1, centroid Pearson 1, closest → 1.
    assert!((c.mse_top20_de - 4.0 / 3.0).abs() < 1e-12);
    assert!((c.l2_top1000 - 2.0).abs() < 1e-12);
    assert_eq!(c.pearson_delta, 0.0);
    assert!((c.pearson_delta_centroid + 3.0 / 21f64.sqrt()).abs() < 1e-12);
    assert_eq!(c.centroid_accuracy, 0.0);
    assert_eq!((d.mse_top20_de, d.l2_top1000), (0.0, 0.0));
    assert!((d.pearson_delta - 1.0).abs() < 1e-12);
    assert!((d.pearson_delta_centroid - 1.0).abs() < 1e-12);
    assert_eq!(d.centroid_accuracy, 1.0);
    assert!(c.overlap_at_n.is_nan(), "no cells scored → NaN");
    let g = group_means(&s);
    let u = &g[&PertGroup::UnseenSingle];
    assert_eq!(u.n_conditions, 2);
    assert!((u.mse_top20_de - 2.0 / 3.0).abs() < 1e-12);
    assert!((u.l2_top1000 - 1.0).abs() < 1e-12);
    assert!((u.centroid_accuracy - 0.5).abs() < 1e-12);
    assert!((u.pearson_delta_centroid - (1.0 - 3.0 / 21f64.sqrt()) / 2.0).abs() < 1e-12);
}
