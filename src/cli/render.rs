//! Rendering what the pipelines report: errors with flag names, progress bars, notes.

use indicatif::{ProgressBar, ProgressStyle};

/// A pipeline error as the CLI shows it: options named by their flags, flag hints added.
pub(crate) fn pipeline_error(e: aido_pipeline::PipelineError) -> anyhow::Error {
    use aido_pipeline::PipelineError as P;
    match e {
        P::Option { option, detail } => {
            anyhow::anyhow!("--{}: {}", option.replace('_', "-"), flags_named(&detail))
        }
        e @ P::NoGeneList { .. } => anyhow::anyhow!("{e} (--genes GENES.tsv)"),
        e => e.into(),
    }
}

/// A library text with its option names in backticks (`` `resume` ``) as flags (`--resume`).
pub(crate) fn flags_named(text: &str) -> String {
    let parts: Vec<&str> = text.split('`').collect();
    let mut out = String::with_capacity(text.len());
    for (i, p) in parts.iter().enumerate() {
        let quoted = i % 2 == 1;
        let closed = i + 1 < parts.len();
        if quoted
            && closed
            && !p.is_empty()
            && p.chars().all(|c| c.is_ascii_lowercase() || c == '_')
        {
            out.push_str("--");
            out.push_str(&p.replace('_', "-"));
        } else if quoted {
            out.push('`');
            out.push_str(p);
            if closed {
                out.push('`');
            }
        } else {
            out.push_str(p);
        }
    }
    out
}

/// Renders a pipeline's events: the alignment report and the progress bar (with `verbose`),
/// notes always (on stderr).
pub(crate) struct EventPrinter {
    verbose: bool,
    stage: &'static str,
    bar: Option<ProgressBar>,
    /// Whether the progress bar shows its ETA yet (only once a batch has finished: before,
    /// indicatif's estimate is "0s").
    eta: bool,
}

impl EventPrinter {
    pub(crate) fn new(verbose: bool, stage: &'static str) -> Self {
        EventPrinter {
            verbose: verbose && !super::quiet(),
            stage,
            bar: None,
            eta: false,
        }
    }

    pub(crate) fn show(&mut self, e: aido_pipeline::Event) {
        use aido_pipeline::Event;
        match e {
            Event::Aligned(r) if self.verbose => eprintln!("{r}"),
            Event::Info(line) if self.verbose => match &self.bar {
                Some(b) => b.suspend(|| outln!("{line}")),
                None => outln!("{line}"),
            },
            Event::Note(n) => {
                let n = flags_named(&n);
                match &self.bar {
                    Some(b) => b.suspend(|| eprintln!("{n}")),
                    None => eprintln!("{n}"),
                }
            }
            Event::Progress { done, total, stage } if self.verbose => {
                let bar = self
                    .bar
                    .get_or_insert_with(|| progress(total as u64, stage));
                if done > 0 && !self.eta {
                    self.eta = true;
                    bar.reset_eta();
                    if let Ok(style) = ProgressStyle::with_template(CELLS_ETA) {
                        bar.set_style(style.progress_chars("=> "));
                    }
                }
                bar.set_position(done as u64);
            }
            Event::Download {
                model,
                file,
                done,
                total,
            } if self.verbose => {
                let stage = self.stage;
                let bar = self.bar.get_or_insert_with(|| {
                    let t = "{spinner} {msg} [{bar:30}] {bytes}/{total_bytes} ({bytes_per_sec}, eta {eta})";
                    bar(true, total, t)
                });
                bar.set_length(total);
                bar.set_message(format!("{stage} {model}: {file}"));
                bar.set_position(done);
            }
            _ => {}
        }
    }
}

impl Drop for EventPrinter {
    fn drop(&mut self) {
        if let Some(b) = self.bar.take() {
            b.finish_and_clear();
        }
    }
}

/// A progress bar of `len` steps drawn with `template` (indicatif's), or a hidden one when
/// `shown` is false.
pub(crate) fn bar(shown: bool, len: u64, template: &str) -> ProgressBar {
    if !shown || super::quiet() {
        return ProgressBar::hidden();
    }
    let pb = ProgressBar::new(len);
    if let Ok(style) = ProgressStyle::with_template(template) {
        pb.set_style(style.progress_chars("=> "));
    }
    pb
}

/// A cells bar once a batch has finished, with its rate and ETA.
const CELLS_ETA: &str = "{spinner} {msg} [{bar:30}] {pos}/{len} cells ({per_sec}, eta {eta})";

/// A cells bar before the first batch has finished (no rate or ETA to show yet).
fn progress(n: u64, what: &str) -> ProgressBar {
    let pb = bar(
        true,
        n,
        "{spinner} {msg} [{bar:30}] {pos}/{len} cells (first batch…)",
    );
    pb.set_message(what.to_string());
    pb
}

/// Opens `--model` with `--genes`, showing a download's progress (when `verbose`).
pub(crate) fn open_model(
    model: &aido_pipeline::ModelSource,
    genes: &Option<std::path::PathBuf>,
    verbose: bool,
) -> anyhow::Result<aido_pipeline::Pretrained> {
    let mut events = EventPrinter::new(verbose, "download");
    let options = aido_pipeline::OpenOptions {
        genes: genes.clone(),
        hub: None,
    };
    aido_pipeline::Pretrained::open(model, &options, &mut |e| events.show(e))
        .map_err(pipeline_error)
}
