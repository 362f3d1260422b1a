//! The relay workers' router: the engine's [`CompatRouter`] (native protocol and
//! node-rendezvous) plus the families whose `CONNECT` targets carry a scheme of their own
//! (`tag:` for Qredo-style tags, `hive:` for Hive devices), each a [`SchemeFamily`].
//!
//! A `CONNECT` whose target starts with a registered scheme (ASCII case-insensitive) is
//! decided by that family on either transport; everything else goes to the compat router
//! unchanged. Each family derives its keys in its own [`tryst_engine::target::KeySpace`],
//! so no family can reach another's parked connections. Pure: no I/O, no clock reads.
//!
//! Family control messages ([`Router::control`]) and reports ([`Router::reports`])
//! travel with the family's scheme in front ([`family_message`]); the router strips it
//! and passes the rest to that family.

use tryst_engine::head::{Method, RequestHead};
use tryst_engine::node::CompatRouter;
use tryst_engine::node::router::REFUSAL_KEY;
use tryst_engine::reject::Rejection;
use tryst_engine::route::{Classified, ReloadError, Route, Router, SecretSource, Transport};
use tryst_engine::target::RendezvousKey;

/// A `CONNECT` family selected by its target scheme: a [`Router`] for the requests
/// whose target starts with [`SchemeFamily::scheme`]. Its `classify` runs on the
/// accepting worker, its `route` on the owner worker, which holds the family's state for
/// every key it owns; `reload` and `evictions` are forwarded by [`RelayRouter`].
pub trait SchemeFamily: Router + Send {
    /// The scheme including its colon, lower case (e.g. `"tag:"`).
    fn scheme(&self) -> &'static str;
}

/// The compat router plus scheme families.
pub struct RelayRouter<S> {
    compat: CompatRouter<S>,
    families: Vec<Box<dyn SchemeFamily>>,
}

impl<S> std::fmt::Debug for RelayRouter<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let schemes: Vec<&str> = self.families.iter().map(|f| f.scheme()).collect();
        f.debug_struct("RelayRouter")
            .field("schemes", &schemes)
            .finish_non_exhaustive()
    }
}

impl<S: SecretSource> RelayRouter<S> {
    /// A router over `compat` with no scheme families yet.
    pub fn new(compat: CompatRouter<S>) -> Self {
        Self {
            compat,
            families: Vec::new(),
        }
    }

    /// Adds a scheme family; later families never shadow earlier ones.
    pub fn with_family(mut self, family: Box<dyn SchemeFamily>) -> Self {
        self.families.push(family);
        self
    }

    fn family_index(&self, head: &RequestHead) -> Option<usize> {
        if head.method != Method::Connect {
            return None;
        }
        let target = head.target.as_bytes();
        self.families.iter().position(|family| {
            let scheme = family.scheme().as_bytes();
            target.len() >= scheme.len() && target[..scheme.len()].eq_ignore_ascii_case(scheme)
        })
    }
}

impl<S: SecretSource> RelayRouter<S> {
    /// True for a request the compat router would hand to the HTTP service whose
    /// framing headers cannot frame a body ([`crate::framing`]): it is refused on the
    /// worker instead, counted and answered in its family's shape.
    fn bad_framing(&self, head: &RequestHead, transport: Transport) -> bool {
        head.method != Method::Connect
            && crate::framing::check(head).is_err()
            && self.compat.classify(head, transport) == Ok(Classified::Http)
    }
}

impl<S: SecretSource> Router for RelayRouter<S> {
    fn classify(&self, head: &RequestHead, transport: Transport) -> Result<Classified, Rejection> {
        if self.bad_framing(head, transport) {
            return Ok(Classified::Rendezvous(REFUSAL_KEY));
        }
        match self.family_index(head) {
            Some(i) => self.families[i].classify(head, transport),
            None => self.compat.classify(head, transport),
        }
    }

    fn route(
        &mut self,
        head: &RequestHead,
        early: &[u8],
        now_unix: u64,
        transport: Transport,
    ) -> Route {
        if self.bad_framing(head, transport) {
            return Route::RejectWith(
                Rejection::MalformedHead,
                crate::framing::refusal(&head.target, transport),
            );
        }
        match self.family_index(head) {
            Some(i) => self.families[i].route(head, early, now_unix, transport),
            None => self.compat.route(head, early, now_unix, transport),
        }
    }

    fn reload(&mut self) -> Result<(), ReloadError> {
        let mut errors = Vec::new();
        if let Err(e) = self.compat.reload() {
            errors.push(e);
        }
        for family in &mut self.families {
            if let Err(e) = family.reload() {
                errors.push(e.in_family(family.scheme()));
            }
        }
        ReloadError::collect(errors)
    }

    fn evictions(&mut self, now_unix: u64, out: &mut Vec<RendezvousKey>) {
        self.compat.evictions(now_unix, out);
        for family in &mut self.families {
            family.evictions(now_unix, out);
        }
    }

    /// The claim of whichever router decided last (each one's claim is taken here, so
    /// none outlives its decision).
    fn claim(&mut self, now_unix: u64) -> Option<tryst_engine::claim::Claim> {
        let mut out = self.compat.claim(now_unix);
        for family in &mut self.families {
            if let Some(c) = family.claim(now_unix) {
                out.get_or_insert(c);
            }
        }
        out
    }

    fn replaced_elsewhere(&mut self, key: &RendezvousKey, now_unix: u64) {
        self.compat.replaced_elsewhere(key, now_unix);
        for family in &mut self.families {
            family.replaced_elsewhere(key, now_unix);
        }
    }

    fn claim_refused(&mut self, key: &str, now_unix: u64) {
        self.compat.claim_refused(key, now_unix);
        for family in &mut self.families {
            family.claim_refused(key, now_unix);
        }
    }

    /// A family control message starts with its family's scheme (e.g. `tag:`), which is
    /// stripped before the family sees it; one naming no family is ignored.
    fn control(&mut self, message: &[u8], now_unix: u64, evict: &mut Vec<RendezvousKey>) {
        match self
            .families
            .iter_mut()
            .find(|f| message.starts_with(f.scheme().as_bytes()))
        {
            Some(family) => {
                let scheme = family.scheme().len();
                family.control(&message[scheme..], now_unix, evict);
            }
            None => tracing::warn!("a family control message names no family; ignored"),
        }
    }

    /// Each family's reports, prefixed with its scheme (see [`family_message`]).
    fn reports(&mut self, out: &mut Vec<Vec<u8>>) {
        let mut reports = Vec::new();
        for family in &mut self.families {
            family.reports(&mut reports);
            let scheme = family.scheme().as_bytes();
            out.extend(reports.drain(..).map(|r| [scheme, r.as_slice()].concat()));
        }
    }
}

/// A family control message or report as it travels: the family's scheme, then the
/// family's own bytes. The inverse is [`split_family_message`].
pub fn family_message(scheme: &str, body: &[u8]) -> Vec<u8> {
    [scheme.as_bytes(), body].concat()
}

/// The body of a family message whose scheme is `scheme`, or `None`.
pub fn split_family_message<'m>(scheme: &str, message: &'m [u8]) -> Option<&'m [u8]> {
    message.strip_prefix(scheme.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tryst_engine::auth::MacKey;
    use tryst_engine::head::{HeadLimits, HeadStatus, parse_head};
    use tryst_engine::node::CompatRouterConfig;
    use tryst_engine::target::{KeySpace, RendezvousId};

    #[derive(Debug)]
    struct NoSecrets;

    impl SecretSource for NoSecrets {
        fn mac_key(&self, _: &RendezvousId) -> Option<&MacKey> {
            None
        }
        fn reload(&mut self) -> Result<(), ReloadError> {
            Ok(())
        }
    }

    /// A family that parks everything under one derived key (a test double).
    struct Echo;

    impl SchemeFamily for Echo {
        fn scheme(&self) -> &'static str {
            "echo:"
        }
    }

    impl Router for Echo {
        fn classify(&self, head: &RequestHead, _: Transport) -> Result<Classified, Rejection> {
            Ok(Classified::Rendezvous(RendezvousKey::derived(
                KeySpace::Tag,
                head.target.as_bytes(),
            )))
        }
        fn route(&mut self, head: &RequestHead, _: &[u8], _: u64, _: Transport) -> Route {
            Route::park(RendezvousKey::derived(
                KeySpace::Tag,
                head.target.as_bytes(),
            ))
        }

        fn reload(&mut self) -> Result<(), ReloadError> {
            Ok(())
        }
    }

    /// A family that retires one fixed key once the clock reaches 100.
    struct Retiring;

    impl SchemeFamily for Retiring {
        fn scheme(&self) -> &'static str {
            "retire:"
        }
    }

    impl Router for Retiring {
        fn classify(&self, _: &RequestHead, _: Transport) -> Result<Classified, Rejection> {
            Err(Rejection::UnknownTarget)
        }
        fn route(&mut self, _: &RequestHead, _: &[u8], _: u64, _: Transport) -> Route {
            Route::Reject(Rejection::UnknownTarget)
        }
        fn evictions(&mut self, now_unix: u64, out: &mut Vec<RendezvousKey>) {
            if now_unix >= 100 {
                out.push(RendezvousKey::derived(KeySpace::Tag, b"retired"));
            }
        }

        fn reload(&mut self) -> Result<(), ReloadError> {
            Ok(())
        }
    }

    #[test]
    fn evictions_are_collected_from_every_family() {
        let mut r = router().with_family(Box::new(Retiring));
        let mut out = Vec::new();
        r.evictions(99, &mut out);
        assert!(out.is_empty());
        r.evictions(100, &mut out);
        assert_eq!(out, vec![RendezvousKey::derived(KeySpace::Tag, b"retired")]);
    }

    fn head(text: &str) -> RequestHead {
        match parse_head(text.as_bytes(), &HeadLimits::default()) {
            Ok(HeadStatus::Complete(head)) => head,
            other => panic!("not a complete head: {other:?}"),
        }
    }

    fn router() -> RelayRouter<NoSecrets> {
        RelayRouter::new(CompatRouter::new(NoSecrets, CompatRouterConfig::default()))
            .with_family(Box::new(Echo))
    }

    #[test]
    fn scheme_dispatch_is_case_insensitive_and_connect_only() {
        let mut r = router();
        let h = head("CONNECT ECHO:abc HTTP/1.1\r\n\r\n");
        let want = RendezvousKey::derived(KeySpace::Tag, b"ECHO:abc");
        assert_eq!(
            r.classify(&h, Transport::Plain),
            Ok(Classified::Rendezvous(want))
        );
        assert_eq!(r.route(&h, b"", 0, Transport::Tls), Route::park(want));
        // A GET with the same target is not the family's.
        let get = head("GET echo:abc HTTP/1.1\r\n\r\n");
        assert_ne!(
            r.classify(&get, Transport::Plain),
            Ok(Classified::Rendezvous(want))
        );
    }

    #[test]
    fn other_targets_keep_the_compat_behaviour() {
        let mut r = router();
        let mut compat = CompatRouter::new(NoSecrets, CompatRouterConfig::default());
        for text in [
            "CONNECT uuid:6ba7b810-9dad-11d1-80b4-00c04fd430c8 HTTP/1.1\r\n\r\n",
            "CONNECT echo HTTP/1.1\r\n\r\n",
            "GET /healthz HTTP/1.1\r\n\r\n",
        ] {
            let h = head(text);
            for transport in [Transport::Plain, Transport::Tls] {
                assert_eq!(
                    r.classify(&h, transport),
                    compat.classify(&h, transport),
                    "{text}"
                );
                assert_eq!(
                    r.route(&h, b"", 1_400_000_000, transport),
                    compat.route(&h, b"", 1_400_000_000, transport),
                    "{text}"
                );
            }
        }
    }
}
