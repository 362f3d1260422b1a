//! The UDP side of the STUN responder: counters and the receive loop the supervisor runs.

use super::message::{DropReason, MAX_REQUEST_LEN, Outcome, respond};
use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use tokio::net::UdpSocket;

/// What the responder did, readable by the HTTP service for `/metrics`.
#[derive(Debug, Default)]
pub struct StunCounters {
    answered: AtomicU64,
    dropped: [AtomicU64; DropReason::ALL.len()],
    send_errors: AtomicU64,
}

impl StunCounters {
    /// Fresh counters behind an `Arc` (shared by the responder and the HTTP service).
    pub fn shared() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Counts one outcome.
    pub fn record(&self, outcome: &Outcome) {
        match outcome {
            Outcome::Answer(_) => self.answered.fetch_add(1, Ordering::Relaxed),
            Outcome::Drop(why) => self.dropped[why.index()].fetch_add(1, Ordering::Relaxed),
        };
    }

    /// Binding requests answered.
    pub fn answered(&self) -> u64 {
        self.answered.load(Ordering::Relaxed)
    }

    /// Datagrams dropped for `reason`.
    pub fn dropped(&self, reason: DropReason) -> u64 {
        self.dropped[reason.index()].load(Ordering::Relaxed)
    }

    /// Answers that could not be sent.
    pub fn send_errors(&self) -> u64 {
        self.send_errors.load(Ordering::Relaxed)
    }

    /// Prometheus text: `tryst_stun_answered_total`, `tryst_stun_dropped_total{reason}`
    /// (every reason, zeros included) and `tryst_stun_send_errors_total`.
    pub fn render_metrics(&self) -> String {
        use crate::metrics::{header, single};
        let mut out = String::with_capacity(640);
        single(
            &mut out,
            "tryst_stun_answered_total",
            "counter",
            "STUN Binding requests answered.",
            self.answered(),
        );
        header(
            &mut out,
            "tryst_stun_dropped_total",
            "counter",
            "STUN datagrams dropped unanswered, by reason.",
        );
        for reason in DropReason::ALL {
            let _ = writeln!(
                out,
                "tryst_stun_dropped_total{{reason=\"{}\"}} {}",
                reason.label(),
                self.dropped(reason)
            );
        }
        single(
            &mut out,
            "tryst_stun_send_errors_total",
            "counter",
            "STUN answers the socket refused to send.",
            self.send_errors(),
        );
        out
    }
}

/// Answers Binding requests on `socket` forever (until the task is dropped or the socket
/// fails to receive for a reason other than an ICMP-reported send failure).
///
/// One datagram in, at most one datagram of at most
/// [`super::message::MAX_RESPONSE_LEN`] bytes out, to the datagram's source only.
pub async fn run(socket: UdpSocket, counters: Arc<StunCounters>) -> std::io::Result<()> {
    // One byte more than the largest request considered, so longer ones are seen as such
    // (recv truncates silently) and dropped.
    let mut buf = [0u8; MAX_REQUEST_LEN + 1];
    loop {
        let (len, source) = match socket.recv_from(&mut buf).await {
            Ok(got) => got,
            // Linux reports an earlier send's ICMP port-unreachable on the next receive.
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => continue,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        let outcome = respond(buf.get(..len).unwrap_or_default(), source);
        counters.record(&outcome);
        if let Outcome::Answer(response) = outcome
            && let Err(e) = socket.send_to(response.as_bytes(), source).await
        {
            counters.send_errors.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(error = %e, %source, "stun: cannot send an answer");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stun::message::{binding_request, parse};
    use std::time::Duration;

    #[tokio::test]
    async fn answers_over_udp_and_counts() {
        let server = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = server.local_addr().unwrap();
        let counters = StunCounters::shared();
        let task = tokio::spawn(run(server, counters.clone()));
        let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        // A malformed datagram first: it must not be answered, and the next reply is the
        // answer to the good request.
        client
            .send_to(b"not stun at all, 28 bytes..", addr)
            .await
            .unwrap();
        let txid = [9u8; 12];
        client
            .send_to(&binding_request(&txid, None, true), addr)
            .await
            .unwrap();
        let mut buf = [0u8; 128];
        let (n, from) = tokio::time::timeout(Duration::from_secs(20), client.recv_from(&mut buf))
            .await
            .expect("no answer within 20 s")
            .unwrap();
        assert_eq!(from, addr);
        let m = parse(&buf[..n]).unwrap();
        assert_eq!(m.transaction_id, txid);
        assert_eq!(m.xor_mapped_address(), Some(client.local_addr().unwrap()));
        assert_eq!(counters.answered(), 1);
        assert_eq!(counters.dropped(DropReason::Malformed), 1);
        let text = counters.render_metrics();
        assert!(text.contains("tryst_stun_answered_total 1\n"), "{text}");
        assert!(
            text.contains("tryst_stun_dropped_total{reason=\"malformed\"} 1\n"),
            "{text}"
        );
        task.abort();
    }

    /// On a dual-stack socket an IPv4 client arrives as `::ffff:a.b.c.d` and is answered
    /// with an IPv4 XOR-MAPPED-ADDRESS; an IPv6 client gets its IPv6 address.
    #[tokio::test]
    async fn dual_stack_socket_maps_both_families() {
        let Ok(server) = UdpSocket::bind("[::]:0").await else {
            eprintln!("!!!!!!!! SKIPPED dual_stack_socket_maps_both_families: no IPv6 here");
            return;
        };
        let port = server.local_addr().unwrap().port();
        let counters = StunCounters::shared();
        let task = tokio::spawn(run(server, counters.clone()));
        let v4 = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let mut targets = vec![(v4, format!("127.0.0.1:{port}"))];
        if let Ok(v6) = UdpSocket::bind("[::1]:0").await {
            targets.push((v6, format!("[::1]:{port}")));
        }
        for (client, server_addr) in targets {
            let txid = [client.local_addr().unwrap().port() as u8; 12];
            client
                .send_to(&binding_request(&txid, None, false), &server_addr)
                .await
                .unwrap();
            let mut buf = [0u8; 128];
            let (n, _) = tokio::time::timeout(Duration::from_secs(20), client.recv_from(&mut buf))
                .await
                .expect("no answer within 20 s")
                .unwrap();
            let m = parse(&buf[..n]).unwrap();
            assert_eq!(m.xor_mapped_address(), Some(client.local_addr().unwrap()));
            let want_len = if client.local_addr().unwrap().is_ipv4() {
                40
            } else {
                52
            };
            assert_eq!(n, want_len);
        }
        task.abort();
    }
}
