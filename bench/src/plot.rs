//! `ringmq-bench plot --results DIR`: SVG plots of a results folder, drawn with
//! plotters' SVG backend (text is left to the browser, so no font or image library
//! is needed), into `DIR/plots/`:
//!
//! - `throughput.svg`: one panel per max-rate case (and connect storm), a bar per
//!   broker at the median over the runs, the spread as a thin line over it.
//! - `latency-<case>.svg`: for each fixed-rate case, the latency percentile curve of
//!   each broker (its run with the median p50), on a log latency axis against
//!   "nines" (90%, 99%, 99.9%, ...), the usual shape for HDR histograms.

use std::path::Path;

use anyhow::{anyhow, Context, Result};
use plotters::coord::ranged1d::SegmentValue;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use crate::results::{self, Matrix, Runs};

/// Pixels of one throughput panel and of a latency plot.
const PANEL_SIZE: (u32, u32) = (420, 300);
const LATENCY_SIZE: (u32, u32) = (760, 440);
/// Panels per row of `throughput.svg`.
const PANELS_PER_ROW: usize = 3;
/// Rightmost point of a latency curve, in nines: 99.999%.
const NINES_MAX: f64 = 5.0;

/// Color of a broker: fixed for the three compared, so every plot reads the same.
fn color(broker: &str) -> RGBColor {
    match broker {
        "ringmq" => RGBColor(0x1f, 0x77, 0xb4),
        "mosquitto" => RGBColor(0xff, 0x7f, 0x0e),
        "rumqttd" => RGBColor(0x2c, 0xa0, 0x2c),
        _ => RGBColor(0x7f, 0x7f, 0x7f),
    }
}

/// A percentile as "nines": 90% -> 1, 99% -> 2; `None` for 100% (the max).
pub fn nines(percentile: f64) -> Option<f64> {
    let rest = 1.0 - percentile / 100.0;
    (rest > 0.0).then(|| (-rest.log10()).min(NINES_MAX))
}

/// The label of a point on the nines axis: 0 -> "0%", 2 -> "99%".
fn nines_label(x: f64) -> String {
    if x < 0.5 {
        return "0%".into();
    }
    let digits = x.round() as usize;
    if digits <= 1 {
        "90%".into()
    } else {
        format!("99.{}%", "9".repeat(digits - 2)).replace("99.%", "99%")
    }
}

/// Draws every plot of `dir` and returns their paths relative to it.
pub fn plot(dir: &Path) -> Result<Vec<String>> {
    let matrix = results::load_matrix(dir)?;
    let out = dir.join("plots");
    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    throughput(&matrix, &out.join("throughput.svg"))?;
    for (case, brokers) in &matrix.cases {
        let fixed_rate = brokers
            .values()
            .next()
            .is_some_and(|r| !r.is_max_rate() && r.scenario() != "connect");
        if fixed_rate {
            let runs: Vec<&Runs> = matrix
                .brokers()
                .iter()
                .filter_map(|b| brokers.get(b))
                .collect();
            latency(case, &runs, &out.join(format!("latency-{case}.svg")))?;
        }
    }
    plot_files(dir)
}

/// `plots/*.svg` of a folder, relative to it, sorted (throughput first).
pub fn plot_files(dir: &Path) -> Result<Vec<String>> {
    let entries = match std::fs::read_dir(dir.join("plots")) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).with_context(|| format!("reading {}/plots", dir.display())),
    };
    let mut files = Vec::new();
    for entry in entries {
        let name = entry?.file_name().to_string_lossy().into_owned();
        if name.ends_with(".svg") {
            files.push(format!("plots/{name}"));
        }
    }
    files.sort_by_key(|f| (!f.ends_with("throughput.svg"), f.clone()));
    Ok(files)
}

/// What one panel of `throughput.svg` shows.
struct Panel<'a> {
    case: &'a str,
    unit: &'static str,
    bars: Vec<(String, f64, f64, f64)>,
}

fn throughput(matrix: &Matrix, path: &Path) -> Result<()> {
    let mut panels = Vec::new();
    for (case, brokers) in &matrix.cases {
        let Some(first) = brokers.values().next() else {
            continue;
        };
        let (metric, unit): (&[&str], _) = if first.scenario() == "connect" {
            (
                &["results", "connect", "connections_per_s"],
                "connections/s",
            )
        } else if first.is_max_rate() {
            (&["results", "received_per_s"], "msgs/s delivered")
        } else {
            continue;
        };
        let bars = matrix
            .brokers()
            .iter()
            .filter_map(|b| {
                let r = brokers.get(b)?;
                let (lo, hi) = r.spread(metric)?;
                Some((b.clone(), r.median(metric)?, lo, hi))
            })
            .collect::<Vec<_>>();
        if !bars.is_empty() {
            panels.push(Panel { case, unit, bars });
        }
    }
    let rows = panels.len().div_ceil(PANELS_PER_ROW).max(1);
    let cols = panels.len().clamp(1, PANELS_PER_ROW);
    let size = (PANEL_SIZE.0 * cols as u32, PANEL_SIZE.1 * rows as u32);
    let root = SVGBackend::new(path, size).into_drawing_area();
    root.fill(&WHITE).map_err(draw_error)?;
    if panels.is_empty() {
        root.draw_text(
            "no max-rate case in this folder",
            &("sans-serif", 16).into_text_style(&root),
            (20, 20),
        )
        .map_err(draw_error)?;
    }
    let areas = root.split_evenly((rows, cols));
    for (panel, area) in panels.iter().zip(areas.iter()) {
        draw_panel(panel, area)?;
    }
    root.present().map_err(draw_error)?;
    Ok(())
}

fn draw_panel(panel: &Panel, area: &DrawingArea<SVGBackend, plotters::coord::Shift>) -> Result<()> {
    let top = panel
        .bars
        .iter()
        .map(|b| b.3.max(b.1))
        .fold(0.0, f64::max)
        .max(1.0)
        * 1.15;
    let names: Vec<String> = panel.bars.iter().map(|b| b.0.clone()).collect();
    let mut chart = ChartBuilder::on(area)
        .caption(panel.case, ("sans-serif", 17))
        .margin(12)
        .x_label_area_size(28)
        .y_label_area_size(62)
        // An integer range's segments include its end: n bars need 0..n-1.
        .build_cartesian_2d(
            (0..names.len().saturating_sub(1)).into_segmented(),
            0.0..top,
        )
        .map_err(draw_error)?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .light_line_style(TRANSPARENT)
        .y_desc(panel.unit)
        .y_label_formatter(&|v| short(*v))
        .x_label_formatter(&|v| match v {
            SegmentValue::CenterOf(i) => names.get(*i).cloned().unwrap_or_default(),
            _ => String::new(),
        })
        .draw()
        .map_err(draw_error)?;
    for (i, (broker, median, lo, hi)) in panel.bars.iter().enumerate() {
        let c = color(broker);
        chart
            .draw_series(
                Histogram::vertical(&chart)
                    .style(c.filled())
                    .margin(14)
                    .data([(i, *median)]),
            )
            .map_err(draw_error)?;
        // The spread of the runs, and the median written over the bar.
        chart
            .draw_series(std::iter::once(PathElement::new(
                vec![
                    (SegmentValue::CenterOf(i), *lo),
                    (SegmentValue::CenterOf(i), *hi),
                ],
                BLACK.stroke_width(2),
            )))
            .map_err(draw_error)?;
        chart
            .draw_series(std::iter::once(Text::new(
                short(*median),
                (SegmentValue::CenterOf(i), hi.max(*median) + top * 0.02),
                TextStyle::from(("sans-serif", 13).into_font())
                    .pos(Pos::new(HPos::Center, VPos::Bottom)),
            )))
            .map_err(draw_error)?;
    }
    Ok(())
}

fn latency(case: &str, runs: &[&Runs], path: &Path) -> Result<()> {
    let curves: Vec<(String, Vec<(f64, f64)>)> = runs
        .iter()
        .filter_map(|r| {
            let report = r.typical()?;
            let points = report.get("results")?.get("latency_curve_us")?.as_array()?;
            let curve: Vec<(f64, f64)> = points
                .iter()
                .filter_map(|p| {
                    let x = nines(p.get(0)?.as_f64()?)?;
                    Some((x, p.get(1)?.as_f64()?.max(0.1)))
                })
                .collect();
            (!curve.is_empty()).then(|| (r.broker.clone(), curve))
        })
        .collect();
    let root = SVGBackend::new(path, LATENCY_SIZE).into_drawing_area();
    root.fill(&WHITE).map_err(draw_error)?;
    let all = curves.iter().flat_map(|(_, c)| c.iter().map(|p| p.1));
    let lo = all.clone().fold(f64::INFINITY, f64::min);
    let hi = all.fold(0.0, f64::max);
    if curves.is_empty() || !lo.is_finite() {
        root.draw_text(
            &format!("{case}: no latency curve in these reports"),
            &("sans-serif", 16).into_text_style(&root),
            (20, 20),
        )
        .map_err(draw_error)?;
        root.present().map_err(draw_error)?;
        return Ok(());
    }
    let mut chart = ChartBuilder::on(&root)
        .caption(
            format!("{case}: end-to-end latency by percentile"),
            ("sans-serif", 18),
        )
        .margin(16)
        .margin_right(40)
        .x_label_area_size(34)
        .y_label_area_size(70)
        .build_cartesian_2d(0.0..NINES_MAX, ((lo * 0.8)..(hi * 1.25)).log_scale())
        .map_err(draw_error)?;
    chart
        .configure_mesh()
        .light_line_style(TRANSPARENT)
        .x_labels(NINES_MAX as usize + 1)
        .x_label_formatter(&|x| nines_label(*x))
        .x_desc("percentile")
        .y_desc("latency (us, log)")
        .y_label_formatter(&|v| short(*v))
        .draw()
        .map_err(draw_error)?;
    for (broker, curve) in &curves {
        let c = color(broker);
        chart
            .draw_series(LineSeries::new(curve.iter().copied(), c.stroke_width(2)))
            .map_err(draw_error)?
            .label(broker.as_str())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], c.stroke_width(3)));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .map_err(draw_error)?;
    root.present().map_err(draw_error)?;
    Ok(())
}

/// 1234567 -> "1.23M": axis labels and bar values stay short.
fn short(v: f64) -> String {
    let a = v.abs();
    if a >= 1e6 {
        format!("{:.2}M", v / 1e6)
    } else if a >= 1e4 {
        format!("{:.0}k", v / 1e3)
    } else if a >= 1e3 {
        format!("{:.1}k", v / 1e3)
    } else if a >= 10.0 || a == 0.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.1}")
    }
}

fn draw_error<E: std::fmt::Debug>(e: E) -> anyhow::Error {
    anyhow!("drawing a plot: {e:?}")
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]
    use super::*;

    #[test]
    fn percentiles_become_nines() {
        assert_eq!(nines(0.0), Some(0.0));
        assert!((nines(90.0).unwrap() - 1.0).abs() < 1e-9);
        assert!((nines(99.9).unwrap() - 3.0).abs() < 1e-9);
        assert_eq!(nines(100.0), None);
        assert_eq!(nines(99.99999), Some(NINES_MAX));
        assert_eq!(nines_label(0.0), "0%");
        assert_eq!(nines_label(1.0), "90%");
        assert_eq!(nines_label(2.0), "99%");
        assert_eq!(nines_label(4.0), "99.99%");
    }

    /// A results folder of its own under the system's temp directory, removed at the end.
    struct Folder(std::path::PathBuf);

    impl Drop for Folder {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn report(label: &str, mode: &str, received: f64, p50: f64) -> String {
        serde_json::json!({
            "config": {"scenario": "pairs", "label": label, "qos": 1, "rate": {"mode": mode}},
            "results": {"received_per_s": received, "lost": 0,
                "latency_us": {"p50": p50, "p95": p50 * 2.0, "p99": p50 * 3.0, "p999": p50 * 4.0},
                "latency_curve_us": [[0.0, p50 / 2.0], [50.0, p50], [99.0, p50 * 3.0], [100.0, p50 * 9.0]]}
        })
        .to_string()
    }

    #[test]
    fn a_results_folder_gets_its_plots_and_summary() {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        let dir = Folder(
            std::env::temp_dir().join(format!("ringmq-bench-plot-{}-{nanos}", std::process::id())),
        );
        let raw = dir.0.join("raw");
        std::fs::create_dir_all(&raw).unwrap();
        let files = [
            (
                "ringmq-pairs-max-1",
                report("ringmq/pairs-max", "max", 900_000.0, 1000.0),
            ),
            (
                "ringmq-pairs-max-2",
                report("ringmq/pairs-max", "max", 800_000.0, 1000.0),
            ),
            (
                "rumqttd-pairs-max-1",
                report("rumqttd/pairs-max", "max", 300_000.0, 900.0),
            ),
            (
                "ringmq-pairs-qos1-10k-1",
                report("ringmq/pairs-qos1-10k", "per-publisher", 10_000.0, 80.0),
            ),
            (
                "mosquitto-pairs-qos1-10k-1",
                report("mosquitto/pairs-qos1-10k", "per-publisher", 10_000.0, 95.0),
            ),
        ];
        for (name, text) in files {
            std::fs::write(raw.join(format!("{name}.json")), text).unwrap();
        }
        // A run that died before printing leaves an empty report: skipped.
        std::fs::write(raw.join("rumqttd-pairs-qos1-10k-1.json"), "").unwrap();
        std::fs::write(dir.0.join("order.txt"), "pairs-qos1-10k\npairs-max\n").unwrap();

        let written = plot(&dir.0).unwrap();
        assert_eq!(
            written,
            vec!["plots/throughput.svg", "plots/latency-pairs-qos1-10k.svg"]
        );
        let bars = std::fs::read_to_string(dir.0.join("plots/throughput.svg")).unwrap();
        assert!(bars.starts_with("<svg"));
        assert!(bars.contains("pairs-max") && bars.contains("rumqttd"));
        assert!(
            bars.contains("850k"),
            "the median of 900k and 800k is written over the bar"
        );
        let curves = std::fs::read_to_string(dir.0.join(written[1].as_str())).unwrap();
        assert!(curves.contains("mosquitto") && curves.contains("ringmq"));
        assert!(curves.contains("99%"));

        let summary = crate::compare::compare(&dir.0).unwrap();
        // order.txt puts the fixed-rate case first.
        let first = summary.find("| pairs-qos1-10k |").unwrap();
        assert!(first < summary.find("| pairs-max |").unwrap());
        assert!(
            summary.contains("| pairs-max | rumqttd | 1 | 300000 |"),
            "{summary}"
        );
        assert!(summary.contains("[plots/throughput.svg](plots/throughput.svg)"));
    }

    #[test]
    fn short_numbers() {
        assert_eq!(short(1_234_567.0), "1.23M");
        assert_eq!(short(45_600.0), "46k");
        assert_eq!(short(1_500.0), "1.5k");
        assert_eq!(short(87.0), "87");
        assert_eq!(short(2.5), "2.5");
    }
}
