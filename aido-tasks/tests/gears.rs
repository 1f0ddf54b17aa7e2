//! The GEARS port: SGConv normalization against PyG's `gcn_norm` formula, the loss against
//! GEARS's `loss_fct` formula computed by hand, every perturbed gene reaching the model with
//! doubles summed (GEARS issue #7), the first-cell co-expression quirk and its corrected mode,
//! data validation, and a fit → save → load → predict round trip on simulated data.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;

use aido_model::Cpu;
use aido_model::burn::backend::Autodiff;
use aido_model::burn::tensor::backend::Backend;
use aido_model::burn::tensor::{Tensor, TensorData};
use aido_tasks::gears::{CoexpressionMode, Gears, GearsConfig, GearsGraphs, SgGraph};
use aido_tasks::perturb::{GeneEdge, simulation_split};
use aido_tasks::perturb_fit::{
    self, FitConfig, FitInputs, PerturbData, PerturbDataOptions, gears_loss,
};
use aido_tasks::perturb_sim::{PerturbSimConfig, simulate_perturbations};
use aido_tokenize::h5ad_out::{H5adWriter, XMatrix};
use aido_tokenize::{CsrChunk, ObsColumn, ObsTable, ReadOptions, open_source};

type B = Cpu;

fn host<const D: usize>(t: Tensor<B, D>) -> Vec<f32> {
    t.into_data().convert::<f32>().into_vec().unwrap()
}

fn edge(source: usize, target: usize, weight: f64) -> GeneEdge {
    GeneEdge {
        source,
        target,
        weight,
    }
}

/// PyG `gcn_norm(add_self_loops=True)` + `propagate(aggr="add")`, written from its formula:
/// missing self-loops get weight 1, `deg[t] = Σ_{e→t} w`, `norm_e = deg[s]^-½ w_e deg[t]^-½`,
/// `out[t] = Σ_{e: s→t} norm_e x[s]`.
#[test]
fn sgconv_propagation_is_pyg_gcn_norm() {
    let dev = Default::default();
    // Node 0 has its own self-loop (weight 1, like GEARS's |r| = 1 self-edges); 1 and 2 do not.
    let edges = [
        edge(0, 0, 1.0),
        edge(1, 0, 0.5),
        edge(2, 1, 0.8),
        edge(0, 2, 0.3),
    ];
    let g = SgGraph::<B>::new(&edges, 3, &dev).unwrap();
    let x = [[1.0f32, 2.0], [3.0, -1.0], [0.5, 4.0]];
    let xt = Tensor::<B, 2>::from_data(
        TensorData::new(x.iter().flatten().copied().collect::<Vec<_>>(), [3, 2]),
        &dev,
    );
    let out = host(g.propagate(xt));
    // With the added loops (1→1, 2→2 weight 1): deg0 = 1 + 0.5, deg1 = 0.8 + 1, deg2 = 0.3 + 1.
    let deg = [1.5f64, 1.8, 1.3];
    let all = [
        (0, 0, 1.0),
        (1, 0, 0.5),
        (2, 1, 0.8),
        (0, 2, 0.3),
        (1, 1, 1.0),
        (2, 2, 1.0),
    ];
    let mut want = [[0.0f64; 2]; 3];
    for (s, t, w) in all {
        let n = w / (deg[s] * deg[t]).sqrt();
        for h in 0..2 {
            want[t][h] += n * f64::from(x[s][h]);
        }
    }
    for t in 0..3 {
        for h in 0..2 {
            assert!(
                (f64::from(out[t * 2 + h]) - want[t][h]).abs() < 1e-6,
                "node {t} dim {h}: {} vs {}",
                out[t * 2 + h],
                want[t][h]
            );
        }
    }
}

/// GEARS `utils.loss_fct` by hand on a batch of two conditions: condition A (2 cells, genes
/// {0, 2} retained) and the control (1 cell, all genes).
#[test]
fn loss_is_gears_loss_fct() {
    let dev = Default::default();
    let pred = [[0.5f32, 1.0, 2.0], [0.0, 0.2, 1.0], [1.0, 1.0, 1.0]];
    let y = [[1.0f32, 1.0, 1.0], [0.5, 0.0, 2.0], [1.5, 0.5, 1.0]];
    let ctrl = [0.8f32, 0.5, 1.5];
    let lambda = 0.1;
    let retained = [[true, false, true], [true, false, true], [true, true, true]];
    let (n_a, r_a, n_c, r_c, n_cond) = (2.0, 2.0, 1.0, 3.0, 2.0);
    let mut w = vec![0.0f32; 9];
    let mut want = 0.0f64;
    for r in 0..3 {
        let (n, k) = if r < 2 { (n_a, r_a) } else { (n_c, r_c) };
        for j in 0..3 {
            if retained[r][j] {
                let wt = 1.0 / (n * k * n_cond);
                w[r * 3 + j] = wt as f32;
                let d = f64::from(pred[r][j] - y[r][j]);
                let sy = f64::from((y[r][j] - ctrl[j]).signum() * f32::from(y[r][j] != ctrl[j]));
                let sp =
                    f64::from((pred[r][j] - ctrl[j]).signum() * f32::from(pred[r][j] != ctrl[j]));
                want += wt * (d.powi(4) + lambda * (sy - sp).powi(2));
            }
        }
    }
    let t = |v: &[[f32; 3]]| {
        Tensor::<B, 2>::from_data(
            TensorData::new(
                v.iter().flatten().copied().collect::<Vec<_>>(),
                [v.len(), 3],
            ),
            &dev,
        )
    };
    let loss = gears_loss(
        t(&pred),
        t(&y),
        Tensor::from_data(TensorData::new(w, [3, 3]), &dev),
        t(&[ctrl, ctrl, ctrl]),
        lambda,
    );
    let got = f64::from(host(loss)[0]);
    assert!((got - want).abs() < 1e-6, "{got} vs {want}");
}

fn small_model(mode: CoexpressionMode) -> (Gears<B>, GearsGraphs<B>) {
    let dev = Default::default();
    B::seed(&dev, 11);
    let model = GearsConfig::new(6)
        .with_hidden(8)
        .with_coexpression(mode)
        .init::<B>(&dev);
    let co = [
        edge(0, 1, 0.9),
        edge(1, 0, 0.9),
        edge(2, 3, 0.7),
        edge(4, 5, 0.6),
    ];
    let pe = [edge(0, 2, 0.5), edge(3, 1, 0.4), edge(5, 4, 0.3)];
    (model, GearsGraphs::new(&co, &pe, 6, &dev).unwrap())
}

/// torch's `max_norm=True` (`torch.embedding_renorm_`, ATen `Embedding.cpp`): a stored row of
/// norm n > 1 is scaled by 1 / (n + 1e-7) in place; a row within norm 1 is left as it is. The
/// parameter keeps its id, so Adam's moments stay attached, and stays trainable.
#[test]
fn max_norm_rows_are_renormalized_in_place_as_torch_does() {
    type A = Autodiff<B>;
    let dev = Default::default();
    let mut m = GearsConfig::new(3).with_hidden(4).init::<A>(&dev);
    let rows: Vec<f32> = vec![
        3.0, 4.0, 0.0, 0.0, // norm 5
        0.3, 0.0, 0.4, 0.0, // norm 0.5
        0.0, 0.0, 0.0, 1.0, // norm 1
    ];
    let id = m.pert_emb.weight.id;
    m.pert_emb.weight = m
        .pert_emb
        .weight
        .map(|_| Tensor::from_data(TensorData::new(rows.clone(), [3, 4]), &dev).require_grad());
    let m = m.renormalize_embeddings();
    assert_eq!(m.pert_emb.weight.id, id);
    assert!(m.pert_emb.weight.val().is_require_grad());
    let got: Vec<f32> = m
        .pert_emb
        .weight
        .val()
        .into_data()
        .convert::<f32>()
        .into_vec()
        .unwrap();
    let s = 1.0 / (5.0 + 1e-7);
    let want = [
        3.0 * s,
        4.0 * s,
        0.0,
        0.0,
        0.3,
        0.0,
        0.4,
        0.0,
        0.0,
        0.0,
        0.0,
        1.0,
    ];
    for (g, w) in got.iter().zip(want) {
        assert!((g - w).abs() < 1e-7, "{got:?}");
    }
    for w in [
        m.gene_emb.as_ref().unwrap().weight.val(),
        m.emb_pos.weight.val(),
    ] {
        let v: Vec<f32> = w.into_data().convert::<f32>().into_vec().unwrap();
        for row in v.chunks_exact(4) {
            assert!(row.iter().map(|x| x * x).sum::<f32>().sqrt() <= 1.0 + 1e-6);
        }
    }
}

/// A perturbation graph over more nodes than genes: a measured gene's unmeasured partner feeds
/// its perturbation embedding through the SGConv (upstream's GO graph spans unmeasured genes).
#[test]
fn unmeasured_graph_genes_feed_the_perturbation_embedding() {
    let dev = Default::default();
    B::seed(&dev, 3);
    let m = GearsConfig::new(3)
        .with_hidden(4)
        .with_perturbation_nodes(Some(5))
        .init::<B>(&dev);
    assert_eq!(m.pert_emb.weight.dims(), [5, 4]);
    // gene 0 ← node 4 (unmeasured) only; node 3 (unmeasured) reaches nobody.
    let pe = [edge(4, 0, 1.0)];
    let graphs = GearsGraphs::<B>::with_perturbation_nodes(&[], &pe, 3, 5, &dev).unwrap();
    let sums = |m: &Gears<B>| host(m.perturbation_sums(&[vec![0]], &graphs).unwrap().1);
    let base = sums(&m);
    let bump = |m: Gears<B>, row: usize| {
        let mut m = m;
        m.pert_emb.weight = m.pert_emb.weight.map(|w| {
            let mut v = host(w);
            v[row * 4] += 0.5;
            Tensor::from_data(TensorData::new(v, [5, 4]), &dev)
        });
        m
    };
    let m4 = bump(m.clone(), 4);
    assert_ne!(sums(&m4), base, "node 4 feeds gene 0");
    let m3 = bump(m, 3);
    assert_eq!(sums(&m3), base, "node 3 has no edge to gene 0");
    // The table computed once (inference) gives the same output as computed per forward.
    let x = x_rows(3).slice([0..3, 0..3]);
    let perts = [vec![0], vec![], vec![2, 4]];
    let table = m4.perturbation_table(&graphs);
    let once = host(
        m4.forward_with_table(x.clone(), &perts, None, &graphs, Some(&table))
            .unwrap(),
    );
    let each = host(m4.forward(x, &perts, None, &graphs).unwrap());
    assert_eq!(once, each);
    // A graph of another size is refused by the model.
    let small = GearsGraphs::<B>::new(&[], &[], 3, &dev).unwrap();
    let x = Tensor::<B, 2>::zeros([2, 3], &dev);
    let e = m4
        .forward(x, &[vec![0], vec![]], None, &small)
        .unwrap_err()
        .to_string();
    assert!(e.contains("perturbation graph of 3 nodes"), "{e}");
}

fn x_rows(b: usize) -> Tensor<B, 2> {
    let v: Vec<f32> = (0..b * 6).map(|i| (i % 6) as f32 * 0.3).collect();
    Tensor::from_data(TensorData::new(v, [b, 6]), &Default::default())
}

/// Every perturbed gene reaches the model, and a double is the **sum** of its genes'
/// embeddings before `pert_fuse` (GEARS #7: a tensor used as a dict key dropped the sum).
#[test]
fn doubles_are_summed_and_every_gene_reaches_the_model() {
    let (m, graphs) = small_model(CoexpressionMode::AllCells);
    let perts = vec![vec![1], vec![4], vec![1, 4], vec![], vec![4, 1]];
    let (cells, sums) = m.perturbation_sums(&perts, &graphs).unwrap();
    assert_eq!(cells, vec![0, 1, 2, 4]);
    let s = host(sums);
    let h = 8;
    for j in 0..h {
        let sum = s[j] + s[h + j];
        assert!((s[2 * h + j] - sum).abs() < 1e-6, "double ≠ sum of singles");
        assert!(
            (s[3 * h + j] - sum).abs() < 1e-6,
            "order of the genes matters"
        );
    }
    // Through the whole model: each gene changes the output, and so does adding the other.
    let out = |p: Vec<usize>| host(m.forward(x_rows(1), &[p], None, &graphs).unwrap());
    let (c, a, b, ab) = (out(vec![]), out(vec![1]), out(vec![4]), out(vec![1, 4]));
    let differ = |u: &[f32], v: &[f32]| u.iter().zip(v).any(|(x, y)| (x - y).abs() > 1e-6);
    assert!(differ(&c, &a) && differ(&c, &b) && differ(&a, &b));
    assert!(differ(&ab, &a) && differ(&ab, &b));
    // Every gene of the table reaches the model.
    for g in 0..6 {
        assert!(
            differ(&c, &out(vec![g])),
            "perturbing gene {g} changes nothing"
        );
    }
    // An index outside the genes is an error, not a panic.
    assert!(m.forward(x_rows(1), &[vec![6]], None, &graphs).is_err());
}

/// GEARS's code gives the co-expression propagation to the first cell of a batch only; the
/// corrected mode to every cell. Two identical control cells tell them apart.
#[test]
fn first_cell_quirk_and_its_correction() {
    for (mode, equal) in [
        (CoexpressionMode::FirstCell, false),
        (CoexpressionMode::AllCells, true),
    ] {
        let (m, graphs) = small_model(mode);
        let x: Vec<f32> = [0.1f32, 0.5, 0.9, 0.0, 1.2, 0.3].repeat(2);
        let x = Tensor::<B, 2>::from_data(TensorData::new(x, [2, 6]), &Default::default());
        let y = host(m.forward(x, &[vec![], vec![]], None, &graphs).unwrap());
        let same = y[..6]
            .iter()
            .zip(&y[6..])
            .all(|(a, b)| (a - b).abs() < 1e-6);
        assert_eq!(same, equal, "mode {mode:?}");
    }
}

fn write_h5ad(
    dir: &std::path::Path,
    conditions: &[&str],
    counts: &[Vec<f32>],
) -> std::path::PathBuf {
    let g = counts[0].len();
    write_named(
        dir,
        conditions,
        counts,
        (0..g).map(|j| format!("G{j}")).collect(),
    )
}

fn write_named(
    dir: &std::path::Path,
    conditions: &[&str],
    counts: &[Vec<f32>],
    genes: Vec<String>,
) -> std::path::PathBuf {
    let n = conditions.len();
    let g = counts[0].len();
    let mut csr = CsrChunk {
        first_cell: 0,
        indptr: vec![0],
        ..Default::default()
    };
    for row in counts {
        for (j, &v) in row.iter().enumerate() {
            if v != 0.0 {
                csr.indices.push(j as u32);
                csr.data.push(v);
            }
        }
        csr.indptr.push(csr.data.len());
    }
    let mut obs = ObsTable::from_names((0..n).map(|i| format!("c{i}")).collect());
    obs.columns.push((
        "condition".into(),
        ObsColumn::Str(conditions.iter().map(|s| s.to_string()).collect()),
    ));
    let mut w = H5adWriter::new(obs, genes);
    w.x = Some(XMatrix::Csr { csr, n_cols: g });
    let p = dir.join("screen.h5ad");
    w.write(&p).unwrap();
    p
}

fn load(p: &std::path::Path) -> aido_tasks::Result<PerturbData> {
    let mut s = open_source(p, &ReadOptions::default()).unwrap();
    PerturbData::from_source(s.as_mut(), &PerturbDataOptions::default())
}

#[test]
fn bad_screens_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let rows = |n: usize| vec![vec![1.0f32, 2.0, 3.0]; n];
    let err =
        |c: &[&str], r: &[Vec<f32>]| load(&write_h5ad(dir.path(), c, r)).unwrap_err().to_string();
    let e = err(
        &[
            "ctrl",
            "ctrl",
            "ctrl",
            "NOPE+ctrl",
            "NOPE+ctrl",
            "NOPE+ctrl",
        ],
        &rows(6),
    );
    assert!(
        e.contains("NOPE") && e.contains("not one of the file's 3 genes"),
        "{e}"
    );
    let e = err(&["G1+ctrl", "G1+ctrl", "G1+ctrl"], &rows(3));
    assert!(e.contains("no control cells"), "{e}");
    let e = err(&["ctrl", "ctrl", "ctrl", "G1+ctrl"], &rows(4));
    assert!(e.contains("\"G1+ctrl\" has 1 cell"), "{e}");
    let mut r = rows(6);
    r[4][1] = 0.37;
    let e = err(
        &["ctrl", "ctrl", "ctrl", "G1+ctrl", "G1+ctrl", "G1+ctrl"],
        &r,
    );
    assert!(e.contains("cell 4 ('c4')") && e.contains("`layer`"), "{e}");
    let e = err(
        &["ctrl", "ctrl", "ctrl", "G1+G1", "G1+G1", "G1+G1"],
        &rows(6),
    );
    assert!(e.contains("the same gene twice"), "{e}");
    // A good one: log-normalization is ln(1 + c / total · 1e4).
    let d = load(&write_h5ad(
        dir.path(),
        &["ctrl", "ctrl", "ctrl", "G1+ctrl", "G1+ctrl", "G1+ctrl"],
        &rows(6),
    ))
    .unwrap();
    let mut v = vec![0.0f32; 3];
    d.lognorm_row(0, &mut v);
    assert!((v[2] - (1.0f32 + 3.0 / 6.0 * 1e4).ln()).abs() < 1e-5);
}

/// The simulator's truth: seeded, doubles additive unless synergistic.
#[test]
fn simulator_is_seeded_and_doubles_add() {
    let cfg = PerturbSimConfig {
        genes: 60,
        programs: 3,
        genes_per_program: 10,
        control_cells: 20,
        cells_per_condition: 5,
        perturbed_genes: 6,
        doubles: 5,
        synergy_fraction: 0.0,
        seed: 4,
        ..Default::default()
    };
    let a = simulate_perturbations(&cfg).unwrap();
    let b = simulate_perturbations(&cfg).unwrap();
    assert_eq!(a.counts, b.counts);
    assert_eq!(a.condition.len(), 20 + 5 * (6 + 5));
    let shift: BTreeMap<&str, &Vec<f64>> =
        a.true_shift.iter().map(|(n, s)| (n.as_str(), s)).collect();
    for (name, s) in &a.true_shift {
        let parts: Vec<&str> = name.split('+').collect();
        if parts.len() == 2 && parts[1] != "ctrl" {
            let x = shift[format!("{}+ctrl", parts[0]).as_str()];
            let y = shift[format!("{}+ctrl", parts[1]).as_str()];
            for j in 0..60 {
                assert!((s[j] - x[j] - y[j]).abs() < 1e-12);
            }
        }
    }
}

/// Training runs, the saved folder loads, and the loaded model predicts what the trained one
/// predicts (same batch size: with GEARS's first-cell quirk the batching matters).
#[test]
fn fit_save_load_predict_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let sim = simulate_perturbations(&PerturbSimConfig {
        genes: 40,
        programs: 2,
        genes_per_program: 10,
        control_cells: 40,
        cells_per_condition: 6,
        perturbed_genes: 8,
        doubles: 6,
        seed: 2,
        ..Default::default()
    })
    .unwrap();
    let conds: Vec<&str> = sim.condition.iter().map(String::as_str).collect();
    let rows = sim.counts.to_dense(40);
    let data = load(&write_named(dir.path(), &conds, &rows, sim.genes.clone())).unwrap();
    let split = simulation_split(&data.conditions, 1, 0.75, 0.75).unwrap();
    let dev = Default::default();
    let co = perturb_fit_coexpression(&data);
    // The perturbation graph over the genes and three genes not measured (nodes 40..43), as
    // upstream's GO graph spans genes the screen did not measure: gene 0's only partners are
    // unmeasured.
    let mut pe: Vec<GeneEdge> = co.iter().filter(|e| e.target != 0).cloned().collect();
    pe.extend([
        edge(40, 0, 0.8),
        edge(41, 0, 0.5),
        edge(0, 42, 0.3),
        edge(42, 1, 0.6),
    ]);
    let graphs =
        GearsGraphs::<Autodiff<B>>::with_perturbation_nodes(&co, &pe, 40, 43, &dev).unwrap();
    let inputs = FitInputs {
        model: GearsConfig::new(40)
            .with_hidden(8)
            .with_perturbation_nodes(Some(43)),
        fit: FitConfig {
            epochs: 2,
            batch_size: 16,
            pool: 10,
            ..FitConfig::default()
        },
        split: &split,
        graphs: &graphs,
        backbone: None,
    };
    let mut epochs = 0;
    let fitted = perturb_fit::fit::<Autodiff<B>>(&data, &inputs, &dev, |_| epochs += 1).unwrap();
    assert_eq!(epochs, 2);
    assert_eq!(fitted.pool.len(), 10);
    assert_eq!(fitted.model.pert_emb.weight.dims(), [43, 8]);
    // torch's max_norm embeddings are renormalized in their stored rows on every forward: the
    // fitted tables hold rows of norm ≤ 1 (their N(0, 1) initial rows have norm ≈ √H).
    for (name, w) in [
        (
            "gene_emb",
            fitted.model.gene_emb.as_ref().unwrap().weight.val(),
        ),
        ("emb_pos", fitted.model.emb_pos.weight.val()),
        ("pert_emb", fitted.model.pert_emb.weight.val()),
    ] {
        let n = w.dims()[1];
        let v = host(w);
        for row in v.chunks_exact(n) {
            let norm = row.iter().map(|x| x * x).sum::<f32>().sqrt();
            assert!(norm <= 1.0 + 1e-5, "{name}: a row of norm {norm}");
        }
    }
    let mut pool_x = vec![0.0f32; 10 * 40];
    for (r, &c) in fitted.pool.iter().enumerate() {
        data.lognorm_row(c, &mut pool_x[r * 40..(r + 1) * 40]);
    }
    let inner = graphs.to_device::<B>(&dev);
    let lists = vec![vec![], data.pert_indices(&data.conditions[1]).unwrap()];
    let before =
        perturb_fit::predict_means(&fitted.model, &inner, &pool_x, None, &lists, 4).unwrap();
    let info = perturb_fit::PerturbModelInfo {
        format: perturb_fit::MODEL_FORMAT.into(),
        genes: data.genes.clone(),
        perturbation_genes: vec!["U1".into(), "U2".into(), "U3".into()],
        control_value: "ctrl".into(),
        hidden: 8,
        backbone_dim: None,
        coexpression: CoexpressionMode::FirstCell,
        fit: inputs.fit.clone(),
        trained_on: serde_json::json!({}),
    };
    let m = perturb_fit::PerturbModel {
        model: fitted.model,
        info,
        graphs: inner,
        coexpression_edges: co,
        perturbation_edges: pe,
        pool_x,
        pool_features: None,
    };
    let folder = dir.path().join("model");
    let m_edges = m.perturbation_edges.len();
    perturb_fit::save_model(&folder, &m).unwrap();
    let back: perturb_fit::PerturbModel<B> = perturb_fit::load_model(&folder, &dev).unwrap();
    assert_eq!(back.graphs.perturbation.nodes(), 43);
    assert_eq!(back.perturbation_edges.len(), m_edges);
    let after =
        perturb_fit::predict_means(&back.model, &back.graphs, &back.pool_x, None, &lists, 4)
            .unwrap();
    for (x, y) in before.iter().flatten().zip(after.iter().flatten()) {
        assert!((x - y).abs() < 1e-5, "{x} vs {y}");
    }
    assert!(before.iter().flatten().all(|v| v.is_finite()));
}

fn perturb_fit_coexpression(data: &PerturbData) -> Vec<GeneEdge> {
    let ctrl = data.cells_of(data.control);
    aido_tasks::perturb::coexpression_graph(&data.dense_f64(&ctrl), data.n_genes(), 0.4, 5).unwrap()
}

/// A user split: parts from the map, groups by how many genes occur in training conditions,
/// the control refused outside training.
#[test]
fn user_split_groups_and_control_rule() {
    use aido_tasks::perturb::{Condition, PertGroup, SplitPart, user_split};
    let conds: Vec<Condition> = ["ctrl", "A+ctrl", "B+ctrl", "C+ctrl", "A+B", "A+C", "C+D"]
        .iter()
        .map(|c| Condition::parse(c, "ctrl").unwrap())
        .collect();
    let mut parts: BTreeMap<String, SplitPart> = BTreeMap::new();
    for (c, p) in [
        ("ctrl", SplitPart::Train),
        ("A+ctrl", SplitPart::Train),
        ("B+ctrl", SplitPart::Train),
        ("C+ctrl", SplitPart::Test),
        ("A+B", SplitPart::Test),
        ("A+C", SplitPart::Val),
        ("C+D", SplitPart::Test),
    ] {
        parts.insert(c.into(), p);
    }
    let s = user_split(&conds, &parts).unwrap();
    assert_eq!(s.group["C+ctrl"], PertGroup::UnseenSingle);
    assert_eq!(s.group["A+B"], PertGroup::ComboSeen2);
    assert_eq!(s.group["A+C"], PertGroup::ComboSeen1);
    assert_eq!(s.group["C+D"], PertGroup::ComboSeen0);
    assert_eq!(s.part["A+C"], Some(SplitPart::Val));
    parts.insert("ctrl".into(), SplitPart::Test);
    assert!(
        user_split(&conds, &parts)
            .unwrap_err()
            .to_string()
            .contains("must be in train")
    );
    parts.remove("A+B");
    assert!(user_split(&conds, &parts).is_err());
}

/// Host f64 matrices for the written-out GEARS forward below.
struct M {
    r: usize,
    c: usize,
    v: Vec<f64>,
}

impl M {
    fn of<Bk: Backend, const D: usize>(t: Tensor<Bk, D>, r: usize, c: usize) -> M {
        let v: Vec<f32> = t.into_data().convert::<f32>().into_vec().unwrap();
        assert_eq!(v.len(), r * c);
        M {
            r,
            c,
            v: v.into_iter().map(f64::from).collect(),
        }
    }
    fn at(&self, i: usize, j: usize) -> f64 {
        self.v[i * self.c + j]
    }
    fn map(&self, f: impl Fn(usize, usize, f64) -> f64) -> M {
        let v = (0..self.r * self.c)
            .map(|k| f(k / self.c, k % self.c, self.v[k]))
            .collect();
        M {
            r: self.r,
            c: self.c,
            v,
        }
    }
    fn rows(&self, idx: &[usize]) -> M {
        let v = idx
            .iter()
            .flat_map(|&i| self.v[i * self.c..(i + 1) * self.c].to_vec())
            .collect();
        M {
            r: idx.len(),
            c: self.c,
            v,
        }
    }
}

/// `x W + b` with burn's `[in, out]` weight.
fn linear_host<Bk: Backend>(l: &aido_model::burn::nn::Linear<Bk>, x: &M) -> M {
    let [i, o] = l.weight.val().dims();
    assert_eq!(i, x.c);
    let w = M::of(l.weight.val(), i, o);
    let b = l.bias.as_ref().map(|b| M::of(b.val(), 1, o));
    M {
        r: x.r,
        c: o,
        v: (0..x.r * o)
            .map(|k| {
                let (r, j) = (k / o, k % o);
                (0..i).map(|t| x.at(r, t) * w.at(t, j)).sum::<f64>()
                    + b.as_ref().map_or(0.0, |b| b.at(0, j))
            })
            .collect(),
    }
}

/// torch's `BatchNorm1d` in training: batch mean and biased batch variance over the rows;
/// returns the output and what torch's running statistics become from their initial (0, 1)
/// with momentum 0.1 (the **unbiased** variance).
fn batch_norm_host<Bk: Backend>(
    bn: &aido_model::burn::nn::BatchNorm<Bk>,
    x: &M,
) -> (M, Vec<f64>, Vec<f64>) {
    let n = x.r as f64;
    let mean: Vec<f64> = (0..x.c)
        .map(|j| (0..x.r).map(|i| x.at(i, j)).sum::<f64>() / n)
        .collect();
    let var: Vec<f64> = (0..x.c)
        .map(|j| {
            (0..x.r)
                .map(|i| (x.at(i, j) - mean[j]).powi(2))
                .sum::<f64>()
                / n
        })
        .collect();
    let gamma = M::of(bn.gamma.val(), 1, x.c);
    let beta = M::of(bn.beta.val(), 1, x.c);
    let y = x.map(|_, j, v| {
        (v - mean[j]) / (var[j] + bn.epsilon).sqrt() * gamma.at(0, j) + beta.at(0, j)
    });
    let rm = mean.iter().map(|m| 0.1 * m).collect();
    let rv = var.iter().map(|v| 0.9 + 0.1 * v * n / (n - 1.0)).collect();
    (y, rm, rv)
}

fn mlp_host<Bk: Backend>(m: &aido_tasks::gears::GearsMlp<Bk>, x: &M) -> M {
    let mut x = x.map(|_, _, v| v);
    for (i, (l, bn)) in m.linears.iter().zip(&m.norms).enumerate() {
        x = batch_norm_host(bn, &linear_host(l, &x)).0;
        if i + 1 < m.linears.len() {
            x = x.map(|_, _, v| v.max(0.0));
        }
    }
    x
}

/// torch's `max_norm=True` lookup of every row: rows of norm > 1 scaled to norm 1.
fn max_norm_host<Bk: Backend>(e: &aido_model::burn::nn::Embedding<Bk>) -> M {
    let [r, c] = e.weight.val().dims();
    let w = M::of(e.weight.val(), r, c);
    w.map(|i, _, v| {
        let n = (0..c).map(|j| w.at(i, j).powi(2)).sum::<f64>().sqrt();
        if n > 1.0 { v / n } else { v }
    })
}

/// The training-mode forward (batch statistics) equals GEARS's `GEARS_Model.forward` written
/// out from `gears/model.py` in f64 on the host — the gene embeddings repeated for every cell
/// and batch-normed over all `B·G` rows, the positional embeddings (first-cell quirk and
/// corrected), the summed perturbations through `pert_fuse`, `bn_pert_base`, `recovery_w`,
/// the first decoder, the cross-gene state concatenated to every gene and the second decoder
/// — and the batch norms' running statistics move as torch's do (momentum 0.1, unbiased
/// variance). The SGConv propagation is the one checked against PyG's formula above.
#[test]
fn training_forward_is_gears_model_py_written_out() {
    type A = Autodiff<B>;
    for mode in [CoexpressionMode::FirstCell, CoexpressionMode::AllCells] {
        let dev = Default::default();
        A::seed(&dev, 5);
        let (g, h, b) = (6, 8, 4);
        let m = GearsConfig::new(g)
            .with_hidden(h)
            .with_coexpression(mode)
            .init::<A>(&dev)
            .renormalize_embeddings();
        let co = [
            edge(0, 1, 0.9),
            edge(1, 0, 0.9),
            edge(2, 3, 0.7),
            edge(4, 5, 0.6),
        ];
        let pe = [edge(0, 2, 0.5), edge(3, 1, 0.4), edge(5, 4, 0.3)];
        let graphs = GearsGraphs::<A>::new(&co, &pe, g, &dev).unwrap();
        let xv: Vec<f32> = (0..b * g).map(|i| ((i * 5) % 7) as f32 * 0.25).collect();
        let x = Tensor::<A, 2>::from_data(TensorData::new(xv.clone(), [b, g]), &dev);
        let perts = vec![vec![1], vec![], vec![1, 4], vec![2]];
        let got = M::of(m.forward(x, &perts, None, &graphs).unwrap(), b, g);

        // 1. learned gene embeddings of every cell, batch norm over B·G rows, ReLU.
        let emb = max_norm_host(m.gene_emb.as_ref().unwrap());
        let rep: Vec<usize> = (0..b * g).map(|k| k % g).collect();
        let (base, _, _) = batch_norm_host(&m.bn_emb, &emb.rows(&rep));
        let base = base.map(|_, _, v| v.max(0.0));
        // 2. positional embeddings: SGConv over the co-expression graph for the first cell
        // (every cell when corrected), PyG's unit self-loop (`Lin(x)`) for the others.
        let pos0 = max_norm_host(&m.emb_pos);
        let lin = &m.layers_emb_pos[0].lin;
        let device_rows = |e: &M| {
            let v: Vec<f32> = e.v.iter().map(|&v| v as f32).collect();
            Tensor::<A, 2>::from_data(TensorData::new(v, [e.r, e.c]), &dev)
        };
        let prop = M::of(graphs.coexpression.propagate(device_rows(&pos0)), g, h);
        let with_graph = linear_host(lin, &prop);
        let without = linear_host(lin, &pos0);
        let base = base.map(|k, j, v| {
            let (cell, gene) = (k / g, k % g);
            let p = if cell == 0 || mode == CoexpressionMode::AllCells {
                with_graph.at(gene, j)
            } else {
                without.at(gene, j)
            };
            v + 0.2 * p
        });
        let base = mlp_host(&m.emb_trans_v2, &base);
        // 3. perturbations: the propagated table, summed per cell, pert_fuse over the
        // perturbed cells, added to every gene of the cell.
        let table = linear_host(
            &m.sim_layers[0].lin,
            &M::of(
                graphs
                    .perturbation
                    .propagate(device_rows(&max_norm_host(&m.pert_emb))),
                g,
                h,
            ),
        );
        let perturbed: Vec<usize> = (0..b).filter(|&c| !perts[c].is_empty()).collect();
        let sums = M {
            r: perturbed.len(),
            c: h,
            v: perturbed
                .iter()
                .flat_map(|&c| {
                    let (t, ps) = (&table, &perts[c]);
                    (0..h).map(move |j| ps.iter().map(|&p| t.at(p, j)).sum::<f64>())
                })
                .collect(),
        };
        let fused = mlp_host(&m.pert_fuse, &sums);
        let base = base.map(|k, j, v| {
            let cell = k / g;
            v + perturbed
                .iter()
                .position(|&c| c == cell)
                .map_or(0.0, |r| fused.at(r, j))
        });
        // 4. bn_pert_base, ReLU, recovery_w, the first per-gene decoder.
        let (base, _, _) = batch_norm_host(&m.bn_pert_base, &base);
        let rec = mlp_host(&m.recovery_w, &base.map(|_, _, v| v.max(0.0)));
        let w1 = M::of(m.indv_w1.val(), g, h);
        let b1 = M::of(m.indv_b1.val(), 1, g);
        let out = M {
            r: b,
            c: g,
            v: (0..b * g)
                .map(|k| {
                    let gene = k % g;
                    (0..h).map(|j| rec.at(k, j) * w1.at(gene, j)).sum::<f64>() + b1.at(0, gene)
                })
                .collect(),
        };
        // 5. the cross-gene state concatenated to every gene, the second decoder, x + change.
        let cross = mlp_host(&m.cross_gene_state, &out);
        let w2 = M::of(m.indv_w2.val(), g, h + 1);
        let b2 = M::of(m.indv_b2.val(), 1, g);
        let want = out.map(|cell, gene, o| {
            let cat = (0..=h).map(|j| {
                let v = if j == 0 { o } else { cross.at(cell, j - 1) };
                v * w2.at(gene, j)
            });
            f64::from(xv[cell * g + gene]) + cat.sum::<f64>() + b2.at(0, gene)
        });
        for k in 0..b * g {
            assert!(
                (got.v[k] - want.v[k]).abs() <= 1e-4 * (1.0 + want.v[k].abs()),
                "{mode:?} cell {} gene {}: {} vs GEARS {}",
                k / g,
                k % g,
                got.v[k],
                want.v[k]
            );
        }
        // The running statistics, as torch's: the cross-gene state's first batch norm (4 rows:
        // biased and unbiased variance differ by 4/3) and bn_emb (B·G rows of copies).
        let cross_in = linear_host(&m.cross_gene_state.linears[0], &out);
        let (_, rm, rv) = batch_norm_host(&m.cross_gene_state.norms[0], &cross_in);
        let (_, em, ev) = batch_norm_host(&m.bn_emb, &emb.rows(&rep));
        for (bn, rm, rv) in [(&m.cross_gene_state.norms[0], rm, rv), (&m.bn_emb, em, ev)] {
            let got_m = M::of(bn.running_mean.value_sync(), 1, h);
            let got_v = M::of(bn.running_var.value_sync(), 1, h);
            for j in 0..h {
                assert!((got_m.v[j] - rm[j]).abs() < 1e-5, "running mean {j}");
                assert!(
                    (got_v.v[j] - rv[j]).abs() < 1e-5 * (1.0 + rv[j]),
                    "running var {j}: {} vs torch {}",
                    got_v.v[j],
                    rv[j]
                );
            }
        }
    }
}
