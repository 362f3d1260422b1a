//! The shipped alert rules (deploy/prometheus/tryst.rules.yml) against a live relay:
//! every metric and every `reason` label value they name is served on `/metrics`, and
//! Prometheus's own `promtool` accepts the rules, passes their unit tests
//! (tryst.rules.test.yml) and finds no lint problem in a real scrape. `promtool` comes
//! from Debian's `prometheus` package, installed by scripts/test-deps.sh.

use crate::relay::Relay;
use std::collections::BTreeSet;
use std::io::Write as _;
use std::path::PathBuf;
use std::process::{Command, Stdio};

fn rules_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy/prometheus")
}

/// The rules file without its comment lines.
fn rules() -> String {
    std::fs::read_to_string(rules_dir().join("tryst.rules.yml"))
        .unwrap()
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Every `tryst_...` identifier in `text`.
fn metric_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = text;
    while let Some(at) = rest.find("tryst_") {
        let before = rest[..at].chars().next_back();
        let tail = &rest[at..];
        let len = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        if !before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_') {
            names.insert(tail[..len].to_owned());
        }
        rest = &tail[len..];
    }
    names
}

/// Every value matched by a `reason="..."` or `reason=~"a|b"` selector in `text`.
fn reason_values(text: &str) -> BTreeSet<String> {
    let mut values = BTreeSet::new();
    for (i, _) in text.match_indices("reason=") {
        let tail = text[i + "reason=".len()..].trim_start_matches('~');
        let Some(quoted) = tail.strip_prefix('"') else {
            continue;
        };
        let value = &quoted[..quoted.find('"').unwrap()];
        values.extend(value.split('|').map(str::to_owned));
    }
    values
}

/// The body of a live relay's `/metrics` with every optional family on (dead-drop and
/// Hive are on by default; STUN needs `--stun-listen`; the cluster a Redis and a mesh
/// key, given by a private redis-server).
fn live_scrape() -> String {
    let redis = crate::cluster::TestRedis::start();
    let keys = tempfile::tempdir().unwrap();
    let psk = crate::cluster::write_psk(keys.path(), "alerts test mesh key 0123456789");
    let mut args: Vec<String> = ["--workers", "1", "--stun-listen", "127.0.0.1:0"]
        .map(String::from)
        .into();
    args.extend(crate::cluster::node_args(
        &redis,
        &psk,
        "alerts",
        "127.0.0.1",
    ));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let relay = Relay::start(&args);
    let response = relay.metrics();
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    body.to_owned()
}

fn promtool() -> Command {
    if Command::new("promtool").arg("--version").output().is_err() {
        panic!("promtool is not installed: run scripts/test-deps.sh (Debian package `prometheus`)");
    }
    Command::new("promtool")
}

#[test]
fn every_metric_and_reason_in_the_alert_rules_is_served_by_a_live_relay() {
    let rules = rules();
    let names = metric_names(&rules);
    assert!(names.len() >= 10, "too few metrics found: {names:?}");
    let scrape = live_scrape();
    let served: BTreeSet<String> = scrape
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split(' ').next())
        .map(str::to_owned)
        .collect();
    let missing: Vec<&String> = names.difference(&served).collect();
    assert!(
        missing.is_empty(),
        "alert rules name metrics a relay does not serve: {missing:?}\nserved: {served:?}"
    );

    let reasons = reason_values(&rules);
    assert!(reasons.contains("replay_cache_full"), "{reasons:?}");
    for reason in &reasons {
        assert!(
            scrape.contains(&format!("reason=\"{reason}\"")),
            "alert rules name reason {reason:?}, which no series on /metrics carries"
        );
    }
}

#[test]
fn the_scanners_of_this_test_find_what_they_should() {
    let names = metric_names("rate(tryst_a_total[5m]) / xtryst_b + tryst_c{reason=\"x\"}");
    assert_eq!(
        names.into_iter().collect::<Vec<_>>(),
        ["tryst_a_total", "tryst_c"]
    );
    let reasons = reason_values("a{reason=\"x\"} b{reason=~\"y|z\"} c{reason!=\"w\"}");
    assert_eq!(reasons.into_iter().collect::<Vec<_>>(), ["x", "y", "z"]);
}

#[test]
fn promtool_accepts_the_rules_and_passes_their_unit_tests() {
    let out = promtool()
        .args(["check", "rules", "tryst.rules.yml"])
        .current_dir(rules_dir())
        .output()
        .unwrap();
    assert!(out.status.success(), "promtool check rules: {out:?}");
    let out = promtool()
        .args(["test", "rules", "tryst.rules.test.yml"])
        .current_dir(rules_dir())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "promtool test rules:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn promtool_finds_no_lint_problem_in_a_live_scrape() {
    let scrape = live_scrape();
    let mut child = promtool()
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(scrape.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && report.trim().is_empty(),
        "promtool check metrics: {:?}\n{report}\nscrape:\n{scrape}",
        out.status
    );
}

/// `tryst_worker_socket_budget` (the denominator of TrystSocketsNearBudget) is the
/// "sockets each" that `--check-config` prints for the same settings.
#[test]
fn socket_budget_gauge_matches_check_config() {
    let relay = Relay::start(&["--workers", "1", "--max-pipes-per-worker", "100"]);
    let served = crate::tunnel::series_value(&relay.metrics(), "tryst_worker_socket_budget");
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_tryst"))
        .args(["serve", "--listen", "127.0.0.1:0", "--workers", "1"])
        .args([
            "--max-pipes-per-worker",
            "100",
            "--check-config",
            "--data-dir",
        ])
        .arg(dir.path())
        .env_remove("TRYST_CONFIG")
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8(out.stdout).unwrap();
    let each: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("workers "))
        .and_then(|l| l.split('(').nth(1))
        .and_then(|l| l.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no 'sockets each' in {text}"));
    assert_eq!(served, each, "{text}");
}
