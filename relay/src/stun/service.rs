//! The STUN responder as a [`ServiceFamily`]: no HTTP path; its UDP loop is its
//! background task and its counters go to `/metrics`.

use super::server::{self, StunCounters};
use crate::family::ServiceFamily;
use std::sync::{Arc, Mutex};
use tokio::net::UdpSocket;

/// The responder on one bound socket.
#[derive(Debug)]
pub struct Stun {
    counters: Arc<StunCounters>,
    /// Taken by [`ServiceFamily::start`].
    socket: Mutex<Option<UdpSocket>>,
}

impl Stun {
    /// The responder for `socket` (already registered with tokio), not started yet.
    pub fn new(socket: UdpSocket) -> Self {
        Self {
            counters: StunCounters::shared(),
            socket: Mutex::new(Some(socket)),
        }
    }

    /// Its counters.
    pub fn counters(&self) -> &Arc<StunCounters> {
        &self.counters
    }
}

impl ServiceFamily for Stun {
    fn name(&self) -> &'static str {
        "stun"
    }

    fn render_metrics(&self, out: &mut String) {
        out.push_str(&self.counters.render_metrics());
    }

    fn start(&self) {
        let socket = self
            .socket
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        let Some(socket) = socket else { return };
        let counters = Arc::clone(&self.counters);
        tokio::spawn(async move {
            if let Err(e) = server::run(socket, counters).await {
                tracing::error!(error = %e, "stun: responder stopped");
            }
        });
    }
}
