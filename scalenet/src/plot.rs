//! PNG figures of the diagnostics: the paper's Fig. 1 (a histogram of ratios), Fig. 2 (heat maps
//! of Gauss-Newton blocks) and the coordinate check (moments against width). Drawn with plotters
//! and a bundled DejaVu Sans, so no system fonts are needed. Files are written atomically.

use crate::diagnostics::{CoordinateCheck, GaussNewton};
use plotters::prelude::*;
use plotters::style::colors::colormaps::ViridisRGB;
use std::path::Path;
use std::sync::Once;

/// Why a figure could not be written.
#[derive(Debug, thiserror::Error)]
pub enum PlotError {
    #[error("cannot draw {path}: {message}")]
    /// The plotting backend failed.
    Draw {
        /// The file at fault.
        path: String,
        /// What it reported.
        message: String,
    },
    #[error("cannot write {path}: {source}")]
    /// The file could not be written.
    Io {
        /// The file at fault.
        path: String,
        /// What the system or candle reported.
        source: std::io::Error,
    },
    #[error("nothing to plot in {0}")]
    /// There is nothing to draw in the figure at this path.
    Empty(String),
}

const FONT: &str = "sans-serif";

fn register_font() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // The bundled font is valid TrueType; a failure here would show as missing text, not a panic.
        let _ = plotters::style::register_font(FONT, FontStyle::Normal, include_bytes!("../assets/DejaVuSans.ttf"));
    });
}

/// Draws into a temporary PNG beside `path`, then renames it over `path`.
fn draw_png(
    path: &Path,
    size: (u32, u32),
    draw: impl FnOnce(DrawingArea<BitMapBackend, plotters::coord::Shift>) -> Result<(), String>,
) -> Result<(), PlotError> {
    register_font();
    let shown = path.display().to_string();
    let tmp = path.with_extension("tmp.png");
    {
        let root = BitMapBackend::new(&tmp, size).into_drawing_area();
        root.fill(&WHITE).map_err(|e| PlotError::Draw { path: shown.clone(), message: e.to_string() })?;
        draw(root.clone()).map_err(|message| PlotError::Draw { path: shown.clone(), message })?;
        root.present().map_err(|e| PlotError::Draw { path: shown.clone(), message: e.to_string() })?;
    }
    std::fs::rename(&tmp, path).map_err(|source| PlotError::Io { path: shown, source })
}

fn text(e: impl std::fmt::Display) -> String {
    e.to_string()
}

/// The legend every figure draws: white box, black border, at `position`.
fn draw_legend<'a, CT: plotters::coord::CoordTranslate>(
    chart: &mut ChartContext<'a, BitMapBackend<'a>, CT>,
    position: SeriesLabelPosition,
    font_size: u32,
) -> Result<(), String> {
    chart
        .configure_series_labels()
        .position(position)
        .label_font((FONT, font_size))
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(text)
}

/// A histogram of `values` with `bins` bins, a line at 1 (perfect agreement) and the median: the
/// paper's Fig. 1.
pub fn ratio_histogram(path: &Path, title: &str, x_label: &str, values: &[f64], bins: usize) -> Result<(), PlotError> {
    let mut sorted: Vec<f64> = values.iter().copied().filter(|v| v.is_finite()).collect();
    if sorted.is_empty() {
        return Err(PlotError::Empty(path.display().to_string()));
    }
    sorted.sort_by(f64::total_cmp);
    let median = sorted[sorted.len() / 2];
    let upper = sorted[(sorted.len() * 99 / 100).min(sorted.len() - 1)].max(2.0) * 1.05;
    let width = upper / bins as f64;
    let mut counts = vec![0usize; bins];
    for v in &sorted {
        counts[((v / width) as usize).min(bins - 1)] += 1;
    }
    let highest = *counts.iter().max().unwrap_or(&1) as f64;
    draw_png(path, (900, 560), |root| {
        let mut chart = ChartBuilder::on(&root)
            .caption(title, (FONT, 22))
            .margin(14)
            .x_label_area_size(44)
            .y_label_area_size(56)
            .build_cartesian_2d(0.0..upper, 0.0..highest * 1.1)
            .map_err(text)?;
        chart.configure_mesh().x_desc(x_label).y_desc("count").label_style((FONT, 15)).draw().map_err(text)?;
        chart
            .draw_series(counts.iter().enumerate().map(|(i, c)| {
                let x0 = i as f64 * width;
                Rectangle::new([(x0, 0.0), (x0 + width, *c as f64)], BLUE.mix(0.6).filled())
            }))
            .map_err(text)?;
        chart
            .draw_series(LineSeries::new([(1.0, 0.0), (1.0, highest * 1.1)], BLACK.stroke_width(2)))
            .map_err(text)?
            .label("1 (theory = measurement)")
            .legend(|(x, y)| PathElement::new([(x, y), (x + 20, y)], BLACK.stroke_width(2)));
        chart
            .draw_series(LineSeries::new([(median, 0.0), (median, highest * 1.1)], RED.stroke_width(2)))
            .map_err(text)?
            .label(format!("median {median:.3} (n = {})", sorted.len()))
            .legend(|(x, y)| PathElement::new([(x, y), (x + 20, y)], RED.stroke_width(2)));
        draw_legend(&mut chart, SeriesLabelPosition::MiddleRight, 15)
    })
}

/// Heat maps of the mean squared singular value of every Gauss-Newton block, one panel per
/// `(title, blocks)`: the paper's Fig. 2. Each panel is divided by the geometric mean of its
/// diagonal (the overall scale of the loss differs between inits and says nothing about
/// conditioning), then all share one logarithmic colour scale.
pub fn gauss_newton_heat_maps(path: &Path, panels: &[(&str, &GaussNewton)]) -> Result<(), PlotError> {
    let relative: Vec<Vec<Vec<f64>>> = panels
        .iter()
        .map(|(_, g)| {
            let diagonal = g.diagonal();
            let log_mean = diagonal.iter().map(|d| d.log10()).sum::<f64>() / diagonal.len().max(1) as f64;
            g.blocks.iter().map(|row| row.iter().map(|v| v.log10() - log_mean).collect()).collect()
        })
        .collect();
    let logs: Vec<f64> = relative.iter().flatten().flatten().copied().filter(|v| v.is_finite()).collect();
    if logs.is_empty() {
        return Err(PlotError::Empty(path.display().to_string()));
    }
    let lo = logs.iter().copied().fold(f64::MAX, f64::min);
    let hi = logs.iter().copied().fold(f64::MIN, f64::max).max(lo + 1e-9);
    let columns = panels.len().min(2) as u32;
    let rows = panels.len().div_ceil(2) as u32;
    draw_png(path, (560 * columns + 110, 520 * rows + 50), |root| {
        let root = root
            .titled(
                "Gauss-Newton blocks: mean squared singular value / geometric mean of the diagonal (log10)",
                (FONT, 22),
            )
            .map_err(text)?;
        let (maps, bar) = root.split_horizontally(560 * columns);
        let areas = maps.split_evenly((rows as usize, columns as usize));
        for (((title, gn), logs), area) in panels.iter().zip(&relative).zip(areas) {
            let n = gn.layers.len();
            let names: Vec<String> = gn.layers.iter().map(|l| l.trim_end_matches(".weight").to_string()).collect();
            let spread = gn.diagonal_spread();
            let mut chart = ChartBuilder::on(&area)
                .caption(format!("{title}: diagonal max/min {spread:.2}"), (FONT, 18))
                .margin(8)
                .x_label_area_size(40)
                .y_label_area_size(70)
                .build_cartesian_2d(0.0..n as f64, n as f64..0.0)
                .map_err(text)?;
            let label = |v: &f64| {
                let i = v.floor() as usize;
                if (v - i as f64 - 0.5).abs() < 1e-6 && i < n {
                    names[i].clone()
                } else {
                    String::new()
                }
            };
            chart
                .configure_mesh()
                .disable_mesh()
                .x_labels(2 * n + 1)
                .y_labels(2 * n + 1)
                .x_label_formatter(&label)
                .y_label_formatter(&label)
                .x_desc("block column m")
                .y_desc("block row l")
                .label_style((FONT, 13))
                .draw()
                .map_err(text)?;
            chart
                .draw_series((0..n).flat_map(|l| (0..n).map(move |m| (l, m))).map(|(l, m)| {
                    let v = logs[l][m];
                    let colour = if v.is_finite() {
                        ViridisRGB::get_color_normalized(v, lo, hi)
                    } else {
                        RGBColor(200, 200, 200)
                    };
                    Rectangle::new([(m as f64, l as f64), (m as f64 + 1.0, l as f64 + 1.0)], colour.filled())
                }))
                .map_err(text)?;
        }
        // The colour bar, shared by all panels.
        let mut chart = ChartBuilder::on(&bar)
            .margin_top(40)
            .margin_bottom(40)
            .margin_right(10)
            .y_label_area_size(60)
            .build_cartesian_2d(0.0..1.0, lo..hi)
            .map_err(text)?;
        chart
            .configure_mesh()
            .disable_mesh()
            .disable_x_axis()
            .y_desc("log10 of block / diagonal geometric mean")
            .label_style((FONT, 13))
            .draw()
            .map_err(text)?;
        let steps = 100;
        chart
            .draw_series((0..steps).map(|i| {
                let a = lo + (hi - lo) * i as f64 / steps as f64;
                let b = lo + (hi - lo) * (i + 1) as f64 / steps as f64;
                Rectangle::new([(0.0, a), (1.0, b)], ViridisRGB::get_color_normalized(a, lo, hi).filled())
            }))
            .map_err(text)?;
        Ok(())
    })
}

/// The coordinate check: measured `E[x^2]` after every weight layer (left) and measured gamma of
/// every weight layer (right) against width, one line per layer, the calculus dashed.
pub fn coordinate_check(path: &Path, check: &CoordinateCheck) -> Result<(), PlotError> {
    let weight_rows: Vec<usize> =
        (0..check.steps.len()).filter(|&i| check.gamma.iter().any(|(name, _)| *name == check.steps[i])).collect();
    let forward: Vec<(String, Vec<f64>)> =
        weight_rows.iter().map(|&i| (check.steps[i].clone(), check.forward[i].clone())).collect();
    let forward_predicted: Vec<Vec<f64>> = weight_rows.iter().map(|&i| check.forward_predicted[i].clone()).collect();
    if forward.is_empty() {
        return Err(PlotError::Empty(path.display().to_string()));
    }
    draw_png(path, (1300, 560), |root| {
        let title = format!("{}: coordinate check at initialization (dashed: the calculus)", check.network);
        let root = root.titled(&title, (FONT, 22)).map_err(text)?;
        let (left, right) = root.split_horizontally(650);
        line_panel(&left, "E[x²] after each weight layer", &check.widths, &forward, &forward_predicted)?;
        line_panel(&right, "γ = E[dW²]/E[W²] of each weight layer", &check.widths, &check.gamma, &check.gamma_predicted)
    })
}

/// Lines against width, the widths equally spaced (sweeps double the width at each step).
fn line_panel(
    area: &DrawingArea<BitMapBackend, plotters::coord::Shift>,
    title: &str,
    widths: &[usize],
    lines: &[(String, Vec<f64>)],
    predicted: &[Vec<f64>],
) -> Result<(), String> {
    let values: Vec<f64> = lines
        .iter()
        .flat_map(|(_, v)| v.iter().copied())
        .chain(predicted.iter().flatten().copied())
        .filter(|v| *v > 0.0 && v.is_finite())
        .collect();
    let lo = values.iter().copied().fold(f64::MAX, f64::min) / 2.0;
    let hi = values.iter().copied().fold(f64::MIN, f64::max) * 2.0;
    let n = widths.len();
    let mut chart = ChartBuilder::on(area)
        .caption(title, (FONT, 18))
        .margin(12)
        .x_label_area_size(44)
        .y_label_area_size(70)
        .build_cartesian_2d(-0.3..(n as f64 - 0.7), (lo..hi).log_scale())
        .map_err(text)?;
    let width_label = |v: &f64| {
        let i = v.round();
        if (v - i).abs() < 1e-6 && i >= 0.0 && (i as usize) < n {
            widths[i as usize].to_string()
        } else {
            String::new()
        }
    };
    chart
        .configure_mesh()
        .x_desc("width")
        .label_style((FONT, 13))
        .x_labels(4 * n)
        .x_label_formatter(&width_label)
        .y_label_formatter(&|v| format!("{v:.1e}"))
        .draw()
        .map_err(text)?;
    for (index, (name, values)) in lines.iter().enumerate() {
        let colour = Palette99::pick(index).to_rgba();
        let at = |values: &[f64]| -> Vec<(f64, f64)> {
            values.iter().enumerate().map(|(i, v)| (i as f64, *v)).filter(|(_, v)| *v > 0.0 && v.is_finite()).collect()
        };
        if let Some(expected) = predicted.get(index) {
            chart.draw_series(DashedLineSeries::new(at(expected), 6, 4, colour.stroke_width(1))).map_err(text)?;
        }
        let points = at(values);
        chart
            .draw_series(LineSeries::new(points.clone(), colour.stroke_width(2)))
            .map_err(text)?
            .label(name.clone())
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], colour.stroke_width(2)));
        chart.draw_series(points.into_iter().map(|p| Circle::new(p, 3, colour.filled()))).map_err(text)?;
    }
    draw_legend(&mut chart, SeriesLabelPosition::LowerRight, 13)
}

/// One line of a [`sweep_panels`] figure: `(x, median, lower quartile, upper quartile)` points.
#[derive(Debug, Clone, PartialEq)]
pub struct Band {
    /// The legend's label.
    pub label: String,
    /// The points, in order of `x`.
    pub points: Vec<(f64, f64, f64, f64)>,
}

/// Panels, four to a row, each a set of lines with their 25-75% band (a median over seeds against
/// a learning rate, a step, a depth), on a log2 x axis and a linear y axis of its own per panel: the paper's Fig. 3 and
/// Fig. 4 style. Infinite or non-positive values (diverged runs) are left out.
pub fn sweep_panels(
    path: &Path,
    title: &str,
    x_label: &str,
    y_label: &str,
    panels: &[(String, Vec<Band>)],
) -> Result<(), PlotError> {
    band_panels(path, title, x_label, y_label, panels, true)
}

/// Training curves: lines with their 25-75% band against the step (linear x), in panels like
/// [`sweep_panels`]: the paper's Fig. 4.
pub fn training_curves(
    path: &Path,
    title: &str,
    x_label: &str,
    y_label: &str,
    panels: &[(String, Vec<Band>)],
) -> Result<(), PlotError> {
    band_panels(path, title, x_label, y_label, panels, false)
}

fn band_panels(
    path: &Path,
    title: &str,
    x_label: &str,
    y_label: &str,
    panels: &[(String, Vec<Band>)],
    log2_x: bool,
) -> Result<(), PlotError> {
    let to_x = |x: f64| if log2_x { x.log2() } else { x };
    let finite = |v: f64| v.is_finite() && v > 0.0;
    // Each panel gets its own y range: datasets' losses differ by orders of magnitude.
    let ranges: Vec<Option<(f64, f64)>> = panels
        .iter()
        .map(|(_, bands)| {
            let values =
                bands.iter().flat_map(|b| b.points.iter().flat_map(|p| [p.1, p.2, p.3])).filter(|v| finite(*v));
            values.fold(None, |range: Option<(f64, f64)>, v| {
                Some(range.map_or((v, v), |(lo, hi)| (lo.min(v), hi.max(v))))
            })
        })
        .collect();
    if ranges.iter().all(Option::is_none) {
        return Err(PlotError::Empty(path.display().to_string()));
    }
    // One colour per label in every panel, so that a method keeps its colour where panels hold
    // different sets of lines.
    let mut labels: Vec<&str> = Vec::new();
    for band in panels.iter().flat_map(|(_, bands)| bands) {
        if !labels.contains(&band.label.as_str()) {
            labels.push(&band.label);
        }
    }
    let colour_of = |label: &str| Palette99::pick(labels.iter().position(|l| *l == label).unwrap_or(0)).to_rgba();
    // Up to four panels a row.
    let columns = panels.len().clamp(1, 4);
    let rows = panels.len().div_ceil(columns).max(1);
    // A lone panel gets room for a long title.
    let panel_width = if panels.len() == 1 { 1000 } else { 620 };
    draw_png(path, (panel_width * columns as u32, 40 + 480 * rows as u32), |root| {
        let root = root.titled(title, (FONT, 22)).map_err(text)?;
        let areas = root.split_evenly((rows, columns));
        for ((area, (caption, bands)), range) in areas.iter().zip(panels).zip(&ranges) {
            let Some((lo, hi)) = *range else { continue };
            let margin = 0.05 * (hi - lo).max(1e-3 * hi.abs()).max(1e-12);
            let (lo, hi) = ((lo - margin).max(0.0), hi + margin);
            let xs: Vec<f64> = bands.iter().flat_map(|b| b.points.iter().map(|p| to_x(p.0))).collect();
            let (x_lo, x_hi) = xs.iter().fold((f64::MAX, f64::MIN), |(a, b), &x| (a.min(x), b.max(x)));
            let pad = if log2_x { 0.3 } else { 0.02 * (x_hi - x_lo).max(1.0) };
            let mut chart = ChartBuilder::on(area)
                .caption(caption, (FONT, 18))
                .margin(12)
                .x_label_area_size(44)
                .y_label_area_size(70)
                .build_cartesian_2d((x_lo - pad)..(x_hi + pad), lo..hi)
                .map_err(text)?;
            chart
                .configure_mesh()
                .x_desc(x_label)
                .y_desc(y_label)
                .label_style((FONT, 13))
                .x_label_formatter(&|v| if log2_x { format!("2^{v:.0}") } else { format!("{v:.0}") })
                .y_label_formatter(&|v| crate::calculus::number(*v))
                .draw()
                .map_err(text)?;
            for band in bands {
                let colour = colour_of(&band.label);
                let kept: Vec<(f64, f64, f64, f64)> = band
                    .points
                    .iter()
                    .filter(|p| finite(p.1) && finite(p.2) && finite(p.3))
                    .map(|&(x, m, l, u)| (to_x(x), m, l, u))
                    .collect();
                if kept.len() > 1 {
                    let mut outline: Vec<(f64, f64)> = kept.iter().map(|p| (p.0, p.3)).collect();
                    outline.extend(kept.iter().rev().map(|p| (p.0, p.2)));
                    chart.draw_series([Polygon::new(outline, colour.mix(0.15).filled())]).map_err(text)?;
                }
                chart
                    .draw_series(LineSeries::new(kept.iter().map(|p| (p.0, p.1)), colour.stroke_width(2)))
                    .map_err(text)?
                    .label(band.label.clone())
                    .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], colour.stroke_width(2)));
                chart.draw_series(kept.iter().map(|p| Circle::new((p.0, p.1), 3, colour.filled()))).map_err(text)?;
            }
            draw_legend(&mut chart, SeriesLabelPosition::UpperRight, 13)?;
        }
        Ok(())
    })
}

/// Histograms of several samples over shared log-spaced bins, one colour each (e.g. the singular
/// values of a Jacobian under two inits). Zeros and non-finite values are left out.
pub fn log_histograms(
    path: &Path,
    title: &str,
    x_label: &str,
    samples: &[(String, Vec<f64>)],
    bins: usize,
) -> Result<(), PlotError> {
    let kept: Vec<(String, Vec<f64>)> = samples
        .iter()
        .map(|(label, values)| (label.clone(), values.iter().copied().filter(|v| v.is_finite() && *v > 0.0).collect()))
        .collect();
    let all: Vec<f64> = kept.iter().flat_map(|(_, v)| v.iter().copied()).collect();
    if all.is_empty() || bins == 0 {
        return Err(PlotError::Empty(path.display().to_string()));
    }
    let lo = all.iter().copied().fold(f64::MAX, f64::min).log10().min(-0.5) - 0.05;
    let hi = all.iter().copied().fold(f64::MIN, f64::max).log10().max(0.5) + 0.05;
    let width = (hi - lo) / bins as f64;
    let counts: Vec<Vec<f64>> = kept
        .iter()
        .map(|(_, values)| {
            let mut counts = vec![0.0; bins];
            for v in values {
                counts[(((v.log10() - lo) / width) as usize).min(bins - 1)] += 1.0 / values.len() as f64;
            }
            counts
        })
        .collect();
    let highest = counts.iter().flatten().copied().fold(0.0, f64::max);
    draw_png(path, (900, 560), |root| {
        let mut chart = ChartBuilder::on(&root)
            .caption(title, (FONT, 20))
            .margin(14)
            .x_label_area_size(44)
            .y_label_area_size(56)
            .build_cartesian_2d(lo..hi, 0.0..highest * 1.1)
            .map_err(text)?;
        chart
            .configure_mesh()
            .x_desc(x_label)
            .y_desc("fraction")
            .label_style((FONT, 15))
            .x_label_formatter(&|v| format!("{:.0e}", 10f64.powf(*v)))
            .draw()
            .map_err(text)?;
        for (index, ((label, _), counts)) in kept.iter().zip(&counts).enumerate() {
            let colour = Palette99::pick(index).to_rgba();
            chart
                .draw_series(counts.iter().enumerate().map(|(i, c)| {
                    let x0 = lo + i as f64 * width;
                    Rectangle::new([(x0, 0.0), (x0 + width, *c)], colour.mix(0.45).filled())
                }))
                .map_err(text)?
                .label(label.clone())
                .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 16, y + 5)], colour.filled()));
        }
        draw_legend(&mut chart, SeriesLabelPosition::MiddleRight, 15)
    })
}

/// A fitted function of one input: its values on the grid and its breakpoints (drawn as dots).
#[derive(Debug, Clone, PartialEq)]
pub struct FittedCurve {
    /// The legend's label.
    pub label: String,
    /// The function's value at each point of the grid.
    pub values: Vec<f64>,
    /// The breakpoints `(x, y)`.
    pub breakpoints: Vec<(f64, f64)>,
}

/// A target function (black) and fitted curves over the same grid `xs`, with each curve's
/// breakpoints marked; a lower panel shows each curve's error against the target.
pub fn fitted_curves(
    path: &Path,
    title: &str,
    xs: &[f64],
    target: &[f64],
    curves: &[FittedCurve],
) -> Result<(), PlotError> {
    if xs.is_empty() || xs.len() != target.len() || curves.iter().any(|c| c.values.len() != xs.len()) {
        return Err(PlotError::Empty(path.display().to_string()));
    }
    let (x_lo, x_hi) = (xs[0], xs[xs.len() - 1]);
    let values = target.iter().chain(curves.iter().flat_map(|c| c.values.iter())).copied();
    let (y_lo, y_hi) = values.fold((f64::MAX, f64::MIN), |(a, b), v| (a.min(v), b.max(v)));
    let margin = 0.05 * (y_hi - y_lo).max(1e-12);
    let errors: Vec<Vec<f64>> =
        curves.iter().map(|c| c.values.iter().zip(target).map(|(v, t)| (v - t).abs().max(1e-12)).collect()).collect();
    let (e_lo, e_hi) = errors.iter().flatten().fold((f64::MAX, f64::MIN), |(a, b), &v| (a.min(v), b.max(v)));
    draw_png(path, (1000, 800), |root| {
        let root = root.titled(title, (FONT, 22)).map_err(text)?;
        let (upper, lower) = root.split_vertically(480);
        let mut chart = ChartBuilder::on(&upper)
            .margin(12)
            .x_label_area_size(36)
            .y_label_area_size(60)
            .build_cartesian_2d(x_lo..x_hi, (y_lo - margin)..(y_hi + margin))
            .map_err(text)?;
        chart.configure_mesh().x_desc("x").y_desc("y").label_style((FONT, 13)).draw().map_err(text)?;
        chart
            .draw_series(LineSeries::new(xs.iter().copied().zip(target.iter().copied()), BLACK.stroke_width(3)))
            .map_err(text)?
            .label("target")
            .legend(|(x, y)| PathElement::new([(x, y), (x + 20, y)], BLACK.stroke_width(3)));
        for (index, curve) in curves.iter().enumerate() {
            let colour = Palette99::pick(index + 1).to_rgba();
            chart
                .draw_series(LineSeries::new(
                    xs.iter().copied().zip(curve.values.iter().copied()),
                    colour.stroke_width(2),
                ))
                .map_err(text)?
                .label(format!("{} ({} breakpoints)", curve.label, curve.breakpoints.len()))
                .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], colour.stroke_width(2)));
            chart.draw_series(curve.breakpoints.iter().map(|&p| Circle::new(p, 3, colour.filled()))).map_err(text)?;
        }
        draw_legend(&mut chart, SeriesLabelPosition::UpperLeft, 14)?;
        let mut chart = ChartBuilder::on(&lower)
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(60)
            .build_cartesian_2d(x_lo..x_hi, (e_lo / 2.0..e_hi * 2.0).log_scale())
            .map_err(text)?;
        chart
            .configure_mesh()
            .x_desc("x")
            .y_desc("|error|")
            .label_style((FONT, 13))
            .y_label_formatter(&|v| format!("{v:.0e}"))
            .draw()
            .map_err(text)?;
        for (index, error) in errors.iter().enumerate() {
            let colour = Palette99::pick(index + 1).to_rgba();
            chart
                .draw_series(LineSeries::new(xs.iter().copied().zip(error.iter().copied()), colour.stroke_width(1)))
                .map_err(text)?;
        }
        Ok(())
    })
}
