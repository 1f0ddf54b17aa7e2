//! The `aido_sdk._core` extension module: the pipelines of `aido-pipeline` for Python.
//!
//! The Python layer (`python/aido_sdk/__init__.py`) adapts AnnData: it hands the Rust side the
//! gene names, the cell names and the `obs` columns a task needs, plus a reader that returns one
//! window of cells as CSR arrays (`reader(start, stop) -> (indptr, indices, data)`), so CSR, CSC,
//! dense and backed matrices are read a window at a time and never densified whole. Computation
//! runs with the GIL released; between windows the reader re-attaches to check for Ctrl-C
//! (`KeyboardInterrupt` within one batch) and progress is reported to a Python callable.
#![allow(unsafe_code)] // pyo3's macros expand to FFI glue
#![allow(clippy::too_many_arguments)]

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use aido_model::{DeviceKind, Pooling, Precision};
use aido_pipeline::annotate::{FinetuneOptions, PredictOptions, SplitChoice, finetune_cells};
use aido_pipeline::cluster::{Cells, ClusterOptions, EvaluateOptions, cluster_cells, evaluate};
use aido_pipeline::embed::EmbedOptions;
use aido_pipeline::insilico::{InsilicoOptions, Targets};
use aido_pipeline::perturb::{PerturbFitOptions, perturb_fit_cells, perturb_predict};
use aido_pipeline::{Event, OnDevice, OpenOptions, PipelineError, Pretrained, on_device};
use aido_tokenize::h5ad_edit::UnsValue;
use aido_tokenize::{
    AlignOptions, CellSource, CsrChunk, EmptyCellPolicy, GeneIdMode, NonIntegerPolicy, ObsColumn,
    ObsTable, TokenizeError, TokenizeOptions, read_all,
};
use numpy::{IntoPyArray, PyReadonlyArray1, PyReadonlyArray2};
use pyo3::exceptions::{PyFileNotFoundError, PyKeyError, PyOSError, PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList};

/// A Python exception for a pipeline error: a missing file or model → `FileNotFoundError`, a
/// missing obs column or key → `KeyError`, a stored Ctrl-C → the `KeyboardInterrupt` itself,
/// anything else the caller can fix → `ValueError`.
fn to_py(e: PipelineError, pending: &Pending) -> PyErr {
    if let Some(err) = pending.lock().ok().and_then(|mut p| p.take()) {
        return err;
    }
    let text = e.to_string();
    match &e {
        PipelineError::ModelNotFound { .. } => PyFileNotFoundError::new_err(text),
        PipelineError::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound => {
            PyFileNotFoundError::new_err(text)
        }
        PipelineError::Tokenize(TokenizeError::NotFound { .. }) => {
            PyFileNotFoundError::new_err(text)
        }
        PipelineError::Input { detail, .. } if detail.contains("obs has no") => {
            PyKeyError::new_err(text)
        }
        PipelineError::Interrupted => PyRuntimeError::new_err(text),
        PipelineError::Output { detail, .. } if detail.contains("does not exist") => {
            PyFileNotFoundError::new_err(text)
        }
        PipelineError::Output { .. } => PyOSError::new_err(text),
        _ => PyValueError::new_err(text),
    }
}

/// A Python error raised inside a callback (the reader, the progress bar, Ctrl-C), kept to be
/// re-raised as is once the pipeline has stopped.
type Pending = Arc<Mutex<Option<PyErr>>>;

/// A model opened by `load_model`: its files and gene list, the device and precision to run on.
#[pyclass(frozen, module = "aido_sdk._core")]
struct Model {
    pretrained: Pretrained,
    device: DeviceKind,
    precision: Precision,
}

#[pymethods]
impl Model {
    /// The model's name: the folder as given, or the Hugging Face id.
    #[getter]
    fn name(&self) -> String {
        self.pretrained.name()
    }
    /// The checkpoint folder (a hub id's cache snapshot).
    #[getter]
    fn folder(&self) -> String {
        self.pretrained.folder.display().to_string()
    }
    /// Hidden size H (the embedding width).
    #[getter]
    fn hidden_size(&self) -> usize {
        self.pretrained.config.hidden_size
    }
    /// The model's gene list, in position order.
    #[getter]
    fn genes(&self) -> Vec<String> {
        self.pretrained.vocab.names().to_vec()
    }
    /// Where the gene list came from.
    #[getter]
    fn genes_from(&self) -> String {
        self.pretrained.genes_from.clone()
    }
    /// The device (`cpu`, `cuda`, `wgpu`).
    #[getter]
    fn device(&self) -> String {
        format!("{:?}", self.device).to_lowercase()
    }
    /// The precision (`f32`, `bf16`).
    #[getter]
    fn precision(&self) -> String {
        self.precision.as_str().to_string()
    }
    fn __repr__(&self) -> String {
        format!(
            "aido_sdk.Model({:?}, H={}, genes={}, device={}, precision={})",
            self.pretrained.name(),
            self.pretrained.config.hidden_size,
            self.pretrained.vocab.len(),
            self.device(),
            self.precision()
        )
    }
}

fn parse<T: std::str::FromStr<Err = E>, E: std::fmt::Display>(what: &str, v: &str) -> PyResult<T> {
    v.parse::<T>()
        .map_err(|e| PyValueError::new_err(format!("{what}: {e}")))
}

/// Opens a model: a checkpoint folder or a Hugging Face id (`ORG/NAME[@REVISION]`) through the
/// huggingface_hub cache (downloads when allowed; `HF_HUB_OFFLINE=1`: the cache only).
#[pyfunction]
#[pyo3(signature = (model, genes=None, device="cpu", precision="f32"))]
fn load_model(
    py: Python<'_>,
    model: &str,
    genes: Option<PathBuf>,
    device: &str,
    precision: &str,
) -> PyResult<Model> {
    let device: DeviceKind = parse("device", device)?;
    let precision: Precision = parse("precision", precision)?;
    device
        .ensure_compiled()
        .map_err(|e| PyValueError::new_err(e.to_string()))?;
    let pending = Pending::default();
    let model = model.to_string();
    let pretrained = py
        .detach(|| Pretrained::open_str(&model, &OpenOptions { genes, hub: None }, &mut |_| {}))
        .map_err(|e| to_py(e, &pending))?;
    if precision == Precision::Bf16 && device == DeviceKind::Wgpu {
        return Err(PyValueError::new_err(
            "the wgpu backend cannot compute in bf16; use precision=\"f32\" (bf16 runs on the CPU and CUDA backends)",
        ));
    }
    Ok(Model {
        pretrained,
        device,
        precision,
    })
}

/// The cells of an AnnData as the Rust side reads them: windows through a Python reader.
struct PyCells {
    reader: Py<PyAny>,
    n_cells: usize,
    genes: Vec<String>,
    obs: ObsTable,
    label: PathBuf,
    gene_column: String,
    next: usize,
    pending: Pending,
}

impl PyCells {
    fn fail(&self, e: PyErr) -> TokenizeError {
        let text = e.to_string();
        if let Ok(mut p) = self.pending.lock() {
            *p = Some(e);
        }
        TokenizeError::InvalidArgument(format!("{}: {text}", self.label.display()))
    }
}

impl CellSource for PyCells {
    fn path(&self) -> &Path {
        &self.label
    }
    fn n_cells(&self) -> usize {
        self.n_cells
    }
    fn gene_names(&self) -> &[String] {
        &self.genes
    }
    fn gene_column(&self) -> &str {
        &self.gene_column
    }
    fn obs(&self) -> &ObsTable {
        &self.obs
    }
    fn next_chunk(&mut self, max_cells: usize) -> Result<Option<CsrChunk>, TokenizeError> {
        let start = self.next;
        if start >= self.n_cells {
            return Ok(None);
        }
        let stop = (start + max_cells.max(1)).min(self.n_cells);
        let got = Python::attach(|py| -> PyResult<CsrChunk> {
            py.check_signals()?;
            let t = self.reader.bind(py).call1((start, stop))?;
            let (indptr, indices, data): (
                PyReadonlyArray1<'_, i64>,
                PyReadonlyArray1<'_, i64>,
                PyReadonlyArray1<'_, f32>,
            ) = t.extract()?;
            let (p, j, v) = (indptr.as_slice()?, indices.as_slice()?, data.as_slice()?);
            if p.len() != stop - start + 1
                || p[0] != 0
                || p[p.len() - 1] as usize != j.len()
                || j.len() != v.len()
            {
                return Err(PyValueError::new_err(format!(
                    "the reader returned inconsistent CSR arrays for cells {start}..{stop}"
                )));
            }
            let g = self.genes.len();
            if let Some(&bad) = j.iter().find(|&&x| x < 0 || x as usize >= g) {
                return Err(PyValueError::new_err(format!(
                    "gene index {bad} outside 0..{g}"
                )));
            }
            Ok(CsrChunk {
                first_cell: start,
                indptr: p.iter().map(|&x| x as usize).collect(),
                indices: j.iter().map(|&x| x as u32).collect(),
                data: v.to_vec(),
            })
        });
        match got {
            Ok(c) => {
                self.next = stop;
                Ok(Some(c))
            }
            Err(e) => Err(self.fail(e)),
        }
    }
}

/// The Python side's description of the cells.
#[derive(FromPyObject)]
#[pyo3(from_item_all)]
struct CellsSpec {
    reader: Py<PyAny>,
    n_cells: usize,
    genes: Vec<String>,
    obs_names: Vec<String>,
    /// obs columns a task needs: name → values (None = missing).
    columns: Vec<(String, Vec<Option<String>>)>,
    label: String,
    gene_column: String,
}

fn obs_table(names: Vec<String>, columns: Vec<(String, Vec<Option<String>>)>) -> ObsTable {
    let mut obs = ObsTable::from_names(names);
    for (name, values) in columns {
        let col = if values.iter().any(Option::is_none) {
            ObsColumn::NullableStr {
                mask: values.iter().map(Option::is_none).collect(),
                values: values.into_iter().map(Option::unwrap_or_default).collect(),
            }
        } else {
            ObsColumn::Str(values.into_iter().flatten().collect())
        };
        obs.columns.push((name, col));
    }
    obs
}

impl CellsSpec {
    fn source(self, pending: &Pending) -> PyCells {
        PyCells {
            reader: self.reader,
            n_cells: self.n_cells,
            genes: self.genes,
            obs: obs_table(self.obs_names, self.columns),
            label: PathBuf::from(self.label),
            gene_column: self.gene_column,
            next: 0,
            pending: pending.clone(),
        }
    }
}

/// Calls the progress callable (if any) with (done, total) from a pipeline's events, keeping a
/// Python error to re-raise.
fn progress_events(progress: Option<Py<PyAny>>, pending: Pending) -> impl FnMut(Event) {
    move |e| {
        let (done, total) = match e {
            Event::Progress { done, total, .. } => (done, total),
            Event::Finetune(aido_tasks::finetune::Event::Update { done, total, .. }) => {
                (done, total)
            }
            Event::Note(n) => {
                Python::attach(|py| {
                    let _ = py
                        .import("warnings")
                        .and_then(|w| w.call_method1("warn", (n,)));
                });
                return;
            }
            _ => return,
        };
        if let Some(cb) = &progress {
            Python::attach(|py| {
                if let Err(err) = cb.bind(py).call1((done, total))
                    && let Ok(mut p) = pending.lock()
                {
                    p.get_or_insert(err);
                }
            });
        }
    }
}

fn tokenize_options(gene_id: &str, allow_non_integer: bool) -> PyResult<TokenizeOptions> {
    Ok(TokenizeOptions {
        align: AlignOptions {
            gene_id: parse::<GeneIdMode, _>("gene_id", gene_id)?,
            ..AlignOptions::default()
        },
        non_integer: if allow_non_integer {
            NonIntegerPolicy::Warn
        } else {
            NonIntegerPolicy::Error
        },
        empty: EmptyCellPolicy::Error,
        ..TokenizeOptions::default()
    })
}

/// Runs `work` with the GIL released, mapping its error (or a stored Python error) to Python.
fn run_detached<T: Send>(
    py: Python<'_>,
    pending: &Pending,
    work: impl FnOnce() -> aido_pipeline::Result<T> + Send,
) -> PyResult<T> {
    let r = py.detach(work);
    if let Some(err) = pending.lock().ok().and_then(|mut p| p.take()) {
        return Err(err);
    }
    r.map_err(|e| to_py(e, pending))
}

struct EmbedWork<'a> {
    model: &'a Model,
    cells: PyCells,
    options: EmbedOptions,
    progress: Option<Py<PyAny>>,
    pending: Pending,
}

impl OnDevice for EmbedWork<'_> {
    type Output = aido_pipeline::EmbedOutput;
    fn run<B: aido_model::burn::prelude::Backend>(
        mut self,
        device: B::Device,
    ) -> aido_pipeline::Result<Self::Output> {
        let mut events = progress_events(self.progress, self.pending);
        let source: &mut dyn CellSource = &mut self.cells;
        aido_pipeline::embed::embed_source::<B>(
            &self.model.pretrained,
            source,
            &self.options,
            &device,
            &mut events,
        )
    }
}

/// Cell (and gene) embeddings: returns (cells [n, H] float32, genes [n, K, H] float32, kept
/// cell indices, report dict).
#[pyfunction]
#[pyo3(signature = (model, cells, pooling="present-mean", batch_size=8, gene_embeddings=None, gene_id="auto", allow_non_integer=false, progress=None))]
fn embed<'py>(
    py: Python<'py>,
    model: &Model,
    cells: CellsSpec,
    pooling: &str,
    batch_size: usize,
    gene_embeddings: Option<Vec<String>>,
    gene_id: &str,
    allow_non_integer: bool,
    progress: Option<Py<PyAny>>,
) -> PyResult<Bound<'py, PyAny>> {
    let pending = Pending::default();
    let options = EmbedOptions {
        pooling: parse::<Pooling, _>("pooling", pooling)?,
        batch_size,
        precision: model.precision,
        tokenize: tokenize_options(gene_id, allow_non_integer)?,
        gene_embeddings: gene_embeddings.unwrap_or_default(),
        max_cells: None,
        key_added: None,
    };
    let work = EmbedWork {
        model,
        cells: cells.source(&pending),
        options,
        progress,
        pending: pending.clone(),
    };
    let device = model.device;
    let out = run_detached(py, &pending, move || on_device(device, work))?;
    let report = json_to_py(py, &serde_json::to_value(&out.report).unwrap_or_default())?;
    Ok((
        out.cells.into_pyarray(py),
        out.genes.into_pyarray(py),
        out.kept,
        report,
    )
        .into_pyobject(py)?
        .into_any())
}

/// A JSON value as Python objects (dicts, lists, numbers, strings, None).
fn json_to_py<'py>(py: Python<'py>, v: &serde_json::Value) -> PyResult<Bound<'py, PyAny>> {
    let json = py.import("json")?;
    json.call_method1("loads", (v.to_string(),))
}

struct PredictWork {
    classifier: PathBuf,
    cells: PyCells,
    options: PredictOptions,
    progress: Option<Py<PyAny>>,
    pending: Pending,
}

impl OnDevice for PredictWork {
    type Output = aido_pipeline::annotate::Predictions;
    fn run<B: aido_model::burn::prelude::Backend>(
        mut self,
        device: B::Device,
    ) -> aido_pipeline::Result<Self::Output> {
        let mut events = progress_events(self.progress, self.pending);
        aido_pipeline::annotate::predict_source::<B>(
            &self.classifier,
            &mut self.cells,
            &self.options,
            &device,
            &mut events,
        )
    }
}

/// Labels cells with a classifier folder: returns (proba [n, C], predicted class index per
/// cell, confidence, classes, kept, report).
#[pyfunction]
#[pyo3(signature = (classifier, cells, batch_size=8, device="cpu", precision="f32", gene_id="auto", allow_non_integer=false, progress=None))]
fn predict<'py>(
    py: Python<'py>,
    classifier: PathBuf,
    cells: CellsSpec,
    batch_size: usize,
    device: &str,
    precision: &str,
    gene_id: &str,
    allow_non_integer: bool,
    progress: Option<Py<PyAny>>,
) -> PyResult<Bound<'py, PyAny>> {
    let pending = Pending::default();
    if !classifier.exists() {
        return Err(PyFileNotFoundError::new_err(format!(
            "{}: no such classifier folder",
            classifier.display()
        )));
    }
    let device: DeviceKind = parse("device", device)?;
    let options = PredictOptions {
        batch_size,
        precision: parse("precision", precision)?,
        tokenize: tokenize_options(gene_id, allow_non_integer)?,
        max_cells: None,
        key_added: None,
    };
    let work = PredictWork {
        classifier,
        cells: cells.source(&pending),
        options,
        progress,
        pending: pending.clone(),
    };
    let p = run_detached(py, &pending, move || on_device(device, work))?;
    let report = json_to_py(py, &serde_json::to_value(&p.report).unwrap_or_default())?;
    Ok((
        p.proba.into_pyarray(py),
        p.predicted,
        p.confidence,
        p.classes,
        p.kept,
        report,
    )
        .into_pyobject(py)?
        .into_any())
}

struct InsilicoWork<'a> {
    model: &'a Model,
    cells: PyCells,
    options: InsilicoOptions,
    progress: Option<Py<PyAny>>,
    pending: Pending,
}

impl OnDevice for InsilicoWork<'_> {
    type Output = aido_pipeline::insilico::InsilicoOutput;
    fn run<B: aido_model::burn::prelude::Backend>(
        mut self,
        device: B::Device,
    ) -> aido_pipeline::Result<Self::Output> {
        let mut events = progress_events(self.progress, self.pending);
        aido_pipeline::insilico::insilico_source::<B>(
            &self.model.pretrained,
            &mut self.cells,
            &self.options,
            &device,
            &mut events,
        )
    }
}

/// In-silico knockout / over-expression: returns (shifts [n, k], genes, kept, mean_shift,
/// n_expressed, mean_shift_expressed, report).
#[pyfunction]
#[pyo3(signature = (model, cells, genes=None, all_genes=false, mode="knockout", max_cells=None, batch_size=8, gene_id="auto", progress=None))]
fn insilico<'py>(
    py: Python<'py>,
    model: &Model,
    cells: CellsSpec,
    genes: Option<Vec<String>>,
    all_genes: bool,
    mode: &str,
    max_cells: Option<usize>,
    batch_size: usize,
    gene_id: &str,
    progress: Option<Py<PyAny>>,
) -> PyResult<Bound<'py, PyAny>> {
    let pending = Pending::default();
    let targets = match (genes, all_genes) {
        (Some(_), true) => {
            return Err(PyValueError::new_err(
                "give genes=[...] or all_genes=True, not both",
            ));
        }
        (Some(g), false) => Targets::Genes(g),
        (None, true) => Targets::AllMeasured,
        (None, false) => {
            return Err(PyValueError::new_err(
                "give genes=[...] to perturb, or all_genes=True",
            ));
        }
    };
    let options = InsilicoOptions {
        targets,
        mode: aido_tasks::insilico::InsilicoMode::parse(mode)
            .map_err(|e| PyValueError::new_err(e.to_string()))?,
        max_cells,
        batch_size,
        precision: model.precision,
        align: AlignOptions {
            gene_id: parse::<GeneIdMode, _>("gene_id", gene_id)?,
            ..AlignOptions::default()
        },
    };
    let work = InsilicoWork {
        model,
        cells: cells.source(&pending),
        options,
        progress,
        pending: pending.clone(),
    };
    let device = model.device;
    let o = run_detached(py, &pending, move || on_device(device, work))?;
    let report = json_to_py(py, &serde_json::to_value(&o.report).unwrap_or_default())?;
    Ok((
        o.shifts.into_pyarray(py),
        o.genes,
        o.kept,
        o.mean_shift,
        o.n_expressed,
        o.mean_shift_expressed,
        report,
    )
        .into_pyobject(py)?
        .into_any())
}

/// An `UnsValue` as Python objects.
fn uns_to_py<'py>(py: Python<'py>, v: &UnsValue) -> PyResult<Bound<'py, PyAny>> {
    Ok(match v {
        UnsValue::Str(s) => s.into_pyobject(py)?.into_any(),
        UnsValue::F64(x) => x.into_pyobject(py)?.into_any(),
        UnsValue::I64(x) => x.into_pyobject(py)?.into_any(),
        UnsValue::Bool(x) => x.into_pyobject(py)?.to_owned().into_any(),
        UnsValue::F64Array(x) => x.clone().into_pyarray(py).into_any(),
        UnsValue::StrArray(x) => PyList::new(py, x)?.into_any(),
        UnsValue::Dict(items) => {
            let d = PyDict::new(py);
            for (k, v) in items {
                d.set_item(k, uns_to_py(py, v)?)?;
            }
            d.into_any()
        }
    })
}

/// Clustering results as a dict of what scanpy stores: obs columns, obsm, obsp (CSR arrays:
/// data, indices int32, indptr int32, shape), uns, var columns and varm, and the report.
fn clustered_to_py<'py>(
    py: Python<'py>,
    c: aido_pipeline::cluster::Clustered,
) -> PyResult<Bound<'py, PyAny>> {
    let out = PyDict::new(py);
    let obs = PyDict::new(py);
    for (k, col) in &c.additions.obs {
        if let ObsColumn::Categorical {
            codes, categories, ..
        } = col
        {
            obs.set_item(k, (codes.clone().into_pyarray(py), categories.clone()))?;
        }
    }
    out.set_item("obs", obs)?;
    let obsm = PyDict::new(py);
    for (k, m) in &c.additions.obsm {
        obsm.set_item(k, m.clone().into_pyarray(py))?;
    }
    out.set_item("obsm", obsm)?;
    let obsp = PyDict::new(py);
    for (k, m) in &c.additions.obsp {
        let data = if m.data_f64 {
            m.data
                .iter()
                .map(|&x| f64::from(x))
                .collect::<Vec<f64>>()
                .into_pyarray(py)
                .into_any()
        } else {
            m.data.clone().into_pyarray(py).into_any()
        };
        let indices: Vec<i32> = m.indices.iter().map(|&j| j as i32).collect();
        let indptr: Vec<i64> = m.indptr.iter().map(|&p| p as i64).collect();
        obsp.set_item(
            k,
            (
                data,
                indices.into_pyarray(py),
                indptr.into_pyarray(py),
                (m.n_rows, m.n_cols),
            ),
        )?;
    }
    out.set_item("obsp", obsp)?;
    let uns = PyDict::new(py);
    for (k, v) in &c.additions.uns {
        uns.set_item(k, uns_to_py(py, v)?)?;
    }
    out.set_item("uns", uns)?;
    let var = PyDict::new(py);
    for (k, col) in &c.additions.var {
        match col {
            ObsColumn::Bool(v) => var.set_item(k, v.clone())?,
            ObsColumn::Float(v) => var.set_item(k, v.clone().into_pyarray(py))?,
            _ => {}
        }
    }
    out.set_item("var", var)?;
    let varm = PyDict::new(py);
    for (k, m) in &c.additions.varm {
        varm.set_item(k, m.clone().into_pyarray(py))?;
    }
    out.set_item("varm", varm)?;
    out.set_item(
        "report",
        json_to_py(py, &serde_json::to_value(&c.report).unwrap_or_default())?,
    )?;
    Ok(out.into_any())
}

fn cluster_options(
    label_column: Option<String>,
    batch_column: Option<String>,
    n_clusters: Option<usize>,
    resolution: Option<f64>,
    n_pcs: usize,
    n_neighbors: usize,
    seed: u64,
    key_added: Option<String>,
) -> ClusterOptions {
    ClusterOptions {
        label_column,
        batch_column,
        n_clusters,
        resolution,
        n_pcs,
        n_neighbors,
        seed,
        key_added,
        ..ClusterOptions::default()
    }
}

/// Zero-shot clustering of an embedding `x` [n, d] (float32): PCA → kNN → Leiden → UMAP, with
/// metrics against `obs` label columns. Returns the dict of `clustered_to_py`.
#[pyfunction]
#[pyo3(signature = (key, x, obs_names, columns, n_vars, label_column=None, batch_column=None, n_clusters=None, resolution=None, n_pcs=50, n_neighbors=15, seed=0, use_rep_as_is=false, key_added=None))]
fn cluster_embedding<'py>(
    py: Python<'py>,
    key: String,
    x: PyReadonlyArray2<'py, f32>,
    obs_names: Vec<String>,
    columns: Vec<(String, Vec<Option<String>>)>,
    n_vars: usize,
    label_column: Option<String>,
    batch_column: Option<String>,
    n_clusters: Option<usize>,
    resolution: Option<f64>,
    n_pcs: usize,
    n_neighbors: usize,
    seed: u64,
    use_rep_as_is: bool,
    key_added: Option<String>,
) -> PyResult<Bound<'py, PyAny>> {
    let pending = Pending::default();
    let obs = obs_table(obs_names, columns);
    let options = ClusterOptions {
        use_rep_as_is,
        ..cluster_options(
            label_column,
            batch_column,
            n_clusters,
            resolution,
            n_pcs,
            n_neighbors,
            seed,
            key_added,
        )
    };
    let x = x.as_array().to_owned();
    let c = run_detached(py, &pending, move || {
        cluster_cells(
            Cells::Embedding {
                key: key.clone(),
                x: x.view(),
            },
            &obs,
            n_vars,
            "adata",
            &options,
            &mut |_| {},
        )
    })?;
    clustered_to_py(py, c)
}

/// The expression baseline on raw counts (normalize 1e4, log1p, seurat HVG, scale, PCA), then
/// the same graph, clusters and layout. Returns the dict of `clustered_to_py`.
#[pyfunction]
#[pyo3(signature = (cells, what, label_column=None, batch_column=None, n_clusters=None, resolution=None, n_pcs=50, n_neighbors=15, seed=0, key_added=None))]
fn cluster_counts<'py>(
    py: Python<'py>,
    cells: CellsSpec,
    what: String,
    label_column: Option<String>,
    batch_column: Option<String>,
    n_clusters: Option<usize>,
    resolution: Option<f64>,
    n_pcs: usize,
    n_neighbors: usize,
    seed: u64,
    key_added: Option<String>,
) -> PyResult<Bound<'py, PyAny>> {
    let pending = Pending::default();
    let mut src = cells.source(&pending);
    let options = cluster_options(
        label_column,
        batch_column,
        n_clusters,
        resolution,
        n_pcs,
        n_neighbors,
        seed,
        key_added,
    );
    let c = run_detached(py, &pending, move || {
        let counts = read_all(&mut src)?;
        let n_genes = src.genes.len();
        let obs = src.obs.clone();
        cluster_cells(
            Cells::Counts {
                what: what.clone(),
                counts,
                n_genes,
            },
            &obs,
            n_genes,
            &what,
            &options,
            &mut |_| {},
        )
    })?;
    clustered_to_py(py, c)
}

/// Metrics of obs columns (and an embedding) already there; returns the report dict.
#[pyfunction]
#[pyo3(signature = (obs_names, columns, label_column, cluster_column=None, prediction_column=None, embedding_key=None, embedding=None, batch_column=None))]
fn evaluate_columns<'py>(
    py: Python<'py>,
    obs_names: Vec<String>,
    columns: Vec<(String, Vec<Option<String>>)>,
    label_column: String,
    cluster_column: Option<String>,
    prediction_column: Option<String>,
    embedding_key: Option<String>,
    embedding: Option<PyReadonlyArray2<'py, f32>>,
    batch_column: Option<String>,
) -> PyResult<Bound<'py, PyAny>> {
    let pending = Pending::default();
    let obs = obs_table(obs_names, columns);
    let options = EvaluateOptions {
        label_column,
        cluster_column,
        prediction_column,
        embedding: embedding_key,
        batch_column,
    };
    let x = embedding.map(|e| e.as_array().to_owned());
    let r = run_detached(py, &pending, move || {
        evaluate(&obs, x.as_ref().map(|m| m.view()), "adata", &options)
    })?;
    json_to_py(py, &serde_json::to_value(&r).unwrap_or_default())
}

/// Fine-tuning options from Python keywords.
#[derive(FromPyObject)]
#[pyo3(from_item_all)]
struct FinetuneKw {
    trainable: String,
    pooling: String,
    split_column: Option<String>,
    val_fraction: f64,
    test_fraction: f64,
    epochs: usize,
    batch_size: usize,
    lr: f64,
    class_weights: String,
    patience: usize,
    seed: u64,
    baselines: bool,
}

struct FinetuneWork<'a> {
    model: &'a Model,
    cells: Option<PyCells>,
    label_column: String,
    out_dir: PathBuf,
    options: FinetuneOptions,
    progress: Option<Py<PyAny>>,
    pending: Pending,
}

impl OnDevice for FinetuneWork<'_> {
    type Output = aido_pipeline::annotate::FinetuneReport;
    fn run<B: aido_model::burn::prelude::Backend>(
        mut self,
        device: B::Device,
    ) -> aido_pipeline::Result<Self::Output> {
        let mut events = progress_events(self.progress, self.pending.clone());
        // The cells are read twice with the baselines: once to fine-tune, once for them.
        let first = self.cells.take();
        let reader = first
            .as_ref()
            .map(|c| Python::attach(|py| c.reader.clone_ref(py)));
        let template = first.as_ref().map(|c| {
            (
                c.n_cells,
                c.genes.clone(),
                c.obs.clone(),
                c.label.clone(),
                c.gene_column.clone(),
            )
        });
        let pending = self.pending.clone();
        let mut first = first;
        let mut open = || -> aido_pipeline::Result<Box<dyn CellSource + '_>> {
            if let Some(c) = first.take() {
                return Ok(Box::new(c));
            }
            let (n_cells, genes, obs, label, gene_column) = template
                .clone()
                .ok_or_else(|| PipelineError::option("cells", "no cells"))?;
            let reader = reader
                .as_ref()
                .map(|r| Python::attach(|py| r.clone_ref(py)))
                .ok_or_else(|| PipelineError::option("cells", "no cells"))?;
            Ok(Box::new(PyCells {
                reader,
                n_cells,
                genes,
                obs,
                label,
                gene_column,
                next: 0,
                pending: pending.clone(),
            }))
        };
        finetune_cells::<aido_model::burn::backend::Autodiff<B>>(
            &self.model.pretrained,
            &mut open,
            &self.label_column,
            &self.out_dir,
            &self.options,
            &device,
            &mut events,
        )
    }
}

/// Fine-tunes the model on `label_column`'s classes; writes `out_dir` as `aido finetune` does
/// and returns its report (report.json) as a dict.
#[pyfunction]
#[pyo3(signature = (model, cells, label_column, out_dir, kw, gene_id="auto", allow_non_integer=false, progress=None))]
fn finetune<'py>(
    py: Python<'py>,
    model: &Model,
    cells: CellsSpec,
    label_column: String,
    out_dir: PathBuf,
    kw: FinetuneKw,
    gene_id: &str,
    allow_non_integer: bool,
    progress: Option<Py<PyAny>>,
) -> PyResult<Bound<'py, PyAny>> {
    let pending = Pending::default();
    let options = FinetuneOptions {
        trainable: kw.trainable,
        pooling: parse("pooling", &kw.pooling)?,
        split: match kw.split_column {
            Some(c) => SplitChoice::Column(c),
            None => SplitChoice::Fractions {
                val: kw.val_fraction,
                test: kw.test_fraction,
            },
        },
        epochs: kw.epochs,
        batch_size: kw.batch_size,
        lr: kw.lr,
        class_weights: parse("class_weights", &kw.class_weights)?,
        patience: kw.patience,
        seed: kw.seed,
        baselines: kw.baselines,
        precision: model.precision,
        tokenize: tokenize_options(gene_id, allow_non_integer)?,
        ..FinetuneOptions::default()
    };
    let work = FinetuneWork {
        model,
        cells: Some(cells.source(&pending)),
        label_column,
        out_dir,
        options,
        progress,
        pending: pending.clone(),
    };
    let device = model.device;
    let r = run_detached(py, &pending, move || on_device(device, work))?;
    json_to_py(py, &serde_json::to_value(&r).unwrap_or_default())
}

struct PerturbWork<'a> {
    model: Option<&'a Model>,
    cells: PyCells,
    out_dir: PathBuf,
    options: PerturbFitOptions,
    pending: Pending,
}

impl OnDevice for PerturbWork<'_> {
    type Output = aido_pipeline::perturb::PerturbFitReport;
    fn run<B: aido_model::burn::prelude::Backend>(
        mut self,
        device: B::Device,
    ) -> aido_pipeline::Result<Self::Output> {
        let mut events = progress_events(None, self.pending.clone());
        perturb_fit_cells::<aido_model::burn::backend::Autodiff<B>>(
            &mut self.cells,
            &self.out_dir,
            self.model.map(|m| &m.pretrained),
            &self.options,
            &device,
            &mut events,
        )
    }
}

/// Perturbation-fit options from Python keywords.
#[derive(FromPyObject)]
#[pyo3(from_item_all)]
struct PerturbKw {
    condition_column: String,
    control_value: String,
    split: String,
    seed: u64,
    epochs: usize,
    batch_size: usize,
    lr: f64,
    hidden: usize,
    train_gene_fraction: f64,
    coexpress_all_cells: bool,
    pool: usize,
    min_cells: usize,
    gene_graph: Option<PathBuf>,
}

/// Fits GEARS on a screen; writes `out_dir` as `aido perturb fit` does and returns its report.
#[pyfunction]
#[pyo3(signature = (cells, out_dir, kw, model=None, device="cpu"))]
fn perturb_fit<'py>(
    py: Python<'py>,
    cells: CellsSpec,
    out_dir: PathBuf,
    kw: PerturbKw,
    model: Option<&Model>,
    device: &str,
) -> PyResult<Bound<'py, PyAny>> {
    let pending = Pending::default();
    let device: DeviceKind = match model {
        Some(m) => m.device,
        None => parse("device", device)?,
    };
    let options = PerturbFitOptions {
        condition_column: kw.condition_column,
        control_value: kw.control_value,
        split: kw.split,
        seed: kw.seed,
        epochs: kw.epochs,
        batch_size: kw.batch_size,
        lr: kw.lr,
        hidden: kw.hidden,
        train_gene_fraction: kw.train_gene_fraction,
        coexpress_all_cells: kw.coexpress_all_cells,
        pool: kw.pool,
        min_cells: kw.min_cells,
        gene_graph: kw.gene_graph,
        precision: model.map_or(Precision::F32, |m| m.precision),
        ..PerturbFitOptions::default()
    };
    let work = PerturbWork {
        model,
        cells: cells.source(&pending),
        out_dir,
        options,
        pending: pending.clone(),
    };
    let r = run_detached(py, &pending, move || on_device(device, work))?;
    json_to_py(py, &serde_json::to_value(&r).unwrap_or_default())
}

struct PerturbPredictWork {
    model_dir: PathBuf,
    conditions: Vec<String>,
}

impl OnDevice for PerturbPredictWork {
    type Output = aido_pipeline::perturb::PerturbPredictions;
    fn run<B: aido_model::burn::prelude::Backend>(
        self,
        device: B::Device,
    ) -> aido_pipeline::Result<Self::Output> {
        perturb_predict::<B>(&self.model_dir, &self.conditions, 64, &device)
    }
}

/// Predicts conditions with a model folder of `perturb_fit`; returns the dict of the CLI's
/// JSON (`genes`, `conditions`).
#[pyfunction]
#[pyo3(signature = (model_dir, conditions, device="cpu"))]
fn perturb_predict_py<'py>(
    py: Python<'py>,
    model_dir: PathBuf,
    conditions: Vec<String>,
    device: &str,
) -> PyResult<Bound<'py, PyAny>> {
    let pending = Pending::default();
    if !model_dir.exists() {
        return Err(PyFileNotFoundError::new_err(format!(
            "{}: no such perturbation model folder",
            model_dir.display()
        )));
    }
    let device: DeviceKind = parse("device", device)?;
    let r = run_detached(py, &pending, move || {
        on_device(
            device,
            PerturbPredictWork {
                model_dir,
                conditions,
            },
        )
    })?;
    json_to_py(py, &serde_json::to_value(&r).unwrap_or_default())
}

/// Caps the CPU threads of every computation in this process (rayon's global pool); once,
/// before the first computation.
#[pyfunction]
fn set_threads(threads: usize) -> PyResult<()> {
    aido_pipeline::set_threads(threads).map_err(|e| PyValueError::new_err(e.to_string()))
}

/// The extension module.
#[pymodule]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<Model>()?;
    m.add_function(wrap_pyfunction!(load_model, m)?)?;
    m.add_function(wrap_pyfunction!(embed, m)?)?;
    m.add_function(wrap_pyfunction!(predict, m)?)?;
    m.add_function(wrap_pyfunction!(insilico, m)?)?;
    m.add_function(wrap_pyfunction!(cluster_embedding, m)?)?;
    m.add_function(wrap_pyfunction!(cluster_counts, m)?)?;
    m.add_function(wrap_pyfunction!(evaluate_columns, m)?)?;
    m.add_function(wrap_pyfunction!(finetune, m)?)?;
    m.add_function(wrap_pyfunction!(perturb_fit, m)?)?;
    m.add_function(wrap_pyfunction!(perturb_predict_py, m)?)?;
    m.add_function(wrap_pyfunction!(set_threads, m)?)?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
