//! Timed forward of preprocessed cells through a checkpoint, the Rust side of
//! `../shared/anchors/torch_aido.py` (same arguments, same JSON fields).
//!
//! ```text
//! cargo run --release --example forward_cells -- MODEL_DIR CASES.safetensors [n_cells] [f32|bf16]
//! ```
//! `CASES.safetensors` holds `input_values [n, S]` (e.g. the parity fixture's cases file).
//! Prints one JSON line: seconds per cell (forward only, like the anchor), whole-process
//! seconds, peak RSS (`VmHWM`), and, when the file has the reference `last_hidden_state` of
//! cell 0, the max |Δ| against it. The last argument is the compute precision
//! (`aido_model::Precision`, default f32). The JSON names the attention kernel path the
//! forward took and the threads (rayon's global pool: `RAYON_NUM_THREADS`).

use std::path::PathBuf;
use std::time::Instant;

use aido::model::burn::tensor::{Tensor, TensorData};
use aido::model::load::{LoadMode, load_checkpoint};
use anyhow::{Context, Result, bail};

fn f32s(t: &safetensors::tensor::TensorView<'_>) -> Vec<f32> {
    t.data()
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect()
}

fn main() -> Result<()> {
    let start = Instant::now();
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() < 2 {
        bail!("usage: forward_cells MODEL_DIR CASES.safetensors [n_cells] [f32|bf16]");
    }
    let (dir, cases) = (PathBuf::from(&args[0]), PathBuf::from(&args[1]));
    let n_cells: usize = args.get(2).map_or(Ok(1), |s| s.parse())?;
    let device = Default::default();
    let precision: aido::model::Precision =
        args.get(3).map_or(Ok(Default::default()), |s| s.parse())?;
    let (mut model, cfg) =
        load_checkpoint::<aido::model::Cpu>(&dir, LoadMode::EncoderOnly, &device)?;
    model.bert.set_precision(precision)?;
    let bytes = std::fs::read(&cases).with_context(|| format!("reading {}", cases.display()))?;
    let st = safetensors::SafeTensors::deserialize(&bytes)?;
    let x = st.tensor("input_values")?;
    let (n, s) = (x.shape()[0], x.shape()[1]);
    if n_cells > n {
        bail!("{} holds {n} cells", cases.display());
    }
    let values = f32s(&x);
    let reference = st.tensor("last_hidden_state").ok().map(|t| f32s(&t));
    let t0 = Instant::now();
    let mut first: Vec<f32> = Vec::new();
    for i in 0..n_cells {
        let row = values[i * s..(i + 1) * s].to_vec();
        let input = Tensor::<aido::model::Cpu, 2>::from_data(TensorData::new(row, [1, s]), &device);
        let h = model.bert.forward(input, false)?.last_hidden_state;
        let v: Vec<f32> = h
            .into_data()
            .into_vec()
            .map_err(|e| anyhow::anyhow!("{e:?}"))?;
        if i == 0 {
            first = v;
        }
    }
    let dt = t0.elapsed().as_secs_f64() / n_cells as f64;
    // Which attention kernels the forward took (the counters of aido_model::attention).
    let attention_kernel = if aido::model::attention::cpu_bf16_kernel_runs() > 0 {
        aido::kernels::KernelPath::detect_bf16().to_string()
    } else if aido::model::attention::cpu_kernel_runs() > 0 {
        aido::kernels::KernelPath::detect().to_string()
    } else {
        "generic".to_string()
    };
    let diff = reference.map(|r| {
        r.iter()
            .zip(&first)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max)
    });
    println!(
        "{}",
        serde_json::json!({
            "s_per_cell": (dt * 1000.0).round() / 1000.0,
            "process_s": (start.elapsed().as_secs_f64() * 1000.0).round() / 1000.0,
            "peak_rss_gb": aido::process::peak_rss_gb().map(|g| (g * 1000.0).round() / 1000.0),
            "seq": s, "hidden": cfg.hidden_size, "layers": cfg.num_hidden_layers,
            "heads": cfg.num_attention_heads, "precision": precision.as_str(),
            "attention_kernel": attention_kernel, "threads": rayon::current_num_threads(),
            "last_hidden_first_row_head": &first[..4.min(first.len())],
            "max_abs_diff_vs_reference_cell0": diff,
        })
    );
    Ok(())
}
