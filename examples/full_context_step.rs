//! One full-context training step of an AIDO.Cell checkpoint on CPU: forward + backward + AdamW
//! on the first cell of a file, with the masked-value regression head.
//!
//! ```text
//! cargo run --release --example full_context_step -- --model DIR --input FILE --genes GENES.tsv
//!     [--mask-seed 0] [--checkpointing] [--lr 1e-4] [--precision f32|bf16]
//! ```
//! Prints one JSON line: `seconds` (the step: forward, loss, backward, optimizer update),
//! `loss` (masked MSE before the update), the sequence length, how many positions were masked,
//! and the process's peak RSS. Attention runs through `aido_model::attention`, whose backward
//! recomputes scores tile by tile, so no `S × S` matrix is stored at S = 19,266.
//!
//! The example is the read-depth-aware one of `aido-rda` with its default configuration
//! (downsampling drawn with probability 0.5, 30% / 3% masking, loss = masked MSE against the
//! raw high-depth profile), seeded by `--mask-seed`. A checkpoint without a `cls.*` head gets a
//! freshly initialized one (reported as `"head": "random-init"`).

use std::path::PathBuf;
use std::time::Instant;

use aido::model::burn::backend::Autodiff;
use aido::model::burn::backend::autodiff::checkpoint::strategy::BalancedCheckpointing;
use aido::model::burn::optim::{AdamWConfig, GradientsParams, Optimizer};
use aido::model::burn::tensor::backend::AutodiffBackend;
use aido::model::load::{LoadMode, load_checkpoint};
use aido::model::{AidoCell, Cpu, ModelError};
use aido::rda::{RdaConfig, RdaSampler, masked_mse};
use aido::tokenize::{GeneVocab, ReadOptions, TokenizeOptions, Tokenizer, open_source};
use anyhow::{Context, Result, bail};

struct Args {
    model: PathBuf,
    input: PathBuf,
    genes: PathBuf,
    mask_seed: u64,
    checkpointing: bool,
    lr: f64,
    precision: aido::model::Precision,
}

fn parse() -> Result<Args> {
    let mut it = std::env::args().skip(1);
    let (mut model, mut input, mut genes) = (None, None, None);
    let (mut mask_seed, mut checkpointing, mut lr) = (0u64, false, 1e-4f64);
    let mut precision = aido::model::Precision::F32;
    while let Some(a) = it.next() {
        let mut val = || it.next().with_context(|| format!("{a} needs a value"));
        match a.as_str() {
            "--model" => model = Some(PathBuf::from(val()?)),
            "--input" => input = Some(PathBuf::from(val()?)),
            "--genes" => genes = Some(PathBuf::from(val()?)),
            "--mask-seed" => mask_seed = val()?.parse()?,
            "--lr" => lr = val()?.parse()?,
            "--checkpointing" => checkpointing = true,
            "--precision" => precision = val()?.parse()?,
            o => bail!("unknown argument {o}"),
        }
    }
    let usage = "usage: full_context_step --model DIR --input FILE --genes GENES.tsv [--mask-seed N] [--checkpointing] [--lr LR] [--precision f32|bf16]";
    Ok(Args {
        model: model.context(usage)?,
        input: input.context(usage)?,
        genes: genes.context(usage)?,
        mask_seed,
        checkpointing,
        lr,
        precision,
    })
}

/// The checkpoint with its head, or with a fresh head when it has none.
fn load<B: AutodiffBackend>(a: &Args, device: &B::Device) -> Result<(AidoCell<B>, bool)> {
    match load_checkpoint::<B>(&a.model, LoadMode::Full, device) {
        Ok((m, _)) => Ok((m, true)),
        Err(ModelError::MissingKey { key, .. }) if key.starts_with("cls.") => {
            let (mut m, cfg) = load_checkpoint::<B>(&a.model, LoadMode::EncoderOnly, device)?;
            m.cls = cfg.init::<B>(true, device).cls;
            Ok((m, false))
        }
        Err(e) => Err(e.into()),
    }
}

fn step<B: AutodiffBackend>(a: &Args) -> Result<serde_json::Value> {
    let device = B::Device::default();
    let (mut model, pretrained_head) = load::<B>(a, &device)?;
    model.bert.set_precision(a.precision)?;
    // The first cell of the file: its aligned raw counts.
    let vocab = GeneVocab::from_tsv(&a.genes)?;
    let mut source = open_source(&a.input, &ReadOptions::default())?;
    let mut tok = Tokenizer::new(source.as_mut(), &vocab, TokenizeOptions::default())?;
    let batch = tok
        .next_batch(1)?
        .with_context(|| format!("{} has no cells", a.input.display()))?;
    let sampler = RdaSampler::new(RdaConfig::default(), a.mask_seed, tok.alignment().present())?;
    let example = sampler.batch(0, &batch)?;
    let (x, target, w) = example.tensors::<B>(&device);
    let mut optim = AdamWConfig::new()
        .with_beta_1(0.9)
        .with_beta_2(0.95)
        .with_weight_decay(0.01)
        .with_epsilon(1e-8)
        .init::<B, AidoCell<B>>();

    let t0 = Instant::now();
    let h = model.bert.forward(x, false)?.last_hidden_state;
    let pred = model.head(h).context("internal: model without head")?;
    let loss = masked_mse(pred, target, w, example.n_masked);
    let loss_value: f32 = loss
        .clone()
        .into_data()
        .convert::<f32>()
        .into_vec::<f32>()
        .map_err(|e| anyhow::anyhow!("{e:?}"))?[0];
    if !loss_value.is_finite() {
        bail!("non-finite loss {loss_value}");
    }
    let grads = GradientsParams::from_grads(loss.backward(), &model);
    let model = optim.step(a.lr, model, grads);
    // Make sure the update has run (backends may be lazy) before stopping the clock.
    let _ = model
        .bert
        .position_embedding
        .weight
        .val()
        .slice([0..1, 0..1])
        .into_data();
    let seconds = t0.elapsed().as_secs_f64();
    Ok(serde_json::json!({
        "seconds": (seconds * 1000.0).round() / 1000.0,
        "loss": loss_value,
        "seq": example.seq,
        "masked": example.n_masked,
        "downsampled": example.n_downsampled == 1,
        "checkpointing": a.checkpointing,
        "precision": a.precision.as_str(),
        "bf16_attention_kernel_calls": aido::model::attention::cpu_bf16_kernel_runs(),
        "head": if pretrained_head { "checkpoint" } else { "random-init" },
        "peak_rss_gb": aido::process::peak_rss_gb().map(|g| (g * 1000.0).round() / 1000.0),
    }))
}

fn main() -> Result<()> {
    let a = parse()?;
    let out = if a.checkpointing {
        step::<Autodiff<Cpu, BalancedCheckpointing>>(&a)?
    } else {
        step::<Autodiff<Cpu>>(&a)?
    };
    println!("{out}");
    Ok(())
}
