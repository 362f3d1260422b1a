//! The capacity report (table and JSON) and the hand-written SVG percentile plot.

use crate::cli::CapacityArgs;
use crate::procfs::{KernelSample, TreeSample};
use crate::proto::Auth;
use crate::stats::{Stats, Summary, fmt_ns};
use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::time::Duration;

/// Resource use of a relay this run started.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct RelayResources {
    /// How it was started.
    pub(crate) command: String,
    /// Its exit status after SIGTERM.
    pub(crate) exit_status: String,
    /// Right after it started listening.
    pub(crate) baseline: TreeSample,
    /// After every hidden server parked.
    pub(crate) after_park: TreeSample,
    /// With every client paired (the peak of sockets).
    pub(crate) at_peak: TreeSample,
    /// At the end, before SIGTERM (CPU seconds and peak RSS of the whole run).
    pub(crate) end: TreeSample,
    /// User-space bytes per added socket: RSS growth from "all parked" to the peak,
    /// divided by the sockets added in between.
    pub(crate) bytes_per_socket: f64,
    /// RSS at the peak divided by sockets at the peak (includes fixed costs).
    pub(crate) bytes_per_socket_overall: f64,
    /// Host-wide kernel memory right after the relay started listening.
    pub(crate) kernel_baseline: KernelSample,
    /// Host-wide kernel memory after every hidden server parked.
    pub(crate) kernel_after_park: KernelSample,
    /// User space per parked connection: RssAnon after parking (heap and other private
    /// memory, fixed per-process costs included; not the binary's file pages, which
    /// VmRSS counts once per worker process) over the relay's sockets. An upper bound:
    /// the growth per connection is the slope between two runs of different sizes.
    pub(crate) user_bytes_per_parked: f64,
    /// Kernel memory per parked connection: host-wide slab and TCP memory growth over
    /// the same interval, over the relay's sockets added. On loopback it includes the
    /// hidden server's own end of each connection.
    pub(crate) kernel_bytes_per_parked: f64,
}

/// Growth of `after - before` per socket the relay added between the two samples (0
/// when none were added).
pub(crate) fn per_parked(before: &TreeSample, after: &TreeSample, grown: u64) -> f64 {
    let added = after.sockets.saturating_sub(before.sockets);
    if added == 0 {
        return 0.0;
    }
    grown as f64 / added as f64
}

/// RSS growth per socket between two samples of the same tree (0 when no sockets were
/// added).
pub(crate) fn marginal_bytes_per_socket(before: &TreeSample, after: &TreeSample) -> f64 {
    let added = after.sockets.saturating_sub(before.sockets);
    if added == 0 {
        return 0.0;
    }
    after.rss.saturating_sub(before.rss) as f64 / added as f64
}

/// Everything a capacity run reports.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct CapacityReport {
    /// The command line.
    pub(crate) command: String,
    /// Seed of patterns and targets.
    pub(crate) seed: u64,
    /// Relay address.
    pub(crate) relay: String,
    /// `tcp` or `tls`.
    pub(crate) transport: String,
    /// How hidden servers parked: `native` or `totp`.
    pub(crate) auth: Auth,
    /// Hidden servers.
    pub(crate) hidden: usize,
    /// Parked connections per hidden server.
    pub(crate) parked: usize,
    /// Clients.
    pub(crate) clients: u64,
    /// Clients at once.
    pub(crate) concurrency: u64,
    /// Echo rounds before the hold.
    pub(crate) rounds: u32,
    /// Bytes per round.
    pub(crate) size: usize,
    /// Hold, seconds.
    pub(crate) hold_s: f64,
    /// Arrival rate, if open loop.
    pub(crate) rate: Option<f64>,
    /// Worker processes.
    pub(crate) workers: usize,
    /// Park latency (connect -> 200).
    pub(crate) park: Summary,
    /// Pairing latency (intended connect -> first echoed byte).
    pub(crate) pairing: Summary,
    /// Echo round-trip time.
    pub(crate) rtt: Summary,
    /// The last echo on every tunnel, after the hold.
    pub(crate) last_echo: Summary,
    /// Successful parks (initial and re-parks).
    pub(crate) parks: u64,
    /// Pairings.
    pub(crate) pairings: u64,
    /// Seconds from the start of the client phase to the last pairing.
    pub(crate) pairing_seconds: f64,
    /// Pairings per second over that span.
    pub(crate) pairings_per_sec: f64,
    /// Clients that finished every step.
    pub(crate) clients_ok: u64,
    /// Echoed bytes verified.
    pub(crate) bytes_verified: u64,
    /// Errors by kind.
    pub(crate) errors: BTreeMap<String, u64>,
    /// Total errors.
    pub(crate) errors_total: u64,
    /// The local relay's resource use.
    pub(crate) relay_resources: Option<RelayResources>,
    /// Wall time of the whole run, seconds.
    pub(crate) wall_seconds: f64,
}

impl CapacityReport {
    /// Assembles the report.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn build(
        args: &CapacityArgs,
        seed: u64,
        relay: SocketAddr,
        workers: usize,
        stats: &Stats,
        client_phase: Duration,
        wall: Duration,
        relay_resources: Option<RelayResources>,
    ) -> Self {
        let span = if stats.last_pairing_ms > 0 {
            stats.last_pairing_ms as f64 / 1e3
        } else {
            client_phase.as_secs_f64()
        };
        Self {
            command: std::env::args().collect::<Vec<_>>().join(" "),
            seed,
            relay: relay.to_string(),
            transport: if args.tls { "tls" } else { "tcp" }.to_string(),
            auth: args.auth,
            hidden: args.hidden,
            parked: args.parked,
            clients: args.clients,
            concurrency: args.concurrent_clients(),
            rounds: args.rounds,
            size: args.size,
            hold_s: args.hold.as_secs_f64(),
            rate: args.rate,
            workers,
            park: stats.park.summary(),
            pairing: stats.pairing.summary(),
            rtt: stats.rtt.summary(),
            last_echo: stats.last_echo.summary(),
            parks: stats.parks,
            pairings: stats.pairings,
            pairing_seconds: span,
            pairings_per_sec: if span > 0.0 {
                stats.pairings as f64 / span
            } else {
                0.0
            },
            clients_ok: stats.clients_ok,
            bytes_verified: stats.bytes_verified,
            errors: stats.errors.0.clone(),
            errors_total: stats.errors.total(),
            relay_resources,
            wall_seconds: wall.as_secs_f64(),
        }
    }
}

fn mb(bytes: u64) -> String {
    format!("{:.1} MB", bytes as f64 / 1e6)
}

/// The capacity report as a text table.
pub(crate) fn render_capacity(r: &CapacityReport) -> String {
    let mut o = String::new();
    let _ = writeln!(o, "\n== loadgen capacity run ==");
    let _ = writeln!(o, "command        {}", r.command);
    let _ = writeln!(
        o,
        "load           {} hidden servers x {} parked, {} clients ({} at once{}), {} x {} B echo rounds, hold {:.1}s, {} worker processes, seed {}",
        r.hidden,
        r.parked,
        r.clients,
        r.concurrency,
        r.rate
            .map(|x| format!(", {x:.0}/s open loop"))
            .unwrap_or_default(),
        r.rounds,
        r.size,
        r.hold_s,
        r.workers,
        r.seed
    );
    let _ = writeln!(
        o,
        "relay          {} over {}, {} auth{}",
        r.relay,
        r.transport.to_uppercase(),
        match r.auth {
            Auth::Native => "native",
            Auth::Totp => "TOTP",
        },
        if r.relay_resources.is_some() {
            " (started by loadgen)"
        } else {
            ""
        }
    );
    let _ = writeln!(o);
    let _ = writeln!(
        o,
        "{:<22} {:>9} {:>10} {:>10} {:>10} {:>10} {:>10}",
        "latency", "count", "p50", "p90", "p99", "p99.9", "max"
    );
    for (name, s) in [
        ("park (connect->200)", r.park),
        ("pairing (->1st echo)", r.pairing),
        ("echo round trip", r.rtt),
        ("last echo (post-hold)", r.last_echo),
    ] {
        let _ = writeln!(
            o,
            "{:<22} {:>9} {:>10} {:>10} {:>10} {:>10} {:>10}",
            name,
            s.count,
            fmt_ns(s.p50_ns),
            fmt_ns(s.p90_ns),
            fmt_ns(s.p99_ns),
            fmt_ns(s.p999_ns),
            fmt_ns(s.max_ns)
        );
    }
    let _ = writeln!(o);
    let _ = writeln!(
        o,
        "pairings       {} in {:.2}s = {:.0}/s",
        r.pairings, r.pairing_seconds, r.pairings_per_sec
    );
    let _ = writeln!(o, "parks          {} (initial parks and re-parks)", r.parks);
    let _ = writeln!(
        o,
        "clients ok     {} of {}; {} echoed bytes verified",
        r.clients_ok, r.clients, r.bytes_verified
    );
    if r.errors.is_empty() {
        let _ = writeln!(o, "errors         none");
    } else {
        let _ = writeln!(o, "errors         {} in total:", r.errors_total);
        for (k, v) in &r.errors {
            let _ = writeln!(o, "  {v:>9}  {k}");
        }
    }
    if let Some(res) = &r.relay_resources {
        let _ = writeln!(o);
        let _ = writeln!(
            o,
            "relay (local, {} processes): {}",
            res.end.processes, res.command
        );
        let _ = writeln!(
            o,
            "  peak RSS       {} (sum of VmHWM over the process tree); RSS {} after parking, {} at the peak",
            mb(res.end.peak_rss),
            mb(res.after_park.rss),
            mb(res.at_peak.rss)
        );
        let _ = writeln!(
            o,
            "  per socket     {:.0} B user space per added socket (RSS growth from parked to peak); {:.0} B overall (RSS / sockets at the peak)",
            res.bytes_per_socket, res.bytes_per_socket_overall
        );
        let _ = writeln!(
            o,
            "  per parked     {:.0} B user space (RssAnon after parking / sockets, fixed costs included); {:.0} B kernel (slab + TCP memory growth / sockets added, whole host: both ends on loopback)",
            res.user_bytes_per_parked, res.kernel_bytes_per_parked
        );
        let _ = writeln!(
            o,
            "  RssAnon        {} at start, {} after parking, {} at the peak",
            mb(res.baseline.rss_anon),
            mb(res.after_park.rss_anon),
            mb(res.at_peak.rss_anon)
        );
        let _ = writeln!(
            o,
            "  CPU            {:.2} s user+system, all threads incl. io-wq",
            res.end.cpu_seconds - res.baseline.cpu_seconds
        );
        let _ = writeln!(
            o,
            "  fds            {} at the peak ({} sockets); {} after parking ({} sockets)",
            res.at_peak.fds, res.at_peak.sockets, res.after_park.fds, res.after_park.sockets
        );
        let _ = writeln!(o, "  exit           {}", res.exit_status);
    }
    let _ = writeln!(o, "wall time      {:.1}s", r.wall_seconds);
    o
}

/// A log-log chart of latency (µs) against percentile, one polyline per series.
pub(crate) fn svg_plot(title: &str, series: &[(&str, Vec<(f64, u64)>)]) -> String {
    const W: f64 = 800.0;
    const H: f64 = 480.0;
    const L: f64 = 80.0;
    const R: f64 = 130.0;
    const T: f64 = 40.0;
    const B: f64 = 50.0;
    let colors = [
        "#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b",
    ];
    // x: "nines" = -log10(1 - p/100), 0 ..= 5.
    let nines = |p: f64| -(1.0 - p / 100.0).max(1e-5).log10();
    let all: Vec<u64> = series
        .iter()
        .flat_map(|(_, pts)| pts.iter().map(|p| p.1))
        .collect();
    let lo_us = all.iter().copied().min().unwrap_or(1).max(1) as f64 / 1e3;
    let hi_us = all.iter().copied().max().unwrap_or(1000).max(1) as f64 / 1e3;
    let y0 = lo_us.max(0.1).log10().floor();
    let y1 = (hi_us.max(lo_us * 10.0)).log10().ceil().max(y0 + 1.0);
    let px = |n: f64| L + (W - L - R) * (n / 5.0);
    let py = |us: f64| T + (H - T - B) * (1.0 - (us.max(1e-3).log10() - y0) / (y1 - y0));
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(s, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        s,
        r#"<text x="{}" y="22" font-size="15" text-anchor="middle">{}</text>"#,
        W / 2.0,
        xml_escape(title)
    );
    for (i, label) in ["0%", "90%", "99%", "99.9%", "99.99%", "99.999%"]
        .iter()
        .enumerate()
    {
        let x = px(i as f64);
        let _ = writeln!(
            s,
            r##"<line x1="{x:.1}" y1="{T}" x2="{x:.1}" y2="{}" stroke="#ddd"/>"##,
            H - B
        );
        let _ = writeln!(
            s,
            r#"<text x="{x:.1}" y="{}" text-anchor="middle">{label}</text>"#,
            H - B + 18.0
        );
    }
    let mut e = y0;
    while e <= y1 {
        let y = py(10f64.powf(e));
        let label = fmt_ns((10f64.powf(e) * 1e3) as u64);
        let _ = writeln!(
            s,
            r##"<line x1="{L}" y1="{y:.1}" x2="{}" y2="{y:.1}" stroke="#ddd"/>"##,
            W - R
        );
        let _ = writeln!(
            s,
            r#"<text x="{}" y="{:.1}" text-anchor="end">{label}</text>"#,
            L - 6.0,
            y + 4.0
        );
        e += 1.0;
    }
    let _ = writeln!(
        s,
        r#"<text x="{}" y="{}" text-anchor="middle">percentile</text>"#,
        (L + W - R) / 2.0,
        H - 12.0
    );
    let _ = writeln!(
        s,
        r#"<text x="16" y="{}" transform="rotate(-90 16 {})" text-anchor="middle">latency</text>"#,
        H / 2.0,
        H / 2.0
    );
    for (i, (name, pts)) in series.iter().enumerate() {
        let color = colors[i % colors.len()];
        let points: Vec<String> = pts
            .iter()
            .map(|(p, ns)| format!("{:.1},{:.1}", px(nines(*p)), py(*ns as f64 / 1e3)))
            .collect();
        if !points.is_empty() {
            let _ = writeln!(
                s,
                r#"<polyline fill="none" stroke="{color}" stroke-width="2" points="{}"/>"#,
                points.join(" ")
            );
        }
        let ly = T + 20.0 * i as f64 + 10.0;
        let _ = writeln!(
            s,
            r#"<line x1="{}" y1="{ly}" x2="{}" y2="{ly}" stroke="{color}" stroke-width="3"/>"#,
            W - R + 10.0,
            W - R + 30.0
        );
        let _ = writeln!(
            s,
            r#"<text x="{}" y="{}">{}</text>"#,
            W - R + 36.0,
            ly + 4.0,
            xml_escape(name)
        );
    }
    s.push_str("</svg>\n");
    s
}

fn xml_escape(t: &str) -> String {
    t.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::Latency;

    #[test]
    fn marginal_bytes_per_socket_uses_the_growth() {
        let before = TreeSample {
            rss: 10_000_000,
            sockets: 1000,
            ..TreeSample::default()
        };
        let after = TreeSample {
            rss: 12_000_000,
            sockets: 3000,
            ..TreeSample::default()
        };
        assert_eq!(marginal_bytes_per_socket(&before, &after), 1000.0);
        assert_eq!(marginal_bytes_per_socket(&after, &after), 0.0);
        assert_eq!(marginal_bytes_per_socket(&after, &before), 0.0);
    }

    #[test]
    fn svg_has_one_polyline_per_series_and_escapes() {
        let mut a = Latency::new();
        for i in 1..1000u64 {
            a.record(Duration::from_micros(i));
        }
        let svg = svg_plot(
            "a < b",
            &[
                ("park", a.curve()),
                ("empty", Vec::new()),
                ("rtt", a.curve()),
            ],
        );
        assert!(svg.starts_with("<svg"));
        assert!(svg.trim_end().ends_with("</svg>"));
        assert_eq!(svg.matches("<polyline").count(), 2);
        assert!(svg.contains("a &lt; b"));
        assert!(!svg.contains("NaN") && !svg.contains("inf"));
    }
}
