//! `pico_channel`: Pico channels. Three harnesses (the channel-table model, path
//! routing, whole requests), each taking arbitrary bytes and panicking only on a broken
//! invariant; [`run`] runs all three on one input, as the fuzz target does.

use crate::pico::channel::{Limits, Notice, Read, Refusal, Table, Timer, Write};
use crate::pico::{MAX_NAME, Pico, PicoResponse, Route, owns, route};
use http_body_util::Full;
use hyper::body::Bytes;
use hyper::{Method, Request, StatusCode};
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

const NAMES: [&[u8]; 4] = [b"a", b"b", b"c", b"d"];

#[derive(Debug, Clone, PartialEq)]
enum ModelSlot {
    Standby,
    Reading(u32, Instant),
    Writing(u32, Instant, Vec<u8>),
}

#[derive(Debug)]
struct ModelChannel {
    expires: Instant,
    slot: ModelSlot,
}

/// Drives the sans-IO [`Table`] with a sequence of operations decoded from `data` and
/// compares every decision with a small reference model (single slot per channel, caps,
/// waits, expiry after creation).
pub fn channel_ops(data: &[u8]) {
    let limits = Limits {
        wait: Duration::from_millis(500),
        channel_ttl: Duration::from_millis(2000),
        max_channels: 3,
        max_waiting: 2,
    };
    let mut table: Table<u32> = Table::new(limits);
    let mut model: HashMap<&[u8], ModelChannel> = HashMap::new();
    // waiter -> (name, id) for parties still waiting
    let mut waiting: HashMap<u32, (&[u8], u64)> = HashMap::new();
    let start = Instant::now();
    let mut now = start;
    let mut next_w = 0u32;
    let mut out = Vec::new();

    // Applies side-effect notices: each must be for a waiting party, Closed only.
    fn settle(
        out: &mut Vec<(u32, Notice)>,
        waiting: &mut HashMap<u32, (&[u8], u64)>,
        model: &mut HashMap<&[u8], ModelChannel>,
    ) {
        for (w, n) in out.drain(..) {
            assert_eq!(n, Notice::Closed);
            let (name, _) = waiting.remove(&w).expect("notice for a waiting party");
            assert!(!model.contains_key(name), "closed channel removed");
        }
    }

    for op in data.chunks_exact(3) {
        let name = NAMES[usize::from(op[1] % 4)];
        // Model expiry first (the table purges on every operation).
        let expired: Vec<&[u8]> = model
            .iter()
            .filter(|(_, c)| now >= c.expires)
            .map(|(n, _)| *n)
            .collect();
        match op[0] % 5 {
            0 | 1 => {
                let is_read = op[0] % 5 == 0;
                for n in &expired {
                    model.remove(n);
                }
                next_w += 1;
                let w = next_w;
                let msg = vec![op[2]; usize::from(op[2] % 8)];
                let exists = model.contains_key(name);
                let slot = model.get(name).map(|c| c.slot.clone());
                let expect_busy = matches!(
                    (&slot, is_read),
                    (Some(ModelSlot::Reading(..)), true) | (Some(ModelSlot::Writing(..)), false)
                );
                let parks = matches!(slot, None | Some(ModelSlot::Standby));
                let waiting_now = waiting.len()
                    - waiting
                        .values()
                        .filter(|(n, _)| expired.contains(n))
                        .count();
                let expect_full_ch = !exists && model.len() >= limits.max_channels;
                let expect_full_w = parks && waiting_now >= limits.max_waiting;
                if is_read {
                    let r = table.read(now, name, w, &mut out);
                    settle(&mut out, &mut waiting, &mut model);
                    match r {
                        Err(Refusal::Busy) => assert!(expect_busy),
                        Err(Refusal::TooManyChannels) => assert!(expect_full_ch),
                        Err(Refusal::TooManyWaiting) => {
                            assert!(expect_full_w && !expect_full_ch)
                        }
                        Ok(Read::Parked { id, deadline }) => {
                            assert!(parks && !expect_full_ch && !expect_full_w);
                            assert!(deadline > now);
                            let ch = model.entry(name).or_insert(ModelChannel {
                                expires: now + limits.channel_ttl,
                                slot: ModelSlot::Standby,
                            });
                            assert_eq!(deadline, (now + limits.wait).min(ch.expires));
                            ch.slot = ModelSlot::Reading(w, deadline);
                            waiting.insert(w, (name, id));
                        }
                        Ok(Read::Delivered { data, writer }) => {
                            let Some(ModelSlot::Writing(mw, _, mdata)) = slot else {
                                panic!("delivered without a writer")
                            };
                            assert_eq!(writer, mw);
                            assert_eq!(&data[..], &mdata[..]);
                            waiting.remove(&writer).expect("writer was waiting");
                            if let Some(c) = model.get_mut(name) {
                                c.slot = ModelSlot::Standby;
                            }
                        }
                    }
                } else {
                    let r = table.write(now, name, Bytes::from(msg.clone()), w, &mut out);
                    settle(&mut out, &mut waiting, &mut model);
                    match r {
                        Err(Refusal::Busy) => assert!(expect_busy),
                        Err(Refusal::TooManyChannels) => assert!(expect_full_ch),
                        Err(Refusal::TooManyWaiting) => {
                            assert!(expect_full_w && !expect_full_ch)
                        }
                        Ok(Write::Parked { id, deadline }) => {
                            assert!(parks && !expect_full_ch && !expect_full_w);
                            let ch = model.entry(name).or_insert(ModelChannel {
                                expires: now + limits.channel_ttl,
                                slot: ModelSlot::Standby,
                            });
                            ch.slot = ModelSlot::Writing(w, deadline, msg);
                            waiting.insert(w, (name, id));
                        }
                        Ok(Write::Deliver { reader }) => {
                            let Some(ModelSlot::Reading(mr, _)) = slot else {
                                panic!("deliver without a reader")
                            };
                            assert_eq!(reader, mr);
                            waiting.remove(&reader).expect("reader was waiting");
                            if let Some(c) = model.get_mut(name) {
                                c.slot = ModelSlot::Standby;
                            }
                        }
                    }
                }
            }
            2 => {
                for n in &expired {
                    model.remove(n);
                }
                table.delete(now, name, &mut out);
                model.remove(name);
                settle(&mut out, &mut waiting, &mut model);
            }
            3 => {
                now += Duration::from_millis(u64::from(op[2]) * 10);
                // The adapter fires the timer of every party whose deadline passed.
                let mut due: Vec<(u32, &[u8], u64)> =
                    waiting.iter().map(|(w, (n, id))| (*w, *n, *id)).collect();
                due.sort_unstable();
                for (w, n, id) in due {
                    if !waiting.contains_key(&w) {
                        continue;
                    }
                    let deadline = match model.get(n).map(|c| &c.slot) {
                        Some(ModelSlot::Reading(_, d) | ModelSlot::Writing(_, d, _)) => *d,
                        _ => panic!("waiting party without a waiting slot"),
                    };
                    let expires = model.get(n).map(|c| c.expires).unwrap_or(now);
                    let fired = table.timer(now, n, id, &mut out);
                    // The party's own answer comes first; purged others follow.
                    match fired {
                        Timer::Fired(Notice::Closed) => {
                            assert!(now >= expires);
                            waiting.remove(&w);
                            model.remove(n);
                        }
                        Timer::Fired(Notice::TimedOut) => {
                            assert!(now >= deadline && now < expires);
                            waiting.remove(&w);
                            if let Some(c) = model.get_mut(n) {
                                c.slot = ModelSlot::Standby;
                            }
                        }
                        Timer::NotYet(d) => {
                            assert!(now < deadline);
                            assert_eq!(d, deadline);
                        }
                        Timer::Fired(other) => panic!("timer fired {other:?}"),
                        Timer::Gone => {
                            // Only possible if an expiry purge answered it in `out`.
                            assert!(out.iter().any(|(x, _)| *x == w));
                        }
                    }
                    let expired_now: Vec<&[u8]> = model
                        .iter()
                        .filter(|(_, c)| now >= c.expires)
                        .map(|(n, _)| *n)
                        .collect();
                    if !out.is_empty() {
                        for x in expired_now {
                            model.remove(x);
                        }
                    }
                    settle(&mut out, &mut waiting, &mut model);
                }
            }
            _ => {
                let mut ws: Vec<u32> = waiting.keys().copied().collect();
                ws.sort_unstable();
                if !ws.is_empty() {
                    let w = ws[usize::from(op[2]) % ws.len()];
                    let (n, id) = waiting[&w];
                    assert_eq!(table.cancel(n, id), Some(w));
                    waiting.remove(&w);
                    if let Some(c) = model.get_mut(n) {
                        c.slot = ModelSlot::Standby;
                    }
                }
            }
        }
        table.assert_consistent();
        assert_eq!(table.waiting(), waiting.len());
    }
}

/// Routes an arbitrary method and path and checks the classification: only `/new` and
/// `/channel/...` are claimed, names are non-empty, bounded and survive a
/// percent-encoding round trip.
pub fn request_path(data: &[u8]) {
    let Some((&m, path)) = data.split_first() else {
        return;
    };
    let methods = [
        Method::GET,
        Method::POST,
        Method::DELETE,
        Method::OPTIONS,
        Method::HEAD,
        Method::PUT,
    ];
    let method = &methods[usize::from(m) % methods.len()];
    let path = String::from_utf8_lossy(path);
    let r = route(method, &path);
    assert_eq!(r == Route::NotMine, !owns(&path), "{path:?}");
    if let Route::Read(name) | Route::Write(name) | Route::Delete(name) = r {
        assert!(!name.is_empty() && name.len() <= MAX_NAME);
        let encoded: String = name.iter().map(|b| format!("%{b:02X}")).collect();
        let again = route(method, &format!("/channel/{encoded}"));
        assert!(matches!(
            again,
            Route::Read(ref n) | Route::Write(ref n) | Route::Delete(ref n) if *n == name
        ));
    }
}

type Pending = Pin<Box<dyn Future<Output = PicoResponse>>>;

/// Feeds requests decoded from `data` through [`Pico::serve`] (polled by hand, with a
/// no-op waker, inside a current-thread runtime for the timers): answers must carry the
/// exact status, Content-Type and CORS header; dropping pending requests (clients that
/// vanish) must leave no waiting party behind.
pub fn requests(data: &[u8]) {
    let Ok(rt) = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
    else {
        return;
    };
    let _guard = rt.enter();
    let pico = Pico::new(Limits {
        wait: Duration::from_secs(60),
        channel_ttl: Duration::from_secs(600),
        max_channels: 3,
        max_waiting: 3,
    });
    let mut cx = Context::from_waker(Waker::noop());
    let mut pending: Vec<Pending> = Vec::new();
    let methods = [
        Method::GET,
        Method::POST,
        Method::DELETE,
        Method::OPTIONS,
        Method::PUT,
    ];
    let check = |resp: PicoResponse| {
        let h = resp.headers();
        assert_eq!(
            h.get("access-control-allow-origin").map(|v| v.as_bytes()),
            Some(&b"*"[..])
        );
        let ct = h.get("content-type").map(|v| v.as_bytes().to_vec());
        match resp.status() {
            StatusCode::OK => assert!(matches!(
                ct.as_deref(),
                Some(b"application/json" | b"application/octet-stream" | b"text/html")
            )),
            StatusCode::NO_CONTENT => assert!(ct.is_none()),
            StatusCode::NOT_FOUND => assert_eq!(ct.as_deref(), Some(&b"text/html"[..])),
            StatusCode::METHOD_NOT_ALLOWED | StatusCode::SERVICE_UNAVAILABLE => {
                assert_eq!(ct.as_deref(), Some(&b"application/json"[..]))
            }
            s => panic!("unexpected status {s}"),
        }
    };
    for op in data.chunks_exact(3) {
        match op[0] % 4 {
            0 | 1 => {
                let method = methods[usize::from(op[1] % 5)].clone();
                let path = match op[1] / 5 % 4 {
                    0 => "/new".to_owned(),
                    1 => "/channel/".to_owned(),
                    n => format!("/channel/{}", char::from(b'a' + n)),
                };
                let body = Full::new(Bytes::from(vec![op[2]; usize::from(op[2] % 16)]));
                let Ok(req) = Request::builder().method(method).uri(path).body(body) else {
                    continue;
                };
                let p = pico.clone();
                let mut fut: Pending =
                    Box::pin(async move { p.serve(req, Duration::from_secs(1)).await });
                match fut.as_mut().poll(&mut cx) {
                    Poll::Ready(resp) => check(resp),
                    Poll::Pending => pending.push(fut),
                }
            }
            2 => {
                let mut still = Vec::new();
                for mut fut in pending.drain(..) {
                    match fut.as_mut().poll(&mut cx) {
                        Poll::Ready(resp) => check(resp),
                        Poll::Pending => still.push(fut),
                    }
                }
                pending = still;
            }
            _ => {
                if !pending.is_empty() {
                    let i = usize::from(op[2]) % pending.len();
                    drop(pending.remove(i));
                }
            }
        }
        assert!(pico.counts().1 <= pending.len());
    }
    drop(pending);
    assert_eq!(
        pico.counts().1,
        0,
        "vanished clients leave no waiting party"
    );
}

/// Runs one input through the channel-table model, path routing and whole requests.
pub fn run(data: &[u8]) {
    channel_ops(data);
    request_path(data);
    requests(data);
}
