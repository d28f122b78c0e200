//! [`LineChart`]: series over time with event markers, and where their labels go.

use plotters::prelude::*;

use super::*;

/// Plot area of a line chart in pixels (the canvas minus margins, caption and axis areas).
pub(crate) const PLOT_W: f64 = WIDTH as f64 - 30.0 - 80.0;
pub(crate) const PLOT_H: f64 = HEIGHT as f64 - 30.0 - 45.0 - 40.0;
/// Height of one row of event labels, and the estimated width of one character, in pixels.
pub(crate) const ROW_PX: f64 = 17.0;
pub(crate) const LABEL_CHAR_PX: f64 = 7.6;
pub(crate) const LEGEND_CHAR_PX: f64 = 6.6;
/// Rows of event labels at most; further labels overlap the last row.
pub(crate) const MAX_ROWS: usize = 12;

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
            let root = canvas(&mut svg)?;
            let mut chart = titled(&root, &self.title)
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

/// An event label placed in the band above the data.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Placed {
    pub(crate) text: String,
    /// Left edge as a fraction of the plot width.
    pub(crate) start: f64,
    pub(crate) row: usize,
}

/// Places event labels in rows: events are taken in x order; runs of the same label closer
/// than a label's width become one label with a count ("major GC x7"); each label goes to its
/// event's right (or else its left) in the first row where it overlaps no other
/// label and not the legend box (top right, `legend_w` x `legend_h` pixels).
pub(crate) fn place_labels(
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
