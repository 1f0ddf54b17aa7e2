//! `aido cluster` and `aido evaluate`: the zero-shot clustering protocol and the metrics of
//! columns already in a file, with reports in JSON and results added to the user's h5ad.

use std::path::{Path, PathBuf};
use std::time::Instant;

use aido_eval::pipeline::{
    ClusterConfig, ClusterInput, ClusterOutput, ClusterTarget, ExpressionConfig, cluster,
    embedding_scores, integration, score,
};
use aido_eval::plot::scatter_png;
use aido_eval::{CsrMatrix, Labels};
use aido_tokenize::h5ad::{read_obs, read_obsm};
use aido_tokenize::h5ad_edit::{H5adAdditions, SparseCsr, UnsValue, write_input_plus};
use aido_tokenize::{ObsColumn, ObsTable, ReadOptions, open_source, read_all};
use anyhow::{Context, Result, bail};
use clap::Args;
use ndarray::Array2;
use serde_json::{Value, json};

/// Flags of `aido cluster`.
#[derive(Args, Clone, Debug)]
pub(crate) struct ClusterArgs {
    /// Input .h5ad.
    #[arg(long)]
    pub input: PathBuf,
    /// Output .h5ad: the whole input plus obs/aido_leiden, obsm/X_pca, obsm/X_umap (and
    /// scanpy's obsp/connectivities, obsp/distances, uns/neighbors, uns/pca).
    #[arg(long)]
    pub output: PathBuf,
    /// Cluster this obsm matrix (e.g. X_aido_cell from `aido embed`).
    #[arg(
        long,
        conflicts_with = "expression",
        required_unless_present = "expression"
    )]
    pub embedding: Option<String>,
    /// Run the expression baseline on raw counts (X or --layer): normalize 1e4, log1p,
    /// seurat HVG, scale, PCA.
    #[arg(long)]
    pub expression: bool,
    /// obs column with the true labels (ARI/NMI/AMI, silhouette, label ASW).
    #[arg(long)]
    pub label_column: Option<String>,
    /// obs column with batches (batch ASW, graph connectivity, iLISI).
    #[arg(long)]
    pub batch_column: Option<String>,
    /// Search the Leiden resolution until there are N clusters (default with
    /// --label-column: the number of labels).
    #[arg(long, conflicts_with = "resolution")]
    pub n_clusters: Option<usize>,
    /// Leiden at this resolution (default without --label-column: 1.0).
    #[arg(long)]
    pub resolution: Option<f64>,
    /// Principal components.
    #[arg(long, default_value_t = 50)]
    pub n_pcs: usize,
    /// Neighbours of the kNN graph (self included, as scanpy).
    #[arg(long, default_value_t = 15)]
    pub n_neighbors: usize,
    /// Seed of Leiden and UMAP.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// With --expression: read layers/NAME instead of X.
    #[arg(long)]
    pub layer: Option<String>,
    /// With --expression: var column with the gene names.
    #[arg(long)]
    pub gene_column: Option<String>,
    /// Write the report (JSON) here.
    #[arg(long)]
    pub report: Option<PathBuf>,
    /// Draw the UMAP coloured by the label column (or the clusters) into this PNG.
    #[arg(long)]
    pub umap_png: Option<PathBuf>,
}

/// Flags of `aido evaluate`.
#[derive(Args, Clone, Debug)]
pub(crate) struct EvaluateArgs {
    /// Input .h5ad.
    #[arg(long)]
    pub input: PathBuf,
    /// obs column with the true labels.
    #[arg(long)]
    pub label_column: String,
    /// Write the report (JSON) here.
    #[arg(long)]
    pub report: PathBuf,
    /// obs column with clusters: ari, nmi, ami, homogeneity, completeness.
    #[arg(long)]
    pub cluster_column: Option<String>,
    /// obs column with predicted labels: accuracy, macro_f1, per_class_f1, confusion.
    #[arg(long)]
    pub prediction_column: Option<String>,
    /// obsm matrix: silhouette, silhouette_cosine, label_asw.
    #[arg(long)]
    pub embedding: Option<String>,
    /// obs column with batches (with --embedding): batch_asw, graph_connectivity, ilisi.
    #[arg(long)]
    pub batch_column: Option<String>,
}

fn ensure_h5ad(p: &Path, flag: &str) -> Result<()> {
    let ok = p
        .extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| e.eq_ignore_ascii_case("h5ad"));
    if !ok {
        bail!("{flag} {}: an .h5ad file is needed", p.display());
    }
    Ok(())
}

/// An obs column as labels, with errors naming the file, the column and the cell.
pub(crate) fn obs_labels(obs: &ObsTable, file: &Path, col: &str) -> Result<Labels> {
    let c = obs.column(col).with_context(|| {
        let names: Vec<&str> = obs.columns.iter().map(|(n, _)| n.as_str()).collect();
        format!(
            "{}: obs has no column '{col}' (columns: {})",
            file.display(),
            if names.is_empty() {
                "none".to_string()
            } else {
                names.join(", ")
            }
        )
    })?;
    Labels::from_obs_column(c).map_err(|i| {
        anyhow::anyhow!(
            "{}: obs/{col} has no value for cell {i} ('{}'): label every cell, or subset the file",
            file.display(),
            obs.cell_name(i)
        )
    })
}

/// A matrix from obsm, refusing NaN/inf with the file, key and cell.
pub(crate) fn obsm_matrix(file: &Path, key: &str, obs: &ObsTable) -> Result<Array2<f32>> {
    let m = read_obsm(file, key)?;
    if let Some((i, v)) = m.iter().enumerate().find(|(_, v)| !v.is_finite()) {
        let row = i / m.ncols().max(1);
        bail!(
            "{}: obsm/{key} holds {v} at cell {row} ('{}'), column {}: embeddings must be finite",
            file.display(),
            obs.cell_name(row),
            i % m.ncols().max(1)
        );
    }
    Ok(m)
}

/// Writes `value` as pretty JSON to `path` atomically.
pub(crate) fn write_json(path: &Path, value: &Value) -> Result<()> {
    let text = serde_json::to_string_pretty(value)? + "\n";
    let mut name = path
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_default();
    name.push(".tmp");
    let tmp = path.with_file_name(name);
    std::fs::write(&tmp, text).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))
}

fn sparse(m: &CsrMatrix) -> SparseCsr {
    SparseCsr {
        n_rows: m.n,
        n_cols: m.n,
        indptr: m.indptr.clone(),
        indices: m.indices.clone(),
        data: m.data.clone(),
    }
}

fn f64s(v: &[f64]) -> UnsValue {
    UnsValue::F64Array(v.to_vec())
}

/// The results of a clustering run, under scanpy's names.
fn additions(out: &ClusterOutput, a: &ClusterArgs, n_vars: usize) -> Result<H5adAdditions> {
    let n = out.knn.n;
    let k = out.pca.n_comps;
    let mut add = H5adAdditions::default();
    add.obs.push((
        "aido_leiden".into(),
        ObsColumn::Categorical {
            codes: out.leiden.labels.iter().map(|&c| c as i32).collect(),
            categories: (0..out.leiden.n_clusters).map(|c| c.to_string()).collect(),
            ordered: false,
        },
    ));
    add.obsm.push((
        "X_pca".into(),
        Array2::from_shape_vec((n, k), out.pca.scores.clone())?,
    ));
    if let Some(u) = &out.umap {
        add.obsm.push((
            "X_umap".into(),
            Array2::from_shape_vec((n, 2), u.iter().flat_map(|p| [p[0], p[1]]).collect())?,
        ));
    }
    add.obsp
        .push(("connectivities".into(), sparse(&out.connectivities)));
    add.obsp.push(("distances".into(), sparse(&out.distances)));
    let source = match &a.embedding {
        Some(e) => format!("obsm/{e}"),
        None => a
            .layer
            .as_ref()
            .map_or("X".to_string(), |l| format!("layers/{l}")),
    };
    add.uns.push((
        "neighbors".into(),
        UnsValue::Dict(vec![
            (
                "connectivities_key".into(),
                UnsValue::Str("connectivities".into()),
            ),
            ("distances_key".into(), UnsValue::Str("distances".into())),
            (
                "params".into(),
                UnsValue::Dict(vec![
                    ("n_neighbors".into(), UnsValue::I64(out.knn.k as i64)),
                    ("method".into(), UnsValue::Str("umap".into())),
                    ("metric".into(), UnsValue::Str("euclidean".into())),
                    ("random_state".into(), UnsValue::I64(a.seed as i64)),
                    ("n_pcs".into(), UnsValue::I64(k as i64)),
                    ("use_rep".into(), UnsValue::Str("X_pca".into())),
                ]),
            ),
        ]),
    ));
    add.uns.push((
        "pca".into(),
        UnsValue::Dict(vec![
            ("variance".into(), f64s(&out.pca.variance)),
            ("variance_ratio".into(), f64s(&out.pca.variance_ratio)),
            (
                "params".into(),
                UnsValue::Dict(vec![
                    ("zero_center".into(), UnsValue::Bool(true)),
                    (
                        "use_highly_variable".into(),
                        UnsValue::Bool(out.hvg.is_some()),
                    ),
                    ("source".into(), UnsValue::Str(source.clone())),
                ]),
            ),
        ]),
    ));
    add.uns.push((
        "aido_leiden".into(),
        UnsValue::Dict(vec![(
            "params".into(),
            UnsValue::Dict(vec![
                ("resolution".into(), UnsValue::F64(out.leiden.resolution)),
                ("random_state".into(), UnsValue::I64(a.seed as i64)),
                ("n_iterations".into(), UnsValue::I64(-1)),
                (
                    "objective".into(),
                    UnsValue::Str("RBConfiguration (modularity)".into()),
                ),
                ("source".into(), UnsValue::Str(source)),
            ]),
        )]),
    ));
    if let Some(h) = &out.hvg {
        if h.highly_variable.len() != n_vars {
            bail!(
                "internal: HVG over {} genes, var has {n_vars}",
                h.highly_variable.len()
            );
        }
        add.var.push((
            "highly_variable".into(),
            ObsColumn::Bool(h.highly_variable.clone()),
        ));
        add.var
            .push(("means".into(), ObsColumn::Float(h.means.clone())));
        add.var.push((
            "dispersions".into(),
            ObsColumn::Float(h.dispersions.clone()),
        ));
        add.var.push((
            "dispersions_norm".into(),
            ObsColumn::Float(h.dispersions_norm.clone()),
        ));
        // scanpy's varm/PCs: loadings over all genes, zero outside the HVGs
        let sel = h.selected();
        let mut pcs = Array2::<f32>::zeros((n_vars, k));
        for (r, &g) in sel.iter().enumerate() {
            for c in 0..k {
                pcs[[g, c]] = out.pca.components[c * sel.len() + r];
            }
        }
        add.varm.push(("PCs".into(), pcs));
    }
    Ok(add)
}

fn opt(v: Option<f64>) -> Value {
    v.map_or(Value::Null, |x| json!(x))
}

/// What a `cluster` run found, for the demo's summary.
pub(crate) struct ClusterSummary {
    /// Clusters found.
    pub n_clusters: usize,
    pub ari: Option<f64>,
    pub nmi: Option<f64>,
    pub report: Value,
}

/// Runs `aido cluster`.
pub(crate) fn cmd_cluster(a: &ClusterArgs, verbose: bool) -> Result<ClusterSummary> {
    let t0 = Instant::now();
    ensure_h5ad(&a.input, "--input")?;
    ensure_h5ad(&a.output, "--output")?;
    if a.embedding.is_some() && (a.layer.is_some() || a.gene_column.is_some()) {
        bail!("--layer and --gene-column apply to --expression only");
    }
    if a.n_clusters == Some(0) {
        bail!("--n-clusters must be at least 1");
    }
    if let Some(r) = a.resolution
        && !(r.is_finite() && r >= 0.0)
    {
        bail!("--resolution must be a finite number ≥ 0, got {r}");
    }
    let obs = read_obs(&a.input)?;
    let labels = a
        .label_column
        .as_ref()
        .map(|c| obs_labels(&obs, &a.input, c))
        .transpose()?;
    let batches = a
        .batch_column
        .as_ref()
        .map(|c| obs_labels(&obs, &a.input, c))
        .transpose()?;
    if batches.is_some() && labels.is_none() {
        bail!(
            "--batch-column needs --label-column (batch ASW and graph connectivity are computed within labels)"
        );
    }
    let target = match (a.n_clusters, a.resolution, &labels) {
        (Some(k), _, _) => ClusterTarget::NClusters(k),
        (None, Some(r), _) => ClusterTarget::Resolution(r),
        (None, None, Some(l)) => ClusterTarget::NClusters(l.n_distinct()),
        (None, None, None) => ClusterTarget::Resolution(1.0),
    };
    let cfg = ClusterConfig {
        n_pcs: a.n_pcs,
        n_neighbors: a.n_neighbors,
        seed: a.seed,
        target,
        ..ClusterConfig::default()
    };
    let (out, n_vars, mode) = match &a.embedding {
        Some(key) => {
            let m = obsm_matrix(&a.input, key, &obs)?;
            let (n, d) = m.dim();
            let x = m.as_standard_layout();
            let x = x.as_slice().context("internal: embedding layout")?;
            if verbose {
                eprintln!("clustering obsm/{key} [{n} × {d}] of {}", a.input.display());
            }
            let n_vars = open_var_len(&a.input)?;
            (
                cluster(ClusterInput::Embedding { x, n, d }, &cfg)
                    .with_context(|| format!("{}: obsm/{key}", a.input.display()))?,
                n_vars,
                "embedding",
            )
        }
        None => {
            let opts = ReadOptions {
                gene_column: a.gene_column.clone(),
                layer: a.layer.clone(),
            };
            let mut src = open_source(&a.input, &opts)?;
            let g = src.gene_names().len();
            let counts = read_all(src.as_mut())?;
            let what = a
                .layer
                .as_ref()
                .map_or("X".to_string(), |l| format!("layers/{l}"));
            if verbose {
                eprintln!(
                    "expression baseline on {what} [{} × {g}] of {}",
                    counts.n_cells(),
                    a.input.display()
                );
            }
            drop(src);
            let o = cluster(
                ClusterInput::Expression {
                    counts,
                    n_genes: g,
                    config: ExpressionConfig::default(),
                },
                &cfg,
            )
            .with_context(|| format!("{}: {what}", a.input.display()))?;
            (o, g, "expression")
        }
    };
    let t_read_and_cluster = t0.elapsed().as_secs_f64();
    let n = out.knn.n;
    let k = out.pca.n_comps;
    let t_score = Instant::now();
    let scores = match &labels {
        Some(l) => Some(
            score(
                &out.pca.scores,
                n,
                k,
                &Labels::from_codes(out.leiden.labels.clone()),
                l,
                batches.as_ref(),
                Some(&out.knn),
            )
            .with_context(|| {
                format!(
                    "{}: scoring against obs/{}",
                    a.input.display(),
                    a.label_column.clone().unwrap_or_default()
                )
            })?,
        ),
        None => None,
    };
    let score_seconds = t_score.elapsed().as_secs_f64();
    // results into the user's file, then the picture and the report
    let t_write = Instant::now();
    let add = additions(&out, a, n_vars)?;
    write_input_plus(&a.input, &a.output, &add)?;
    if let Some(png) = &a.umap_png {
        let coords = out.umap.as_ref().context("internal: no UMAP")?;
        let (groups, by) = match (&labels, &a.label_column) {
            (Some(l), Some(c)) => (l.clone(), c.clone()),
            _ => {
                let mut g = Labels::from_codes(out.leiden.labels.clone());
                g.names = (0..out.leiden.n_clusters)
                    .map(|c| format!("cluster {c}"))
                    .collect();
                (g, "aido_leiden".to_string())
            }
        };
        let src = a
            .embedding
            .as_ref()
            .map_or("expression".to_string(), |e| e.clone());
        let title = format!("UMAP of {src}, coloured by {by} ({n} cells)");
        scatter_png(png, coords, &groups, &title, "UMAP")?;
    }
    let write_seconds = t_write.elapsed().as_secs_f64();
    let exact = out.search.as_ref().map(|s| s.exact);
    let s = &out.seconds;
    let read_seconds = t_read_and_cluster
        - (s.preprocess + s.pca + s.neighbors + s.connectivities + s.leiden + s.umap);
    let report = json!({
        "n_cells": n,
        "n_clusters": out.leiden.n_clusters,
        "resolution": out.leiden.resolution,
        "ari": opt(scores.as_ref().map(|s| s.agreement.ari)),
        "nmi": opt(scores.as_ref().map(|s| s.agreement.nmi)),
        "ami": opt(scores.as_ref().map(|s| s.agreement.ami)),
        "homogeneity": opt(scores.as_ref().map(|s| s.agreement.homogeneity)),
        "completeness": opt(scores.as_ref().map(|s| s.agreement.completeness)),
        "silhouette": opt(scores.as_ref().map(|s| s.silhouette)),
        "label_asw": opt(scores.as_ref().map(|s| s.label_asw)),
        "batch_asw": opt(scores.as_ref().and_then(|s| s.batch_asw)),
        "graph_connectivity": opt(scores.as_ref().and_then(|s| s.graph_connectivity)),
        "ilisi": opt(scores.as_ref().and_then(|s| s.ilisi)),
        "seconds": t0.elapsed().as_secs_f64(),
        "target_n_clusters": match target { ClusterTarget::NClusters(k) => json!(k), ClusterTarget::Resolution(_) => Value::Null },
        "exact_n_clusters": exact.map_or(Value::Null, |e| json!(e)),
        "resolution_search": out.search.as_ref().map_or(Value::Null, |s| json!(s.tried.iter().map(|(r, c)| json!({"resolution": r, "n_clusters": c})).collect::<Vec<_>>())),
        "stage_seconds": {
            "read": read_seconds,
            "preprocess": s.preprocess,
            "pca": s.pca,
            "neighbors": s.neighbors,
            "connectivities": s.connectivities,
            "leiden": s.leiden,
            "umap": s.umap,
            "metrics": score_seconds,
            "write": write_seconds,
        },
        "metrics_space": format!("X_pca ({k} components)"),
        "settings": {
            "input": a.input.display().to_string(),
            "output": a.output.display().to_string(),
            "mode": mode,
            "embedding": a.embedding,
            "layer": a.layer,
            "label_column": a.label_column,
            "batch_column": a.batch_column,
            "n_pcs": a.n_pcs,
            "n_pcs_used": k,
            "n_neighbors": out.knn.k,
            "seed": a.seed,
            "n_hvg": out.hvg.as_ref().map(|h| h.selected().len()),
            "target_sum": if mode == "expression" { json!(1e4) } else { Value::Null },
            "hvg": if mode == "expression" { json!("seurat, scanpy defaults (min_mean 0.0125, max_mean 3, min_disp 0.5)") } else { Value::Null },
            "standardize": "zero mean, unit variance (ddof 1), no clip",
            "leiden": "RB configuration (modularity), n_iterations -1 (until no improvement), single-clustering 0.7.0",
            "umap": {"min_dist": 0.5, "spread": 1.0, "n_epochs": if n <= 10_000 { 500 } else { 200 }, "init": "spectral"},
            "aido_version": env!("CARGO_PKG_VERSION"),
        },
    });
    if let Some(r) = &a.report {
        write_json(r, &report)?;
    }
    if verbose {
        let exact_note = match exact {
            Some(false) => format!(
                " (no resolution gave exactly {}; closest kept)",
                match target {
                    ClusterTarget::NClusters(k) => k,
                    ClusterTarget::Resolution(_) => 0,
                }
            ),
            _ => String::new(),
        };
        outln!(
            "wrote {}: obs/aido_leiden ({} clusters at resolution {:.4}{exact_note}), obsm/X_pca [{n} × {k}], obsm/X_umap; {:.1} s",
            a.output.display(),
            out.leiden.n_clusters,
            out.leiden.resolution,
            t0.elapsed().as_secs_f64()
        );
        if let Some(s) = &scores {
            outln!(
                "  ARI {:.4}  NMI {:.4}  AMI {:.4}  silhouette {:.4}  label ASW {:.4}{}",
                s.agreement.ari,
                s.agreement.nmi,
                s.agreement.ami,
                s.silhouette,
                s.label_asw,
                match (s.batch_asw, s.graph_connectivity, s.ilisi) {
                    (Some(b), Some(g), Some(i)) =>
                        format!("  batch ASW {b:.4}  graph connectivity {g:.4}  iLISI {i:.4}"),
                    _ => String::new(),
                }
            );
        }
    }
    Ok(ClusterSummary {
        n_clusters: out.leiden.n_clusters,
        ari: scores.as_ref().map(|s| s.agreement.ari),
        nmi: scores.as_ref().map(|s| s.agreement.nmi),
        report,
    })
}

/// The number of variables (`var` rows) of an h5ad file.
fn open_var_len(path: &Path) -> Result<usize> {
    let src = open_source(path, &ReadOptions::default())?;
    Ok(src.gene_names().len())
}

/// Runs `aido evaluate`.
pub(crate) fn cmd_evaluate(a: &EvaluateArgs) -> Result<()> {
    ensure_h5ad(&a.input, "--input")?;
    if a.cluster_column.is_none() && a.prediction_column.is_none() && a.embedding.is_none() {
        bail!("nothing to evaluate: give --cluster-column, --prediction-column and/or --embedding");
    }
    if a.batch_column.is_some() && a.embedding.is_none() {
        bail!("--batch-column needs --embedding (the batch metrics are computed on an embedding)");
    }
    let t0 = Instant::now();
    let obs = read_obs(&a.input)?;
    let labels = obs_labels(&obs, &a.input, &a.label_column)?;
    let mut report = serde_json::Map::new();
    report.insert("n_cells".into(), json!(labels.len()));
    if let Some(c) = &a.cluster_column {
        let cl = obs_labels(&obs, &a.input, c)?;
        let s = aido_eval::metrics::cluster::agreement(&labels, &cl)?;
        for (k, v) in [
            ("ari", s.ari),
            ("nmi", s.nmi),
            ("ami", s.ami),
            ("homogeneity", s.homogeneity),
            ("completeness", s.completeness),
        ] {
            report.insert(k.into(), json!(v));
        }
    }
    if let Some(c) = &a.prediction_column {
        let p = obs_labels(&obs, &a.input, c)?;
        let truth: Vec<&str> = (0..labels.len()).map(|i| labels.name_of(i)).collect();
        let pred: Vec<&str> = (0..p.len()).map(|i| p.name_of(i)).collect();
        let r = aido_eval::metrics::classify::classification_report(&truth, &pred)?;
        report.insert("accuracy".into(), json!(r.accuracy));
        report.insert("macro_f1".into(), json!(r.macro_f1));
        report.insert("per_class_f1".into(), json!(r.per_class_f1));
        report.insert("confusion".into(), json!(r.confusion));
    }
    if let Some(key) = &a.embedding {
        let m = obsm_matrix(&a.input, key, &obs)?;
        let (n, d) = m.dim();
        let x = m.as_standard_layout();
        let x = x.as_slice().context("internal: embedding layout")?;
        let ctx = || {
            format!(
                "{}: obsm/{key} against obs/{}",
                a.input.display(),
                a.label_column
            )
        };
        let s = embedding_scores(x, n, d, &labels).with_context(ctx)?;
        report.insert("silhouette".into(), json!(s.silhouette));
        report.insert("silhouette_cosine".into(), json!(s.silhouette_cosine));
        report.insert("label_asw".into(), json!(s.label_asw));
        if let Some(b) = &a.batch_column {
            let batches = obs_labels(&obs, &a.input, b)?;
            let s = integration(x, n, d, &labels, &batches, None).with_context(ctx)?;
            report.insert("batch_asw".into(), json!(s.batch_asw));
            report.insert("graph_connectivity".into(), json!(s.graph_connectivity));
            report.insert("ilisi".into(), json!(s.ilisi));
        }
    }
    report.insert("seconds".into(), json!(t0.elapsed().as_secs_f64()));
    report.insert(
        "settings".into(),
        json!({
            "input": a.input.display().to_string(),
            "label_column": a.label_column,
            "cluster_column": a.cluster_column,
            "prediction_column": a.prediction_column,
            "embedding": a.embedding,
            "batch_column": a.batch_column,
            "definitions": "scikit-learn 1.9 (ARI, NMI/AMI arithmetic, F1 over the union of labels), scib-metrics (ASW rescaled, graph connectivity 15-NN, iLISI 90-NN perplexity 30)",
        }),
    );
    let report = Value::Object(report);
    write_json(&a.report, &report)?;
    outln!("wrote {}", a.report.display());
    for k in [
        "ari",
        "nmi",
        "ami",
        "accuracy",
        "macro_f1",
        "silhouette",
        "label_asw",
        "batch_asw",
        "graph_connectivity",
        "ilisi",
    ] {
        if let Some(v) = report.get(k).and_then(Value::as_f64) {
            outln!("  {k}: {v:.4}");
        }
    }
    Ok(())
}
