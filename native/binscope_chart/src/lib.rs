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

use plotters::coord::ranged1d::SegmentValue;
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

fn draw_err<E: fmt::Debug>(e: E) -> ChartError {
    ChartError::Draw(format!("{e:?}"))
}

const PALETTE: [RGBColor; 8] = [
    RGBColor(31, 119, 180),
    RGBColor(214, 39, 40),
    RGBColor(44, 160, 44),
    RGBColor(255, 127, 14),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(23, 190, 207),
];

fn check_text(texts: &[&str]) -> Result<(), ChartError> {
    if texts.iter().any(|t| t.len() > MAX_TEXT) {
        Err(ChartError::TooLarge)
    } else {
        Ok(())
    }
}

impl LineChart {
    /// Checks limits and finiteness; `Empty` when no series has a point.
    pub fn validate(&self) -> Result<(), ChartError> {
        let points: usize = self.series.iter().map(|s| s.points.len()).sum();
        if self.series.len() > MAX_SERIES || points > MAX_POINTS || self.events.len() > MAX_MARKS {
            return Err(ChartError::TooLarge);
        }
        check_text(&[&self.title, &self.x_label, &self.y_label])?;
        for s in &self.series {
            check_text(&[&s.name])?;
        }
        for e in &self.events {
            check_text(&[&e.label])?;
        }
        if points == 0 {
            return Err(ChartError::Empty);
        }
        let finite = self
            .series
            .iter()
            .flat_map(|s| s.points.iter())
            .all(|(x, y)| x.is_finite() && y.is_finite())
            && self.events.iter().all(|e| e.x.is_finite());
        if finite {
            Ok(())
        } else {
            Err(ChartError::NonFinite)
        }
    }

    /// The axis ranges: x spans every point and event; y starts at 0 (or below, for negative
    /// values) and leaves a band of `band` pixels above the highest point for the legend and the
    /// event labels.
    fn ranges(&self, band: f64) -> ((f64, f64), (f64, f64)) {
        let xs = self
            .series
            .iter()
            .flat_map(|s| s.points.iter().map(|p| p.0))
            .chain(self.events.iter().map(|e| e.x));
        let ys = self
            .series
            .iter()
            .flat_map(|s| s.points.iter().map(|p| p.1));
        let (x0, x1) = span(xs);
        let (y0, y1) = widen_span(span(ys.chain(std::iter::once(0.0))));
        let band = band.min(PLOT_H * 0.6);
        let pad = (y1 - y0) * band / (PLOT_H - band);
        (widen(x0, x1), (y0, y1 + pad))
    }

    /// Pixel width of the legend box (estimated from the longest series name).
    fn legend_width(&self) -> f64 {
        let longest = self.series.iter().map(|s| s.name.chars().count()).max();
        longest.map_or(0.0, |n| 40.0 + n as f64 * LEGEND_CHAR_PX)
    }

    /// Pixel height of the legend box.
    fn legend_height(&self) -> f64 {
        if self.series.is_empty() {
            0.0
        } else {
            12.0 + 17.0 * self.series.len() as f64
        }
    }

    /// Draws the chart into an SVG document.
    pub fn to_svg(&self) -> Result<String, ChartError> {
        self.validate()?;
        let (xr, _) = self.ranges(0.0);
        let labels = place_labels(&self.events, xr, self.legend_width(), self.legend_height());
        let rows = labels.iter().map(|l| l.row + 1).max().unwrap_or(0) as f64;
        let band = (rows * ROW_PX + 6.0).max(self.legend_height() + 6.0);
        let ((x0, x1), (y0, y1)) = self.ranges(band);
        let mut svg = String::new();
        {
            let root = SVGBackend::with_string(&mut svg, (WIDTH, HEIGHT)).into_drawing_area();
            root.fill(&WHITE).map_err(draw_err)?;
            let mut chart = ChartBuilder::on(&root)
                .caption(&self.title, ("sans-serif", 26))
                .margin(15)
                .x_label_area_size(45)
                .y_label_area_size(80)
                .build_cartesian_2d(x0..x1, y0..y1)
                .map_err(draw_err)?;
            chart
                .configure_mesh()
                .x_desc(&self.x_label)
                .y_desc(&self.y_label)
                .x_label_formatter(&|v| short(*v))
                .y_label_formatter(&|v| short(*v))
                .label_style(("sans-serif", 15))
                .axis_desc_style(("sans-serif", 17))
                .light_line_style(WHITE.mix(0.0))
                .draw()
                .map_err(draw_err)?;

            // Events first, so the lines are drawn over the markers; labels sit in the band
            // above the data, in rows, never over each other or the legend.
            let marker = RGBColor(90, 90, 90);
            for e in &self.events {
                chart
                    .draw_series(std::iter::once(PathElement::new(
                        vec![(e.x, y0), (e.x, y1)],
                        marker.mix(0.7).stroke_width(1),
                    )))
                    .map_err(draw_err)?;
            }
            let area = chart.plotting_area().strip_coord_spec();
            let (pw, _) = area.dim_in_pixel();
            for l in &labels {
                let px = (l.start * pw as f64).round() as i32;
                let py = (4.0 + ROW_PX * l.row as f64).round() as i32;
                area.draw(&Text::new(
                    l.text.clone(),
                    (px, py),
                    ("sans-serif", 14).into_font().color(&marker),
                ))
                .map_err(draw_err)?;
            }

            // Earlier series are drawn wider, so a later one that coincides with them (the same
            // bytes seen two ways) shows as a thinner line inside a wider one, never hidden.
            let n = self.series.len() as u32;
            for (i, s) in self.series.iter().enumerate() {
                let color = PALETTE[i % PALETTE.len()];
                let style = color.stroke_width(2 + 2 * (n - 1 - i as u32).min(3));
                let drawn = chart
                    .draw_series(LineSeries::new(s.points.iter().copied(), style))
                    .map_err(draw_err)?;
                drawn.label(s.name.clone()).legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
                });
            }
            if !self.series.is_empty() {
                chart
                    .configure_series_labels()
                    .position(SeriesLabelPosition::UpperRight)
                    .background_style(WHITE.mix(0.85))
                    .border_style(BLACK.mix(0.4))
                    .draw()
                    .map_err(draw_err)?;
            }
            root.present().map_err(draw_err)?;
        }
        Ok(svg)
    }

    /// Draws the chart and writes it to `path`, creating missing parent directories.
    pub fn write(&self, path: &Path) -> Result<(), ChartError> {
        write_file(path, &self.to_svg()?)
    }
}

impl BarChart {
    /// Checks limits and finiteness; `Empty` when there is no bar.
    pub fn validate(&self) -> Result<(), ChartError> {
        if self.bars.len() > MAX_MARKS {
            return Err(ChartError::TooLarge);
        }
        check_text(&[&self.title, &self.y_label])?;
        for (label, _) in &self.bars {
            check_text(&[label])?;
        }
        if self.bars.is_empty() {
            return Err(ChartError::Empty);
        }
        if self.bars.iter().all(|(_, v)| v.is_finite()) {
            Ok(())
        } else {
            Err(ChartError::NonFinite)
        }
    }

    /// Draws the chart into an SVG document.
    pub fn to_svg(&self) -> Result<String, ChartError> {
        self.validate()?;
        let (y0, y1) = span(self.bars.iter().map(|b| b.1).chain(std::iter::once(0.0)));
        let (y0, y1) = widen(y0, y1 + (y1 - y0) * 0.1);
        let n = self.bars.len();
        let labels: Vec<&str> = self.bars.iter().map(|b| b.0.as_str()).collect();
        let mut svg = String::new();
        {
            let root = SVGBackend::with_string(&mut svg, (WIDTH, HEIGHT)).into_drawing_area();
            root.fill(&WHITE).map_err(draw_err)?;
            let mut chart = ChartBuilder::on(&root)
                .caption(&self.title, ("sans-serif", 26))
                .margin(15)
                .x_label_area_size(45)
                .y_label_area_size(80)
                // A discrete range includes its end: 0..n - 1 makes n slots, one per bar (0..n
                // left an empty slot at the right).
                .build_cartesian_2d((0..n - 1).into_segmented(), y0..y1)
                .map_err(draw_err)?;
            let label_of = |v: &SegmentValue<usize>| {
                match v {
                    SegmentValue::CenterOf(i) => labels.get(*i).map(|s| s.to_string()),
                    _ => None,
                }
                .unwrap_or_default()
            };
            chart
                .configure_mesh()
                .disable_x_mesh()
                .x_labels(n)
                .x_label_formatter(&label_of)
                .y_desc(&self.y_label)
                .y_label_formatter(&|v| short(*v))
                .label_style(("sans-serif", 15))
                .axis_desc_style(("sans-serif", 17))
                .light_line_style(WHITE.mix(0.0))
                .draw()
                .map_err(draw_err)?;
            chart
                .draw_series(
                    Histogram::vertical(&chart)
                        .style(PALETTE[0].filled())
                        .margin(12)
                        .data(self.bars.iter().enumerate().map(|(i, b)| (i, b.1))),
                )
                .map_err(draw_err)?;
            // The value above each bar, so the figure is readable without the axis.
            chart
                .draw_series(self.bars.iter().enumerate().map(|(i, b)| {
                    let y = b.1.max(0.0) + (y1 - y0) * 0.02;
                    Text::new(
                        short(b.1),
                        (SegmentValue::CenterOf(i), y),
                        ("sans-serif", 15).into_font().color(&BLACK).pos(
                            plotters::style::text_anchor::Pos::new(
                                plotters::style::text_anchor::HPos::Center,
                                plotters::style::text_anchor::VPos::Bottom,
                            ),
                        ),
                    )
                }))
                .map_err(draw_err)?;
            root.present().map_err(draw_err)?;
        }
        Ok(svg)
    }

    /// Draws the chart and writes it to `path`, creating missing parent directories.
    pub fn write(&self, path: &Path) -> Result<(), ChartError> {
        write_file(path, &self.to_svg()?)
    }
}

fn write_file(path: &Path, svg: &str) -> Result<(), ChartError> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        fs::create_dir_all(dir).map_err(ChartError::Io)?;
    }
    fs::write(path, svg).map_err(ChartError::Io)
}

/// Smallest and largest of `values` (callers pass at least one value).
/// Plot area of a line chart in pixels (the canvas minus margins, caption and axis areas).
const PLOT_W: f64 = WIDTH as f64 - 30.0 - 80.0;
const PLOT_H: f64 = HEIGHT as f64 - 30.0 - 45.0 - 40.0;
/// Height of one row of event labels, and the estimated width of one character, in pixels.
const ROW_PX: f64 = 17.0;
const LABEL_CHAR_PX: f64 = 7.6;
const LEGEND_CHAR_PX: f64 = 6.6;
/// Rows of event labels at most; further labels overlap the last row.
const MAX_ROWS: usize = 12;

/// An event label placed in the band above the data.
#[derive(Debug, Clone, PartialEq)]
struct Placed {
    text: String,
    /// Left edge as a fraction of the plot width.
    start: f64,
    row: usize,
}

/// Places event labels in rows: events are taken in x order; runs of the same label closer
/// than a label's width become one label with a count ("major GC x7"); each label goes to its
/// event's right (or else its left) in the first row where it overlaps no other
/// label and not the legend box (top right, `legend_w` x `legend_h` pixels).
fn place_labels(
    events: &[Event],
    (x0, x1): (f64, f64),
    legend_w: f64,
    legend_h: f64,
) -> Vec<Placed> {
    let frac = |x: f64| if x1 > x0 { (x - x0) / (x1 - x0) } else { 0.0 };
    let width = |t: &str| (t.chars().count() as f64 * LABEL_CHAR_PX + 6.0) / PLOT_W;
    let mut sorted: Vec<&Event> = events.iter().collect();
    sorted.sort_by(|a, b| a.x.total_cmp(&b.x));

    let mut groups: Vec<(String, f64, usize)> = Vec::new();
    for e in sorted {
        let x = frac(e.x);
        match groups.last_mut() {
            Some((label, gx, n)) if *label == e.label && x - *gx < width(label) => *n += 1,
            _ => groups.push((e.label.clone(), x, 1)),
        }
    }

    let legend_rows = (legend_h / ROW_PX).ceil() as usize;
    let legend_start = 1.0 - (legend_w + 10.0) / PLOT_W;
    let mut rows: Vec<Vec<(f64, f64)>> = vec![Vec::new(); MAX_ROWS];
    for (r, row) in rows.iter_mut().enumerate() {
        if r < legend_rows {
            row.push((legend_start, 1.0));
        }
    }

    let mut placed = Vec::new();
    for (label, x, n) in groups {
        let text = if n > 1 {
            format!("{label} x{n}")
        } else {
            label
        };
        let w = width(&text);
        // Starting at its event in the first row from the top with room; else ending at it;
        // else the last row. A label that starts at its line reads as that line's, so every row
        // is tried for that before any label is put to the left of its line.
        let free = |row: &Vec<(f64, f64)>, start: f64| {
            start >= 0.0
                && start + w <= 1.0
                && row.iter().all(|&(a, b)| start + w <= a || start >= b)
        };
        let find = |start: f64| {
            rows.iter()
                .enumerate()
                .find(|(_, row)| free(row, start))
                .map(|(r, _)| (r, start))
        };
        let (row, start) = find(x)
            .or_else(|| find(x - w))
            .unwrap_or((MAX_ROWS - 1, (x - w).clamp(0.0, x)));
        rows[row].push((start, start + w));
        placed.push(Placed {
            text,
            start: start + 2.0 / PLOT_W,
            row,
        });
    }
    placed
}

fn widen_span((lo, hi): (f64, f64)) -> (f64, f64) {
    widen(lo, hi)
}

fn span(values: impl Iterator<Item = f64>) -> (f64, f64) {
    values.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
        (lo.min(v), hi.max(v))
    })
}

/// A non-empty range: a single value `v` becomes `v - 1 .. v + 1`.
fn widen(lo: f64, hi: f64) -> (f64, f64) {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn line() -> LineChart {
        LineChart {
            title: "Heap over time".into(),
            x_label: "time (ms)".into(),
            y_label: "memory (KiB)".into(),
            series: vec![
                Series {
                    name: "server heap".into(),
                    points: vec![(0.0, 10.0), (5.0, 300.0), (10.0, 12.0)],
                },
                Series {
                    name: "binary <refc> & co".into(),
                    points: vec![(0.0, 1.0), (10.0, 2.0)],
                },
            ],
            events: vec![
                Event {
                    x: 5.0,
                    label: "manual GC".into(),
                },
                Event {
                    x: 9.0,
                    label: "exit".into(),
                },
            ],
        }
    }

    #[test]
    fn line_svg_names_every_series_and_event() {
        let svg = line().to_svg().unwrap();
        assert!(svg.starts_with("<svg"));
        for text in ["Heap over time", "time (ms)", "memory (KiB)", "server heap"] {
            assert!(svg.contains(text), "missing {text}");
        }
        // Labels are XML-escaped, not injected.
        assert!(svg.contains("binary &lt;refc&gt; &amp; co"));
        assert!(svg.contains(">\nmanual GC\n<") || svg.contains(">manual GC<"));
        assert!(svg.contains("exit"));
        // Two series lines plus the two event markers are paths/polylines.
        assert!(svg.matches("<polyline").count() >= 4);
    }

    #[test]
    fn bars_svg_has_labels_and_values() {
        let chart = BarChart {
            title: "Throughput".into(),
            y_label: "msgs/s".into(),
            bars: vec![("plain".into(), 1200.0), ("hibernate".into(), 300.5)],
        };
        let svg = chart.to_svg().unwrap();
        for text in [
            "Throughput",
            "msgs/s",
            "plain",
            "hibernate",
            "1200",
            "300.5",
        ] {
            assert!(svg.contains(text), "missing {text}");
        }
        assert!(svg.matches("<rect").count() >= 3); // background + 2 bars
    }

    #[test]
    fn bars_fill_the_plot_with_no_empty_slot() {
        for n in [1usize, 3, 5] {
            let chart = BarChart {
                title: "t".into(),
                y_label: "y".into(),
                bars: (0..n)
                    .map(|i| (format!("b{i}"), 5364807.0 + i as f64))
                    .collect(),
            };
            let svg = chart.to_svg().unwrap();
            // The bars: filled rects in the first palette colour.
            let fill = format!(
                "fill=\"#{:02X}{:02X}{:02X}\"",
                PALETTE[0].0, PALETTE[0].1, PALETTE[0].2
            );
            let bars: Vec<(f64, f64)> = svg
                .split("<rect")
                .skip(1)
                .filter(|r| r.contains(&fill))
                .map(|r| {
                    let attr = |k: &str| -> f64 {
                        let a = r.split(&format!(" {k}=\"")).nth(1).unwrap();
                        a.split('"').next().unwrap().parse().unwrap()
                    };
                    (attr("x"), attr("width"))
                })
                .collect();
            assert_eq!(bars.len(), n, "{svg}");
            let right = bars.iter().map(|(x, w)| x + w).fold(0.0, f64::max);
            let width = bars[0].1;
            // Right of the last bar: its own slot's margin, not another empty slot.
            assert!(
                f64::from(WIDTH) - right < width,
                "n={n}: right edge {right}, bar {width}"
            );
            assert!(svg.contains("5.365M") && !svg.contains("5364807"));
        }
    }

    #[test]
    fn writes_file_creating_parents() {
        let dir = std::env::temp_dir().join(format!("binscope_chart_{}", std::process::id()));
        let path = dir.join("a/b/chart.svg");
        line().write(&path).unwrap();
        let text = fs::read_to_string(&path).unwrap();
        assert!(text.contains("server heap"));
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn rejects_bad_input() {
        let mut c = line();
        c.series[0].points.push((f64::NAN, 1.0));
        assert!(matches!(c.to_svg(), Err(ChartError::NonFinite)));

        let mut c = line();
        c.events[0].x = f64::INFINITY;
        assert!(matches!(c.validate(), Err(ChartError::NonFinite)));

        let c = LineChart {
            series: vec![Series {
                name: "x".into(),
                points: vec![],
            }],
            ..LineChart::default()
        };
        assert!(matches!(c.validate(), Err(ChartError::Empty)));
        assert!(matches!(
            BarChart::default().validate(),
            Err(ChartError::Empty)
        ));

        let mut c = line();
        c.title = "x".repeat(MAX_TEXT + 1);
        assert!(matches!(c.validate(), Err(ChartError::TooLarge)));

        let b = BarChart {
            bars: vec![("a".into(), f64::NEG_INFINITY)],
            ..BarChart::default()
        };
        assert!(matches!(b.validate(), Err(ChartError::NonFinite)));
    }

    #[test]
    fn degenerate_ranges_still_draw() {
        // One point, negative values, a single bar: no panic, a real chart.
        let c = LineChart {
            series: vec![Series {
                name: "one".into(),
                points: vec![(3.0, -2.0)],
            }],
            ..LineChart::default()
        };
        assert!(c.to_svg().unwrap().contains("one"));
        let b = BarChart {
            bars: vec![("neg".into(), -5.0)],
            ..BarChart::default()
        };
        assert!(b.to_svg().unwrap().contains("neg"));
    }

    #[test]
    fn io_error_is_reported() {
        let c = line();
        let err = c.write(Path::new("/proc/binscope/none.svg")).unwrap_err();
        assert_eq!(err.name(), "io");
    }

    #[test]
    fn short_labels() {
        assert_eq!(short(0.0), "0");
        assert_eq!(short(1200.0), "1200");
        assert_eq!(short(1.5), "1.5");
        assert_eq!(short(0.1 + 0.2), "0.3");
        assert_eq!(short(-2.25), "-2.25");
        assert_eq!(short(12345678.0), "12.35M");
        assert_eq!(short(5364807.0), "5.365M");
        assert_eq!(short(53648.0), "53.65k");
        assert_eq!(short(9999.0), "9999");
        assert_eq!(short(-2.5e9), "-2.5G");
    }

    #[test]
    fn event_labels_never_overlap_and_repeats_merge() {
        let ev = |x: f64, l: &str| Event {
            x,
            label: l.to_string(),
        };
        let events = vec![
            ev(0.0, "major GC"),
            ev(1.0, "major GC"),
            ev(2.0, "major GC"),
            ev(3.0, "burst"),
            ev(50.0, "flush"),
            ev(99.0, "exit"),
        ];
        let placed = place_labels(&events, (0.0, 100.0), 200.0, 60.0);
        let texts: Vec<&str> = placed.iter().map(|p| p.text.as_str()).collect();
        assert_eq!(texts, ["major GC x3", "burst", "flush", "exit"]);
        // "burst" starts inside "major GC x3": another row.
        assert_ne!(placed[0].row, placed[1].row);
        // Near the right edge the label goes left of its event, below the legend's rows.
        let exit = &placed[3];
        assert!(exit.start < 0.99);
        assert!(exit.row as f64 * ROW_PX >= 60.0 || exit.start + 0.05 < 1.0 - 210.0 / PLOT_W);
        for (i, a) in placed.iter().enumerate() {
            for b in &placed[i + 1..] {
                if a.row == b.row {
                    let wa = a.text.chars().count() as f64 * LABEL_CHAR_PX / PLOT_W;
                    let wb = b.text.chars().count() as f64 * LABEL_CHAR_PX / PLOT_W;
                    assert!(
                        a.start + wa <= b.start || b.start + wb <= a.start,
                        "{a:?} {b:?}"
                    );
                }
            }
        }
    }
}
