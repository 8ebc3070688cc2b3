//! Mode `plot`: PNG charts of saved `--json` summaries (`loadtest/plots.sh`
//! runs the series and this).
//!
//! - `--lateness FILE`: a `schedule` summary; its `lateness_curve_ms` becomes
//!   `lateness.png`, lateness against percentile (p0 … p99.99, the percentile
//!   axis in "nines", lateness log-scaled).
//! - `--batch FILE…`: closed-loop `publish` summaries at different `--batch`;
//!   throughput against batch size → `publish-vs-batch.png`.
//! - `--load FILE…`: open-loop `publish --rate` summaries; p50/p99/p99.9 RPC
//!   latency against offered events/s → `latency-vs-load.png`.
//!
//! A file holds one summary per line (what `--json` prints), so a series can be
//! appended run by run. Parsing is apart from drawing and is what the tests
//! cover. Text is rendered with `ab_glyph` from a font file read at run time
//! (`--font`, DejaVu Sans from Debian's `fonts-dejavu-core` by default): no
//! system font libraries.

use std::path::{Path, PathBuf};

use anyhow::{bail, ensure, Context};
use plotters::coord::Shift;
use plotters::prelude::*;
use serde_json::Value;

const DEFAULT_FONT: &str = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf";
/// Chart size, pixels.
const SIZE_PX: (u32, u32) = (960, 560);
/// The lateness chart's percentile axis ends at p99.99 (4 nines).
const MAX_NINES: f64 = 4.0;

#[derive(clap::Args)]
pub struct PlotArgs {
    /// A `schedule` summary: its lateness curve → `lateness.png`.
    #[arg(long)]
    lateness: Option<PathBuf>,
    /// Closed-loop `publish` summaries at several `--batch` → `publish-vs-batch.png`.
    #[arg(long, num_args = 1..)]
    batch: Vec<PathBuf>,
    /// Open-loop `publish --rate` summaries at several rates → `latency-vs-load.png`.
    #[arg(long, num_args = 1..)]
    load: Vec<PathBuf>,
    /// Where the PNGs go.
    #[arg(long, default_value = "docs/img")]
    out_dir: PathBuf,
    /// TrueType font for the text.
    #[arg(long, default_value = DEFAULT_FONT)]
    font: PathBuf,
}

/// Writes the charts whose inputs were given.
pub fn run(args: PlotArgs) -> anyhow::Result<()> {
    ensure!(
        args.lateness.is_some() || !args.batch.is_empty() || !args.load.is_empty(),
        "nothing to plot: give --lateness, --batch or --load"
    );
    load_font(&args.font)?;
    std::fs::create_dir_all(&args.out_dir)
        .with_context(|| format!("creating {}", args.out_dir.display()))?;
    if let Some(path) = &args.lateness {
        let summaries = read_files(std::slice::from_ref(path))?;
        let [summary] = summaries.as_slice() else {
            bail!(
                "{}: want one schedule summary, found {}",
                path.display(),
                summaries.len()
            );
        };
        let lateness = Lateness::of(summary)?;
        let out = args.out_dir.join("lateness.png");
        draw_lateness(&lateness, &out)?;
        eprintln!("wrote {}", out.display());
    }
    if !args.batch.is_empty() {
        let points = batch_points(&read_files(&args.batch)?)?;
        let out = args.out_dir.join("publish-vs-batch.png");
        draw_batch(&points, &out)?;
        eprintln!("wrote {}", out.display());
    }
    if !args.load.is_empty() {
        let points = load_points(&read_files(&args.load)?)?;
        let out = args.out_dir.join("latency-vs-load.png");
        draw_load(&points, &out)?;
        eprintln!("wrote {}", out.display());
    }
    Ok(())
}

/// Registers `path` as the `sans-serif` family (plotters keeps it for the
/// process, so the bytes are leaked once).
fn load_font(path: &Path) -> anyhow::Result<()> {
    let bytes = std::fs::read(path).with_context(|| {
        format!(
            "reading font {} (install fonts-dejavu-core or pass --font)",
            path.display()
        )
    })?;
    let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
    plotters::style::register_font("sans-serif", FontStyle::Normal, bytes)
        .map_err(|_| anyhow::anyhow!("{}: not a usable TrueType font", path.display()))
}

fn read_files(paths: &[PathBuf]) -> anyhow::Result<Vec<Value>> {
    let mut all = Vec::new();
    for path in paths {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        all.extend(parse_summaries(&text).with_context(|| path.display().to_string())?);
    }
    Ok(all)
}

/// One JSON summary per non-blank line.
pub fn parse_summaries(text: &str) -> anyhow::Result<Vec<Value>> {
    text.lines()
        .enumerate()
        .filter(|(_, line)| !line.trim().is_empty())
        .map(|(no, line)| {
            let value: Value =
                serde_json::from_str(line).with_context(|| format!("line {}", no + 1))?;
            ensure!(value.is_object(), "line {}: not a JSON object", no + 1);
            Ok(value)
        })
        .collect()
}

fn f64_at(summary: &Value, pointer: &str) -> anyhow::Result<f64> {
    summary
        .pointer(pointer)
        .and_then(Value::as_f64)
        .with_context(|| format!("summary has no number at {pointer}"))
}

fn ensure_mode(summary: &Value, mode: &str) -> anyhow::Result<()> {
    let found = summary["mode"].as_str().unwrap_or("none");
    ensure!(found == mode, "want a `{mode}` summary, found mode {found}");
    Ok(())
}

/// `[[percentile, ms], …]` as pairs, checked to rise with the percentile.
fn curve(summary: &Value, key: &str) -> anyhow::Result<Vec<(f64, f64)>> {
    let points = summary[key]
        .as_array()
        .with_context(|| format!("summary has no {key} (a loadtest older than the plots?)"))?;
    let pairs = points
        .iter()
        .map(|point| match (point[0].as_f64(), point[1].as_f64()) {
            (Some(p), Some(ms)) if (0.0..=100.0).contains(&p) && ms >= 0.0 => Ok((p, ms)),
            _ => bail!("{key}: bad point {point}"),
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    ensure!(!pairs.is_empty(), "{key} is empty: nothing was measured");
    ensure!(
        pairs
            .windows(2)
            .all(|w| w[0].0 < w[1].0 && w[0].1 <= w[1].1),
        "{key} does not rise with the percentile"
    );
    Ok(pairs)
}

/// A `schedule` run's lateness.
#[derive(Debug, PartialEq)]
pub struct Lateness {
    /// `(percentile, ms)`, p0 … p100.
    pub curve: Vec<(f64, f64)>,
    pub events: u64,
    /// For the title: `due at 20000/s`.
    pub due: String,
}

impl Lateness {
    pub fn of(summary: &Value) -> anyhow::Result<Self> {
        ensure_mode(summary, "schedule")?;
        Ok(Lateness {
            curve: curve(summary, "lateness_curve_ms")?,
            events: f64_at(summary, "/delivery/unique")? as u64,
            due: summary["due"].as_str().unwrap_or_default().to_string(),
        })
    }
}

/// Percentile → "nines" (p0 → 0, p90 → 1, p99 → 2, p99.9 → 3), the lateness
/// chart's x axis; `None` for p100.
fn nines(percentile: f64) -> Option<f64> {
    (percentile < 100.0).then(|| -(1.0 - percentile / 100.0).log10())
}

/// A closed-loop publish run: throughput at one batch size.
#[derive(Clone, Debug, PartialEq)]
pub struct BatchPoint {
    pub batch: u64,
    pub events_per_sec: f64,
    pub p99_ms: f64,
}

/// One point per summary, sorted by batch size (several runs at a batch stay
/// separate points; the chart draws its line through their median).
pub fn batch_points(summaries: &[Value]) -> anyhow::Result<Vec<BatchPoint>> {
    let mut points = summaries
        .iter()
        .map(|s| {
            ensure_mode(s, "publish")?;
            ensure!(
                s["loop"] == "closed",
                "--batch wants closed-loop runs (no --rate)"
            );
            Ok(BatchPoint {
                batch: f64_at(s, "/batch")? as u64,
                events_per_sec: f64_at(s, "/events_per_sec")?,
                p99_ms: f64_at(s, "/latency_ms/p99")?,
            })
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    ensure!(!points.is_empty(), "no publish summaries");
    points.sort_by(|a, b| {
        a.batch
            .cmp(&b.batch)
            .then(a.events_per_sec.total_cmp(&b.events_per_sec))
    });
    Ok(points)
}

/// The median throughput at each batch size, ascending.
fn batch_medians(points: &[BatchPoint]) -> Vec<(u64, f64)> {
    points
        .chunk_by(|a, b| a.batch == b.batch)
        .map(|runs| (runs[0].batch, runs[runs.len() / 2].events_per_sec))
        .collect()
}

/// An open-loop publish run: latency at one offered load.
#[derive(Clone, Debug, PartialEq)]
pub struct LoadPoint {
    /// `--rate` × `--batch`.
    pub offered_events_per_sec: f64,
    pub achieved_events_per_sec: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
}

/// One point per summary, sorted by offered load.
pub fn load_points(summaries: &[Value]) -> anyhow::Result<Vec<LoadPoint>> {
    let mut points = summaries
        .iter()
        .map(|s| {
            ensure_mode(s, "publish")?;
            ensure!(s["loop"] == "open", "--load wants open-loop runs (--rate)");
            Ok(LoadPoint {
                offered_events_per_sec: f64_at(s, "/target_rpcs_per_sec")? * f64_at(s, "/batch")?,
                achieved_events_per_sec: f64_at(s, "/events_per_sec")?,
                p50_ms: f64_at(s, "/latency_ms/p50")?,
                p99_ms: f64_at(s, "/latency_ms/p99")?,
                p999_ms: f64_at(s, "/latency_ms/p999")?,
            })
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    ensure!(!points.is_empty(), "no publish summaries");
    points.sort_by(|a, b| {
        a.offered_events_per_sec
            .total_cmp(&b.offered_events_per_sec)
    });
    Ok(points)
}

/// `12.3K` / `1.2M` / `850`.
fn si(value: f64) -> String {
    match value.abs() {
        v if v >= 1e6 => format!("{:.1}M", value / 1e6),
        v if v >= 1e4 => format!("{:.0}K", value / 1e3),
        v if v >= 1e3 => format!("{:.1}K", value / 1e3).replace(".0K", "K"),
        _ => format!("{value:.0}"),
    }
}

/// Milliseconds for a log axis: `0.5`, `2`, `120`.
fn ms_label(ms: &f64) -> String {
    if *ms >= 10.0 {
        format!("{ms:.0}")
    } else if *ms >= 1.0 {
        format!("{ms:.1}")
    } else {
        format!("{ms:.2}")
    }
}

/// A log axis range around `[lo, hi]`, a little wider both ways.
fn log_range(lo: f64, hi: f64) -> std::ops::Range<f64> {
    let lo = lo.max(0.001);
    (lo / 1.5)..(hi.max(lo * 2.0) * 1.5)
}

fn canvas(out: &Path) -> DrawingArea<BitMapBackend<'_>, Shift> {
    BitMapBackend::new(out, SIZE_PX).into_drawing_area()
}

fn draw_lateness(lateness: &Lateness, out: &Path) -> anyhow::Result<()> {
    let points: Vec<(f64, f64)> = lateness
        .curve
        .iter()
        .filter_map(|&(p, ms)| Some((nines(p)?, ms.max(0.001))))
        .filter(|(x, _)| *x <= MAX_NINES + 1e-9)
        .collect();
    let max_ms = lateness.curve.last().map_or(0.0, |p| p.1);
    ensure!(!points.is_empty(), "no lateness percentiles below p100");
    let lo = points.iter().map(|p| p.1).fold(f64::MAX, f64::min);
    let hi = points.iter().map(|p| p.1).fold(0.0, f64::max).max(max_ms);
    let root = canvas(out);
    root.fill(&WHITE)?;
    let title = format!(
        "Delivery lateness, {} events {}, single node",
        lateness.events, lateness.due
    );
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 24))
        .margin(20)
        .margin_right(45)
        .x_label_area_size(50)
        .y_label_area_size(70)
        .build_cartesian_2d(0f64..MAX_NINES, log_range(lo, hi).log_scale())?;
    chart
        .configure_mesh()
        .x_labels(5)
        .y_labels(12)
        .x_label_formatter(&|x| format!("p{}", trim(100.0 * (1.0 - 10f64.powf(-x)))))
        .y_label_formatter(&ms_label)
        .x_desc("percentile of deliveries")
        .y_desc("lateness, ms (receive − schedule_ts, log)")
        .label_style(("sans-serif", 16))
        .draw()?;
    chart
        .draw_series(LineSeries::new(
            points.iter().copied(),
            BLUE.stroke_width(2),
        ))?
        .label(format!("lateness (max {} ms)", ms_label(&max_ms)))
        .legend(|(x, y)| PathElement::new([(x, y), (x + 20, y)], BLUE.stroke_width(2)));
    chart.draw_series(points.iter().map(|&p| {
        EmptyElement::at(p)
            + Circle::new((0, 0), 3, BLUE.filled())
            + Text::new(ms_label(&p.1), (-12, -18), ("sans-serif", 13))
    }))?;
    legend(&mut chart)?;
    root.present()?;
    Ok(())
}

fn draw_batch(points: &[BatchPoint], out: &Path) -> anyhow::Result<()> {
    let medians = batch_medians(points);
    let max_rate = points.iter().map(|p| p.events_per_sec).fold(0.0, f64::max);
    let max_batch = points.last().map_or(1, |p| p.batch) as f64;
    let root = canvas(out);
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "Publish throughput vs batch size (256 B, fsync always, single node)",
            ("sans-serif", 24),
        )
        .margin(20)
        .x_label_area_size(50)
        .y_label_area_size(80)
        .build_cartesian_2d((0.7f64..max_batch * 4.0).log_scale(), 0f64..max_rate * 1.15)?;
    chart
        .configure_mesh()
        .x_label_formatter(&|b| format!("{b:.0}"))
        .y_label_formatter(&|r| si(*r))
        .x_desc("events per RPC (log)")
        .y_desc("events/s acked durable")
        .label_style(("sans-serif", 16))
        .draw()?;
    let line: Vec<(f64, f64)> = medians.iter().map(|&(b, r)| (b as f64, r)).collect();
    chart
        .draw_series(LineSeries::new(line, BLUE.stroke_width(2)))?
        .label("events/s, median run (label: its p99 RPC latency); hollow: every run")
        .legend(|(x, y)| PathElement::new([(x, y), (x + 20, y)], BLUE.stroke_width(2)));
    // Every run as a hollow dot; the median run labelled.
    chart.draw_series(
        points
            .iter()
            .map(|p| Circle::new((p.batch as f64, p.events_per_sec), 4, BLUE.stroke_width(1))),
    )?;
    chart.draw_series(medians.iter().map(|&(batch, rate)| {
        let p99_ms = points
            .iter()
            .find(|p| p.batch == batch && p.events_per_sec == rate)
            .map_or(0.0, |p| p.p99_ms);
        EmptyElement::at((batch as f64, rate))
            + Circle::new((0, 0), 4, BLUE.filled())
            + Text::new(
                format!("{}/s, p99 {} ms", si(rate), ms_label(&p99_ms)),
                (8, 6),
                ("sans-serif", 14),
            )
    }))?;
    legend(&mut chart)?;
    root.present()?;
    Ok(())
}

/// Which latency of a [`LoadPoint`] a line draws.
type LoadValue = fn(&LoadPoint) -> f64;

fn draw_load(points: &[LoadPoint], out: &Path) -> anyhow::Result<()> {
    let max_offered = points
        .iter()
        .map(|p| p.offered_events_per_sec)
        .fold(0.0, f64::max);
    let lo = points.iter().map(|p| p.p50_ms).fold(f64::MAX, f64::min);
    let hi = points.iter().map(|p| p.p999_ms).fold(0.0, f64::max);
    let root = canvas(out);
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "Publish latency vs offered load (open loop, 1 event/RPC, single node)",
            ("sans-serif", 24),
        )
        .margin(20)
        .x_label_area_size(50)
        .y_label_area_size(70)
        .build_cartesian_2d(0f64..max_offered * 1.08, log_range(lo, hi).log_scale())?;
    chart
        .configure_mesh()
        .y_labels(12)
        .x_label_formatter(&|r| si(*r))
        .y_label_formatter(&ms_label)
        .x_desc("offered load, events/s")
        .y_desc("RPC latency from intended send, ms (log)")
        .label_style(("sans-serif", 16))
        .draw()?;
    let series: [(&str, LoadValue, RGBColor); 3] = [
        ("p50", |p| p.p50_ms, BLUE),
        ("p99", |p| p.p99_ms, RED),
        ("p99.9", |p| p.p999_ms, RGBColor(150, 150, 150)),
    ];
    for (name, value, color) in series {
        let line: Vec<(f64, f64)> = points
            .iter()
            .map(|p| (p.offered_events_per_sec, value(p).max(0.001)))
            .collect();
        chart
            .draw_series(LineSeries::new(line.clone(), color.stroke_width(2)))?
            .label(name)
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], color.stroke_width(2)));
        chart.draw_series(line.iter().map(|&p| Circle::new(p, 3, color.filled())))?;
    }
    // Where the node fell behind the offered load, say what it did manage.
    chart.draw_series(
        points
            .iter()
            .filter(|p| p.achieved_events_per_sec < 0.97 * p.offered_events_per_sec)
            .map(|p| {
                Text::new(
                    format!("acked {}/s", si(p.achieved_events_per_sec)),
                    (p.offered_events_per_sec, p.p50_ms.max(0.001) / 1.6),
                    ("sans-serif", 14),
                )
            }),
    )?;
    legend(&mut chart)?;
    root.present()?;
    Ok(())
}

fn legend<'a, CT: plotters::coord::CoordTranslate>(
    chart: &mut ChartContext<'a, BitMapBackend<'a>, CT>,
) -> anyhow::Result<()> {
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .label_font(("sans-serif", 16))
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .map_err(|e| anyhow::anyhow!("drawing the legend: {e}"))
}

/// `99.9` not `99.90000001`; `0` not `0.0` (three decimals at most).
fn trim(percentile: f64) -> String {
    let text = format!("{percentile:.3}");
    text.trim_end_matches('0').trim_end_matches('.').to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn publish(loop_kind: &str, batch: u64, rate: Option<f64>, eps: f64) -> Value {
        json!({"mode": "publish", "loop": loop_kind, "batch": batch, "target_rpcs_per_sec": rate,
               "events_per_sec": eps, "latency_ms": {"p50": 1.0, "p90": 2.0, "p99": 3.0, "p999": 4.0, "max": 5.0}})
    }

    #[test]
    fn summaries_are_one_per_line_blank_lines_skipped() {
        let text = "{\"mode\":\"publish\"}\n\n  \n{\"mode\":\"schedule\"}\n";
        let all = parse_summaries(text).unwrap();
        assert_eq!(all.len(), 2);
        assert_eq!(all[1]["mode"], "schedule");
        let err = parse_summaries("{\"a\":1}\nnot json\n").unwrap_err();
        assert!(format!("{err:#}").contains("line 2"), "{err:#}");
        assert!(parse_summaries("[1, 2]").is_err());
    }

    #[test]
    fn lateness_reads_the_schedule_curve() {
        let summary = json!({"mode": "schedule", "due": "due at 20000/s", "delivery": {"unique": 200000},
                             "lateness_curve_ms": [[0.0, 0.2], [50.0, 1.5], [99.0, 4.0], [100.0, 20.0]]});
        let lateness = Lateness::of(&summary).unwrap();
        assert_eq!(
            lateness.curve,
            vec![(0.0, 0.2), (50.0, 1.5), (99.0, 4.0), (100.0, 20.0)]
        );
        assert_eq!(
            (lateness.events, lateness.due.as_str()),
            (200_000, "due at 20000/s")
        );
        // A publish summary, a missing curve, a falling curve: refused.
        assert!(Lateness::of(&publish("closed", 1, None, 1.0)).is_err());
        let mut bad = summary.clone();
        bad["lateness_curve_ms"] = json!([[0.0, 2.0], [50.0, 1.0]]);
        assert!(Lateness::of(&bad).is_err());
        bad.as_object_mut().unwrap().remove("lateness_curve_ms");
        assert!(Lateness::of(&bad).is_err());
    }

    #[test]
    fn nines_put_the_tail_on_equal_steps() {
        let near = |a: f64, b: f64| (a - b).abs() < 1e-9;
        assert!(near(nines(0.0).unwrap(), 0.0));
        assert!(near(nines(90.0).unwrap(), 1.0));
        assert!(near(nines(99.0).unwrap(), 2.0));
        assert!(near(nines(99.99).unwrap(), 4.0));
        assert_eq!(nines(100.0), None);
        assert_eq!(trim(100.0 * (1.0 - 10f64.powf(-3.0))), "99.9");
        assert_eq!(trim(0.0), "0");
    }

    #[test]
    fn batch_points_sort_and_take_medians() {
        let runs = [
            publish("closed", 1000, None, 300_000.0),
            publish("closed", 1, None, 18_000.0),
            publish("closed", 1000, None, 250_000.0),
            publish("closed", 1000, None, 320_000.0),
        ];
        let points = batch_points(&runs).unwrap();
        assert_eq!(
            points.iter().map(|p| p.batch).collect::<Vec<_>>(),
            [1, 1000, 1000, 1000]
        );
        assert_eq!(batch_medians(&points), [(1, 18_000.0), (1000, 300_000.0)]);
        assert!(batch_points(&[publish("open", 1, Some(10.0), 1.0)]).is_err());
        assert!(batch_points(&[]).is_err());
    }

    #[test]
    fn load_points_offer_rate_times_batch() {
        let runs = [
            publish("open", 10, Some(2000.0), 19_000.0),
            publish("open", 10, Some(500.0), 5_000.0),
        ];
        let points = load_points(&runs).unwrap();
        assert_eq!(points[0].offered_events_per_sec, 5_000.0);
        assert_eq!(points[1].offered_events_per_sec, 20_000.0);
        assert_eq!(points[1].achieved_events_per_sec, 19_000.0);
        assert_eq!(
            (points[1].p50_ms, points[1].p99_ms, points[1].p999_ms),
            (1.0, 3.0, 4.0)
        );
        assert!(load_points(&[publish("closed", 1, None, 1.0)]).is_err());
    }

    #[test]
    fn si_labels() {
        assert_eq!(si(850.0), "850");
        assert_eq!(si(1_500.0), "1.5K");
        assert_eq!(si(5_000.0), "5K");
        assert_eq!(si(9_592.0), "9.6K");
        assert_eq!(si(18_700.0), "19K");
        assert_eq!(si(1_250_000.0), "1.2M");
    }
}
