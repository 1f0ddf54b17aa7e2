//! `aido perturb benchmark`: GEARS and every baseline fitted and scored on repeated splits of
//! one screen, summarised as a reviewer reads them (mean, sd, 95 % interval per method, test
//! group and metric). Each split is one [`perturb_fit_file`] run in `OUT/split_SEED/`; a split
//! already done is read back, not refitted.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use aido_tasks::perturb_fit::{PerturbData, PerturbDataOptions};
use aido_tokenize::{ReadOptions, open_source};
use burn::tensor::backend::AutodiffBackend;
use serde::Serialize;
use serde_json::{Value, json};

use crate::Event;
use crate::error::{PipelineError, Result};
use crate::obs::write_json;
use crate::perturb::{PerturbFitOptions, make_split, perturb_fit_file};
use crate::pretrained::Pretrained;

/// How the conditions are split, per repetition.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum BenchmarkProtocol {
    /// GEARS's split (`PerturbFitOptions::split`, by default `simulation`) at seeds
    /// `seed..seed + splits`; groups `unseen_single`, `combo_seen0/1/2`.
    Gears,
    /// Ahlmann-Eltze et al. (2025): all singles and half of the doubles train, the other half
    /// of the doubles test; group `double`.
    Double,
}

impl std::str::FromStr for BenchmarkProtocol {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "gears" => Ok(Self::Gears),
            "double" => Ok(Self::Double),
            o => Err(format!("'{o}': use gears or double")),
        }
    }
}

/// The methods a benchmark can report.
pub const METHODS: [&str; 8] = [
    "model",
    "linear",
    "linear_encoder",
    "linear_external",
    "additive",
    "mean_delta",
    "matching_mean",
    "no_change",
];

/// The metrics of a benchmark, as in `report.json`'s groups.
pub const METRICS: [&str; 10] = [
    "mse_top20_de",
    "pearson_delta",
    "l2_top1000",
    "pearson_delta_top1000",
    "pearson_delta_centroid",
    "pearson_delta_centroid_top20_de",
    "centroid_accuracy",
    "overlap_at_N",
    "discrimination_score_l1",
    "mae",
];

/// What to run.
#[derive(Debug, Clone)]
pub struct PerturbBenchmarkOptions {
    /// Every `perturb fit` setting; `fit.seed` is the first split's seed.
    pub fit: PerturbFitOptions,
    /// Repetitions (default 5).
    pub splits: usize,
    /// The protocol (default GEARS's).
    pub protocol: BenchmarkProtocol,
    /// Methods to report (`None`: every one that applies).
    pub methods: Option<Vec<String>>,
}

impl Default for PerturbBenchmarkOptions {
    fn default() -> Self {
        PerturbBenchmarkOptions {
            fit: PerturbFitOptions::default(),
            splits: 5,
            protocol: BenchmarkProtocol::Gears,
            methods: None,
        }
    }
}

/// A metric over the splits.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Summary {
    /// Mean over the splits.
    pub mean: f64,
    /// Standard deviation (ddof 1; 0 for one split).
    pub sd: f64,
    /// `mean ± t(0.975, n − 1) · sd / √n` (the point itself for one split).
    pub ci95: [f64; 2],
    /// Splits with a value.
    pub n: usize,
}

/// Student's t 0.975 quantile with `df` degrees of freedom (table to 30, then `1.96 + 2.5/df`,
/// within 0.002 of the exact value).
fn t975(df: usize) -> f64 {
    const T: [f64; 30] = [
        12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160,
        2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056,
        2.052, 2.048, 2.045, 2.042,
    ];
    match df {
        0 => f64::NAN,
        d if d <= 30 => T[d - 1],
        d => 1.96 + 2.5 / d as f64,
    }
}

/// The [`Summary`] of some values (NaN and missing values left out).
pub fn summarize(values: &[f64]) -> Option<Summary> {
    let v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    let n = v.len();
    if n == 0 {
        return None;
    }
    let mean = v.iter().sum::<f64>() / n as f64;
    if n == 1 {
        return Some(Summary {
            mean,
            sd: 0.0,
            ci95: [mean, mean],
            n,
        });
    }
    let sd = (v.iter().map(|x| (x - mean) * (x - mean)).sum::<f64>() / (n - 1) as f64).sqrt();
    let half = t975(n - 1) * sd / (n as f64).sqrt();
    Some(Summary {
        mean,
        sd,
        ci95: [mean - half, mean + half],
        n,
    })
}

/// `OUT/benchmark.json`.
#[derive(Debug, Clone, Serialize)]
pub struct BenchmarkReport {
    /// Method → test group → metric → summary over the splits.
    pub methods: BTreeMap<String, BTreeMap<String, BTreeMap<String, Summary>>>,
    /// Per split: its seed, folder, whether it was fitted now or read back, its seconds.
    pub splits: Vec<Value>,
    /// The settings.
    pub settings: Value,
}

impl std::fmt::Display for BenchmarkReport {
    /// Per group, each method's mean MSE on the top-20 DE genes, L2 on the top 1,000 genes and
    /// cell-eval's mae, with their intervals.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let groups: std::collections::BTreeSet<&String> =
            self.methods.values().flat_map(|g| g.keys()).collect();
        for g in groups {
            writeln!(
                f,
                "{g}: mse_top20_de | l2_top1000 | mae (mean [95% interval])"
            )?;
            for (m, per) in &self.methods {
                let Some(s) = per.get(g) else { continue };
                let cell = |k: &str| {
                    s.get(k).map_or("–".to_string(), |v| {
                        format!("{:.4} [{:.4}, {:.4}]", v.mean, v.ci95[0], v.ci95[1])
                    })
                };
                writeln!(
                    f,
                    "  {m:<16} {} | {} | {}",
                    cell("mse_top20_de"),
                    cell("l2_top1000"),
                    cell("mae")
                )?;
            }
        }
        Ok(())
    }
}

/// The report of a split fitted before with these settings (split, seed, training settings,
/// hidden size, gene embeddings), `None` when there is none; an error when the folder holds a
/// fit with other settings.
fn done_before(
    report_path: &Path,
    fit: &PerturbFitOptions,
    seed: u64,
    with_backbone: bool,
) -> Result<Option<Value>> {
    let Ok(text) = std::fs::read_to_string(report_path) else {
        return Ok(None);
    };
    let r: Value = serde_json::from_str(&text)
        .map_err(|e| PipelineError::input(report_path.display(), e.to_string()))?;
    let mut o = fit.clone();
    o.seed = seed;
    let want = json!({
        "split": o.split,
        "seed": seed,
        "fit": crate::perturb::fit_config(&o),
        "hidden": o.hidden,
        "gene_embeddings": if with_backbone { "backbone" } else { "learned" },
    });
    let s = &r["settings"];
    let differs: Vec<&str> = ["split", "seed", "fit", "hidden", "gene_embeddings"]
        .into_iter()
        .filter(|k| s[*k] != want[*k])
        .collect();
    if differs.is_empty() {
        Ok(Some(r))
    } else {
        Err(PipelineError::Output {
            option: "out",
            path: report_path.to_path_buf(),
            detail: format!(
                "holds a fit with other settings ({}: {} there, {} now); use another `out` folder or remove it",
                differs.join(", "),
                differs
                    .iter()
                    .map(|k| s[*k].to_string())
                    .collect::<Vec<_>>()
                    .join(" / "),
                differs
                    .iter()
                    .map(|k| want[*k].to_string())
                    .collect::<Vec<_>>()
                    .join(" / ")
            ),
        })
    }
}

/// Runs the benchmark on a screen file and writes `OUT/benchmark.json`, `benchmark.tsv` (one
/// row per method, group and metric) and `benchmark.png`. What `aido perturb benchmark` runs.
pub fn perturb_benchmark_file<B: AutodiffBackend>(
    input: &Path,
    read: &ReadOptions,
    out: &Path,
    backbone: Option<&Pretrained>,
    options: &PerturbBenchmarkOptions,
    device: &B::Device,
    on_event: &mut dyn FnMut(Event),
) -> Result<BenchmarkReport> {
    let t0 = Instant::now();
    crate::output::check_out_folder(out, "out")?;
    if options.splits == 0 {
        return Err(PipelineError::option("splits", "must be at least 1"));
    }
    let available: Vec<&str> = METHODS
        .iter()
        .copied()
        .filter(|m| match *m {
            "linear_encoder" => backbone.is_some(),
            "linear_external" => options.fit.perturbation_embedding.is_some(),
            _ => true,
        })
        .collect();
    let methods: Vec<String> = match &options.methods {
        None => available.iter().map(|m| m.to_string()).collect(),
        Some(list) => {
            for m in list {
                if !METHODS.contains(&m.as_str()) {
                    return Err(PipelineError::option(
                        "methods",
                        format!("unknown method '{m}' (methods: {})", METHODS.join(", ")),
                    ));
                }
                if !available.contains(&m.as_str()) {
                    return Err(PipelineError::option(
                        "methods",
                        format!(
                            "'{m}' needs {}",
                            if m == "linear_encoder" {
                                "an encoder (`model`)"
                            } else {
                                "a perturbation embedding (`perturbation_embedding`)"
                            }
                        ),
                    ));
                }
            }
            list.clone()
        }
    };
    let mut fit = options.fit.clone();
    if options.protocol == BenchmarkProtocol::Double {
        fit.split = "double".into();
    }
    // Every split is drawn before anything is fitted: a screen too small for the protocol is
    // refused first.
    let seeds: Vec<u64> = (0..options.splits as u64).map(|i| fit.seed + i).collect();
    {
        let mut source = open_source(input, read)?;
        let obs = source.obs().clone();
        let name = input.display().to_string();
        let data = PerturbData::from_source(
            source.as_mut(),
            &PerturbDataOptions {
                condition_column: fit.condition_column.clone(),
                control_value: fit.control_value.clone(),
                min_cells: fit.min_cells,
            },
        )
        .map_err(|e| PipelineError::input(&name, format!("reading the screen: {e}")))?;
        let singles = data.conditions.iter().filter(|c| c.is_single()).count();
        let doubles = data.conditions.iter().filter(|c| c.is_double()).count();
        for &seed in &seeds {
            let mut o = fit.clone();
            o.seed = seed;
            let split = make_split(&o, &data, &obs, &name)?;
            use aido_tasks::perturb::SplitPart;
            let (tr, te) = (
                split.conditions(SplitPart::Train).len(),
                split.conditions(SplitPart::Test).len(),
            );
            if te == 0 || tr < 2 {
                return Err(PipelineError::input(
                    &name,
                    format!(
                        "split {} at seed {seed} gives {tr} training and {te} test conditions: the screen ({singles} singles, {doubles} doubles) has too few conditions for the {:?} protocol",
                        o.split, options.protocol
                    ),
                ));
            }
        }
    }
    // A split folder holding a fit with other settings is refused before anything is fitted.
    for &seed in &seeds {
        done_before(
            &out.join(format!("split_{seed}")).join("report.json"),
            &fit,
            seed,
            backbone.is_some(),
        )?;
    }
    std::fs::create_dir_all(out).map_err(PipelineError::io(out))?;
    let mut per_split: Vec<Value> = Vec::new();
    let mut reports: Vec<Value> = Vec::new();
    for (i, &seed) in seeds.iter().enumerate() {
        let dir: PathBuf = out.join(format!("split_{seed}"));
        let report_path = dir.join("report.json");
        let ts = Instant::now();
        let existing = done_before(&report_path, &fit, seed, backbone.is_some())?;
        let (report, fitted) = match existing {
            Some(r) => {
                on_event(Event::Info(format!(
                    "split {}/{} (seed {seed}): done before, read from {}",
                    i + 1,
                    seeds.len(),
                    report_path.display()
                )));
                (r, false)
            }
            None => {
                on_event(Event::Info(format!(
                    "split {}/{} (seed {seed}): fitting into {}",
                    i + 1,
                    seeds.len(),
                    dir.display()
                )));
                let mut o = fit.clone();
                o.seed = seed;
                perturb_fit_file::<B>(input, read, &dir, backbone, &o, device, on_event)?;
                // read back as written, so that a resumed benchmark sums the same numbers
                let text = std::fs::read_to_string(&report_path)
                    .map_err(PipelineError::io(&report_path))?;
                let r = serde_json::from_str::<Value>(&text)
                    .map_err(|e| PipelineError::input(report_path.display(), e.to_string()))?;
                (r, true)
            }
        };
        per_split.push(json!({
            "seed": seed,
            "folder": dir.display().to_string(),
            "fitted_now": fitted,
            "seconds": ts.elapsed().as_secs_f64(),
        }));
        reports.push(report);
    }
    // method → group → metric → values over the splits
    let group_name = |g: &str| -> String {
        match (options.protocol, g) {
            (BenchmarkProtocol::Double, g) if g.starts_with("combo_seen") => "double".into(),
            (BenchmarkProtocol::Double, _) => "single".into(),
            (BenchmarkProtocol::Gears, g) => g.to_string(),
        }
    };
    let mut values: BTreeMap<String, BTreeMap<String, BTreeMap<String, Vec<f64>>>> =
        BTreeMap::new();
    for r in &reports {
        let Some(groups) = r["groups"].as_object() else {
            continue;
        };
        for (g, per) in groups {
            for m in &methods {
                let Some(s) = per.get(m) else { continue };
                for k in METRICS {
                    let v = s[k].as_f64().unwrap_or(f64::NAN);
                    values
                        .entry(m.clone())
                        .or_default()
                        .entry(group_name(g))
                        .or_default()
                        .entry(k.to_string())
                        .or_default()
                        .push(v);
                }
            }
        }
    }
    let summaries: BTreeMap<String, BTreeMap<String, BTreeMap<String, Summary>>> = values
        .iter()
        .map(|(m, per)| {
            (
                m.clone(),
                per.iter()
                    .map(|(g, ks)| {
                        (
                            g.clone(),
                            ks.iter()
                                .filter_map(|(k, v)| summarize(v).map(|s| (k.clone(), s)))
                                .collect(),
                        )
                    })
                    .collect(),
            )
        })
        .collect();
    let report = BenchmarkReport {
        methods: summaries,
        splits: per_split,
        settings: json!({
            "input": input.display().to_string(),
            "protocol": options.protocol,
            "split": fit.split,
            "splits": options.splits,
            "seeds": seeds,
            "methods": methods,
            "metrics": METRICS,
            "interval": "mean ± t(0.975, n−1)·sd/√n over the splits",
            "fit": {
                "epochs": fit.epochs, "lr": fit.lr, "lr_decay": fit.lr_decay, "batch_size": fit.batch_size,
                "hidden": fit.hidden, "pool": fit.pool, "linear_k": fit.linear.k, "linear_ridge": fit.linear.ridge,
                "perturbation_embedding": fit.perturbation_embedding.as_ref().map(|p| p.display().to_string()),
                "backbone": backbone.map(|b| b.name()),
            },
            "seconds": t0.elapsed().as_secs_f64(),
        }),
    };
    write_json(&out.join("benchmark.json"), &report)?;
    let mut tsv = String::from("method\tgroup\tmetric\tmean\tsd\tci95_low\tci95_high\tn\n");
    for (m, per) in &report.methods {
        for (g, ks) in per {
            for (k, s) in ks {
                tsv.push_str(&format!(
                    "{m}\t{g}\t{k}\t{}\t{}\t{}\t{}\t{}\n",
                    s.mean, s.sd, s.ci95[0], s.ci95[1], s.n
                ));
            }
        }
    }
    aido_tokenize::io_util::write_bytes_atomically(&out.join("benchmark.tsv"), tsv.as_bytes())?;
    let groups: std::collections::BTreeSet<String> = report
        .methods
        .values()
        .flat_map(|g| g.keys().cloned())
        .collect();
    let mut panels = Vec::new();
    for g in &groups {
        for k in [
            "overlap_at_N",
            "discrimination_score_l1",
            "mae",
            "l2_top1000",
        ] {
            let (mut labels, mut vals, mut ints) = (Vec::new(), Vec::new(), Vec::new());
            // every method in every panel (same place, same colour); a method that does not
            // apply to a group (additive on singles) is left blank
            for m in &methods {
                let s = report
                    .methods
                    .get(m)
                    .and_then(|p| p.get(g))
                    .and_then(|p| p.get(k));
                labels.push(m.clone());
                vals.push(s.map_or(f64::NAN, |s| s.mean));
                ints.push(s.map_or((f64::NAN, f64::NAN), |s| (s.ci95[0], s.ci95[1])));
            }
            panels.push(aido_eval::plot::IntervalPanel {
                title: format!("{g}: {k}"),
                labels,
                values: vals,
                intervals: ints,
            });
        }
    }
    aido_eval::plot::interval_panels_png(
        &out.join("benchmark.png"),
        &format!(
            "{} split{} ({} protocol): mean and 95 % interval per method",
            options.splits,
            if options.splits == 1 { "" } else { "s" },
            match options.protocol {
                BenchmarkProtocol::Gears => "GEARS",
                BenchmarkProtocol::Double => "double",
            }
        ),
        &panels,
        4,
    )?;
    Ok(report)
}
