//! Cluster-wide claims on the owner worker (see [`crate::claim`]): a routed connection
//! whose decision carries a claim waits, unarmed, for the supervisor's verdict; nothing
//! here blocks. Bounded: at most [`MAX_PENDING_CLAIMS`] wait at once, each at most
//! [`CLAIM_DEADLINE`]; a claim that cannot be sent, or is not answered in time, is
//! settled as [`Verdict::Unavailable`] and counted (`claims_unanswered`).

use super::ids::SockId;
use super::{SockState, Worker};
use crate::claim::{Claim, ClaimRequest, OnUnavailable, Verdict};
use crate::driver::msg;
use crate::driver::shm::Counter;
use crate::head::RequestHead;
use crate::reject::Rejection;
use crate::route::{ParkMode, Route, Router};
use std::collections::{HashMap, VecDeque};
use std::os::fd::AsFd as _;
use std::time::Instant;

pub(super) use crate::claim::CLAIM_DEADLINE;
/// Most claims one worker waits on at once; beyond it claims settle as unavailable.
pub(super) const MAX_PENDING_CLAIMS: usize = 4096;

/// A connection waiting for its claim's verdict.
#[derive(Debug)]
pub(super) struct Pending {
    sock: SockId,
    generation: u32,
    head: RequestHead,
    early: Vec<u8>,
    route: Route,
    now_unix: u64,
    on_unavailable: OnUnavailable,
    /// The claim's key (for [`Router::claim_refused`]).
    key: String,
}

/// The worker's pending claims.
#[derive(Debug, Default)]
pub(super) struct Claims {
    next_id: u64,
    pending: HashMap<u64, Pending>,
    deadlines: VecDeque<(Instant, u64)>,
}

impl Claims {
    /// Whether a replace park under `key` waits here for a claim's verdict.
    pub(super) fn replace_park_pending(&self, key: &crate::target::RendezvousKey) -> bool {
        self.pending.values().any(
            |p| matches!(&p.route, Route::Park { key: k, mode: ParkMode::Replace, .. } if k == key),
        )
    }
}

impl<R: Router> Worker<R> {
    /// Holds `sock` until `claim` is decided, then carries out `route` (or refuses).
    pub(super) fn hold_for_claim(
        &mut self,
        sock: SockId,
        head: &RequestHead,
        early: Vec<u8>,
        route: Route,
        claim: Claim,
        now_unix: u64,
    ) {
        // Nothing is armed while it waits (disarming bumps the generation: read it after).
        self.disarm(sock);
        let pending = Pending {
            sock,
            generation: self.sock_gens.get(sock),
            head: head.clone(),
            early,
            route,
            now_unix,
            on_unavailable: claim.on_unavailable,
            key: claim.key,
        };
        if self.claims.pending.len() >= MAX_PENDING_CLAIMS {
            self.counters.add(Counter::ClaimsUnanswered, 1);
            self.settle(pending, Verdict::Unavailable);
            return;
        }
        self.claims.next_id = self.claims.next_id.wrapping_add(1);
        let id = self.claims.next_id;
        let request = ClaimRequest {
            worker: u16::try_from(self.index).unwrap_or(u16::MAX),
            id,
            ttl_secs: claim.ttl_secs.max(1),
            key: pending.key.clone(),
        };
        if msg::send_claim(self.http_out.as_fd(), &request).is_err() {
            // The supervisor's inbox is full (or gone): never wait on it.
            self.counters.add(Counter::ClaimsUnanswered, 1);
            self.settle(pending, Verdict::Unavailable);
            return;
        }
        self.claims.pending.insert(id, pending);
        self.claims
            .deadlines
            .push_back((self.now + CLAIM_DEADLINE, id));
    }

    /// The supervisor's verdict on claim `id` (unknown ids were settled already).
    pub(super) fn on_verdict(&mut self, id: u64, verdict: Verdict) {
        if let Some(p) = self.claims.pending.remove(&id) {
            self.settle(p, verdict);
        }
    }

    /// Settles claims past their deadline as unavailable.
    pub(super) fn expire_claims(&mut self) {
        while let Some(&(deadline, id)) = self.claims.deadlines.front() {
            if deadline > self.now {
                break;
            }
            self.claims.deadlines.pop_front();
            if let Some(p) = self.claims.pending.remove(&id) {
                self.counters.add(Counter::ClaimsUnanswered, 1);
                self.settle(p, Verdict::Unavailable);
            }
        }
    }

    fn settle(&mut self, p: Pending, verdict: Verdict) {
        // The connection may have gone meanwhile (head deadline, shutdown).
        if !self.sock_gens.is_current(p.sock, p.generation)
            || !matches!(
                self.socks.get(p.sock).map(|s| &s.state),
                Some(SockState::Head { .. })
            )
        {
            return;
        }
        if self.shutdown_deadline.is_some() {
            // Draining: no new parks or reaches, whatever the directory said.
            self.refuse(p.sock, Rejection::ShuttingDown);
            return;
        }
        match (verdict, p.on_unavailable) {
            (Verdict::Won, _) => {
                // A replace park whose own claim (its proof's nonce) is won is announced
                // to the other nodes next, as a replace park without a proof is: one
                // more directory command, then the park.
                if let Route::Park {
                    key,
                    mode: ParkMode::Replace,
                    ..
                } = &p.route
                    && !p.key.starts_with(crate::claim::REPLACE_PREFIX)
                {
                    let claim = crate::claim::replace_claim(key);
                    self.hold_for_claim(p.sock, &p.head, p.early, p.route, claim, p.now_unix);
                    return;
                }
                self.carry_out(p.sock, p.route, p.early);
            }
            (Verdict::Unavailable, OnUnavailable::Proceed) => {
                self.carry_out(p.sock, p.route, p.early);
            }
            (Verdict::Unavailable, OnUnavailable::Refuse(r)) => {
                self.router.claim_refused(&p.key, p.now_unix);
                self.refuse(p.sock, r);
            }
            (Verdict::Lost, _) => {
                // The family's local state now holds what was claimed (the nonce, the
                // consumed tag): routing the head again gives its own exact refusal.
                let transport = self.socks[p.sock].transport;
                let again = self.router.route(&p.head, &p.early, p.now_unix, transport);
                let _ = self.router.claim(p.now_unix);
                match again {
                    Route::Reject(_) | Route::RejectWith(..) => {
                        self.carry_out(p.sock, again, Vec::new());
                    }
                    _ => self.refuse(p.sock, Rejection::ReplayedNonce),
                }
            }
        }
    }
}
