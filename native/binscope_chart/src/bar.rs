//! [`BarChart`]: one bar per label.

use plotters::coord::ranged1d::SegmentValue;
use plotters::prelude::*;

use super::*;

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
            let root = canvas(&mut svg)?;
            let mut chart = titled(&root, &self.title)
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
