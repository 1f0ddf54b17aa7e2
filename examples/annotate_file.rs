//! Annotate a file in one call per step: fine-tune MODEL on TRAIN's labels with the default
//! (the paper's) settings, label TEST's cells, write OUT = TEST plus the predictions, and print
//! the macro-F1 of the predictions against TEST's own labels. The fine-tuning run (report,
//! confusion matrix, classifier) is kept beside OUT, in `OUT.finetune/`.
//!
//! ```sh
//! cargo run --release --example annotate_file -- MODEL TRAIN.h5ad TEST.h5ad LABEL_COLUMN OUT.h5ad
//! ```
//! MODEL is a checkpoint folder or a Hugging Face id (e.g. `genbio-ai/AIDO.Cell-3M`).

use std::path::Path;

use aido_model::Cpu;
use aido_model::burn::backend::Autodiff;
use aido_pipeline::annotate::{FinetuneOptions, PredictOptions, finetune_file, predict_file};
use aido_pipeline::cluster::{EvaluateOptions, evaluate};
use aido_pipeline::{OpenOptions, Pretrained, ignore_events};
use aido_tokenize::ReadOptions;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [model, train, test, label, out] = args.as_slice() else {
        return Err("usage: annotate_file MODEL TRAIN.h5ad TEST.h5ad LABEL_COLUMN OUT.h5ad".into());
    };
    let (train, test, out) = (Path::new(train), Path::new(test), Path::new(out));
    let run = out.with_extension("finetune");
    let device = Default::default();
    let read = ReadOptions::default();
    let model = Pretrained::open_str(model, &OpenOptions::default(), &mut ignore_events)?;
    let f = FinetuneOptions::default();
    let e = &mut ignore_events;
    let r = finetune_file::<Autodiff<Cpu>>(&model, train, &read, label, &run, &f, &device, e)?;
    println!(
        "fine-tuned: best epoch {}, held-out macro-F1 {:.4}",
        r.best_epoch, r.test.macro_f1
    );
    let clf = run.join("classifier");
    let p = PredictOptions::default();
    predict_file::<Cpu>(&clf, test, &read, out, &p, &device, &mut ignore_events)?;
    let obs = aido_tokenize::h5ad::read_obs(out)?;
    let options = EvaluateOptions {
        label_column: label.clone(),
        prediction_column: Some("aido_cell_type".into()),
        ..EvaluateOptions::default()
    };
    let scores = evaluate(&obs, None, &out.display().to_string(), &options)?;
    let f1 = scores.metrics["macro_f1"].as_f64().ok_or("no macro-F1")?;
    println!("wrote {}", out.display());
    println!("macro-F1 {f1:.4}");
    Ok(())
}
