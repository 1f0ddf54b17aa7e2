//! The GPU check: one program, one invocation on the card (see `../shared/docs/GPU.md`).
//!
//! ```text
//! cargo run --release --features cuda --example gpu_check -- --device cuda --out DIR
//!     [--python PY] [--shapes 3m,10m,100m] [--seq 19266] [--batch 4] [--train-batch 1]
//!     [--iters 3] [--peak-tflops 790] [--fixtures all|tiny]
//! ```
//!
//! 1. **Parity** of the device against the CPU backend on the fixtures
//!    (`../shared/fixtures/aido_cell`: both tiny checkpoints, and the full-length 3M one on its
//!    first cell): pooled cell embeddings in f32 (max |Δ| ≤ 1e-5) and in bf16 mixed precision
//!    (relative L2 ≤ 1e-2; rows say `n/a` where the backend has no bf16, e.g. wgpu).
//!    `--fixtures tiny` leaves out the full-length one (minutes on a software rasterizer).
//! 2. **Forward** cells/s of the 3M, 10M and 100M shapes (random weights) at `--seq` positions,
//!    f32 and bf16, median of `--iters` timed batches after one warm-up, and the achieved
//!    TFLOP/s (`L · (8 S H² + 6 S H I + 4 S² H)` per cell) against `--peak-tflops`.
//! 3. **Attention alone** (`aido_model::attention`, f32) at each shape's heads × head dim, next
//!    to PyTorch's `scaled_dot_product_attention` on the same card in the same run when
//!    `--python` names an interpreter with torch (`benches/python/sdpa_anchor.py`; bf16 and f32).
//! 4. **The whole model** next to `../shared/anchors/torch_aido.py` moved to CUDA in bf16
//!    (`benches/python/torch_aido_cuda.py`, with `--python`): the full-length 3M fixture, one
//!    cell at a time (left out with `--fixtures tiny`).
//! 5. **One training step** (forward, MSE of the head's output, backward, AdamW) of the largest
//!    shape at full context with `--train-batch` cells, f32 and bf16: seconds and the card's
//!    peak memory in use (sampled from `nvidia-smi` every 100 ms; `n/a` without it).
//!
//! Writes `DIR/gpu_check.log` (everything, as it runs) and `DIR/gpu_check.md` (the tables),
//! prints the tables last, and exits non-zero when a parity bound fails. `--device cpu` and
//! `--device wgpu` with a short `--seq` make a smoke test of the program without a GPU.

use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Instant;

use aido::model::attention::attention;
use aido::model::burn::backend::Autodiff;
use aido::model::burn::optim::{AdamWConfig, GradientsParams, Optimizer};
use aido::model::burn::tensor::backend::{AutodiffBackend, Backend};
use aido::model::burn::tensor::{Distribution, Tensor, TensorData};
use aido::model::embed::pool;
use aido::model::load::{LoadMode, load_checkpoint};
use aido::model::{AidoCellConfig, Cpu, Pooling, Precision};
use aido::tokenize::shared::{shared_path, testdata_path};
use anyhow::{Context, Result, bail};

struct Args {
    device: String,
    out: PathBuf,
    python: Option<String>,
    shapes: Vec<String>,
    seq: usize,
    batch: usize,
    train_batch: usize,
    iters: usize,
    peak: f64,
    full_length: bool,
}

fn parse() -> Result<Args> {
    let mut a = Args {
        device: "cuda".into(),
        out: PathBuf::from("gpu_check_out"),
        python: None,
        shapes: vec!["3m".into(), "10m".into(), "100m".into()],
        seq: 19_266,
        batch: 4,
        train_batch: 1,
        iters: 3,
        peak: 790.0,
        full_length: true,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let v = it.next().with_context(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--device" => a.device = v,
            "--out" => a.out = PathBuf::from(v),
            "--python" => a.python = Some(v),
            "--shapes" => a.shapes = v.split(',').map(str::to_string).collect(),
            "--seq" => a.seq = v.parse()?,
            "--batch" => a.batch = v.parse()?,
            "--train-batch" => a.train_batch = v.parse()?,
            "--iters" => a.iters = v.parse()?,
            "--peak-tflops" => a.peak = v.parse()?,
            "--fixtures" => {
                a.full_length = match v.as_str() {
                    "all" => true,
                    "tiny" => false,
                    o => bail!("--fixtures {o}: all or tiny"),
                }
            }
            other => bail!("unknown flag {other}"),
        }
    }
    if a.seq < 3 || a.batch == 0 || a.train_batch == 0 || a.iters == 0 {
        bail!("--seq must be ≥ 3 and --batch, --train-batch, --iters ≥ 1");
    }
    Ok(a)
}

/// The log: every line goes to stdout and to `DIR/gpu_check.log`.
struct Log(std::fs::File);

impl Log {
    fn line(&mut self, s: &str) {
        println!("{s}");
        let _ = writeln!(self.0, "{s}");
        let _ = self.0.flush();
    }
}

fn shape_config(name: &str, seq: usize) -> Result<AidoCellConfig> {
    let c = match name {
        "3m" => AidoCellConfig::aido_3m(),
        "10m" => AidoCellConfig::aido_10m(),
        "100m" => AidoCellConfig::aido_100m(),
        "650m" => AidoCellConfig::aido_650m(),
        o => bail!("unknown shape {o} (3m, 10m, 100m, 650m)"),
    };
    let mut c = c;
    c.n_genes = seq - 2;
    Ok(c)
}

/// Forward FLOPs of one cell (multiply-add = 2): projections, SwiGLU and attention.
fn forward_flops(c: &AidoCellConfig, s: usize) -> f64 {
    let (s, h, i, l) = (
        s as f64,
        c.hidden_size as f64,
        c.intermediate_size as f64,
        c.num_hidden_layers as f64,
    );
    l * (8.0 * s * h * h + 6.0 * s * h * i + 4.0 * s * s * h)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn host<B: Backend, const D: usize>(t: Tensor<B, D>) -> Vec<f32> {
    t.into_data()
        .convert::<f32>()
        .into_vec()
        .unwrap_or_default()
}

/// Samples the card's memory in use (MiB) from `nvidia-smi` until dropped.
struct MemProbe {
    peak: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    child: Option<std::process::Child>,
    base: Option<u64>,
}

impl MemProbe {
    fn start() -> MemProbe {
        let peak = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let query = ["--query-gpu=memory.used", "--format=csv,noheader,nounits"];
        let base = Command::new("nvidia-smi")
            .args(query)
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.lines().next().and_then(|l| l.trim().parse().ok()));
        let child = base.and_then(|_| {
            Command::new("nvidia-smi")
                .args(query)
                .arg("-lms")
                .arg("100")
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()
                .ok()
        });
        let mut child = child;
        if let Some(out) = child.as_mut().and_then(|c| c.stdout.take()) {
            let (peak, stop) = (peak.clone(), stop.clone());
            std::thread::spawn(move || {
                for line in BufReader::new(out).lines().map_while(|l| l.ok()) {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    if let Ok(v) = line.trim().parse::<u64>() {
                        peak.fetch_max(v, Ordering::Relaxed);
                    }
                }
            });
        }
        MemProbe {
            peak,
            stop,
            child,
            base,
        }
    }

    /// Peak MiB in use while the probe ran (the process' allocations and the rest), or `None`.
    fn finish(mut self) -> Option<(u64, u64)> {
        std::thread::sleep(std::time::Duration::from_millis(300));
        self.stop.store(true, Ordering::Relaxed);
        if let Some(c) = self.child.as_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let p = self.peak.load(Ordering::Relaxed);
        self.base.filter(|_| p > 0).map(|b| (p, b))
    }
}

/// Pooled (present-mean) embeddings of `values [n, S]` through `dir`'s checkpoint on `B`.
fn pooled<B: Backend>(
    dir: &Path,
    values: &[f32],
    n: usize,
    present: &[u8],
    precision: Precision,
    device: &B::Device,
) -> Result<Vec<f32>> {
    let (mut model, cfg) = load_checkpoint::<B>(dir, LoadMode::EncoderOnly, device)?;
    model.bert.set_precision(precision)?;
    let s = cfg.seq_len();
    let mut out = Vec::new();
    for r in 0..n {
        let x = Tensor::<B, 2>::from_data(
            TensorData::new(values[r * s..(r + 1) * s].to_vec(), [1, s]),
            device,
        );
        let h = model.bert.forward(x, false)?.last_hidden_state;
        out.extend(host(pool(h, present, Pooling::PresentMean)?));
    }
    Ok(out)
}

fn fixture(case: &str) -> Result<(PathBuf, Vec<f32>, usize, Vec<u8>)> {
    let dir = testdata_path(&format!("fixtures/aido_cell/{case}"));
    let bytes = std::fs::read(dir.join("cases.safetensors"))
        .with_context(|| format!("{}: cases.safetensors", dir.display()))?;
    let st = safetensors::SafeTensors::deserialize(&bytes)?;
    let f32s = |name: &str| -> Result<(Vec<usize>, Vec<f32>)> {
        let t = st.tensor(name)?;
        let v = t
            .data()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        Ok((t.shape().to_vec(), v))
    };
    let (shape, values) = f32s("input_values")?;
    let (_, mask) = f32s("pool_mask")?;
    let s = shape[1];
    let n = if case.contains("3m") { 1 } else { shape[0] };
    let present = mask[..s].iter().map(|&x| x as u8).collect();
    Ok((dir, values[..n * s].to_vec(), n, present))
}

fn rel_l2(a: &[f32], b: &[f32]) -> f64 {
    let num: f64 = a
        .iter()
        .zip(b)
        .map(|(x, y)| (*x as f64 - *y as f64).powi(2))
        .sum();
    let den: f64 = b.iter().map(|y| (*y as f64).powi(2)).sum();
    (num / den.max(1e-30)).sqrt()
}

fn max_abs(a: &[f32], b: &[f32]) -> f64 {
    a.iter()
        .zip(b)
        .fold(0.0f64, |m, (x, y)| m.max((*x as f64 - *y as f64).abs()))
}

/// Parity rows and whether every bound held.
fn parity<B: Backend>(
    device: &B::Device,
    full_length: bool,
    log: &mut Log,
) -> Result<(String, bool)> {
    let mut table = String::from(
        "| fixture | f32 pooled max \\|Δ\\| vs CPU (≤ 1e-5) | bf16 pooled relative L2 vs CPU f32 (≤ 1e-2) |\n|---|---|---|\n",
    );
    let mut ok = true;
    let cases: &[&str] = if full_length {
        &["tiny_ln_nobias", "tiny_rms_bias", "aido_cell_3m_random"]
    } else {
        &["tiny_ln_nobias", "tiny_rms_bias"]
    };
    for &case in cases {
        let (dir, values, n, present) = fixture(case)?;
        let cpu = pooled::<Cpu>(
            &dir,
            &values,
            n,
            &present,
            Precision::F32,
            &Default::default(),
        )?;
        let f32_dev = pooled::<B>(&dir, &values, n, &present, Precision::F32, device)?;
        let d = max_abs(&f32_dev, &cpu);
        ok &= d <= 1e-5;
        let bf = match pooled::<B>(&dir, &values, n, &present, Precision::Bf16, device) {
            Ok(v) => {
                let r = rel_l2(&v, &cpu);
                ok &= r <= 1e-2;
                format!("{r:.2e}")
            }
            Err(e) => {
                log.line(&format!("{case}: bf16: {e}"));
                "n/a (no bf16)".into()
            }
        };
        log.line(&format!("parity {case}: f32 max |Δ| {d:.2e}, bf16 {bf}"));
        writeln!(table, "| {case} ({n} cells) | {d:.2e} | {bf} |")?;
    }
    Ok((table, ok))
}

fn forward_rows<B: Backend>(a: &Args, device: &B::Device, log: &mut Log) -> Result<String> {
    let mut table = format!(
        "| shape | precision | batch | s / batch (median of {}) | cells/s | TFLOP/s | of {} peak |\n|---|---|---|---|---|---|---|\n",
        a.iters, a.peak
    );
    for name in &a.shapes {
        let cfg = shape_config(name, a.seq)?;
        for precision in [Precision::F32, Precision::Bf16] {
            B::seed(device, 7);
            let mut model = cfg.init::<B>(false, device).bert;
            if let Err(e) = model.set_precision(precision) {
                log.line(&format!("forward {name} {precision}: {e}"));
                writeln!(table, "| {name} | {precision} | – | n/a (no bf16) | | | |")?;
                continue;
            }
            let x =
                Tensor::<B, 2>::random([a.batch, a.seq], Distribution::Uniform(0.0, 5.0), device);
            let mut times = Vec::new();
            for it in 0..=a.iters {
                let t = Instant::now();
                let h = model.forward(x.clone(), false)?.last_hidden_state;
                let v = host(h.slice([0..1, 0..1]));
                let dt = t.elapsed().as_secs_f64();
                if !v.iter().all(|x| x.is_finite()) {
                    bail!("forward {name} {precision}: non-finite output");
                }
                log.line(&format!(
                    "forward {name} {precision} batch {} iter {it}: {dt:.3} s{}",
                    a.batch,
                    if it == 0 { " (warm-up)" } else { "" }
                ));
                if it > 0 {
                    times.push(dt);
                }
            }
            let t = median(times);
            let tflops = forward_flops(&cfg, a.seq) * a.batch as f64 / t / 1e12;
            writeln!(
                table,
                "| {name} | {precision} | {} | {t:.3} | {:.2} | {tflops:.2} | {:.2}% |",
                a.batch,
                a.batch as f64 / t,
                100.0 * tflops / a.peak
            )?;
        }
    }
    Ok(table)
}

/// `(heads, head_dim)` of each shape, and the attention op's seconds at `[batch, heads, S, hd]`.
fn attention_rows<B: Backend>(
    a: &Args,
    device: &B::Device,
    log: &mut Log,
) -> Result<Vec<(String, [usize; 4], f64)>> {
    let mut rows = Vec::new();
    for name in &a.shapes {
        let cfg = shape_config(name, a.seq)?;
        let shape = [a.batch, cfg.num_attention_heads, a.seq, cfg.head_dim()];
        let r = || Tensor::<B, 4>::random(shape, Distribution::Uniform(-1.0, 1.0), device);
        let (q, k, v) = (r(), r(), r());
        let mut times = Vec::new();
        for it in 0..=a.iters {
            let t = Instant::now();
            let o = attention(q.clone(), k.clone(), v.clone());
            host(o.slice([0..1, 0..1, 0..1, 0..1]));
            let dt = t.elapsed().as_secs_f64();
            log.line(&format!("attention {name} {shape:?} iter {it}: {dt:.4} s"));
            if it > 0 {
                times.push(dt);
            }
        }
        rows.push((name.clone(), shape, median(times)));
    }
    Ok(rows)
}

/// PyTorch SDPA at `shapes` through `benches/python/sdpa_anchor.py`: `(shape, dtype) → s`.
fn sdpa_anchor(
    python: &str,
    shapes: &[[usize; 4]],
    iters: usize,
    log: &mut Log,
) -> Vec<([usize; 4], String, f64)> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/python/sdpa_anchor.py");
    let spec: Vec<String> = shapes
        .iter()
        .map(|s| format!("{},{},{},{}", s[0], s[1], s[2], s[3]))
        .collect();
    let out = Command::new(python)
        .arg(&script)
        .arg("--shapes")
        .arg(spec.join(";"))
        .arg("--iters")
        .arg(iters.to_string())
        .output();
    let mut rows = Vec::new();
    match out {
        Ok(o) => {
            for line in String::from_utf8_lossy(&o.stdout).lines() {
                log.line(&format!("sdpa anchor: {line}"));
                if let Ok(v) = serde_json::from_str::<serde_json::Value>(line) {
                    let shape: Vec<usize> = v["shape"]
                        .as_array()
                        .map(|a| {
                            a.iter()
                                .filter_map(|x| x.as_u64())
                                .map(|x| x as usize)
                                .collect()
                        })
                        .unwrap_or_default();
                    if let (Ok(s), Some(dt), Some(sec)) = (
                        <[usize; 4]>::try_from(shape),
                        v["dtype"].as_str(),
                        v["seconds"].as_f64(),
                    ) {
                        rows.push((s, dt.to_string(), sec));
                    }
                }
            }
            let err = String::from_utf8_lossy(&o.stderr);
            if !o.status.success() || !err.trim().is_empty() {
                log.line(&format!("sdpa anchor stderr: {}", err.trim()));
            }
        }
        Err(e) => log.line(&format!("sdpa anchor: cannot run {python}: {e}")),
    }
    rows
}

/// `A` is the autodiff backend (`Autodiff<device backend>`), on its default device.
/// The full 3M fixture checkpoint at S = 19,266, one cell at a time: ours in f32 and bf16, and
/// `../shared/anchors/torch_aido.py` on CUDA under bf16 autocast
/// (`benches/python/torch_aido_cuda.py`) when `--python` is given.
fn model_anchor<B: Backend>(a: &Args, device: &B::Device, log: &mut Log) -> Result<String> {
    let (dir, values, _, _) = fixture("aido_cell_3m_random")?;
    let s = values.len();
    let mut ours = Vec::new();
    for precision in [Precision::F32, Precision::Bf16] {
        let (mut model, _) = load_checkpoint::<B>(&dir, LoadMode::EncoderOnly, device)?;
        if model.bert.set_precision(precision).is_err() {
            ours.push(None);
            continue;
        }
        let mut times = Vec::new();
        for it in 0..=a.iters {
            let x = Tensor::<B, 2>::from_data(TensorData::new(values.clone(), [1, s]), device);
            let t = Instant::now();
            let h = model.bert.forward(x, false)?.last_hidden_state;
            host(h.slice([0..1, 0..1]));
            let dt = t.elapsed().as_secs_f64();
            log.line(&format!("3M fixture {precision} iter {it}: {dt:.3} s"));
            if it > 0 {
                times.push(dt);
            }
        }
        ours.push(Some(median(times)));
    }
    let torch = a.python.as_deref().and_then(|py| {
        let script =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/python/torch_aido_cuda.py");
        let o = Command::new(py)
            .arg(script)
            .arg(shared_path("anchors/torch_aido.py"))
            .arg(&dir)
            .arg(dir.join("cases.safetensors"))
            .arg("2")
            .output();
        match o {
            Ok(o) => {
                let out = String::from_utf8_lossy(&o.stdout).to_string();
                log.line(&format!(
                    "torch_aido on CUDA (bf16 autocast): {} {}",
                    out.trim(),
                    String::from_utf8_lossy(&o.stderr).trim()
                ));
                out.lines()
                    .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
                    .find_map(|v| v["s_per_cell"].as_f64())
            }
            Err(e) => {
                log.line(&format!("torch_aido anchor: cannot run {py}: {e}"));
                None
            }
        }
    });
    let fmt = |x: Option<f64>| x.map_or("–".to_string(), |x| format!("{x:.4}"));
    let ratio = match (ours[1], torch) {
        (Some(o), Some(t)) => format!("{:.2}×", o / t),
        _ => "–".into(),
    };
    Ok(format!(
        "| model | ours f32 s / cell | ours bf16 s / cell | torch_aido.py bf16 autocast s / cell (incl. warm-up) | ours bf16 / torch |\n|---|---|---|---|---|\n| 3M fixture, S = {s} | {} | {} | {} | {ratio} |\n",
        fmt(ours[0]),
        fmt(ours[1]),
        fmt(torch)
    ))
}

fn train_rows<A: AutodiffBackend>(a: &Args, log: &mut Log) -> Result<String> {
    let device: &A::Device = &Default::default();
    let name = a.shapes.last().context("no shape")?;
    let cfg = shape_config(name, a.seq)?;
    let mut table = format!(
        "| shape | precision | cells | step s (median of {}) | TFLOP/s (3× forward) | peak GPU memory in use |\n|---|---|---|---|---|---|\n",
        a.iters
    );
    for precision in [Precision::F32, Precision::Bf16] {
        A::seed(device, 11);
        let mut model = cfg.init::<A>(true, device);
        if let Err(e) = model.bert.set_precision(precision) {
            log.line(&format!("train {name} {precision}: {e}"));
            writeln!(table, "| {name} | {precision} | – | n/a (no bf16) | | |")?;
            continue;
        }
        let mut optim = AdamWConfig::new().init::<A, aido::model::AidoCell<A>>();
        let x = Tensor::<A, 2>::random(
            [a.train_batch, a.seq],
            Distribution::Uniform(0.0, 5.0),
            device,
        );
        let target = Tensor::<A, 3>::random(
            [a.train_batch, a.seq, 1],
            Distribution::Uniform(0.0, 5.0),
            device,
        );
        let probe = MemProbe::start();
        let mut times = Vec::new();
        for it in 0..=a.iters {
            let t = Instant::now();
            let h = model.bert.forward(x.clone(), false)?.last_hidden_state;
            let y = model.head(h).context("head")?;
            let loss = (y - target.clone()).powi_scalar(2).mean();
            let value = host(loss.clone().inner())[0];
            let grads = GradientsParams::from_grads(loss.backward(), &model);
            model = optim.step(1e-4, model, grads);
            host(
                model
                    .bert
                    .position_embedding
                    .weight
                    .val()
                    .inner()
                    .slice([0..1, 0..1]),
            );
            let dt = t.elapsed().as_secs_f64();
            log.line(&format!(
                "train {name} {precision} batch {} iter {it}: {dt:.3} s, loss {value:.5}{}",
                a.train_batch,
                if it == 0 { " (warm-up)" } else { "" }
            ));
            if !value.is_finite() {
                bail!("train {name} {precision}: non-finite loss");
            }
            if it > 0 {
                times.push(dt);
            }
        }
        let mem = probe.finish();
        let t = median(times);
        let tflops = 3.0 * forward_flops(&cfg, a.seq) * a.train_batch as f64 / t / 1e12;
        let mem = mem.map_or("n/a (no nvidia-smi)".to_string(), |(p, b)| {
            format!("{p} MiB ({} MiB before the run)", b)
        });
        writeln!(
            table,
            "| {name} | {precision} | {} | {t:.3} | {tflops:.2} | {mem} |",
            a.train_batch
        )?;
    }
    Ok(table)
}

fn run<B: Backend>(a: &Args, device: &B::Device, log: &mut Log) -> Result<bool> {
    let t0 = Instant::now();
    log.line(&format!(
        "gpu_check on {} ({}), S = {}, shapes {:?}",
        a.device,
        B::name(device),
        a.seq,
        a.shapes
    ));
    let (parity_table, ok) = parity::<B>(device, a.full_length, log)?;
    let forward_table = forward_rows::<B>(a, device, log)?;
    let att = attention_rows::<B>(a, device, log)?;
    let anchor = a.python.as_deref().map_or_else(Vec::new, |py| {
        sdpa_anchor(
            py,
            &att.iter().map(|r| r.1).collect::<Vec<_>>(),
            a.iters,
            log,
        )
    });
    let mut att_table = String::from(
        "| shape | [B, heads, S, hd] | ours f32 s | ours TFLOP/s | SDPA f32 s | SDPA bf16 s | ours / SDPA f32 |\n|---|---|---|---|---|---|---|\n",
    );
    for (name, shape, t) in &att {
        let flops = 4.0 * (shape[2] as f64).powi(2) * (shape[1] * shape[3] * shape[0]) as f64;
        let find = |dt: &str| {
            anchor
                .iter()
                .find(|(s, d, _)| s == shape && d == dt)
                .map(|r| r.2)
        };
        let (f, b) = (find("float32"), find("bfloat16"));
        let fmt = |x: Option<f64>| x.map_or("–".to_string(), |x| format!("{x:.4}"));
        writeln!(
            att_table,
            "| {name} | {shape:?} | {t:.4} | {:.2} | {} | {} | {} |",
            flops / t / 1e12,
            fmt(f),
            fmt(b),
            f.map_or("–".to_string(), |f| format!("{:.2}×", t / f))
        )?;
    }
    let model_table = if a.full_length {
        model_anchor::<B>(a, device, log)?
    } else {
        "(left out: --fixtures tiny)\n".to_string()
    };
    let train_table = train_rows::<Autodiff<B>>(a, log)?;
    let md = format!(
        "## gpu_check: {} ({}), S = {}, {:.0} s\n\n### Parity with the CPU backend\n\n{parity_table}\n### Forward\n\n{forward_table}\n### Attention (f32) next to PyTorch SDPA\n\n{att_table}\n### The whole model next to torch_aido.py\n\n{model_table}\n### One training step (forward, backward, AdamW)\n\n{train_table}",
        a.device,
        B::name(device),
        a.seq,
        t0.elapsed().as_secs_f64()
    );
    let path = a.out.join("gpu_check.md");
    std::fs::write(&path, &md).with_context(|| format!("writing {}", path.display()))?;
    log.line("");
    log.line(&md);
    if !ok {
        log.line("gpu_check: a parity bound failed (see above)");
    }
    Ok(ok)
}

fn main() -> ExitCode {
    let a = match parse() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("gpu_check: {e:#}");
            return ExitCode::from(2);
        }
    };
    if let Err(e) = std::fs::create_dir_all(&a.out) {
        eprintln!("gpu_check: {}: {e}", a.out.display());
        return ExitCode::from(2);
    }
    let file = match std::fs::File::create(a.out.join("gpu_check.log")) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("gpu_check: {}: {e}", a.out.display());
            return ExitCode::from(2);
        }
    };
    let mut log = Log(file);
    let result = match a.device.as_str() {
        "cpu" => run::<Cpu>(&a, &Default::default(), &mut log),
        #[cfg(feature = "wgpu")]
        "wgpu" => run::<aido::model::backend::Wgpu>(&a, &Default::default(), &mut log),
        #[cfg(feature = "cuda")]
        "cuda" => run::<aido::model::backend::Cuda>(&a, &Default::default(), &mut log),
        other => Err(anyhow::anyhow!(
            "device {other} is not compiled in (build with --features cuda or wgpu)"
        )),
    };
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            log.line(&format!("gpu_check: {e:#}"));
            ExitCode::FAILURE
        }
    }
}
