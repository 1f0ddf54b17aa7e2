//! Every pipeline function called in-process gives what the `aido` binary writes for the same
//! inputs (the binary is a shell over `aido-pipeline`): embeddings bit for bit, predictions,
//! clusters, in-silico shifts and perturbation predictions. Inputs are made here (a random
//! tiny checkpoint, simulated counts), so nothing outside the repository is needed.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::Command;

use aido::model::burn::backend::Autodiff;
use aido::model::{AidoCellConfig, Cpu, save_checkpoint};
use aido::pipeline::annotate::{FinetuneOptions, PredictOptions, finetune_file, predict_matrix};
use aido::pipeline::cluster::{ClusterFiles, ClusterOptions, cluster_file};
use aido::pipeline::embed::{EmbedOptions, embed_matrix};
use aido::pipeline::insilico::{InsilicoOptions, Targets, insilico_matrix};
use aido::pipeline::perturb::{PerturbFitOptions, perturb_fit_file, perturb_predict};
use aido::pipeline::{
    CountsMatrix, Indices, ModelSource, OpenOptions, Pretrained, Values, ignore_events,
};
use aido::tokenize::h5::H5;
use aido::tokenize::h5ad_out::{H5adWriter, XMatrix};
use aido::tokenize::simulate::{SimulationConfig, simulate, synthetic_gene_names};
use aido::tokenize::{GeneVocab, ObsTable, ReadOptions};

fn aido(args: &[&str], paths: &[&Path]) {
    let mut c = Command::new(env!("CARGO_BIN_EXE_aido"));
    c.args(args);
    for p in paths {
        c.arg(p);
    }
    let o = c.output().unwrap();
    assert!(
        o.status.success(),
        "aido {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

/// A random tiny checkpoint over 40 synthetic genes, and 48 simulated cells of 3 types over
/// them (as an h5ad, and as the arrays a caller holds).
struct Case {
    _dir: tempfile::TempDir,
    root: PathBuf,
    model: PathBuf,
    cells: PathBuf,
    genes: Vec<String>,
    indptr: Vec<i64>,
    indices: Vec<i32>,
    data: Vec<f32>,
    obs: ObsTable,
}

fn case() -> Case {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    let genes = synthetic_gene_names(40);
    let model = root.join("model");
    let cfg = AidoCellConfig::new(genes.len(), 16, 2, 2, 32);
    save_checkpoint(&cfg.init::<Cpu>(false, &Default::default()), &cfg, &model).unwrap();
    GeneVocab::from_names(genes.clone())
        .unwrap()
        .write_tsv(model.join("genes.tsv"))
        .unwrap();
    let sim = simulate(&SimulationConfig::new(48, 3, 5), genes.clone()).unwrap();
    let cells = root.join("cells.h5ad");
    let mut w = H5adWriter::new(sim.obs.clone(), genes.clone());
    w.x = Some(XMatrix::Csr {
        csr: sim.counts.clone(),
        n_cols: genes.len(),
    });
    w.write(&cells).unwrap();
    Case {
        root,
        model,
        cells,
        indptr: sim.counts.indptr.iter().map(|&p| p as i64).collect(),
        indices: sim.counts.indices.iter().map(|&j| j as i32).collect(),
        data: sim.counts.data.clone(),
        genes,
        obs: sim.obs,
        _dir: dir,
    }
}

impl Case {
    fn matrix(&self) -> CountsMatrix<'_> {
        CountsMatrix::csr(
            self.genes.clone(),
            Indices::I64(&self.indptr),
            Indices::I32(&self.indices),
            Values::F32(&self.data),
            Some(self.obs.clone()),
        )
        .unwrap()
    }
    fn pretrained(&self) -> Pretrained {
        Pretrained::open(
            &ModelSource::Folder(self.model.clone()),
            &OpenOptions::default(),
            &mut ignore_events,
        )
        .unwrap()
    }
}

fn rows(path: &Path, key: &str) -> (Vec<usize>, Vec<f32>) {
    let h5 = H5::open(path).unwrap();
    let shape = h5.shape(key).unwrap();
    let v = h5.read_f32_rows(key, 0, shape[0], shape[1]).unwrap();
    (shape, v)
}

#[test]
fn embed_in_memory_equals_the_cli_bit_for_bit() {
    let c = case();
    let out = c.root.join("emb.h5ad");
    aido(
        &["embed", "--model"],
        &[
            &c.model,
            Path::new("--input"),
            &c.cells,
            Path::new("--output"),
            &out,
        ],
    );
    let (shape, cli) = rows(&out, "obsm/X_aido_cell");
    let emb = embed_matrix::<Cpu>(
        &c.pretrained(),
        &c.matrix(),
        &EmbedOptions::default(),
        &Default::default(),
        &mut ignore_events,
    )
    .unwrap();
    assert_eq!(emb.cells.dim(), (shape[0], shape[1]));
    assert_eq!(emb.cells.iter().copied().collect::<Vec<f32>>(), cli);
    assert_eq!(emb.kept, (0..48).collect::<Vec<_>>());
    // The same cells as a dense float64 array give the same embeddings.
    let mut dense = vec![0.0f64; 48 * 40];
    for i in 0..48 {
        for k in c.indptr[i] as usize..c.indptr[i + 1] as usize {
            dense[i * 40 + c.indices[k] as usize] = f64::from(c.data[k]);
        }
    }
    let m = CountsMatrix::dense(c.genes.clone(), Values::F64(&dense), None).unwrap();
    let emb2 = embed_matrix::<Cpu>(
        &c.pretrained(),
        &m,
        &EmbedOptions::default(),
        &Default::default(),
        &mut ignore_events,
    )
    .unwrap();
    assert_eq!(emb2.cells, emb.cells);
}

#[test]
fn predict_cluster_and_insilico_in_memory_equal_the_cli() {
    let c = case();
    // A classifier, fine-tuned in-process (frozen backbone, 3 epochs: quick).
    let run = c.root.join("run");
    let options = FinetuneOptions {
        trainable: "frozen".into(),
        epochs: 3,
        ..FinetuneOptions::default()
    };
    let r = finetune_file::<Autodiff<Cpu>>(
        &c.pretrained(),
        &c.cells,
        &ReadOptions::default(),
        "cell_type",
        &run,
        &options,
        &Default::default(),
        &mut ignore_events,
    )
    .unwrap();
    assert_eq!(r.n_train + r.n_val + r.n_test, 48);
    let clf = run.join("classifier");
    let out = c.root.join("pred.h5ad");
    aido(
        &["predict", "--model"],
        &[
            &clf,
            Path::new("--input"),
            &c.cells,
            Path::new("--output"),
            &out,
        ],
    );
    let p = predict_matrix::<Cpu>(
        &clf,
        &c.matrix(),
        &PredictOptions::default(),
        &Default::default(),
        &mut ignore_events,
    )
    .unwrap();
    let (_, proba) = rows(&out, "obsm/aido_cell_type_proba");
    assert_eq!(p.proba.iter().copied().collect::<Vec<f32>>(), proba);
    let obs = aido::tokenize::h5ad::read_obs(&out).unwrap();
    let col = obs.column("aido_cell_type").unwrap();
    for (i, &k) in p.predicted.iter().enumerate() {
        assert_eq!(col.display(i), p.classes[k as usize]);
    }

    // A non-h5ad input gets the small file, with the same entries: `uns` keeps the classes as
    // a string array (the small-file writer used to join them into one string and drop every
    // other non-string value).
    let mut csv = format!("cell,{}\n", c.genes.join(","));
    for i in 0..48 {
        let mut row = [0.0f32; 40];
        for k in c.indptr[i] as usize..c.indptr[i + 1] as usize {
            row[c.indices[k] as usize] = c.data[k];
        }
        let vals: Vec<String> = row.iter().map(|v| v.to_string()).collect();
        csv.push_str(&format!("c{i},{}\n", vals.join(",")));
    }
    let csv_path = c.root.join("cells.csv");
    std::fs::write(&csv_path, csv).unwrap();
    let small = c.root.join("pred_small.h5ad");
    aido(
        &["predict", "--model"],
        &[
            &clf,
            Path::new("--input"),
            &csv_path,
            Path::new("--output"),
            &small,
        ],
    );
    let h5 = H5::open(&small).unwrap();
    assert_eq!(
        h5.read_strings("uns/aido_cell_type_classes").unwrap(),
        p.classes
    );
    assert_eq!(
        h5.attr_string("uns/aido_cell_type_classes", "encoding-type")
            .unwrap()
            .as_deref(),
        Some("string-array")
    );
    assert_eq!(rows(&small, "obsm/aido_cell_type_proba").1, proba);

    // Clustering the expression baseline: the same file either way.
    let (a, b) = (c.root.join("cl_cli.h5ad"), c.root.join("cl_lib.h5ad"));
    aido(
        &[
            "cluster",
            "--expression",
            "--label-column",
            "cell_type",
            "--input",
        ],
        &[&c.cells, Path::new("--output"), &a],
    );
    let cl = cluster_file(
        &c.cells,
        &b,
        &ClusterFiles::default(),
        &ClusterOptions {
            label_column: Some("cell_type".into()),
            ..ClusterOptions::default()
        },
        &mut ignore_events,
    )
    .unwrap();
    for key in ["obsm/X_pca", "obsm/X_umap"] {
        assert_eq!(rows(&a, key), rows(&b, key), "{key}");
    }
    assert_eq!(cl.report.n_cells, 48);

    // In-silico knockout of two genes.
    let out = c.root.join("ko.h5ad");
    let g = [c.genes[0].clone(), c.genes[3].clone()];
    aido(
        &[
            "insilico",
            "--quiet",
            "--perturb-genes",
            &g.join(","),
            "--model",
        ],
        &[
            &c.model,
            Path::new("--input"),
            &c.cells,
            Path::new("--output"),
            &out,
        ],
    );
    let (_, cli) = rows(&out, "X");
    let opts = InsilicoOptions {
        targets: Targets::Genes(g.to_vec()),
        ..InsilicoOptions::default()
    };
    let s = insilico_matrix::<Cpu>(
        &c.pretrained(),
        &c.matrix(),
        &opts,
        &Default::default(),
        &mut ignore_events,
    )
    .unwrap();
    assert_eq!(s.shifts.iter().copied().collect::<Vec<f32>>(), cli);
    assert!(c.root.join("ko.tsv").is_file());
}

#[test]
fn perturbation_fit_and_predict_in_process_equal_the_cli() {
    let dir = tempfile::tempdir().unwrap();
    let screen = dir.path().join("screen.h5ad");
    aido(
        &[
            "simulate",
            "--perturbations",
            "8",
            "--doubles",
            "6",
            "--control-cells",
            "80",
            "--cells-per-condition",
            "12",
            "--output",
        ],
        &[&screen],
    );
    let fit = dir.path().join("fit");
    let options = PerturbFitOptions {
        epochs: 2,
        ..PerturbFitOptions::default()
    };
    perturb_fit_file::<Autodiff<Cpu>>(
        &screen,
        &ReadOptions::default(),
        &fit,
        None,
        &options,
        &Default::default(),
        &mut ignore_events,
    )
    .unwrap();
    let model = fit.join("model");
    let out = dir.path().join("pred.json");
    aido(
        &[
            "perturb",
            "predict",
            "--conditions",
            "P0G00+P1G00,P0G01+ctrl",
            "--model",
        ],
        &[&model, Path::new("--output"), &out],
    );
    let cli = std::fs::read_to_string(&out).unwrap();
    let conds = ["P0G00+P1G00".to_string(), "P0G01+ctrl".to_string()];
    let p = perturb_predict::<Cpu>(&model, &conds, 64, &Default::default()).unwrap();
    // The same bytes as the CLI's JSON (the writer adds a final newline).
    assert_eq!(serde_json::to_string_pretty(&p).unwrap() + "\n", cli);
}
