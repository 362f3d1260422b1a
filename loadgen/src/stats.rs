//! Measurements of one run: HDR histograms (nanoseconds, 3 significant figures), counters
//! and errors by kind. Worker processes send theirs to the parent as JSON (histograms in
//! the HdrHistogram V2 encoding, base64), and the parent merges them.

use anyhow::{Context, Result};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use hdrhistogram::Histogram;
use hdrhistogram::serialization::{Deserializer, Serializer, V2Serializer};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::Duration;

/// Highest latency a histogram holds: one hour, in nanoseconds. Larger values are clamped.
const MAX_NS: u64 = 3_600_000_000_000;

/// A latency histogram in nanoseconds.
#[derive(Debug, Clone)]
pub(crate) struct Latency(Histogram<u64>);

impl Default for Latency {
    fn default() -> Self {
        Self::new()
    }
}

impl Latency {
    /// An empty histogram (1 ns .. 1 h, 3 significant figures).
    pub(crate) fn new() -> Self {
        // The bounds are constants that hdrhistogram accepts.
        Self(Histogram::new_with_bounds(1, MAX_NS, 3).expect("valid histogram bounds"))
    }

    /// Records one latency.
    pub(crate) fn record(&mut self, d: Duration) {
        let ns = u64::try_from(d.as_nanos())
            .unwrap_or(MAX_NS)
            .clamp(1, MAX_NS);
        // Cannot fail: the value is clamped into the histogram's range.
        let _ = self.0.record(ns);
    }

    /// Adds every sample of `other`.
    pub(crate) fn merge(&mut self, other: &Self) {
        // Same bounds on both sides, so addition cannot fail.
        let _ = self.0.add(&other.0);
    }

    /// Number of samples.
    pub(crate) fn count(&self) -> u64 {
        self.0.len()
    }

    /// The value at quantile `q` (0..=1), in nanoseconds; 0 when empty.
    pub(crate) fn quantile_ns(&self, q: f64) -> u64 {
        if self.0.is_empty() {
            0
        } else {
            self.0.value_at_quantile(q)
        }
    }

    /// Largest sample in nanoseconds; 0 when empty.
    pub(crate) fn max_ns(&self) -> u64 {
        if self.0.is_empty() { 0 } else { self.0.max() }
    }

    /// Encodes as base64 of the HdrHistogram V2 format.
    pub(crate) fn encode(&self) -> Result<String> {
        let mut out = Vec::new();
        V2Serializer::new()
            .serialize(&self.0, &mut out)
            .map_err(|e| anyhow::anyhow!("serialising histogram: {e:?}"))?;
        Ok(B64.encode(out))
    }

    /// Decodes what [`Latency::encode`] produced.
    pub(crate) fn decode(text: &str) -> Result<Self> {
        let bytes = B64.decode(text).context("histogram is not base64")?;
        let h: Histogram<u64> = Deserializer::new()
            .deserialize(&mut bytes.as_slice())
            .map_err(|e| anyhow::anyhow!("decoding histogram: {e:?}"))?;
        let mut out = Self::new();
        out.0
            .add(&h)
            .map_err(|e| anyhow::anyhow!("histogram out of range: {e:?}"))?;
        Ok(out)
    }

    /// The standard summary (p50/p90/p99/p99.9/max) in nanoseconds.
    pub(crate) fn summary(&self) -> Summary {
        Summary {
            count: self.count(),
            p50_ns: self.quantile_ns(0.50),
            p90_ns: self.quantile_ns(0.90),
            p99_ns: self.quantile_ns(0.99),
            p999_ns: self.quantile_ns(0.999),
            max_ns: self.max_ns(),
        }
    }

    /// Percentile curve points `(percentile, nanoseconds)` for plotting, on a log scale
    /// of "nines" from 0 % to 99.999 %.
    pub(crate) fn curve(&self) -> Vec<(f64, u64)> {
        if self.0.is_empty() {
            return Vec::new();
        }
        let mut points = Vec::new();
        let mut nines = 0.0f64;
        while nines <= 5.0 {
            let q = 1.0 - 10f64.powf(-nines);
            points.push((q * 100.0, self.quantile_ns(q)));
            nines += 0.125;
        }
        points
    }
}

/// Percentiles of one histogram, in nanoseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Summary {
    /// Number of samples.
    pub(crate) count: u64,
    /// Median.
    pub(crate) p50_ns: u64,
    /// 90th percentile.
    pub(crate) p90_ns: u64,
    /// 99th percentile.
    pub(crate) p99_ns: u64,
    /// 99.9th percentile.
    pub(crate) p999_ns: u64,
    /// Largest sample.
    pub(crate) max_ns: u64,
}

/// Errors by kind. Every failed operation lands here once; nothing is retried silently.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Errors(pub(crate) BTreeMap<String, u64>);

impl Errors {
    /// Counts one error of `kind`.
    pub(crate) fn add(&mut self, kind: impl Into<String>) {
        *self.0.entry(kind.into()).or_insert(0) += 1;
    }

    /// Adds all of `other`.
    pub(crate) fn merge(&mut self, other: &Self) {
        for (k, v) in &other.0 {
            *self.0.entry(k.clone()).or_insert(0) += v;
        }
    }

    /// Total number of errors.
    pub(crate) fn total(&self) -> u64 {
        self.0.values().sum()
    }
}

/// Everything one worker measured.
#[derive(Debug, Clone, Default)]
pub(crate) struct Stats {
    /// Park: connect start -> `200` received.
    pub(crate) park: Latency,
    /// Pairing: client's intended connect time -> first echoed byte.
    pub(crate) pairing: Latency,
    /// Echo round trips of `--size` bytes before the hold: write start -> last byte back.
    pub(crate) rtt: Latency,
    /// The last echo on every tunnel, after the hold (all tunnels at once by default).
    pub(crate) last_echo: Latency,
    /// Failures by kind.
    pub(crate) errors: Errors,
    /// Successful parks.
    pub(crate) parks: u64,
    /// Clients that got their first echoed byte.
    pub(crate) pairings: u64,
    /// Clients that finished every step.
    pub(crate) clients_ok: u64,
    /// Echoed bytes that were verified against the pattern.
    pub(crate) bytes_verified: u64,
    /// Milliseconds from the start signal to the last pairing in this worker.
    pub(crate) last_pairing_ms: u64,
}

/// The wire form of [`Stats`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct StatsWire {
    park: String,
    pairing: String,
    rtt: String,
    last_echo: String,
    errors: Errors,
    parks: u64,
    pairings: u64,
    clients_ok: u64,
    bytes_verified: u64,
    last_pairing_ms: u64,
}

impl Stats {
    /// Adds all of `other` (histograms, counters, errors).
    pub(crate) fn merge(&mut self, other: &Self) {
        self.park.merge(&other.park);
        self.pairing.merge(&other.pairing);
        self.rtt.merge(&other.rtt);
        self.last_echo.merge(&other.last_echo);
        self.errors.merge(&other.errors);
        self.parks += other.parks;
        self.pairings += other.pairings;
        self.clients_ok += other.clients_ok;
        self.bytes_verified += other.bytes_verified;
        self.last_pairing_ms = self.last_pairing_ms.max(other.last_pairing_ms);
    }

    /// Converts to the wire form.
    pub(crate) fn to_wire(&self) -> Result<StatsWire> {
        Ok(StatsWire {
            park: self.park.encode()?,
            pairing: self.pairing.encode()?,
            rtt: self.rtt.encode()?,
            last_echo: self.last_echo.encode()?,
            errors: self.errors.clone(),
            parks: self.parks,
            pairings: self.pairings,
            clients_ok: self.clients_ok,
            bytes_verified: self.bytes_verified,
            last_pairing_ms: self.last_pairing_ms,
        })
    }

    /// Converts from the wire form.
    pub(crate) fn from_wire(w: &StatsWire) -> Result<Self> {
        Ok(Self {
            park: Latency::decode(&w.park)?,
            pairing: Latency::decode(&w.pairing)?,
            rtt: Latency::decode(&w.rtt)?,
            last_echo: Latency::decode(&w.last_echo)?,
            errors: w.errors.clone(),
            parks: w.parks,
            pairings: w.pairings,
            clients_ok: w.clients_ok,
            bytes_verified: w.bytes_verified,
            last_pairing_ms: w.last_pairing_ms,
        })
    }
}

/// Formats nanoseconds for a table: µs below 10 ms, ms above.
pub(crate) fn fmt_ns(ns: u64) -> String {
    if ns < 10_000_000 {
        format!("{:.1}µs", ns as f64 / 1e3)
    } else if ns < 10_000_000_000 {
        format!("{:.2}ms", ns as f64 / 1e6)
    } else {
        format!("{:.2}s", ns as f64 / 1e9)
    }
}

/// Median of `values` (mean of the middle two for an even count); `None` when empty.
pub(crate) fn median(values: &[f64]) -> Option<f64> {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    Some(if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    })
}

/// (min, max) of `values`; `None` when empty.
pub(crate) fn spread(values: &[f64]) -> Option<(f64, f64)> {
    let v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    let min = v.iter().copied().reduce(f64::min)?;
    let max = v.iter().copied().reduce(f64::max)?;
    Some((min, max))
}

/// `value / baseline`, or `None` when the baseline is missing or zero.
pub(crate) fn ratio(value: Option<f64>, baseline: Option<f64>) -> Option<f64> {
    match (value, baseline) {
        (Some(v), Some(b)) if b != 0.0 && b.is_finite() => Some(v / b),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_adds_samples_and_keeps_quantiles() {
        let mut a = Latency::new();
        let mut b = Latency::new();
        for i in 1..=1000u64 {
            a.record(Duration::from_micros(i));
        }
        for i in 1001..=2000u64 {
            b.record(Duration::from_micros(i));
        }
        a.merge(&b);
        assert_eq!(a.count(), 2000);
        let p50 = a.quantile_ns(0.5);
        assert!((999_000..=1_001_000).contains(&p50), "p50 {p50}");
        let max = a.max_ns();
        assert!((1_999_000..=2_001_000).contains(&max), "max {max}");
    }

    #[test]
    fn encode_decode_round_trips() {
        let mut a = Latency::new();
        for i in [1u64, 17, 999, 123_456, 9_999_999] {
            a.record(Duration::from_nanos(i));
        }
        let b = Latency::decode(&a.encode().unwrap()).unwrap();
        assert_eq!(a.summary(), b.summary());
        assert_eq!(b.count(), 5);
    }

    #[test]
    fn decode_refuses_garbage() {
        assert!(Latency::decode("not base64!").is_err());
        assert!(Latency::decode("AAAA").is_err());
    }

    #[test]
    fn out_of_range_values_are_clamped_not_dropped() {
        let mut a = Latency::new();
        a.record(Duration::ZERO);
        a.record(Duration::from_secs(100_000));
        assert_eq!(a.count(), 2);
        assert!(a.max_ns() >= MAX_NS);
    }

    #[test]
    fn stats_merge_and_wire_round_trip() {
        let mut a = Stats::default();
        a.park.record(Duration::from_micros(5));
        a.errors.add("client/status 404");
        a.pairings = 3;
        a.last_pairing_ms = 10;
        let mut b = Stats::default();
        b.errors.add("client/status 404");
        b.errors.add("hidden/park: ConnectionRefused");
        b.pairings = 4;
        b.last_pairing_ms = 7;
        b.bytes_verified = 64;
        let wire = serde_json::to_string(&b.to_wire().unwrap()).unwrap();
        let b2 = Stats::from_wire(&serde_json::from_str(&wire).unwrap()).unwrap();
        a.merge(&b2);
        assert_eq!(a.pairings, 7);
        assert_eq!(a.bytes_verified, 64);
        assert_eq!(a.last_pairing_ms, 10);
        assert_eq!(a.errors.0["client/status 404"], 2);
        assert_eq!(a.errors.total(), 3);
        assert_eq!(a.park.count(), 1);
    }

    #[test]
    fn curve_is_monotonic() {
        let mut a = Latency::new();
        for i in 1..=10_000u64 {
            a.record(Duration::from_nanos(i * 37 % 9_973 + 1));
        }
        let c = a.curve();
        assert!(c.len() > 10);
        for w in c.windows(2) {
            assert!(w[0].0 < w[1].0 && w[0].1 <= w[1].1);
        }
    }

    #[test]
    fn fmt_ns_picks_units() {
        assert_eq!(fmt_ns(1_500), "1.5µs");
        assert_eq!(fmt_ns(25_000_000), "25.00ms");
        assert_eq!(fmt_ns(12_000_000_000), "12.00s");
    }

    #[test]
    fn median_odd_even_and_empty() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), Some(2.5));
        assert_eq!(median(&[]), None);
        assert_eq!(median(&[f64::NAN, 5.0]), Some(5.0));
    }

    #[test]
    fn spread_and_ratio() {
        assert_eq!(spread(&[3.0, 1.0, 2.0]), Some((1.0, 3.0)));
        assert_eq!(spread(&[]), None);
        assert_eq!(ratio(Some(15.0), Some(30.0)), Some(0.5));
        assert_eq!(ratio(Some(1.0), Some(0.0)), None);
        assert_eq!(ratio(None, Some(1.0)), None);
        assert_eq!(ratio(Some(1.0), None), None);
    }
}
