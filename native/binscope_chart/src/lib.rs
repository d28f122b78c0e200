//! Binscope's charts, drawn by the `plotters` crate into SVG.
//!
//! Two kinds, matching `Binscope.Chart`:
//! - [`LineChart`]: series of `(x, y)` points (memory over time) with vertical markers for events
//!   (GC, hibernate, exit);
//! - [`BarChart`]: one bar per label.
//!
//! SVG only, with no font files: SVG text is laid out by the viewer, and plotters places labels
//! with its built-in size estimate. Every figure is validated first (finite, within limits), so a
//! caller gets [`ChartError`] instead of a panic or an unreadable chart.

use std::fmt;
use std::fs;
use std::path::Path;

use plotters::coord::Shift;
use plotters::prelude::*;

/// Chart size in pixels.
pub const WIDTH: u32 = 960;
/// Chart size in pixels.
pub const HEIGHT: u32 = 540;

/// Most series in one line chart (the palette repeats after 8).
pub const MAX_SERIES: usize = 64;
/// Most points over all series of one chart.
pub const MAX_POINTS: usize = 1_000_000;
/// Most events or bars in one chart.
pub const MAX_MARKS: usize = 10_000;
/// Longest title, axis label, series name, event or bar label, in bytes.
pub const MAX_TEXT: usize = 1_000;

/// One named line.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    pub name: String,
    pub points: Vec<(f64, f64)>,
}

/// A vertical marker at `x`, labelled.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub x: f64,
    pub label: String,
}

/// Lines over a shared x axis, with events marked.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct LineChart {
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    pub series: Vec<Series>,
    pub events: Vec<Event>,
}

/// One bar per `(label, value)`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct BarChart {
    pub title: String,
    pub y_label: String,
    pub bars: Vec<(String, f64)>,
}

/// Why a chart was not drawn.
#[derive(Debug)]
pub enum ChartError {
    /// Nothing to draw: no point in any series, or no bar.
    Empty,
    /// A coordinate or value is NaN or infinite.
    NonFinite,
    /// Over one of the `MAX_*` limits.
    TooLarge,
    /// Writing the file failed.
    Io(std::io::Error),
    /// plotters reported an error while drawing.
    Draw(String),
}

impl ChartError {
    /// A short fixed name for the error (the NIF turns it into an atom).
    pub fn name(&self) -> &'static str {
        match self {
            ChartError::Empty => "empty",
            ChartError::NonFinite => "non_finite",
            ChartError::TooLarge => "too_large",
            ChartError::Io(_) => "io",
            ChartError::Draw(_) => "draw",
        }
    }
}

impl fmt::Display for ChartError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ChartError::Io(e) => write!(f, "io: {e}"),
            ChartError::Draw(e) => write!(f, "draw: {e}"),
            other => f.write_str(other.name()),
        }
    }
}

impl std::error::Error for ChartError {}

pub(crate) fn draw_err<E: fmt::Debug>(e: E) -> ChartError {
    ChartError::Draw(format!("{e:?}"))
}

pub(crate) const PALETTE: [RGBColor; 8] = [
    RGBColor(31, 119, 180),
    RGBColor(214, 39, 40),
    RGBColor(44, 160, 44),
    RGBColor(255, 127, 14),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(23, 190, 207),
];

pub(crate) fn check_text(texts: &[&str]) -> Result<(), ChartError> {
    if texts.iter().any(|t| t.len() > MAX_TEXT) {
        Err(ChartError::TooLarge)
    } else {
        Ok(())
    }
}

/// A blank white canvas of the chart size, drawing into `svg`.
pub(crate) fn canvas(svg: &mut String) -> Result<DrawingArea<SVGBackend<'_>, Shift>, ChartError> {
    let root = SVGBackend::with_string(svg, (WIDTH, HEIGHT)).into_drawing_area();
    root.fill(&WHITE).map_err(draw_err)?;
    Ok(root)
}

/// Every chart's frame: its title, margins and axis areas.
pub(crate) fn titled<'a, 'b>(
    root: &'a DrawingArea<SVGBackend<'b>, Shift>,
    title: &str,
) -> ChartBuilder<'a, 'b, SVGBackend<'b>> {
    let mut builder = ChartBuilder::on(root);
    builder
        .caption(title, ("sans-serif", 26))
        .margin(15)
        .x_label_area_size(45)
        .y_label_area_size(80);
    builder
}

pub(crate) fn write_file(path: &Path, svg: &str) -> Result<(), ChartError> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        fs::create_dir_all(dir).map_err(ChartError::Io)?;
    }
    fs::write(path, svg).map_err(ChartError::Io)
}

pub(crate) fn widen_span((lo, hi): (f64, f64)) -> (f64, f64) {
    widen(lo, hi)
}

/// Smallest and largest of `values` (callers pass at least one value).
fn span(values: impl Iterator<Item = f64>) -> (f64, f64) {
    values.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
        (lo.min(v), hi.max(v))
    })
}

/// A non-empty range: a single value `v` becomes `v - 1 .. v + 1`.
pub(crate) fn widen(lo: f64, hi: f64) -> (f64, f64) {
    if hi > lo {
        (lo, hi)
    } else {
        (lo - 1.0, hi + 1.0)
    }
}

/// A tick label with at most three significant decimals and no float noise: `1.5`, `1200`,
/// `0.003`.
pub fn short(v: f64) -> String {
    if v == 0.0 {
        return "0".to_string();
    }
    // Large figures in three significant digits with a unit (5364807 -> 5.36M): a raw 7-digit
    // number on an axis or above a bar is hard to read.
    for (unit, scale) in [("G", 1e9), ("M", 1e6), ("k", 1e3)] {
        if v.abs() >= 10.0 * scale || (unit != "k" && v.abs() >= scale) {
            return format!("{}{unit}", short(v / scale));
        }
    }
    let digits = (3 - v.abs().log10().floor() as i32).clamp(0, 6) as usize;
    let s = format!("{v:.digits$}");
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    }
}

mod bar;
mod line;
#[cfg(test)]
mod tests;
