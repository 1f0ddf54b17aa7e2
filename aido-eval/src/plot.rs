//! PNG figures people paste into a talk: a UMAP scatter coloured by a label with its legend,
//! and a confusion-matrix heatmap. Drawn with `plotters` into a memory buffer and encoded with
//! `png`; text uses the embedded DejaVu Sans (Bitstream Vera licence, kept in
//! `assets/DejaVuSans-LICENSE.txt`), so no system font is needed. Files are written under a
//! temporary name and renamed.

use std::path::Path;
use std::sync::Once;

use plotters::prelude::*;
use plotters::style::FontStyle;

use crate::error::{EvalError, Result};
use crate::labels::Labels;
use crate::metrics::classify::Confusion;

static FONT: &[u8] = include_bytes!("../assets/DejaVuSans.ttf");
static REGISTER: Once = Once::new();

fn font_ready() -> Result<()> {
    let mut ok = true;
    REGISTER.call_once(|| {
        ok = plotters::style::register_font("sans-serif", FontStyle::Normal, FONT).is_ok();
    });
    if ok {
        Ok(())
    } else {
        Err(EvalError::Numerics("the embedded font did not load".into()))
    }
}

fn err(path: &Path, e: impl std::fmt::Display) -> EvalError {
    EvalError::Io {
        path: path.to_path_buf(),
        detail: format!("drawing the figure: {e}"),
    }
}

fn write_png(path: &Path, rgb: &[u8], w: u32, h: u32) -> Result<()> {
    let io = |e: &dyn std::fmt::Display| EvalError::Io {
        path: path.to_path_buf(),
        detail: e.to_string(),
    };
    let mut name = path
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_default();
    name.push(".tmp");
    let tmp = path.with_file_name(name);
    {
        let file = std::fs::File::create(&tmp).map_err(|e| io(&e))?;
        let mut enc = png::Encoder::new(std::io::BufWriter::new(file), w, h);
        enc.set_color(png::ColorType::Rgb);
        enc.set_depth(png::BitDepth::Eight);
        let res = enc
            .write_header()
            .and_then(|mut wr| wr.write_image_data(rgb).and_then(|()| wr.finish()));
        if let Err(e) = res {
            let _ = std::fs::remove_file(&tmp);
            return Err(io(&e));
        }
    }
    std::fs::rename(&tmp, path).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        io(&e)
    })
}

/// A 2-D scatter (e.g. `X_umap`) coloured by `groups` in scanpy's default colours for that
/// many categories ([`crate::palettes::scanpy_colors`]), with a legend of the groups in
/// category order (their cell counts beside them) to the right, axes labelled `{axis}1` /
/// `{axis}2`.
pub fn scatter_png(
    path: &Path,
    coords: &[[f32; 2]],
    groups: &Labels,
    title: &str,
    axis: &str,
) -> Result<()> {
    let colours = crate::palettes::scanpy_colors(groups.names.len());
    scatter_png_coloured(path, coords, groups, &colours, title, axis)
}

/// [`scatter_png`] with one colour per category (`#rrggbb`, e.g. the file's
/// `uns["<key>_colors"]`); a colour that does not parse, or a missing one, is grey.
pub fn scatter_png_coloured(
    path: &Path,
    coords: &[[f32; 2]],
    groups: &Labels,
    colours: &[String],
    title: &str,
    axis: &str,
) -> Result<()> {
    font_ready()?;
    let colour = |k: usize| {
        let (r, g, b) = colours
            .get(k)
            .and_then(|c| crate::palettes::parse_hex(c))
            .unwrap_or((128, 128, 128));
        RGBColor(r, g, b)
    };
    if coords.len() != groups.len() {
        return Err(EvalError::LengthMismatch {
            what: "scatter: coordinates against labels".into(),
            a: coords.len(),
            b: groups.len(),
        });
    }
    let (w, h) = (1500u32, 1050u32);
    let mut buf = vec![255u8; (w * h * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut buf, (w, h)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| err(path, e))?;
        let (plot_area, legend_area) = root.split_horizontally(1050);
        let (mut x0, mut x1, mut y0, mut y1) = (f32::MAX, f32::MIN, f32::MAX, f32::MIN);
        for p in coords {
            x0 = x0.min(p[0]);
            x1 = x1.max(p[0]);
            y0 = y0.min(p[1]);
            y1 = y1.max(p[1]);
        }
        if coords.is_empty() {
            (x0, x1, y0, y1) = (0.0, 1.0, 0.0, 1.0);
        }
        let (px, py) = (((x1 - x0) * 0.04).max(1e-3), ((y1 - y0) * 0.04).max(1e-3));
        let mut chart = ChartBuilder::on(&plot_area)
            .caption(title, ("sans-serif", 34))
            .margin(20)
            .x_label_area_size(50)
            .y_label_area_size(50)
            .build_cartesian_2d(x0 - px..x1 + px, y0 - py..y1 + py)
            .map_err(|e| err(path, e))?;
        chart
            .configure_mesh()
            .disable_mesh()
            .x_labels(0)
            .y_labels(0)
            .x_desc(format!("{axis}1"))
            .y_desc(format!("{axis}2"))
            .axis_desc_style(("sans-serif", 24))
            .draw()
            .map_err(|e| err(path, e))?;
        let n = coords.len();
        let radius = if n > 50_000 {
            1
        } else if n > 10_000 {
            2
        } else if n > 2_000 {
            3
        } else {
            5
        };
        // draw in a fixed pseudo-random order so no group is systematically on top
        let order = crate::plot_order(n);
        chart
            .draw_series(order.iter().map(|&i| {
                Circle::new(
                    (coords[i][0], coords[i][1]),
                    radius,
                    colour(groups.codes[i] as usize).mix(0.85).filled(),
                )
            }))
            .map_err(|e| err(path, e))?;
        // legend
        let counts = groups.counts();
        let max_rows = 34usize;
        let font = ("sans-serif", 22).into_font();
        for (row, name) in groups.names.iter().enumerate().take(max_rows) {
            let y = 80 + row as i32 * 28;
            legend_area
                .draw(&Circle::new((20, y), 8, colour(row).filled()))
                .map_err(|e| err(path, e))?;
            let mut label = name.clone();
            if label.chars().count() > 28 {
                label = label.chars().take(27).collect::<String>() + "…";
            }
            legend_area
                .draw(&Text::new(
                    format!("{label} ({})", counts[row]),
                    (36, y - 11),
                    font.clone(),
                ))
                .map_err(|e| err(path, e))?;
        }
        if groups.names.len() > max_rows {
            legend_area
                .draw(&Text::new(
                    format!("… and {} more", groups.names.len() - max_rows),
                    (36, 80 + max_rows as i32 * 28 - 11),
                    font.clone(),
                ))
                .map_err(|e| err(path, e))?;
        }
        root.present().map_err(|e| err(path, e))?;
    }
    write_png(path, &buf, w, h)
}

/// A confusion-matrix heatmap: rows = true labels, columns = predicted, each cell shaded by
/// the fraction of its row (recall) and annotated with the count.
pub fn confusion_png(path: &Path, c: &Confusion, title: &str) -> Result<()> {
    font_ready()?;
    let k = c.labels.len().max(1);
    let cell = (900 / k as u32).clamp(18, 80);
    let margin_left = 330u32;
    let margin_top = 110u32;
    let margin_bottom = 300u32;
    let (w, h) = (
        margin_left + cell * k as u32 + 60,
        margin_top + cell * k as u32 + margin_bottom,
    );
    let mut buf = vec![255u8; (w * h * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut buf, (w, h)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| err(path, e))?;
        root.draw(&Text::new(
            title.to_string(),
            (20, 20),
            ("sans-serif", 30).into_font(),
        ))
        .map_err(|e| err(path, e))?;
        let fs = (cell as f64 * 0.42).clamp(10.0, 22.0);
        let label_font = ("sans-serif", 20.0f64.min(cell as f64 * 0.8).max(11.0)).into_font();
        for (t, row) in c.matrix.iter().enumerate() {
            let total: u64 = row.iter().sum();
            for (p, &v) in row.iter().enumerate() {
                let frac = if total > 0 {
                    v as f64 / total as f64
                } else {
                    0.0
                };
                let x = (margin_left + p as u32 * cell) as i32;
                let y = (margin_top + t as u32 * cell) as i32;
                // white → dark blue (8, 48, 107)
                let mixc = |hi: f64, lo: f64| (hi + (lo - hi) * frac) as u8;
                let fill = RGBColor(mixc(255.0, 8.0), mixc(255.0, 48.0), mixc(255.0, 107.0));
                root.draw(&Rectangle::new(
                    [(x, y), (x + cell as i32, y + cell as i32)],
                    fill.filled(),
                ))
                .map_err(|e| err(path, e))?;
                root.draw(&Rectangle::new(
                    [(x, y), (x + cell as i32, y + cell as i32)],
                    RGBColor(220, 220, 220),
                ))
                .map_err(|e| err(path, e))?;
                if v > 0 {
                    let txt = if frac > 0.5 { WHITE } else { BLACK };
                    let s = v.to_string();
                    let tx = x + cell as i32 / 2 - (s.len() as f64 * fs * 0.3) as i32;
                    root.draw(&Text::new(
                        s,
                        (tx, y + cell as i32 / 2 - (fs * 0.55) as i32),
                        ("sans-serif", fs).into_font().color(&txt),
                    ))
                    .map_err(|e| err(path, e))?;
                }
            }
        }
        let short = |s: &str| {
            if s.chars().count() > 24 {
                s.chars().take(23).collect::<String>() + "…"
            } else {
                s.to_string()
            }
        };
        for (i, l) in c.labels.iter().enumerate() {
            let y = (margin_top + i as u32 * cell + cell / 2) as i32 - 10;
            root.draw(&Text::new(short(l), (20, y), label_font.clone()))
                .map_err(|e| err(path, e))?;
            let x = (margin_left + i as u32 * cell + cell / 2) as i32 - 10;
            let yb = (margin_top + k as u32 * cell + 10) as i32;
            root.draw(&Text::new(
                short(l),
                (x, yb),
                label_font.clone().transform(FontTransform::Rotate90),
            ))
            .map_err(|e| err(path, e))?;
        }
        root.draw(&Text::new(
            "rows: true label · columns: predicted · shade: fraction of the row".to_string(),
            (20, (h - 40) as i32),
            ("sans-serif", 20).into_font(),
        ))
        .map_err(|e| err(path, e))?;
        root.present().map_err(|e| err(path, e))?;
    }
    write_png(path, &buf, w, h)
}

/// One panel of [`interval_panels_png`]: a value with its interval per item (method).
#[derive(Debug, Clone, PartialEq)]
pub struct IntervalPanel {
    /// Panel title (e.g. `unseen_single: mae`).
    pub title: String,
    /// The items along the x axis.
    pub labels: Vec<String>,
    /// Their values (NaN: not drawn).
    pub values: Vec<f64>,
    /// Their intervals `(low, high)`.
    pub intervals: Vec<(f64, f64)>,
}

/// A grid of panels (`columns` wide), each the items' values as points with their intervals as
/// error bars: methods side by side with 95 % intervals, per test group and metric.
pub fn interval_panels_png(
    path: &Path,
    title: &str,
    panels: &[IntervalPanel],
    columns: usize,
) -> Result<()> {
    font_ready()?;
    let columns = columns.max(1);
    let rows = panels.len().div_ceil(columns).max(1);
    let (pw, ph) = (520u32, 430u32);
    let (w, h) = (pw * columns as u32, ph * rows as u32 + 60);
    let mut buf = vec![255u8; (w * h * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut buf, (w, h)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| err(path, e))?;
        let (head, body) = root.split_vertically(60);
        head.draw(&Text::new(
            title.to_string(),
            (20, 14),
            ("sans-serif", 30).into_font(),
        ))
        .map_err(|e| err(path, e))?;
        let areas = body.split_evenly((rows, columns));
        for (p, area) in panels.iter().zip(areas.iter()) {
            let finite = p
                .intervals
                .iter()
                .zip(&p.values)
                .flat_map(|(&(a, b), &v)| [a, b, v])
                .filter(|x| x.is_finite());
            let (mut lo, mut hi) =
                finite.fold((f64::MAX, f64::MIN), |(l, h), x| (l.min(x), h.max(x)));
            if lo > hi {
                (lo, hi) = (0.0, 1.0);
            }
            let pad = ((hi - lo) * 0.1).max(1e-3);
            let n = p.labels.len();
            let labels = p.labels.clone();
            let mut chart = ChartBuilder::on(area)
                .caption(&p.title, ("sans-serif", 22))
                .margin(12)
                .x_label_area_size(110)
                .y_label_area_size(60)
                .build_cartesian_2d(-0.5f64..n as f64 - 0.5, lo - pad..hi + pad)
                .map_err(|e| err(path, e))?;
            chart
                .configure_mesh()
                .disable_x_mesh()
                .x_labels(n.max(1))
                .x_label_formatter(&|x| {
                    let i = x.round();
                    if (x - i).abs() < 1e-6 && i >= 0.0 && (i as usize) < labels.len() {
                        labels[i as usize].clone()
                    } else {
                        String::new()
                    }
                })
                // vertical: seven method names side by side do not fit across a panel
                .x_label_style(
                    ("sans-serif", 14)
                        .into_font()
                        .transform(FontTransform::Rotate90),
                )
                .y_label_style(("sans-serif", 14))
                .draw()
                .map_err(|e| err(path, e))?;
            let colour = |i: usize| {
                let (r, g, b) =
                    crate::palettes::parse_hex(&crate::palettes::scanpy_colors(n.max(1))[i])
                        .unwrap_or((31, 119, 180));
                RGBColor(r, g, b)
            };
            for i in 0..n {
                let (v, (a, b)) = (p.values[i], p.intervals[i]);
                if !v.is_finite() {
                    continue;
                }
                let style = colour(i).stroke_width(3);
                if a.is_finite() && b.is_finite() {
                    let x = i as f64;
                    let bars = [
                        vec![(x, a), (x, b)],
                        vec![(x - 0.12, a), (x + 0.12, a)],
                        vec![(x - 0.12, b), (x + 0.12, b)],
                    ];
                    chart
                        .draw_series(bars.into_iter().map(|p| PathElement::new(p, style)))
                        .map_err(|e| err(path, e))?;
                }
                chart
                    .draw_series(std::iter::once(Circle::new(
                        (i as f64, v),
                        6,
                        colour(i).filled(),
                    )))
                    .map_err(|e| err(path, e))?;
            }
        }
        root.present().map_err(|e| err(path, e))?;
    }
    write_png(path, &buf, w, h)
}
