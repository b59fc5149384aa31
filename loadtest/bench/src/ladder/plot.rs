//! Draws a ladder data file as one SVG: deliveries/s against the offered
//! rate on top, p99 latency (log scale) against the offered rate below, one
//! colour per series; a step with loss or another failed check is drawn as
//! a cross instead of a dot.
//!
//! Owns the picture only (plotters, SVG backend, no fonts of its own: the
//! viewer renders the text).
//!
//! Must never: change the data it draws.

use std::path::Path;

use plotters::coord::Shift;
use plotters::prelude::*;

use super::{LadderData, Point, Series};
use crate::BenchError;

/// Picture size in pixels.
const SIZE: (u32, u32) = (960, 900);

/// Writes the picture of `data` to `path`.
pub fn draw(data: &LadderData, path: &Path) -> Result<(), BenchError> {
    let root = SVGBackend::new(path, SIZE).into_drawing_area();
    draw_on(&root, data).map_err(|e| BenchError::Invalid(format!("cannot draw {path:?}: {e}")))?;
    root.present()
        .map_err(|e| BenchError::Invalid(format!("cannot write {path:?}: {e}")))
}

type DrawResult<DB> = Result<(), DrawingAreaErrorKind<<DB as DrawingBackend>::ErrorType>>;

fn draw_on<DB: DrawingBackend>(root: &DrawingArea<DB, Shift>, data: &LadderData) -> DrawResult<DB> {
    root.fill(&WHITE)?;
    let title = if data.title.is_empty() {
        "chatgate: offered-rate ladder"
    } else {
        &data.title
    };
    let root = root.titled(title, ("sans-serif", 22))?;
    let (top, bottom) = root.split_vertically(SIZE.1 / 2 - 20);
    let x_max = axis_max(data, |p| p.offered);
    let deliveries_max = axis_max(data, |p| p.deliveries_per_s);
    let p99_max = axis_max(data, |p| p.p99_ms).max(10.0);

    let mut chart = ChartBuilder::on(&top)
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(90)
        .build_cartesian_2d(0f64..x_max, 0f64..deliveries_max)?;
    chart
        .configure_mesh()
        .x_desc("offered messages/s")
        .y_desc("deliveries/s")
        .y_label_formatter(&|v| format!("{:.0}k", v / 1000.0))
        .draw()?;
    for (i, series) in data.series.iter().enumerate() {
        let color = Palette99::pick(i).to_rgba();
        draw_series(&mut chart, series, color, |p| p.deliveries_per_s)?;
    }
    legend(&mut chart)?;

    let mut chart = ChartBuilder::on(&bottom)
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(90)
        .build_cartesian_2d(0f64..x_max, (0.1f64..p99_max).log_scale())?;
    chart
        .configure_mesh()
        .x_desc("offered messages/s")
        .y_desc("p99 latency, ms (log)")
        .draw()?;
    for (i, series) in data.series.iter().enumerate() {
        let color = Palette99::pick(i).to_rgba();
        draw_series(&mut chart, series, color, |p| p.p99_ms.max(0.1))?;
    }
    legend(&mut chart)
}

/// 10 % above the largest value of `f` over every point (1 if none).
fn axis_max(data: &LadderData, f: impl Fn(&Point) -> f64) -> f64 {
    let max = data
        .series
        .iter()
        .flat_map(|s| s.points.iter())
        .map(f)
        .fold(0.0, f64::max);
    if max > 0.0 {
        max * 1.1
    } else {
        1.0
    }
}

fn draw_series<DB, X, Y>(
    chart: &mut ChartContext<'_, DB, Cartesian2d<X, Y>>,
    series: &Series,
    color: RGBAColor,
    y: impl Fn(&Point) -> f64,
) -> DrawResult<DB>
where
    DB: DrawingBackend,
    X: Ranged<ValueType = f64>,
    Y: Ranged<ValueType = f64>,
{
    let line = series.points.iter().map(|p| (p.offered, y(p)));
    chart
        .draw_series(LineSeries::new(line, color.stroke_width(2)))?
        .label(series.label.as_str())
        .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2)));
    let ok = series.points.iter().filter(|p| p.ok);
    chart.draw_series(ok.map(|p| Circle::new((p.offered, y(p)), 4, color.filled())))?;
    let failed = series.points.iter().filter(|p| !p.ok);
    chart.draw_series(failed.map(|p| Cross::new((p.offered, y(p)), 6, color.stroke_width(2))))?;
    Ok(())
}

fn legend<'a, DB, X, Y>(chart: &mut ChartContext<'a, DB, Cartesian2d<X, Y>>) -> DrawResult<DB>
where
    DB: DrawingBackend + 'a,
    X: Ranged<ValueType = f64>,
    Y: Ranged<ValueType = f64>,
{
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draws_every_series_into_an_svg() {
        let point = |offered: f64, ok| Point {
            offered,
            sent_per_s: offered,
            committed_per_s: offered,
            deliveries_per_s: offered * 50.0,
            lost: 0,
            p50_ms: 3.0,
            p99_ms: offered / 100.0,
            ok,
        };
        let data = LadderData {
            title: "test ladder".into(),
            series: vec![
                Series {
                    label: "sqlite".into(),
                    points: vec![point(1000.0, true), point(2000.0, true)],
                },
                Series {
                    label: "postgres".into(),
                    points: vec![point(1000.0, true), point(3000.0, false)],
                },
            ],
        };
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ladder.svg");
        draw(&data, &path).unwrap();
        let svg = std::fs::read_to_string(&path).unwrap();
        assert!(svg.starts_with("<svg"));
        assert!(svg.contains("test ladder") && svg.contains("sqlite") && svg.contains("postgres"));
        assert!(svg.contains("deliveries/s"));
    }
}
