//! Timers run once per loop turn (head and linger deadlines, the room, evictions, idle
//! sweeps, accept back-off, descriptor counts, the pipe pool's refusals) and shutdown.

use super::decide::{self, Closing};
use super::{EVICTION_POLL, SockState, Worker};
use crate::driver::shm::Counter;
use crate::driver::sys;
use crate::reject::Rejection;
use crate::room::Role;
use crate::route::Router;
use std::os::fd::AsFd as _;
use std::time::{Duration, SystemTime};

pub(super) fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl<R: Router> Worker<R> {
    pub(super) fn on_tick(&mut self) {
        let now = self.now;
        // Head deadlines (408).
        while let Some(&(deadline, sock, generation)) = self.head_deadlines.front() {
            if deadline > now {
                break;
            }
            self.head_deadlines.pop_front();
            if self.sock_gens.is_current(sock, generation)
                && matches!(
                    self.socks.get(sock).map(|s| &s.state),
                    Some(SockState::Head { .. })
                )
            {
                self.refuse(sock, Rejection::HeadTimeout);
            }
        }
        // Cluster-wide claims nobody answered in time.
        self.expire_claims();
        // Lingering refusals.
        while let Some(&(deadline, sock, _)) = self.linger_deadlines.front() {
            if deadline > now {
                break;
            }
            self.linger_deadlines.pop_front();
            if matches!(self.socks.get(sock).map(|s| &s.state), Some(SockState::Lingering { deadline: d, .. }) if *d <= now)
            {
                self.close_sock(sock, false);
            }
        }
        // Waiting room.
        let mut expired = std::mem::take(&mut self.expired);
        self.room.expire(now, &mut expired);
        for e in expired.drain(..) {
            match e.role {
                Role::Client => match self.take_pairing(e.item).not_parked {
                    Some(bytes) => self.refuse_with(e.item, Rejection::NotParked, bytes),
                    None => self.refuse(e.item, Rejection::NotParked),
                },
                Role::Server => self.close_sock(e.item, false),
            }
        }
        self.expired = expired;
        // Keys the router retired (expired or consumed tags): close what is parked.
        if now >= self.next_eviction_poll {
            self.next_eviction_poll = now + EVICTION_POLL;
            self.evict_retired_keys();
        }
        self.sync_room_counters();
        self.send_reports();
        // Idle tunnels.
        if now >= self.next_idle_sweep {
            let idle = self.cfg.idle_timeout;
            self.next_idle_sweep = now + decide::idle_sweep_interval(idle);
            let stale: Vec<_> = self
                .tunnels
                .iter()
                .filter(|(_, t)| now.saturating_duration_since(t.last_active) >= idle)
                .map(|(i, _)| i)
                .collect();
            for t in stale {
                self.close_tunnel(t, true);
            }
            let stale: Vec<_> = self
                .fronts
                .iter()
                .filter(|(_, f)| now.saturating_duration_since(f.last_active) >= idle)
                .map(|(i, _)| i)
                .collect();
            for f in stale {
                self.close_front(f, true);
            }
        }
        // Accept back-off.
        if let Some(until) = self.accept_paused_until
            && decide::resume_accepting(now, until, self.held_fds(), self.socket_cap())
        {
            self.accept_paused_until = None;
            for i in 0..self.listeners.len() {
                self.arm_accept(i);
            }
        }
        if !self.pending_handoffs.is_empty() {
            self.flush_handoffs();
        }
        self.counters.set(Counter::Sockets, self.socks.len() as u64);
        self.counters.set(Counter::Pipes, self.pipes.held() as u64);
        // Counted, not listed: a listing of /proc/self/fd cost up to 3 % of a bulk
        // worker's CPU and grows with the sockets held (docs/performance.md).
        self.counters
            .set(Counter::Fds, (self.fd_overhead + self.held_fds()) as u64);
        if now >= self.next_second {
            self.next_second = now + Duration::from_secs(1);
            self.limit_cap = sys::soft_nofile().map_or(usize::MAX, |soft| {
                soft.saturating_sub(self.fd_overhead + 16)
            });
            self.check_pipes();
        }
    }

    /// Counts what the kernel refused the pipe pool in the last second, warns (rate
    /// limited), and lets the pool ask for the configured size again.
    fn check_pipes(&mut self) {
        let events = self.pipes.take_events();
        self.counters.add(Counter::PipesShrunk, events.shrunk);
        self.counters.add(Counter::PipeRefusals, events.refused);
        self.counters.add(Counter::PipesGrown, events.grown);
        if (events.shrunk > 0 || events.refused > 0)
            && let Some(suppressed) = self.pipe_warn.ready(self.now)
        {
            tracing::warn!(
                worker = self.index,
                pipe_size = self.cfg.pipe_size,
                shrunk = events.shrunk,
                refused = events.refused,
                suppressed,
                "the kernel refused pipes of pipe-size: smaller pipes or user-space copies are used \
                 (raise fs.pipe-user-pages-soft or fs.pipe-max-size, see deploy/99-tryst.conf)"
            );
        }
        self.pipes.retry();
    }

    /// Closes every connection parked under a key [`Router::evictions`] names.
    pub(super) fn evict_retired_keys(&mut self) {
        let now_unix = unix_now();
        let mut keys = std::mem::take(&mut self.evict_keys);
        self.router.evictions(now_unix, &mut keys);
        let mut parked = Vec::new();
        for key in keys.drain(..) {
            self.room.take_parked(&key, &mut parked);
        }
        self.evict_keys = keys;
        for sock in parked {
            self.close_sock(sock, false);
        }
    }

    /// Applies a family control message from the supervisor ([`Router::control`]) and
    /// closes what is parked under the keys it retired.
    pub(super) fn on_family_message(&mut self, message: &[u8]) {
        let mut keys = std::mem::take(&mut self.evict_keys);
        self.router.control(message, unix_now(), &mut keys);
        let mut parked = Vec::new();
        for key in keys.drain(..) {
            self.room.take_parked(&key, &mut parked);
        }
        self.evict_keys = keys;
        for sock in parked {
            self.close_sock(sock, false);
        }
        self.sync_room_counters();
    }

    /// Sends the router's family reports ([`Router::reports`]) to the supervisor; those
    /// its full inbox refuses wait for a later turn, in order.
    pub(super) fn send_reports(&mut self) {
        let mut fresh = Vec::new();
        self.router.reports(&mut fresh);
        self.pending_reports.extend(fresh);
        while let Some(report) = self.pending_reports.front() {
            match crate::driver::msg::send_family(self.http_out.as_fd(), report) {
                Ok(()) => {
                    self.pending_reports.pop_front();
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) => {
                    tracing::warn!(worker = self.index, error = %e, "a family report could not be sent; dropped");
                    self.pending_reports.pop_front();
                }
            }
        }
    }

    // ----- shutdown -----

    pub(super) fn begin_shutdown(&mut self) {
        if self.shutdown_deadline.is_some() {
            return;
        }
        tracing::info!(
            worker = self.index,
            tunnels = self.open_tunnels(),
            "shutting down: draining tunnels"
        );
        self.shutdown_deadline = Some(self.now + self.cfg.drain_timeout);
        // Accepting goes on while tunnels drain: a new connection (a load balancer's
        // health check, a client) gets `503 shutting_down` at once instead of hanging
        // in the listen queue until the process exits (see `on_accept`).
        for (role, item) in self.room.drain_all() {
            match role {
                Role::Server => self.close_sock(item, false),
                Role::Client => self.refuse(item, Rejection::ShuttingDown),
            }
        }
        self.sync_room_counters();
        let heads: Vec<_> = self
            .socks
            .iter()
            .filter(|(_, s)| matches!(s.state, SockState::Head { .. }))
            .map(|(i, _)| i)
            .collect();
        for s in heads {
            self.refuse(s, Rejection::ShuttingDown);
        }
    }

    pub(super) fn abort_all(&mut self) {
        let tunnels = self.tunnels.ids();
        for t in tunnels {
            // Splices still queued keep their descriptors; the process exits next, which
            // releases everything after the kernel finishes with them.
            self.tunnels[t].closing = Closing::Open;
            for d in &mut self.tunnels[t].dirs {
                d.inflight = false;
            }
            self.close_tunnel(t, true);
        }
        let socks = self.socks.ids();
        for s in socks {
            self.close_sock(s, true);
        }
    }
}
