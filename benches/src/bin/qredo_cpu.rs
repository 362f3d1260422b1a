//! qredo_cpu: on-CPU time per operation of Qredo's `/services` hot paths (decode and
//! encode of a `Rendezvous.create` request; a whole `respond`: decode the request, the
//! table, encode the result), for figures on a shared, loaded machine.
//!
//! criterion (`benches/qredo.rs`) measures wall-clock time, which time-slicing inflates
//! when other processes want the same cores; this counts only the time the measuring
//! thread itself ran (`/proc/thread-self/schedstat`, nanoseconds on a CPU), over
//! `ITERATIONS` operations, `REPETITIONS` times, and prints the median and the spread
//! (min..max) per operation. Cache and frequency effects of a loaded machine remain.
//!
//! Run: `cargo run --release -p tryst-benches --bin qredo_cpu`.

#![forbid(unsafe_code)]

use std::hint::black_box;
use tryst_benches::qredo::{T0, creation_info, request, response, table};
use tryst_relay::qredo::lf::{self, Limits, Outcome, Response};

const ITERATIONS: u64 = 200_000;
const REPETITIONS: usize = 7;

/// Nanoseconds this thread has run on a CPU.
fn on_cpu_ns() -> u64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .expect("/proc/thread-self/schedstat")
}

fn measure(name: &str, mut op: impl FnMut()) {
    for _ in 0..ITERATIONS / 10 {
        op();
    }
    let mut per_op: Vec<f64> = (0..REPETITIONS)
        .map(|_| {
            let start = on_cpu_ns();
            for _ in 0..ITERATIONS {
                op();
            }
            (on_cpu_ns() - start) as f64 / ITERATIONS as f64
        })
        .collect();
    per_op.sort_by(f64::total_cmp);
    let median = per_op[REPETITIONS / 2];
    println!(
        "{name:<40} {:>9.0} ns/op on CPU (min {:.0}, max {:.0}; {REPETITIONS} x {ITERATIONS}) = {:.0} per CPU-second",
        median,
        per_op[0],
        per_op[REPETITIONS - 1],
        1e9 / median
    );
}

fn main() {
    let limits = Limits::default();
    let create = request("create", vec![creation_info()]);
    let bytes = create.encode();
    assert_eq!(
        lf::decode_request(&bytes, &limits).ok(),
        Some(create.clone())
    );
    measure("qredo_lf/decode_create_request", || {
        black_box(lf::decode_request(black_box(&bytes), &limits).ok());
    });
    measure("qredo_lf/encode_create_request", || {
        black_box(black_box(&create).encode());
    });
    let body = request("respond", vec![response()]).encode();
    // A fresh table every 1,000 responds keeps the one rendezvous' response list (and
    // memory) small; its creation is counted, about 1/1000 of a create per respond.
    let mut t = table();
    let mut n = 0u32;
    measure("qredo_respond/rpc_decode_respond_encode", || {
        n += 1;
        if n.is_multiple_of(1000) {
            t = table();
        }
        let req = lf::decode_request(black_box(&body), &limits).expect("decodes");
        let (value, _) = t.respond(&req.args[0], T0 + 1).expect("answered");
        black_box(
            Response {
                header: req.header,
                outcome: Outcome::Success(vec![value]),
            }
            .encode(),
        );
    });
}
