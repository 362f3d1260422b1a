//! `tryst expose --metrics-listen ADDR`: the agent's counters in Prometheus text format
//! at `GET /metrics` (any other path: 404), one labelled sample per service.

use crate::metrics::header;
use http_body_util::Full;
use hyper::body::Bytes;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Response, StatusCode};
use hyper_util::rt::TokioIo;
use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use tokio::net::TcpListener;
use tryst_client::expose::Stats;

/// A metric family: name, type, help and how to read it from a service's counters.
type Family = (&'static str, &'static str, &'static str, fn(&Stats) -> u64);

/// Renders every service's counters.
pub fn render(services: &[(String, Arc<Stats>)]) -> String {
    let mut out = String::new();
    let families: [Family; 7] = [
        (
            "tryst_agent_parked",
            "gauge",
            "Connections parked at the relay now.",
            |s| s.parked.load(Ordering::Relaxed),
        ),
        (
            "tryst_agent_paired_total",
            "counter",
            "Parked connections paired with a client.",
            |s| s.paired.load(Ordering::Relaxed),
        ),
        (
            "tryst_agent_reconnects_total",
            "counter",
            "Transient failures (relay down, reset, 5xx) followed by a retry.",
            |s| s.reconnects.load(Ordering::Relaxed),
        ),
        (
            "tryst_agent_local_failures_total",
            "counter",
            "Pairings whose local target could not be opened.",
            |s| s.local_failures.load(Ordering::Relaxed),
        ),
        ("tryst_agent_tunnels", "gauge", "Tunnels open now.", |s| {
            s.tunnels.load(Ordering::Relaxed)
        }),
        (
            "tryst_agent_bytes_to_local_total",
            "counter",
            "Tunnel bytes from clients to the local target.",
            |s| s.bytes.a_to_b.load(Ordering::Relaxed),
        ),
        (
            "tryst_agent_bytes_from_local_total",
            "counter",
            "Tunnel bytes from the local target to clients.",
            |s| s.bytes.b_to_a.load(Ordering::Relaxed),
        ),
    ];
    for (name, kind, help, read) in families {
        header(&mut out, name, kind, help);
        for (service, stats) in services {
            let label = service
                .replace('\\', "\\\\")
                .replace('"', "\\\"")
                .replace('\n', "\\n");
            let _ = writeln!(out, "{name}{{service=\"{label}\"}} {}", read(stats));
        }
    }
    out
}

/// Serves `GET /metrics` on `listener` until the task is dropped.
pub async fn serve(listener: TcpListener, services: Arc<Vec<(String, Arc<Stats>)>>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let services = services.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                let services = services.clone();
                async move {
                    let response = if req.uri().path() == "/metrics" {
                        Response::builder()
                            .header("Content-Type", "text/plain; version=0.0.4")
                            .body(Full::new(Bytes::from(render(&services))))
                    } else {
                        Response::builder()
                            .status(StatusCode::NOT_FOUND)
                            .body(Full::new(Bytes::from_static(b"not found\n")))
                    };
                    response.map_err(std::io::Error::other)
                }
            });
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_counter_is_rendered_per_service() {
        let a = Arc::new(Stats::default());
        a.paired.store(3, Ordering::Relaxed);
        a.bytes.b_to_a.store(10, Ordering::Relaxed);
        let text = render(&[("ssh".into(), a), ("we\"b".into(), Arc::default())]);
        assert!(text.contains("tryst_agent_paired_total{service=\"ssh\"} 3\n"));
        assert!(text.contains("tryst_agent_bytes_from_local_total{service=\"ssh\"} 10\n"));
        assert!(text.contains("tryst_agent_parked{service=\"we\\\"b\"} 0\n"));
        assert_eq!(text.matches("# TYPE").count(), 7);
    }
}
