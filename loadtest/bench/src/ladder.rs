//! The offered-rate ladder: one fan-out run per rate against the same
//! gateway, kept as a labelled series in a JSON data file that collects the
//! series of several gateways (stores, builds), and drawn from that file as
//! an SVG of deliveries/s and p99 latency against the offered rate.
//!
//! Owns the ladder's steps (a pause between runs so the gateway drains what
//! the previous step left), the data file (a series is replaced when its
//! label is run again, the others are kept), and the conversion of fan-out
//! reports into points. The drawing is in `ladder/plot.rs`.
//!
//! Must never: hide a failed step (a step that could not run ends the
//! ladder with the error; a step with loss is kept and marked as such).

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::fanout::{self, FanoutReport, FanoutSpec};
use crate::plan::Plan;
use crate::runner::ConnectOptions;
use crate::BenchError;

pub mod plot;

/// One step of a ladder: what a fan-out run at one offered rate measured.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Point {
    /// Offered messages/s (the run's target rate).
    pub offered: f64,
    pub sent_per_s: f64,
    pub committed_per_s: f64,
    pub deliveries_per_s: f64,
    pub lost: u64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    /// The run's checks held (no loss, disorder, error, drop).
    pub ok: bool,
}

impl Point {
    pub fn from_report(r: &FanoutReport) -> Point {
        Point {
            offered: r.target_rate,
            sent_per_s: r.sent_per_s,
            committed_per_s: r.committed_per_s,
            deliveries_per_s: r.deliveries_per_s,
            lost: r.lost,
            p50_ms: r.latency.p50_ms,
            p99_ms: r.latency.p99_ms,
            ok: r.ok,
        }
    }
}

/// One gateway's ladder.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Series {
    pub label: String,
    pub points: Vec<Point>,
}

impl Series {
    /// The highest deliveries/s of a step with zero loss (0 if none).
    pub fn best_zero_loss(&self) -> f64 {
        self.points
            .iter()
            .filter(|p| p.ok)
            .map(|p| p.deliveries_per_s)
            .fold(0.0, f64::max)
    }
}

/// The data file: a title and every series run so far.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct LadderData {
    pub title: String,
    pub series: Vec<Series>,
}

impl LadderData {
    /// The file at `path`, or an empty one if it does not exist.
    pub fn load_or_default(path: &Path) -> Result<LadderData, BenchError> {
        match std::fs::read(path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|source| BenchError::PlanFormat {
                path: path.to_path_buf(),
                source,
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(LadderData::default()),
            Err(source) => Err(BenchError::PlanFile {
                path: path.to_path_buf(),
                source,
            }),
        }
    }

    pub fn save(&self, path: &Path) -> Result<(), BenchError> {
        let json = serde_json::to_string_pretty(self).expect("ladder data serializes");
        std::fs::write(path, json + "\n").map_err(|source| BenchError::PlanFile {
            path: path.to_path_buf(),
            source,
        })
    }

    /// Puts `series` in place of the one with its label, or appends it.
    pub fn upsert(&mut self, series: Series) {
        match self.series.iter_mut().find(|s| s.label == series.label) {
            Some(old) => *old = series,
            None => self.series.push(series),
        }
    }
}

/// Ladder parameters.
#[derive(Clone, Debug)]
pub struct LadderSpec {
    /// Offered rates, run in this order.
    pub rates: Vec<f64>,
    /// Every step's fan-out parameters (its `rate` is replaced).
    pub step: FanoutSpec,
    /// Wait between steps.
    pub pause: Duration,
    /// The series' label (e.g. "postgres, after").
    pub label: String,
    /// The data file the series is stored in.
    pub data: PathBuf,
    /// Title written to the data file when set.
    pub title: Option<String>,
    /// SVG drawn from the data file after the run.
    pub svg: Option<PathBuf>,
}

/// Runs every step, stores the series, draws the picture; returns the series.
pub fn run(plan: &Plan, opts: ConnectOptions, spec: &LadderSpec) -> Result<Series, BenchError> {
    if spec.rates.is_empty() {
        return Err(BenchError::Invalid(
            "--rates needs at least one rate".into(),
        ));
    }
    let mut series = Series {
        label: spec.label.clone(),
        points: Vec::with_capacity(spec.rates.len()),
    };
    for (i, &rate) in spec.rates.iter().enumerate() {
        if i > 0 {
            std::thread::sleep(spec.pause);
        }
        let step = FanoutSpec {
            rate,
            ..spec.step.clone()
        };
        let report = fanout::run(plan, opts.clone(), step)?;
        let point = Point::from_report(&report);
        if spec.step.progress {
            eprintln!("{}", step_line(&point));
        }
        series.points.push(point);
    }
    let mut data = LadderData::load_or_default(&spec.data)?;
    if let Some(title) = &spec.title {
        data.title = title.clone();
    }
    data.upsert(series.clone());
    data.save(&spec.data)?;
    if let Some(svg) = &spec.svg {
        plot::draw(&data, svg)?;
    }
    Ok(series)
}

/// One step as a line of the report.
pub fn step_line(p: &Point) -> String {
    format!(
        "offered {:>8.0} msg/s  committed {:>8.0}/s  deliveries {:>9.0}/s  lost {:>8}  p50 {:>9.1} ms  p99 {:>9.1} ms  {}",
        p.offered,
        p.committed_per_s,
        p.deliveries_per_s,
        p.lost,
        p.p50_ms,
        p.p99_ms,
        if p.ok { "ok" } else { "FAILED" }
    )
}

/// The plain-text report of a series.
pub fn text(series: &Series) -> String {
    let mut s = format!("ladder \"{}\":\n", series.label);
    for p in &series.points {
        s.push_str("  ");
        s.push_str(&step_line(p));
        s.push('\n');
    }
    s.push_str(&format!(
        "  best zero-loss deliveries/s: {:.0}",
        series.best_zero_loss()
    ));
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn point(offered: f64, deliveries: f64, ok: bool) -> Point {
        Point {
            offered,
            sent_per_s: offered,
            committed_per_s: offered,
            deliveries_per_s: deliveries,
            lost: if ok { 0 } else { 5 },
            p50_ms: 1.0,
            p99_ms: 2.0,
            ok,
        }
    }

    #[test]
    fn series_are_replaced_by_label_and_kept_otherwise() {
        let mut data = LadderData::default();
        let a = Series {
            label: "a".into(),
            points: vec![point(1.0, 10.0, true)],
        };
        let b = Series {
            label: "b".into(),
            points: vec![],
        };
        data.upsert(a.clone());
        data.upsert(b);
        let a2 = Series {
            points: vec![point(2.0, 20.0, true)],
            ..a
        };
        data.upsert(a2.clone());
        assert_eq!(data.series.len(), 2);
        assert_eq!(data.series[0], a2);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ladder.json");
        assert_eq!(
            LadderData::load_or_default(&path).unwrap(),
            LadderData::default()
        );
        data.save(&path).unwrap();
        assert_eq!(LadderData::load_or_default(&path).unwrap(), data);
    }

    #[test]
    fn the_best_zero_loss_step_ignores_lossy_ones() {
        let s = Series {
            label: "x".into(),
            points: vec![
                point(1.0, 50.0, true),
                point(2.0, 90.0, true),
                point(3.0, 120.0, false),
            ],
        };
        assert_eq!(s.best_zero_loss(), 90.0);
        assert!(text(&s).contains("FAILED"));
    }
}
