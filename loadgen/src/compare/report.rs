//! The comparison report: which metrics each workload yields and what each is compared
//! against, the summary (median, min-max, ratio to the baseline target), and its text.

use super::workloads::Metrics;
use crate::stats::{median, ratio, spread};
use serde::Serialize;
use std::collections::BTreeMap;

/// One metric a workload produces.
#[derive(Debug, Clone, Copy)]
struct MetricDef {
    workload: &'static str,
    key: &'static str,
    label: &'static str,
    /// The target ratios are taken against.
    baseline: &'static str,
    higher_is_better: bool,
}

const METRICS: &[MetricDef] = &[
    MetricDef {
        workload: "bulk1",
        key: "gbit_s",
        label: "bulk, 1 pair: Gbit/s",
        baseline: "direct",
        higher_is_better: true,
    },
    MetricDef {
        workload: "bulk1",
        key: "cpu_s_per_gb",
        label: "bulk, 1 pair: relay CPU-s/GB",
        baseline: "haproxy-splice",
        higher_is_better: false,
    },
    MetricDef {
        workload: "bulk16",
        key: "gbit_s",
        label: "bulk, 16 pairs: Gbit/s",
        baseline: "direct",
        higher_is_better: true,
    },
    MetricDef {
        workload: "bulk16",
        key: "cpu_s_per_gb",
        label: "bulk, 16 pairs: relay CPU-s/GB",
        baseline: "haproxy-splice",
        higher_is_better: false,
    },
    MetricDef {
        workload: "bulk256",
        key: "gbit_s",
        label: "bulk, 256 pairs: Gbit/s",
        baseline: "direct",
        higher_is_better: true,
    },
    MetricDef {
        workload: "bulk256",
        key: "cpu_s_per_gb",
        label: "bulk, 256 pairs: relay CPU-s/GB",
        baseline: "haproxy-splice",
        higher_is_better: false,
    },
    MetricDef {
        workload: "pingpong",
        key: "p50_us",
        label: "64 B ping-pong RTT p50 (µs)",
        baseline: "direct",
        higher_is_better: false,
    },
    MetricDef {
        workload: "pingpong",
        key: "p99_us",
        label: "64 B ping-pong RTT p99 (µs)",
        baseline: "direct",
        higher_is_better: false,
    },
    MetricDef {
        workload: "pairing",
        key: "per_s",
        label: "pairings (connection setups) per second",
        baseline: "direct",
        higher_is_better: true,
    },
    MetricDef {
        workload: "pairing",
        key: "p50_us",
        label: "pairing latency p50 (µs): connect -> 1st echoed byte",
        baseline: "direct",
        higher_is_better: false,
    },
    MetricDef {
        workload: "pairing",
        key: "p99_us",
        label: "pairing latency p99 (µs)",
        baseline: "direct",
        higher_is_better: false,
    },
    MetricDef {
        workload: "pairing",
        key: "relay_cpu_us",
        label: "pairing: relay CPU µs per pairing",
        baseline: "haproxy-splice",
        higher_is_better: false,
    },
    MetricDef {
        workload: "pairing",
        key: "engine_round_trips",
        label: "pairing: directory (Valkey/Redis) round trips per pairing, both nodes (cluster targets)",
        baseline: "tryst-cluster-local",
        higher_is_better: false,
    },
    MetricDef {
        workload: "pairing",
        key: "generator_cpu_us",
        label: "pairing: generator+sink CPU µs per pairing (this process; tryst's sink also re-parks)",
        baseline: "direct",
        higher_is_better: false,
    },
    MetricDef {
        workload: "pairing-open",
        key: "per_s",
        label: "open-loop pairing at --rate: pairings per second achieved",
        baseline: "direct",
        higher_is_better: true,
    },
    MetricDef {
        workload: "pairing-open",
        key: "p50_us",
        label: "open-loop pairing latency p50 (µs) from scheduled arrival",
        baseline: "direct",
        higher_is_better: false,
    },
    MetricDef {
        workload: "pairing-open",
        key: "p99_us",
        label: "open-loop pairing latency p99 (µs) from scheduled arrival",
        baseline: "direct",
        higher_is_better: false,
    },
    MetricDef {
        workload: "pairing-open",
        key: "dropped",
        label: "open-loop arrivals not started (too many in progress)",
        baseline: "direct",
        higher_is_better: false,
    },
    MetricDef {
        workload: "pairing-open",
        key: "relay_cpu_us",
        label: "open-loop pairing: relay CPU µs per pairing",
        baseline: "haproxy-splice",
        higher_is_better: false,
    },
];

/// One measurement.
#[derive(Debug, Clone, Serialize)]
pub(super) struct Cell {
    pub(super) repetition: usize,
    pub(super) workload: String,
    pub(super) target: String,
    pub(super) metrics: Metrics,
    pub(super) error: Option<String>,
}

/// One row of the summary.
#[derive(Debug, Clone, Serialize)]
pub(super) struct SummaryRow {
    workload: String,
    metric: String,
    label: String,
    target: String,
    median: Option<f64>,
    min: Option<f64>,
    max: Option<f64>,
    samples: usize,
    baseline: String,
    ratio: Option<f64>,
}

/// Everything one `loadgen compare` run measured, with how (printed, and written with
/// `--json`).
#[derive(Debug, Serialize)]
pub(super) struct CompareReport {
    pub(super) command: String,
    pub(super) kernel: String,
    pub(super) cpus: usize,
    pub(super) pinning: String,
    pub(super) repetitions: usize,
    pub(super) duration_s: f64,
    pub(super) targets: BTreeMap<String, String>,
    pub(super) skipped: BTreeMap<String, String>,
    pub(super) cells: Vec<Cell>,
    pub(super) summary: Vec<SummaryRow>,
    pub(super) errors: BTreeMap<String, u64>,
}

/// The target `target`'s figures are compared with: the metric's baseline, or for the
/// `-tls` targets its TLS counterpart (direct-tls for direct, haproxy-tls for
/// haproxy-splice), so that TLS is compared with TLS.
fn baseline_for<'a>(baseline: &'a str, target: &str) -> &'a str {
    if !target.ends_with("-tls") {
        return baseline;
    }
    match baseline {
        "direct" => "direct-tls",
        "haproxy-splice" => "haproxy-tls",
        other => other,
    }
}

/// One row per metric and target: median, min-max and ratio to the metric's baseline.
pub(super) fn summarize(cells: &[Cell], targets: &[String]) -> Vec<SummaryRow> {
    let mut rows = Vec::new();
    for def in METRICS {
        let values = |t: &str| -> Vec<f64> {
            cells
                .iter()
                .filter(|c| c.workload == def.workload && c.target == t && c.error.is_none())
                .filter_map(|c| c.metrics.get(def.key).copied())
                .collect()
        };
        if !cells.iter().any(|c| c.workload == def.workload) {
            continue;
        }
        for t in targets {
            let baseline = baseline_for(def.baseline, t);
            let base = median(&values(baseline));
            let v = values(t);
            if v.is_empty()
                && cells
                    .iter()
                    .all(|c| c.target != *t || c.workload != def.workload || c.error.is_none())
            {
                // No samples and no failures: the metric does not apply (e.g. relay CPU
                // for direct).
                continue;
            }
            let med = median(&v);
            let sp = spread(&v);
            rows.push(SummaryRow {
                workload: def.workload.into(),
                metric: def.key.into(),
                label: def.label.into(),
                target: t.clone(),
                median: med,
                min: sp.map(|s| s.0),
                max: sp.map(|s| s.1),
                samples: v.len(),
                baseline: baseline.into(),
                ratio: ratio(med, base),
            });
        }
    }
    rows
}

fn fmt_num(v: Option<f64>) -> String {
    match v {
        None => "-".into(),
        Some(x) if x.abs() >= 1000.0 => format!("{x:.0}"),
        Some(x) if x.abs() >= 10.0 => format!("{x:.1}"),
        Some(x) => format!("{x:.3}"),
    }
}

/// The report as text.
pub(super) fn render(report: &CompareReport) -> String {
    use std::fmt::Write as _;
    let mut o = String::new();
    let _ = writeln!(o, "\n== loadgen compare ==");
    let _ = writeln!(o, "command    {}", report.command);
    let _ = writeln!(
        o,
        "machine    kernel {}, {} CPUs",
        report.kernel, report.cpus
    );
    let _ = writeln!(o, "pinning    {}", report.pinning);
    let _ = writeln!(
        o,
        "method     {} repetitions, interleaved (for each repetition, each workload, every target in turn), {:.1}s per measurement; medians with [min-max]",
        report.repetitions, report.duration_s
    );
    for (t, cmd) in &report.targets {
        let _ = writeln!(o, "target     {t}: {cmd}");
    }
    for (t, why) in &report.skipped {
        let _ = writeln!(o, "SKIPPED    {t}: {why}");
    }
    let mut last = String::new();
    for r in &report.summary {
        let key = format!("{}/{}", r.workload, r.metric);
        if key != last {
            let def = METRICS
                .iter()
                .find(|d| d.workload == r.workload && d.key == r.metric);
            let better = def
                .map(|d| {
                    if d.higher_is_better {
                        "higher is better"
                    } else {
                        "lower is better"
                    }
                })
                .unwrap_or("");
            let baseline = def.map_or(r.baseline.as_str(), |d| d.baseline);
            let _ = writeln!(o, "\n{} ({better}; ratio vs {baseline})", r.label);
            let _ = writeln!(
                o,
                "  {:<22} {:>10} {:>23} {:>8}",
                "target", "median", "min-max", "ratio"
            );
            last = key;
        }
        let range = format!("{}-{}", fmt_num(r.min), fmt_num(r.max));
        let failed = if r.samples < report.repetitions {
            format!("  ({} of {} runs ok)", r.samples, report.repetitions)
        } else {
            String::new()
        };
        let header_baseline = METRICS
            .iter()
            .find(|d| d.workload == r.workload && d.key == r.metric)
            .map_or("", |d| d.baseline);
        let against = if r.baseline != header_baseline && r.ratio.is_some() {
            format!(" vs {}", r.baseline)
        } else {
            String::new()
        };
        let _ = writeln!(
            o,
            "  {:<22} {:>10} {:>23} {:>8}{against}{failed}",
            r.target,
            fmt_num(r.median),
            range,
            r.ratio
                .map(|x| format!("{x:.2}"))
                .unwrap_or_else(|| "-".into())
        );
    }
    if report.errors.is_empty() {
        let _ = writeln!(o, "\nerrors     none");
    } else {
        let _ = writeln!(o, "\nerrors:");
        for (k, v) in &report.errors {
            let _ = writeln!(o, "  {v:>7}  {k}");
        }
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cell(rep: usize, w: &str, t: &str, key: &str, v: f64) -> Cell {
        Cell {
            repetition: rep,
            workload: w.into(),
            target: t.into(),
            metrics: [(key.to_string(), v)].into(),
            error: None,
        }
    }

    /// The text of a report holding only `summary`, `repetitions` and `skipped`.
    fn render_rows(
        summary: Vec<SummaryRow>,
        repetitions: usize,
        skipped: BTreeMap<String, String>,
    ) -> String {
        render(&CompareReport {
            command: "x".into(),
            kernel: "k".into(),
            cpus: 2,
            pinning: "p".into(),
            repetitions,
            duration_s: 1.0,
            targets: BTreeMap::new(),
            skipped,
            cells: Vec::new(),
            summary,
            errors: BTreeMap::new(),
        })
    }

    #[test]
    fn summary_takes_medians_spreads_and_ratios_to_the_baseline() {
        let mut cells = vec![
            cell(0, "bulk1", "direct", "gbit_s", 30.0),
            cell(1, "bulk1", "direct", "gbit_s", 20.0),
            cell(2, "bulk1", "direct", "gbit_s", 25.0),
            cell(0, "bulk1", "tryst", "gbit_s", 10.0),
            cell(1, "bulk1", "tryst", "gbit_s", 15.0),
            cell(2, "bulk1", "tryst", "gbit_s", 12.5),
            cell(0, "bulk1", "tryst", "cpu_s_per_gb", 0.2),
        ];
        cells.push(Cell {
            repetition: 2,
            workload: "bulk1".into(),
            target: "bore".into(),
            metrics: Metrics::new(),
            error: Some("x".into()),
        });
        let rows = summarize(&cells, &["direct".into(), "tryst".into(), "bore".into()]);
        let find = |t: &str, m: &str| {
            rows.iter()
                .find(|r| r.target == t && r.metric == m)
                .cloned()
        };
        let d = find("direct", "gbit_s").unwrap();
        assert_eq!(
            (d.median, d.min, d.max, d.ratio),
            (Some(25.0), Some(20.0), Some(30.0), Some(1.0))
        );
        let t = find("tryst", "gbit_s").unwrap();
        assert_eq!(t.median, Some(12.5));
        assert_eq!(t.ratio, Some(0.5));
        // A failed target still gets a row (no median), so the failure is visible.
        let b = find("bore", "gbit_s").unwrap();
        assert_eq!((b.median, b.samples), (None, 0));
        // CPU per GB: no baseline (haproxy-splice absent) -> no ratio; direct has no row.
        assert_eq!(find("tryst", "cpu_s_per_gb").unwrap().ratio, None);
        assert!(find("direct", "cpu_s_per_gb").is_none());
        let skipped = [("bore".to_string(), "not installed".to_string())].into();
        let text = render_rows(rows, 3, skipped);
        assert!(text.contains("SKIPPED    bore: not installed"));
        assert!(text.contains("(0 of 3 runs ok)"));
    }

    #[test]
    fn tls_targets_are_compared_with_their_tls_counterparts() {
        let cells = vec![
            cell(0, "bulk1", "direct", "gbit_s", 40.0),
            cell(0, "bulk1", "direct-tls", "gbit_s", 10.0),
            cell(0, "bulk1", "tryst-tls", "gbit_s", 8.0),
            cell(0, "bulk1", "haproxy-splice", "cpu_s_per_gb", 0.1),
            cell(0, "bulk1", "haproxy-tls", "cpu_s_per_gb", 1.0),
            cell(0, "bulk1", "tryst-tls", "cpu_s_per_gb", 0.75),
            cell(0, "bulk1", "tryst-splice-syscall", "cpu_s_per_gb", 0.2),
        ];
        let targets: Vec<String> = [
            "direct",
            "direct-tls",
            "tryst-tls",
            "haproxy-splice",
            "haproxy-tls",
            "tryst-splice-syscall",
        ]
        .map(String::from)
        .into();
        let rows = summarize(&cells, &targets);
        let find = |t: &str, m: &str| {
            rows.iter()
                .find(|r| r.target == t && r.metric == m)
                .cloned()
                .unwrap()
        };
        let t = find("tryst-tls", "gbit_s");
        assert_eq!((t.ratio, t.baseline.as_str()), (Some(0.8), "direct-tls"));
        let t = find("tryst-tls", "cpu_s_per_gb");
        assert_eq!((t.ratio, t.baseline.as_str()), (Some(0.75), "haproxy-tls"));
        // Plain targets keep the plain baselines.
        let p = find("tryst-splice-syscall", "cpu_s_per_gb");
        assert_eq!(
            (p.ratio, p.baseline.as_str()),
            (Some(2.0), "haproxy-splice")
        );
        let text = render_rows(rows, 1, BTreeMap::new());
        assert!(text.contains("ratio vs haproxy-splice)"), "{text}");
        assert!(text.contains("0.75 vs haproxy-tls"), "{text}");
    }
}
