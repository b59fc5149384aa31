//! The soak's samples: reading the CSV `loadtest/soak.sh` writes
//! (`t_s,node,<series>…`, one row per node every 10 s), the flatness
//! verdict per node and series, and the SVG (one panel per series, one
//! line per node, the warm-up shaded).
//!
//! Flat means: after the warm-up, the mean of the last fifth of the
//! samples is within `tolerance` (10 %) of the mean of the first fifth —
//! a trend test, so a series that swings with the churn but does not grow
//! passes, and one that creeps up fails. A series whose first-fifth and
//! last-fifth means are both at or below a small absolute floor (a queue
//! depth of a few items, now and then) is flat by definition: 10 % of
//! nearly nothing is noise; one that grows from 0 past the floor is not.
//!
//! Must never: change the samples, or call a series flat that had no
//! samples after the warm-up.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::path::Path;

use plotters::prelude::*;
use serde::Serialize;

use crate::BenchError;

/// Picture width, and height per panel, in pixels.
const WIDTH: u32 = 1000;
const PANEL: u32 = 260;

/// Values at or below this are "nothing" for the flatness test.
const FLOOR: f64 = 10.0;

/// One series of one node: (seconds, value) samples.
pub type Samples = Vec<(f64, f64)>;

/// Every sample of a CSV: series name → node → samples, in file order.
#[derive(Debug, Default)]
pub struct SoakData {
    pub series: Vec<String>,
    pub by_series: BTreeMap<String, BTreeMap<String, Samples>>,
}

/// The verdict on one node's series.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Verdict {
    pub series: String,
    pub node: String,
    pub samples: usize,
    pub start: f64,
    pub end: f64,
    pub min: f64,
    pub max: f64,
    /// (end − start) / start, as a fraction (0 when both are below the floor).
    pub drift: f64,
    pub flat: bool,
}

/// Parses the CSV text.
pub fn parse(text: &str) -> Result<SoakData, BenchError> {
    let mut lines = text.lines().filter(|l| !l.trim().is_empty());
    let header: Vec<&str> = lines
        .next()
        .ok_or_else(|| BenchError::Invalid("empty soak CSV".into()))?
        .split(',')
        .collect();
    if header.len() < 3 || header[0] != "t_s" || header[1] != "node" {
        return Err(BenchError::Invalid(
            "the soak CSV must start with t_s,node".into(),
        ));
    }
    let mut data = SoakData {
        series: header[2..].iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    };
    for (n, line) in lines.enumerate() {
        let cells: Vec<&str> = line.split(',').collect();
        let bad = || BenchError::Invalid(format!("soak CSV row {}: {line}", n + 2));
        if cells.len() != header.len() {
            return Err(bad());
        }
        let t: f64 = cells[0].trim().parse().map_err(|_| bad())?;
        for (name, cell) in data.series.iter().zip(&cells[2..]) {
            let Ok(v) = cell.trim().parse::<f64>() else {
                continue; // a figure that could not be read this time
            };
            let node = cells[1].trim().to_string();
            let by_node = data.by_series.entry(name.clone()).or_default();
            by_node.entry(node).or_default().push((t, v));
        }
    }
    Ok(data)
}

/// The verdict on `samples` after `warmup` seconds, within `tolerance`.
pub fn verdict(
    series: &str,
    node: &str,
    samples: &Samples,
    warmup: f64,
    tolerance: f64,
) -> Verdict {
    let after: Vec<f64> = samples
        .iter()
        .filter(|(t, _)| *t >= warmup)
        .map(|(_, v)| *v)
        .collect();
    let fifth = (after.len() / 5).max(1).min(after.len());
    let mean = |xs: &[f64]| xs.iter().sum::<f64>() / xs.len().max(1) as f64;
    let start = mean(&after[..fifth]);
    let end = mean(&after[after.len() - fifth..]);
    let min = after.iter().copied().fold(f64::INFINITY, f64::min);
    let max = after.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let below_floor = start <= FLOOR && end <= FLOOR;
    let drift = if below_floor || start == 0.0 {
        0.0
    } else {
        (end - start) / start
    };
    let grew_from_zero = !below_floor && start == 0.0 && end > FLOOR;
    Verdict {
        series: series.into(),
        node: node.into(),
        samples: after.len(),
        start,
        end,
        min,
        max,
        drift,
        flat: !after.is_empty() && !grew_from_zero && drift.abs() <= tolerance,
    }
}

/// Every node's verdict on every series.
pub fn verdicts(data: &SoakData, warmup: f64, tolerance: f64) -> Vec<Verdict> {
    data.series
        .iter()
        .filter_map(|s| data.by_series.get(s).map(|nodes| (s, nodes)))
        .flat_map(|(s, nodes)| {
            nodes
                .iter()
                .map(move |(node, samples)| verdict(s, node, samples, warmup, tolerance))
        })
        .collect()
}

/// The verdicts as text, one line each, and whether all are flat.
pub fn text(verdicts: &[Verdict], warmup: f64, tolerance: f64) -> (String, bool) {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "flat within {:.0} % after {:.0} s of warm-up (mean of the last fifth vs the first fifth):",
        tolerance * 100.0,
        warmup
    );
    for v in verdicts {
        let _ = writeln!(
            s,
            "  {:<20} {:<8} start {:>12.1}  end {:>12.1}  min {:>12.1}  max {:>12.1}  drift {:>+6.1} %  n={:<4} {}",
            v.series,
            v.node,
            v.start,
            v.end,
            v.min,
            v.max,
            v.drift * 100.0,
            v.samples,
            if v.flat { "FLAT" } else { "NOT FLAT" }
        );
    }
    let all = !verdicts.is_empty() && verdicts.iter().all(|v| v.flat);
    (s, all)
}

/// Draws one panel per series, one line per node, to `path`.
pub fn draw(data: &SoakData, warmup: f64, title: &str, path: &Path) -> Result<(), BenchError> {
    let panels = data.series.len().max(1) as u32;
    let root = SVGBackend::new(path, (WIDTH, PANEL * panels + 40)).into_drawing_area();
    let fail = |e: String| BenchError::Invalid(format!("cannot draw {path:?}: {e}"));
    root.fill(&WHITE).map_err(|e| fail(e.to_string()))?;
    let root = root
        .titled(title, ("sans-serif", 20))
        .map_err(|e| fail(e.to_string()))?;
    let areas = root.split_evenly((panels as usize, 1));
    for (area, name) in areas.iter().zip(&data.series) {
        let empty = BTreeMap::new();
        let nodes = data.by_series.get(name).unwrap_or(&empty);
        panel(area, name, nodes, warmup).map_err(|e| fail(e.to_string()))?;
    }
    root.present().map_err(|e| fail(e.to_string()))
}

fn panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    name: &str,
    nodes: &BTreeMap<String, Samples>,
    warmup: f64,
) -> Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
    let all = nodes.values().flatten();
    let t_max = all.clone().map(|p| p.0).fold(1.0, f64::max);
    let y_max = all.map(|p| p.1).fold(0.0, f64::max).max(1.0) * 1.15;
    let mut chart = ChartBuilder::on(area)
        .margin(10)
        .x_label_area_size(30)
        .y_label_area_size(80)
        .caption(name, ("sans-serif", 16))
        .build_cartesian_2d(0f64..t_max, 0f64..y_max)?;
    chart.configure_mesh().x_desc("seconds").draw()?;
    chart.draw_series(std::iter::once(Rectangle::new(
        [(0.0, 0.0), (warmup.min(t_max), y_max)],
        BLACK.mix(0.06).filled(),
    )))?;
    for (i, (node, samples)) in nodes.iter().enumerate() {
        let color = Palette99::pick(i).to_rgba();
        chart
            .draw_series(LineSeries::new(
                samples.iter().copied(),
                color.stroke_width(2),
            ))?
            .label(node.as_str())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
            });
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
}

#[cfg(test)]
mod tests {
    use super::*;

    const CSV: &str = "t_s,node,rss_kib,bridge_queue\n\
        0,a,100,0\n10,a,200,0\n20,a,200,3\n30,a,205,\n40,a,210,1\n50,a,220,0\n\
        0,b,100,0\n10,b,300,0\n20,b,400,0\n30,b,500,0\n40,b,600,0\n50,b,700,0\n";

    #[test]
    fn flat_and_growing_series_are_told_apart() {
        let data = parse(CSV).unwrap();
        assert_eq!(data.series, vec!["rss_kib", "bridge_queue"]);
        let v = verdicts(&data, 10.0, 0.10);
        let find = |s: &str, n: &str| v.iter().find(|x| x.series == s && x.node == n).unwrap();
        let a = find("rss_kib", "a");
        assert_eq!(
            (a.samples, a.start, a.end, a.min, a.max),
            (5, 200.0, 220.0, 200.0, 220.0)
        );
        assert!(a.flat, "+10 % is within 10 %");
        assert!(!find("rss_kib", "b").flat);
        let q = find("bridge_queue", "a");
        assert!(
            q.flat && q.samples == 4,
            "below the floor, and a blank cell skipped"
        );
        let (report, all) = text(&v, 10.0, 0.10);
        assert!(!all && report.contains("NOT FLAT"));
    }

    #[test]
    fn a_queue_that_spikes_but_stays_near_empty_is_flat() {
        let spiky: Samples = (0..20)
            .map(|i| (f64::from(i) * 10.0, if i % 7 == 3 { 16.0 } else { 0.0 }))
            .collect();
        let v = verdict("q", "a", &spiky, 0.0, 0.1);
        assert!(v.flat && v.max == 16.0, "{v:?}");
    }

    #[test]
    fn growth_from_zero_and_no_samples_are_not_flat() {
        let grow: Samples = vec![(0.0, 0.0), (10.0, 0.0), (20.0, 50.0)];
        assert!(!verdict("q", "a", &grow, 0.0, 0.1).flat);
        assert!(!verdict("q", "a", &grow, 100.0, 0.1).flat);
        assert!(parse("x,y\n").is_err());
        assert!(parse("t_s,node,a\n1,n\n").is_err());
    }

    #[test]
    fn draws_an_svg() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("soak.svg");
        draw(&parse(CSV).unwrap(), 10.0, "soak test", &path).unwrap();
        let svg = std::fs::read_to_string(&path).unwrap();
        assert!(svg.contains("soak test") && svg.contains("rss_kib"));
    }
}
