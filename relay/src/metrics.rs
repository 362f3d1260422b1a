//! `/metrics`: the engine's counters in the Prometheus text exposition format (0.0.4).

use std::fmt::Write as _;
use tryst_engine::driver::{StatsSnapshot, WorkerStats};
use tryst_engine::reject::Rejection;

/// The `Content-Type` of [`render_metrics`] output.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4";

/// Relay-wide series summed over workers: (name, type, help, field).
type Series = (
    &'static str,
    &'static str,
    &'static str,
    fn(&WorkerStats) -> u64,
);

const SUMMED: [Series; 20] = [
    (
        "tryst_parked",
        "gauge",
        "Hidden-server connections parked now.",
        |w| w.parked,
    ),
    (
        "tryst_waiting",
        "gauge",
        "Clients waiting for a hidden server now.",
        |w| w.waiting,
    ),
    (
        "tryst_paired_total",
        "counter",
        "Pairings of a client with a parked hidden server.",
        |w| w.paired,
    ),
    ("tryst_active_tunnels", "gauge", "Tunnels open now.", |w| {
        w.active_tunnels
    }),
    (
        "tryst_bytes_spliced_total",
        "counter",
        "Bytes moved between paired connections, both directions.",
        |w| w.bytes_spliced,
    ),
    (
        "tryst_accepted_total",
        "counter",
        "Connections accepted.",
        |w| w.accepted,
    ),
    (
        "tryst_handoffs_total",
        "counter",
        "Connections passed to the worker owning their rendezvous id.",
        |w| w.handoffs_out,
    ),
    (
        "tryst_http_handoffs_total",
        "counter",
        "Connections passed to the HTTP service.",
        |w| w.http_handoffs,
    ),
    (
        "tryst_handoffs_refused_total",
        "counter",
        "Connections refused with 503 overloaded instead of being handed to a worker at its socket budget.",
        |w| w.handoffs_refused,
    ),
    (
        "tryst_accept_backoffs_total",
        "counter",
        "Times accepting paused on EMFILE/ENFILE or the socket cap.",
        |w| w.accept_backoffs,
    ),
    (
        "tryst_worker_restarts_total",
        "counter",
        "Workers restarted by the supervisor after dying unexpectedly.",
        |w| w.restarts,
    ),
    (
        "tryst_tls_sessions",
        "gauge",
        "TLS sessions terminated by workers now.",
        |w| w.tls_sessions,
    ),
    (
        "tryst_sockets",
        "gauge",
        "Sockets held by workers now.",
        |w| w.sockets,
    ),
    (
        "tryst_fds",
        "gauge",
        "File descriptors open in workers now.",
        |w| w.fds,
    ),
    (
        "tryst_pipes",
        "gauge",
        "Pipes held by workers now (bytes in flight).",
        |w| w.pipes,
    ),
    (
        "tryst_pipes_shrunk_total",
        "counter",
        "Pipes created smaller than pipe-size because the kernel refused that size.",
        |w| w.pipes_shrunk,
    ),
    (
        "tryst_pipe_refusals_total",
        "counter",
        "Times the kernel refused a splice pipe of a useful size; tunnels copied through user space instead.",
        |w| w.pipe_refusals,
    ),
    (
        "tryst_pipes_grown_total",
        "counter",
        "Pipes grown to bulk-pipe-size because a fill filled them (a bulk stream).",
        |w| w.pipes_grown,
    ),
    (
        "tryst_fixed_id_reaches_total",
        "counter",
        "Clients accepted on an id-listen port and put in the id's waiting room.",
        |w| w.fixed_reaches,
    ),
    (
        "tryst_tls_fused_total",
        "counter",
        "TLS tunnels whose two fronts were in one worker: plaintext passed between the sessions in memory.",
        |w| w.tls_fused,
    ),
];

/// Renders `stats` as Prometheus text: every series with `# HELP` and `# TYPE` lines,
/// relay-wide sums, rejections by reason (every code of [`Rejection::ALL`], zeros
/// included) and per-worker `tryst_worker_up` and `tryst_worker_sockets`.
pub fn render_metrics(stats: &StatsSnapshot) -> String {
    let mut out = String::with_capacity(4096);
    for (name, kind, help, field) in SUMMED {
        header(&mut out, name, kind, help);
        let _ = writeln!(out, "{name} {}", stats.sum(field));
    }

    header(
        &mut out,
        "tryst_handoffs_lost_total",
        "counter",
        "Handed-over connections whose descriptor the receiving process could not install (lost).",
    );
    let _ = writeln!(
        out,
        "tryst_handoffs_lost_total {}",
        stats.sum(|w| w.handoffs_lost) + stats.http_handoffs_lost
    );

    header(
        &mut out,
        "tryst_cluster_claims_unanswered_total",
        "counter",
        "Cluster-wide claims a worker settled without the supervisor's verdict (hand-off full or no answer in 2 s): proofs fell back to the local replay cache, single-shot tag responders got 503. Always 0 on a single node.",
    );
    let _ = writeln!(
        out,
        "tryst_cluster_claims_unanswered_total {}",
        stats.sum(|w| w.claims_unanswered)
    );

    header(
        &mut out,
        "tryst_rejections_total",
        "counter",
        "Requests refused, by reason.",
    );
    for reason in Rejection::ALL {
        let _ = writeln!(
            out,
            "tryst_rejections_total{{reason=\"{}\"}} {}",
            reason.code(),
            stats.rejections(reason)
        );
    }

    header(
        &mut out,
        "tryst_workers",
        "gauge",
        "Worker processes configured.",
    );
    let _ = writeln!(out, "tryst_workers {}", stats.workers.len());

    header(
        &mut out,
        "tryst_worker_up",
        "gauge",
        "1 while the worker process is running.",
    );
    for w in &stats.workers {
        let _ = writeln!(
            out,
            "tryst_worker_up{{worker=\"{}\",pid=\"{}\"}} {}",
            w.index,
            w.pid,
            u8::from(w.pid != 0)
        );
    }

    header(
        &mut out,
        "tryst_worker_sockets",
        "gauge",
        "Sockets held by one worker now.",
    );
    for w in &stats.workers {
        let _ = writeln!(
            out,
            "tryst_worker_sockets{{worker=\"{}\"}} {}",
            w.index, w.sockets
        );
    }
    out
}

/// Writes the `# HELP` and `# TYPE` lines of metric `name` (`kind`: `counter`, `gauge`).
pub fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// Writes an unlabelled metric: its header and its one sample.
pub fn single(out: &mut String, name: &str, kind: &str, help: &str, value: impl std::fmt::Display) {
    header(out, name, kind, help);
    let _ = writeln!(out, "{name} {value}");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> StatsSnapshot {
        let mut rej0 = vec![0; Rejection::ALL.len()];
        rej0[Rejection::NotParked.index()] = 3;
        rej0[Rejection::BadProof.index()] = 1;
        let mut rej1 = vec![0; Rejection::NotParked.index() + 1];
        rej1[Rejection::NotParked.index()] = 2;
        StatsSnapshot {
            workers: vec![
                WorkerStats {
                    index: 0,
                    pid: 4242,
                    accepted: 10,
                    parked: 2,
                    waiting: 1,
                    paired: 5,
                    active_tunnels: 4,
                    bytes_spliced: 1_048_576,
                    handoffs_out: 3,
                    http_handoffs: 1,
                    sockets: 12,
                    fds: 20,
                    pipes: 2,
                    accept_backoffs: 0,
                    tls_sessions: 0,
                    restarts: 0,
                    handoffs_refused: 0,
                    handoffs_lost: 0,
                    claims_unanswered: 0,
                    mesh_bytes_out: 0,
                    mesh_bytes_in: 0,
                    pipes_shrunk: 3,
                    pipe_refusals: 0,
                    pipes_grown: 5,
                    fixed_reaches: 0,
                    tls_fused: 0,
                    rejections: rej0,
                },
                WorkerStats {
                    index: 1,
                    pid: 0,
                    accepted: 7,
                    parked: 1,
                    waiting: 0,
                    paired: 2,
                    active_tunnels: 1,
                    bytes_spliced: 100,
                    handoffs_out: 4,
                    http_handoffs: 0,
                    sockets: 3,
                    fds: 9,
                    pipes: 0,
                    accept_backoffs: 6,
                    tls_sessions: 0,
                    restarts: 0,
                    handoffs_refused: 2,
                    handoffs_lost: 1,
                    claims_unanswered: 0,
                    mesh_bytes_out: 0,
                    mesh_bytes_in: 0,
                    pipes_shrunk: 1,
                    pipe_refusals: 2,
                    pipes_grown: 1,
                    fixed_reaches: 5,
                    tls_fused: 1,
                    // A short vector (older worker) counts as zeros.
                    rejections: rej1,
                },
            ],
            http_handoffs_lost: 0,
        }
    }

    fn lines(text: &str) -> Vec<&str> {
        text.lines().collect()
    }

    #[test]
    fn sums_and_headers_are_exact() {
        let text = render_metrics(&sample());
        let l = lines(&text);
        let expect = [
            "# HELP tryst_parked Hidden-server connections parked now.",
            "# TYPE tryst_parked gauge",
            "tryst_parked 3",
            "# HELP tryst_waiting Clients waiting for a hidden server now.",
            "# TYPE tryst_waiting gauge",
            "tryst_waiting 1",
            "# HELP tryst_paired_total Pairings of a client with a parked hidden server.",
            "# TYPE tryst_paired_total counter",
            "tryst_paired_total 7",
            "# HELP tryst_active_tunnels Tunnels open now.",
            "# TYPE tryst_active_tunnels gauge",
            "tryst_active_tunnels 5",
            "# HELP tryst_bytes_spliced_total Bytes moved between paired connections, both directions.",
            "# TYPE tryst_bytes_spliced_total counter",
            "tryst_bytes_spliced_total 1048676",
            "# HELP tryst_accepted_total Connections accepted.",
            "# TYPE tryst_accepted_total counter",
            "tryst_accepted_total 17",
        ];
        assert_eq!(&l[..expect.len()], &expect[..]);
        for want in [
            "tryst_handoffs_total 7",
            "tryst_http_handoffs_total 1",
            "tryst_accept_backoffs_total 6",
            "tryst_sockets 15",
            "tryst_fds 29",
            "tryst_pipes 2",
            "tryst_pipes_shrunk_total 4",
            "tryst_pipe_refusals_total 2",
            "tryst_pipes_grown_total 6",
            "tryst_workers 2",
            "tryst_handoffs_refused_total 2",
            "tryst_handoffs_lost_total 1",
        ] {
            assert!(l.contains(&want), "missing {want:?} in\n{text}");
        }
    }

    #[test]
    fn rejections_list_every_reason() {
        let text = render_metrics(&sample());
        let l = lines(&text);
        let start = l
            .iter()
            .position(|x| *x == "# TYPE tryst_rejections_total counter")
            .unwrap();
        let rows = &l[start + 1..start + 1 + Rejection::ALL.len()];
        assert_eq!(
            rows[0],
            "tryst_rejections_total{reason=\"malformed_head\"} 0"
        );
        assert!(rows.contains(&"tryst_rejections_total{reason=\"not_parked\"} 5"));
        assert!(rows.contains(&"tryst_rejections_total{reason=\"bad_proof\"} 1"));
        assert!(rows.contains(&"tryst_rejections_total{reason=\"shutting_down\"} 0"));
        for r in Rejection::ALL {
            let prefix = format!("tryst_rejections_total{{reason=\"{}\"}} ", r.code());
            assert_eq!(
                rows.iter().filter(|x| x.starts_with(&prefix)).count(),
                1,
                "{r:?}"
            );
        }
    }

    #[test]
    fn per_worker_series() {
        let text = render_metrics(&sample());
        let tail: Vec<&str> = lines(&text).into_iter().rev().take(8).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        assert_eq!(
            tail,
            [
                "# HELP tryst_worker_up 1 while the worker process is running.",
                "# TYPE tryst_worker_up gauge",
                "tryst_worker_up{worker=\"0\",pid=\"4242\"} 1",
                "tryst_worker_up{worker=\"1\",pid=\"0\"} 0",
                "# HELP tryst_worker_sockets Sockets held by one worker now.",
                "# TYPE tryst_worker_sockets gauge",
                "tryst_worker_sockets{worker=\"0\"} 12",
                "tryst_worker_sockets{worker=\"1\"} 3",
            ]
        );
    }

    #[test]
    fn every_series_has_help_and_type_and_text_ends_with_newline() {
        let text = render_metrics(&StatsSnapshot::default());
        assert!(text.ends_with('\n'));
        let mut typed = std::collections::HashSet::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                typed.insert(rest.split(' ').next().unwrap().to_owned());
            } else if !line.starts_with('#') {
                let name = line.split(['{', ' ']).next().unwrap();
                assert!(typed.contains(name), "{name} has no TYPE line before it");
            }
        }
        assert!(text.contains("tryst_parked 0\n"));
        assert!(text.contains("tryst_workers 0\n"));
    }
}
