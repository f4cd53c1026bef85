//! SVG plots of routing curves: quality against strong-call share (binary routers) or against cost (N-way),
//! with single models as labelled points.
//!
//! Drawing goes through `plotters` with only its SVG backend, so no font or image library is linked; text is
//! written as SVG `<text>` and laid out by the viewer. A cost axis spans orders of magnitude, so it can be
//! logarithmic ([`PlotSpec::log_x`]): values are plotted as `log10` and the ticks are labelled with the cost.

use std::path::Path;

use plotters::prelude::*;

use crate::error::{LearnError, Result};

/// How a series is drawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SeriesKind {
    /// A polyline through the points (a router's curve).
    Line,
    /// Separate markers, each with its label when given (single models, chosen operating points).
    Points,
}

/// One named series of `(x, y)` points.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    /// The legend entry.
    pub name: String,
    /// Line or markers.
    pub kind: SeriesKind,
    /// The points.
    pub points: Vec<(f64, f64)>,
    /// One label per point for [`SeriesKind::Points`], or empty for none.
    pub labels: Vec<String>,
}

impl Series {
    /// A line series.
    pub fn line(name: impl Into<String>, points: Vec<(f64, f64)>) -> Self {
        Self { name: name.into(), kind: SeriesKind::Line, points, labels: Vec::new() }
    }

    /// A labelled marker series.
    pub fn points(name: impl Into<String>, points: Vec<(f64, f64)>, labels: Vec<String>) -> Self {
        Self { name: name.into(), kind: SeriesKind::Points, points, labels }
    }
}

/// A whole plot.
#[derive(Debug, Clone, PartialEq)]
pub struct PlotSpec {
    /// The caption.
    pub title: String,
    /// The x axis description.
    pub x_label: String,
    /// The y axis description.
    pub y_label: String,
    /// Logarithmic x axis (all x must be positive).
    pub log_x: bool,
    /// The series, drawn in order.
    pub series: Vec<Series>,
}

const COLORS: [RGBColor; 8] = [
    RGBColor(31, 119, 180),
    RGBColor(214, 39, 40),
    RGBColor(44, 160, 44),
    RGBColor(255, 127, 14),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(127, 127, 127),
    RGBColor(23, 190, 207),
];

/// Renders the plot as an SVG document.
pub fn render_svg(spec: &PlotSpec) -> Result<String> {
    let fail = |reason: String| LearnError::Plot { path: spec.title.clone().into(), reason };
    let tx = |x: f64| if spec.log_x { x.log10() } else { x };
    let all: Vec<(f64, f64)> = spec.series.iter().flat_map(|s| s.points.iter().map(|&(x, y)| (tx(x), y))).collect();
    if all.is_empty() || all.iter().any(|(x, y)| !x.is_finite() || !y.is_finite()) {
        return Err(fail("no points, or a point that is not finite (log axis needs positive x)".into()));
    }
    let range = |vals: &mut dyn Iterator<Item = f64>| {
        let (lo, hi) = vals.fold((f64::INFINITY, f64::NEG_INFINITY), |(l, h), v| (l.min(v), h.max(v)));
        let pad = ((hi - lo) * 0.05).max(1e-9);
        (lo - pad)..(hi + pad)
    };
    let xr = range(&mut all.iter().map(|p| p.0));
    let yr = range(&mut all.iter().map(|p| p.1));
    // Linear tick labels carry enough decimals to tell ticks apart: costs per query are often below a cent.
    let x_decimals = ((-(xr.end - xr.start).log10()).ceil() + 2.0).clamp(2.0, 12.0) as usize;
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (960, 640)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| fail(e.to_string()))?;
        let mut chart = ChartBuilder::on(&root)
            .caption(&spec.title, ("sans-serif", 22))
            .margin(20)
            // Room for the labels of points at the right edge.
            .margin_right(140)
            .x_label_area_size(50)
            .y_label_area_size(70)
            .build_cartesian_2d(xr, yr)
            .map_err(|e| fail(e.to_string()))?;
        let log_x = spec.log_x;
        let x_fmt = move |v: &f64| if log_x { format!("{:.2e}", 10f64.powf(*v)) } else { format!("{v:.x_decimals$}") };
        chart
            .configure_mesh()
            .x_desc(&spec.x_label)
            .y_desc(&spec.y_label)
            .x_label_formatter(&x_fmt)
            .y_label_formatter(&|v: &f64| format!("{v:.3}"))
            .draw()
            .map_err(|e| fail(e.to_string()))?;
        for (k, s) in spec.series.iter().enumerate() {
            let color = COLORS[k % COLORS.len()];
            let pts: Vec<(f64, f64)> = s.points.iter().map(|&(x, y)| (tx(x), y)).collect();
            let drawn = match s.kind {
                SeriesKind::Line => chart.draw_series(LineSeries::new(pts, color.stroke_width(2))),
                SeriesKind::Points => chart.draw_series(pts.iter().enumerate().map(|(i, &p)| {
                    let label = s.labels.get(i).cloned().unwrap_or_default();
                    EmptyElement::at(p)
                        + Circle::new((0, 0), 4, color.filled())
                        + Text::new(label, (6, -12), ("sans-serif", 11).into_font())
                })),
            }
            .map_err(|e| fail(e.to_string()))?;
            drawn
                .label(&s.name)
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(3)));
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .position(SeriesLabelPosition::LowerRight)
            .draw()
            .map_err(|e| fail(e.to_string()))?;
        root.present().map_err(|e| fail(e.to_string()))?;
    }
    Ok(svg)
}

/// Renders the plot and writes it to `path`.
pub fn write_svg(path: &Path, spec: &PlotSpec) -> Result<()> {
    let svg = render_svg(spec).map_err(|e| match e {
        LearnError::Plot { reason, .. } => LearnError::Plot { path: path.to_path_buf(), reason },
        other => other,
    })?;
    std::fs::write(path, svg).map_err(|e| LearnError::io(path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(log_x: bool) -> PlotSpec {
        PlotSpec {
            title: "quality vs cost".into(),
            x_label: "cost per query (USD)".into(),
            y_label: "accuracy".into(),
            log_x,
            series: vec![
                Series::line("router", vec![(0.001, 0.5), (0.01, 0.8), (0.1, 0.9)]),
                Series::points("models", vec![(0.002, 0.6), (0.05, 0.85)], vec!["small".into(), "large".into()]),
            ],
        }
    }

    #[test]
    fn renders_svg_with_series_and_labels() {
        let svg = render_svg(&spec(true)).expect("renders");
        assert!(svg.starts_with("<svg"));
        for text in ["router", "models", "small", "large", "accuracy"] {
            assert!(svg.contains(text), "{text} missing");
        }
        assert!(svg.contains("<polyline") || svg.contains("<path"));
        assert!(render_svg(&spec(false)).is_ok());
    }

    #[test]
    fn linear_ticks_of_small_costs_are_told_apart() {
        let small = PlotSpec {
            series: vec![Series::line("cascade", vec![(0.0001, 0.6), (0.002, 0.8), (0.004, 0.9)])],
            ..spec(false)
        };
        let svg = render_svg(&small).expect("renders");
        let ticks: Vec<&str> = svg
            .split('>')
            .filter_map(|t| t.split('<').next())
            .map(str::trim)
            .filter(|t| t.starts_with("0.00"))
            .collect();
        assert!(ticks.contains(&"0.00200"), "{ticks:?}");
        assert!(!ticks.contains(&"0.00"), "{ticks:?}");
    }

    #[test]
    fn refuses_what_it_cannot_draw() {
        let mut s = spec(true);
        s.series[0].points.push((0.0, 0.5));
        assert!(matches!(render_svg(&s), Err(LearnError::Plot { .. })));
        let empty = PlotSpec { series: vec![], ..spec(false) };
        assert!(render_svg(&empty).is_err());
    }
}
