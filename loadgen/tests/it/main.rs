//! Integration tests: the `loadgen` binary against the real `tryst` binary.
//!
//! Both binaries must be built first (`cargo build --bins`, as scripts/test.sh does);
//! `tryst` is looked up next to `loadgen` in the same target directory. No test asserts
//! a speed: only correctness (zero errors, byte-exact echoes, honest error reports).

use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

fn loadgen() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_loadgen"))
}

/// The `tryst` binary next to `loadgen`, with a clear message when it is missing.
fn tryst() -> PathBuf {
    let p = loadgen().parent().expect("target dir").join("tryst");
    assert!(
        p.is_file(),
        "{} is missing: build the workspace binaries first (`cargo build --bins`, as scripts/test.sh does)",
        p.display()
    );
    p
}

fn run_json(args: &[&str], dir: &Path) -> (i32, serde_json::Value, String) {
    let json = dir.join("out.json");
    let out = Command::new(loadgen())
        .args(args)
        .arg("--json")
        .arg(&json)
        .env("TRYST_BIN", tryst())
        .output()
        .expect("running loadgen");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let code = out.status.code().unwrap_or(-1);
    let text = std::fs::read_to_string(&json).unwrap_or_else(|e| {
        panic!("no JSON report ({e}); exit {code}\nstdout:\n{stdout}\nstderr:\n{stderr}")
    });
    (
        code,
        serde_json::from_str(&text).expect("JSON report"),
        format!("{stdout}\n{stderr}"),
    )
}

/// A relay started by the test, for the `--relay ADDR` path. Killed on drop.
struct Relay {
    child: Child,
    addr: String,
    /// The TLS listener, when started with `--tls-listen`.
    tls_addr: Option<String>,
}

impl Drop for Relay {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_relay(data_dir: &Path) -> Relay {
    start_relay_with(data_dir, false)
}

/// Starts `tryst serve` on loopback; with `tls`, also `--tls-listen 127.0.0.1:0` (its
/// generated certificate is `<data_dir>/tls-cert.pem`).
fn start_relay_with(data_dir: &Path, tls: bool) -> Relay {
    start_relay_args(data_dir, tls, &[])
}

/// The client wait of the relays in runs where clients pick their hidden id at random
/// behind two parked connections per id: the busiest id draws several times its share
/// and serves those clients in rounds of pairing and re-parking (a fresh TLS handshake
/// when over TLS), which on a loaded 2-core machine outlasts the default 2 s client
/// wait (a CI run saw eight 404s that way). A 404 there says nothing about what those
/// tests check (bytes, TLS, TOTP); every client must still pair.
const CLIENT_WAIT_UNDER_LOAD: &str = "--client-wait=15s";

/// [`start_relay_with`] with more `tryst serve` flags.
fn start_relay_args(data_dir: &Path, tls: bool, extra: &[&str]) -> Relay {
    let mut cmd = Command::new(tryst());
    cmd.args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(data_dir)
        .args(extra);
    if tls {
        cmd.args(["--tls-listen", "127.0.0.1:0"]);
    }
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("starting tryst");
    let mut out = BufReader::new(child.stdout.take().expect("stdout"));
    let mut line = String::new();
    out.read_line(&mut line).expect("first line");
    let addr = line
        .trim()
        .strip_prefix("tryst: listening on ")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .to_string();
    let mut tls_addr = None;
    if tls {
        let mut second = String::new();
        out.read_line(&mut second).expect("second line");
        let mut third = String::new();
        out.read_line(&mut third).expect("third line");
        tls_addr = Some(
            third
                .trim()
                .strip_prefix("tryst: tls listening on ")
                .unwrap_or_else(|| panic!("unexpected third line {third:?}"))
                .to_string(),
        );
    }
    Relay {
        child,
        addr,
        tls_addr,
    }
}

/// A secrets file with `n` `[totp]` records (ASCII keys derived from `key_seed`,
/// base32-encoded) that queue parks.
fn write_totp_secrets(path: &Path, n: usize, key_seed: u8) {
    let mut text = String::from("[secrets]\n\n[totp]\n");
    for i in 0..n {
        let id = format!("{:08x}-0000-4000-8000-00000000007a", i + 1);
        let key: Vec<u8> = (0..20u8)
            .map(|j| {
                b'a' + (j
                    .wrapping_mul(7)
                    .wrapping_add(i as u8)
                    .wrapping_add(key_seed))
                    % 26
            })
            .collect();
        text.push_str(&format!(
            "\"{id}\" = {{ base32 = \"{}\", step = 30, parking = \"queue\" }}\n",
            tryst_engine::totp::encode_base32(&key)
        ));
    }
    std::fs::write(path, text).unwrap();
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

/// The common assertions of a clean run: exit 0, no errors, every byte verified.
fn assert_clean(code: i32, r: &serde_json::Value, out: &str, clients: u64, bytes: u64) {
    assert_eq!(code, 0, "{out}");
    assert_eq!(r["errors_total"], 0, "{out}");
    assert!(r["errors"].as_object().unwrap().is_empty(), "{out}");
    assert_eq!(r["clients_ok"], clients, "{out}");
    assert_eq!(r["pairings"], clients, "{out}");
    assert_eq!(r["bytes_verified"], bytes, "{out}");
    assert!(out.contains("errors         none"), "{out}");
}

fn write_secrets(path: &Path, n: usize, seed: u8) {
    let mut text = String::from("[secrets]\n");
    for i in 0..n {
        // Distinct, valid v4-shaped ids and 32-byte secrets (base64url of 32 bytes = 43 chars).
        let id = format!("{:08x}-0000-4000-8000-{:012x}", i + 1, usize::from(seed));
        let secret: String = std::iter::repeat_n(char::from(b'A' + (i % 26) as u8), 42)
            .chain(std::iter::once('A'))
            .collect();
        text.push_str(&format!("\"{id}\" = \"{secret}\"\n"));
    }
    std::fs::write(path, text).unwrap();
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

#[test]
fn small_capacity_run_against_a_local_relay_is_byte_exact() {
    let dir = tempfile::tempdir().unwrap();
    let plot = dir.path().join("plot.svg");
    let (code, r, out) = run_json(
        &[
            "--hidden",
            "200",
            "--clients",
            "1000",
            "--hold",
            "1s",
            "--rounds",
            "2",
            "--size",
            "300",
            "--workers",
            "2",
            "--plot",
            plot.to_str().unwrap(),
        ],
        dir.path(),
    );
    assert_eq!(code, 0, "{out}");
    assert_eq!(r["errors_total"], 0, "{out}");
    assert!(r["errors"].as_object().unwrap().is_empty(), "{out}");
    assert_eq!(r["clients_ok"], 1000, "{out}");
    assert_eq!(r["pairings"], 1000, "{out}");
    // Two rounds plus the last echo after the hold, 300 bytes each, every byte verified.
    assert_eq!(r["bytes_verified"], 1000 * 3 * 300, "{out}");
    assert_eq!(r["pairing"]["count"], 1000);
    assert_eq!(r["rtt"]["count"], 2000);
    assert_eq!(r["last_echo"]["count"], 1000);
    assert!(
        r["parks"].as_u64().unwrap() >= 1200,
        "every pairing re-parks: {out}"
    );
    let res = &r["relay_resources"];
    assert!(
        res["at_peak"]["sockets"].as_u64().unwrap() >= 2000,
        "relay held both sides of every tunnel: {out}"
    );
    assert!(res["end"]["cpu_seconds"].as_f64().unwrap() > 0.0);
    assert!(out.contains("errors         none"), "{out}");
    let svg = std::fs::read_to_string(plot).unwrap();
    assert_eq!(svg.matches("<polyline").count(), 4);
}

#[test]
fn drives_a_given_relay_with_its_secrets_and_large_echoes() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    write_secrets(&data.join("secrets.toml"), 30, 1);
    let relay = start_relay(&data);
    let secrets = data.join("secrets.toml");
    let (code, r, out) = run_json(
        &[
            "--relay",
            &relay.addr,
            "--secrets",
            secrets.to_str().unwrap(),
            "--hidden",
            "20",
            "--parked",
            "2",
            "--clients",
            "60",
            "--concurrency",
            "25",
            "--rounds",
            "2",
            "--size",
            "1000000",
            "--hold",
            "10ms",
            "--rate",
            "500",
        ],
        dir.path(),
    );
    assert_eq!(code, 0, "{out}");
    assert_eq!(r["errors_total"], 0, "{out}");
    assert_eq!(r["clients_ok"], 60);
    assert_eq!(r["bytes_verified"], 60 * 3 * 1_000_000u64);
    assert!(
        r["relay_resources"].is_null(),
        "no resource figures for a relay loadgen did not start"
    );
}

#[test]
fn refused_parks_are_counted_and_fail_the_run() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    write_secrets(&data.join("secrets.toml"), 5, 1);
    let relay = start_relay(&data);
    // Same ids, different secrets: every park proof fails.
    let wrong = dir.path().join("wrong.toml");
    let mut different = String::from("[secrets]\n");
    for i in 0..5 {
        let id = format!("{:08x}-0000-4000-8000-{:012x}", i + 1, 1);
        different.push_str(&format!("\"{id}\" = \"{}A\"\n", "Z".repeat(42)));
    }
    std::fs::write(&wrong, different).unwrap();
    let (code, r, out) = run_json(
        &[
            "--relay",
            &relay.addr,
            "--secrets",
            wrong.to_str().unwrap(),
            "--hidden",
            "5",
            "--clients",
            "3",
            "--hold",
            "0s",
            "--timeout",
            "10s",
        ],
        dir.path(),
    );
    assert_eq!(code, 1, "errors must give a non-zero exit: {out}");
    let errors = r["errors"].as_object().unwrap();
    assert!(
        errors
            .get("hidden/park/status 403")
            .is_some_and(|n| n.as_u64().unwrap() >= 5),
        "{out}"
    );
    assert!(
        errors
            .get("client/status 404")
            .is_some_and(|n| n.as_u64().unwrap() == 3),
        "{out}"
    );
    assert!(
        out.contains("hidden/park/status 403"),
        "the table lists errors by kind: {out}"
    );
}

#[test]
fn invalid_arguments_are_refused_before_starting_anything() {
    let out = Command::new(loadgen())
        .args(["--hidden", "0"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--hidden must be at least 1"));
    let out = Command::new(loadgen())
        .args(["--relay", "127.0.0.1:1"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--secrets"));
}

#[test]
fn small_tls_run_against_a_local_relay_is_byte_exact() {
    let dir = tempfile::tempdir().unwrap();
    let (code, r, out) = run_json(
        &[
            "--tls",
            "--hidden",
            "20",
            "--clients",
            "100",
            "--hold",
            "200ms",
            "--rounds",
            "2",
            "--size",
            "20000",
            &format!("--relay-arg={CLIENT_WAIT_UNDER_LOAD}"),
        ],
        dir.path(),
    );
    assert_clean(code, &r, &out, 100, 100 * 3 * 20_000);
    assert_eq!(r["transport"], "tls", "{out}");
    assert_eq!(r["auth"], "native", "{out}");
    assert!(out.contains("over TLS, native auth"), "{out}");
    assert!(
        r["relay_resources"]["command"]
            .as_str()
            .unwrap()
            .contains("--tls-listen 127.0.0.1:0"),
        "{out}"
    );
}

#[test]
fn small_totp_run_against_a_local_relay_is_byte_exact() {
    let dir = tempfile::tempdir().unwrap();
    // Two parked connections per id: only possible because the generated records queue.
    let (code, r, out) = run_json(
        &[
            "--auth",
            "totp",
            "--hidden",
            "20",
            "--parked",
            "2",
            "--clients",
            "100",
            "--hold",
            "200ms",
            "--size",
            "1000",
            &format!("--relay-arg={CLIENT_WAIT_UNDER_LOAD}"),
        ],
        dir.path(),
    );
    assert_clean(code, &r, &out, 100, 100 * 2 * 1000);
    assert_eq!(r["transport"], "tcp", "{out}");
    assert_eq!(r["auth"], "totp", "{out}");
    assert!(
        r["parks"].as_u64().unwrap() >= 140,
        "every pairing re-parks: {out}"
    );
}

#[test]
fn drives_a_given_tls_relay_with_totp_records_and_reports_wrong_keys() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    write_totp_secrets(&data.join("secrets.toml"), 10, 0);
    let relay = start_relay_args(&data, true, &[CLIENT_WAIT_UNDER_LOAD]);
    let tls_addr = relay.tls_addr.clone().unwrap();
    let ca = data.join("tls-cert.pem");
    let secrets = data.join("secrets.toml");
    let (code, r, out) = run_json(
        &[
            "--relay",
            &tls_addr,
            "--tls",
            "--tls-ca",
            ca.to_str().unwrap(),
            "--auth",
            "totp",
            "--secrets",
            secrets.to_str().unwrap(),
            "--hidden",
            "10",
            "--parked",
            "2",
            "--clients",
            "40",
            "--hold",
            "10ms",
            "--size",
            "100000",
        ],
        dir.path(),
    );
    assert_clean(code, &r, &out, 40, 40 * 2 * 100_000);
    assert_eq!(r["transport"], "tls", "{out}");
    assert_eq!(r["auth"], "totp", "{out}");

    // Same ids, other keys: every TOTP park is refused with 401 and counted. A relay
    // with the default client wait on the same data (certificate, secrets), so the
    // clients, which find nothing parked, get their 404 after 2 s.
    drop(relay);
    let relay = start_relay_with(&data, true);
    let tls_addr = relay.tls_addr.clone().unwrap();
    let wrong = dir.path().join("wrong.toml");
    write_totp_secrets(&wrong, 10, 13);
    let (code, r, out) = run_json(
        &[
            "--relay",
            &tls_addr,
            "--tls",
            "--tls-ca",
            ca.to_str().unwrap(),
            "--auth",
            "totp",
            "--secrets",
            wrong.to_str().unwrap(),
            "--hidden",
            "3",
            "--clients",
            "2",
            "--hold",
            "0s",
            "--timeout",
            "10s",
        ],
        dir.path(),
    );
    assert_eq!(code, 1, "{out}");
    let errors = r["errors"].as_object().unwrap();
    assert!(
        errors
            .get("hidden/park/status 401")
            .is_some_and(|n| n.as_u64().unwrap() >= 3),
        "{out}"
    );

    // The plain listener's secrets file has no [secrets] ids for native auth.
    let out = Command::new(loadgen())
        .args([
            "--relay",
            &relay.addr,
            "--secrets",
            secrets.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("holds no ids"));
}

#[test]
fn an_untrusted_relay_certificate_is_reported_by_kind() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    std::fs::create_dir(&a).unwrap();
    std::fs::create_dir(&b).unwrap();
    write_secrets(&a.join("secrets.toml"), 3, 2);
    write_secrets(&b.join("secrets.toml"), 3, 2);
    let relay = start_relay_with(&a, true);
    // Relay b only generates its certificate; trusting it must not let a's through.
    drop(start_relay_with(&b, true));
    let secrets = a.join("secrets.toml");
    let other_ca = b.join("tls-cert.pem");
    let (code, r, out) = run_json(
        &[
            "--relay",
            relay.tls_addr.as_deref().unwrap(),
            "--tls",
            "--tls-ca",
            other_ca.to_str().unwrap(),
            "--secrets",
            secrets.to_str().unwrap(),
            "--hidden",
            "3",
            "--clients",
            "2",
            "--hold",
            "0s",
            "--timeout",
            "10s",
        ],
        dir.path(),
    );
    assert_eq!(code, 1, "{out}");
    let errors = r["errors"].as_object().unwrap();
    assert!(
        errors
            .keys()
            .any(|k| k.starts_with("hidden/tls handshake: invalid peer certificate")),
        "{out}"
    );
    assert!(
        errors
            .keys()
            .any(|k| k.starts_with("client/tls handshake: invalid peer certificate")),
        "{out}"
    );
}

#[test]
fn tls_arguments_are_checked_before_starting_anything() {
    let out = Command::new(loadgen())
        .args([
            "--relay",
            "127.0.0.1:1",
            "--secrets",
            "/x",
            "--tls-ca",
            "/ca.pem",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("need --tls"));
}

/// The pairing workloads spread over several generator threads: both run against
/// direct loopback and a tryst relay with zero errors, and the report says how many
/// generators ran and what rate was offered. No speed is asserted.
#[test]
fn compare_spreads_pairing_over_generators_closed_and_open_loop() {
    let dir = tempfile::tempdir().unwrap();
    let (code, r, out) = run_json(
        &[
            "compare",
            "--targets",
            "direct,tryst-splice-syscall",
            "--workloads",
            "pairing,pairing-open",
            "--repetitions",
            "3",
            "--duration",
            "200ms",
            "--pairing-generators",
            "3",
            "--pairing-loops",
            "2",
            "--rate",
            "300",
            "--no-pin",
        ],
        dir.path(),
    );
    assert_eq!(code, 0, "{out}");
    assert!(r["errors"].as_object().unwrap().is_empty(), "{out}");
    assert!(
        r["pinning"]
            .as_str()
            .unwrap()
            .contains("3 pairing generator thread(s), not pinned"),
        "{out}"
    );
    // The sink (the listener and tryst's re-parking hidden servers) on threads of its own.
    assert!(
        r["pinning"]
            .as_str()
            .unwrap()
            .contains("the sink on as many threads of its own"),
        "{out}"
    );
    let cells = r["cells"].as_array().unwrap();
    for target in ["direct", "tryst-splice-syscall"] {
        for workload in ["pairing", "pairing-open"] {
            let mine: Vec<&serde_json::Value> = cells
                .iter()
                .filter(|c| c["target"] == target && c["workload"] == workload)
                .collect();
            assert_eq!(mine.len(), 3, "{target} {workload}: {out}");
            for c in mine {
                assert!(c["error"].is_null(), "{target} {workload}: {c}");
                let m = &c["metrics"];
                assert_eq!(m["generators"], 3.0, "{target} {workload}: {c}");
                assert!(m["count"].as_f64().unwrap() >= 1.0, "{c}");
                assert!(m["p50_us"].as_f64().unwrap() > 0.0, "{c}");
                if workload == "pairing-open" {
                    assert_eq!(m["offered_per_s"], 300.0, "{c}");
                    // 200 ms at 300/s schedules 60 arrivals over the three threads;
                    // every one is either paired or counted as dropped.
                    let arrivals = m["count"].as_f64().unwrap() + m["dropped"].as_f64().unwrap();
                    assert!((58.0..=62.0).contains(&arrivals), "{c}");
                }
            }
        }
    }
    let labels: Vec<&str> = r["summary"]
        .as_array()
        .unwrap()
        .iter()
        .map(|row| row["workload"].as_str().unwrap())
        .collect();
    assert!(labels.contains(&"pairing-open"), "{out}");
}

#[test]
fn compare_refuses_bad_pairing_generator_options() {
    for (args, message) in [
        (&["--pairing-generators", "0"][..], "--pairing-generators"),
        (&["--rate", "0"], "--rate"),
        (&["--pairing-loops", "0"], "--pairing-loops"),
    ] {
        let out = Command::new(loadgen())
            .arg("compare")
            .args(args)
            .output()
            .unwrap();
        assert_ne!(out.status.code(), Some(0), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(message), "{args:?}: {err}");
    }
}

/// `loadgen qredo` against a local relay: every phase over both transports runs with
/// zero errors, and the report has a median and spread for each phase. No speed is
/// asserted.
#[test]
fn qredo_creates_and_responds_over_http_and_websocket() {
    let dir = tempfile::tempdir().unwrap();
    let (code, r, out) = run_json(
        &[
            "qredo",
            "--repetitions",
            "3",
            "--duration",
            "200ms",
            "--connections",
            "4",
            "--sockets",
            "2",
            "--in-flight",
            "4",
        ],
        dir.path(),
    );
    assert_eq!(code, 0, "{out}");
    assert!(r["errors"].as_object().unwrap().is_empty(), "{out}");
    let cells = r["cells"].as_array().unwrap();
    assert_eq!(cells.len(), 12, "{out}");
    for c in cells {
        let m = &c["metrics"];
        assert!(m["count"].as_f64().unwrap() >= 1.0, "{c}");
        assert_eq!(m["errors"], 0.0, "{c}");
        assert!(m["p50_us"].as_f64().unwrap() > 0.0, "{c}");
        assert!(m["relay_cpu_us"].as_f64().is_some(), "{c}");
    }
    for phase in ["create-http", "respond-http", "create-ws", "respond-ws"] {
        let row = r["summary"]
            .as_array()
            .unwrap()
            .iter()
            .find(|row| row["phase"] == phase && row["metric"] == "per_s")
            .unwrap_or_else(|| panic!("{phase}: {out}"));
        assert_eq!(row["samples"], 3, "{row}");
        assert!(row["min"].as_f64() <= row["median"].as_f64(), "{row}");
        assert!(row["median"].as_f64() <= row["max"].as_f64(), "{row}");
    }
}

#[test]
fn qredo_refuses_bad_options_before_starting_anything() {
    for (args, message) in [
        (&["--repetitions", "2"][..], "--repetitions"),
        (&["--in-flight", "17"], "--in-flight"),
        (&["--connections", "0"], "--connections"),
    ] {
        let out = Command::new(loadgen())
            .arg("qredo")
            .args(args)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(message), "{args:?}: {err}");
    }
}

/// Whether `program` is on PATH.
fn on_path(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(program).is_file()))
}

/// A small `compare` of `targets` and `workloads` (3 repetitions of 150 ms, one pairing
/// generator with 2 loops, not pinned) that must exit 0 with no error and no target
/// skipped; returns the JSON report and the output.
fn small_compare(targets: &str, workloads: &str) -> (serde_json::Value, String) {
    let dir = tempfile::tempdir().unwrap();
    let (code, r, out) = run_json(
        &[
            "compare",
            "--targets",
            targets,
            "--workloads",
            workloads,
            "--repetitions",
            "3",
            "--duration",
            "150ms",
            "--pairing-generators",
            "1",
            "--pairing-loops",
            "2",
            "--no-pin",
        ],
        dir.path(),
    );
    assert_eq!(code, 0, "{out}");
    assert!(r["errors"].as_object().unwrap().is_empty(), "{out}");
    assert!(r["skipped"].as_object().unwrap().is_empty(), "{out}");
    (r, out)
}

/// `tryst-expose`: the generator connects to the relay's port for the id
/// (`--id-listen`), with `tryst expose` parked behind it and no agent on the client's
/// side. Pairings, a ping-pong and a bulk transfer verify every byte end to end (the sink
/// counts them) and report CPU for the relay and the agent. No speed is asserted.
#[test]
fn compare_runs_tryst_expose_through_the_relays_port_for_the_id() {
    let (r, out) = small_compare("direct,tryst-expose", "pairing,pingpong,bulk1");
    let cmd = r["targets"]["tryst-expose"].as_str().unwrap();
    assert!(
        cmd.contains("--id-listen=127.0.0.1:")
            && cmd.contains(" expose ")
            && !cmd.contains(" connect "),
        "{cmd}"
    );
    let cell = |workload: &str| cell_metrics(&r, &out, "tryst-expose", workload);
    let m = cell("pairing");
    assert!(m["count"].as_f64().unwrap() >= 1.0, "{m}");
    for part in ["relay", "expose"] {
        assert!(
            m[format!("relay_cpu_us_{part}").as_str()].as_f64().unwrap() >= 0.0,
            "{m}"
        );
    }
    assert!(cell("pingpong")["round_trips"].as_f64().unwrap() > 0.0);
    let m = cell("bulk1");
    assert!(m["bytes"].as_f64().unwrap() > 0.0, "{m}");
    assert!(m["cpu_s_per_gb_expose"].as_f64().unwrap() >= 0.0, "{m}");
}

/// The metrics of the first repetition of `target` under `workload` in a compare
/// report `r` (`out`: the run's output, shown on failure); asserts it has no error.
fn cell_metrics(
    r: &serde_json::Value,
    out: &str,
    target: &str,
    workload: &str,
) -> serde_json::Value {
    let c = r["cells"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["target"] == target && c["workload"] == workload)
        .unwrap_or_else(|| panic!("{target} {workload}: {out}"));
    assert!(c["error"].is_null(), "{target} {workload}: {c}");
    c["metrics"].clone()
}

/// The cluster targets (issue #16): each starts its own redis-server and two nodes; a
/// few pairings, a ping-pong and a bulk transfer through A (local) and through B
/// (cross) verify every byte and report figures, CPU included. No speed is asserted.
#[test]
fn compare_runs_the_cluster_targets_local_and_cross() {
    if !on_path("redis-server") {
        eprintln!(
            "SKIPPED compare_runs_the_cluster_targets_local_and_cross: redis-server is not installed (scripts/test-deps.sh installs it)"
        );
        return;
    }
    let (r, out) = small_compare(
        "direct,tryst-cluster-local,tryst-cluster-cross",
        "pairing,pingpong,bulk1",
    );
    let cmd = r["targets"]["tryst-cluster-cross"].as_str().unwrap();
    assert!(
        cmd.contains("redis-server") && cmd.contains("--save ''") && cmd.contains("reach via B"),
        "{cmd}"
    );
    assert!(
        r["targets"]["tryst-cluster-local"]
            .as_str()
            .unwrap()
            .contains("reach via A"),
        "{out}"
    );
    let cells = r["cells"].as_array().unwrap();
    for target in ["tryst-cluster-local", "tryst-cluster-cross"] {
        let cell = |workload: &str| cell_metrics(&r, &out, target, workload);
        let m = cell("pairing");
        assert!(m["count"].as_f64().unwrap() >= 1.0, "{m}");
        assert!(m["p50_us"].as_f64().unwrap() > 0.0, "{m}");
        // CPU is summed over both nodes and redis-server (at 100 ticks/s it may be 0),
        // and reported for each of them.
        assert!(m["relay_cpu_us"].as_f64().unwrap() >= 0.0, "{m}");
        let parts: f64 = ["a", "b", "redis"]
            .iter()
            .map(|p| m[format!("relay_cpu_us_{p}").as_str()].as_f64().unwrap())
            .sum();
        let whole = m["relay_cpu_us"].as_f64().unwrap();
        // The parts are sampled just after the whole: allow a 10 ms tick per part.
        let ticks_us = 3.0 * 10_000.0 / m["count"].as_f64().unwrap();
        assert!((parts - whole).abs() <= ticks_us + 1e-6, "{m}");
        // Directory round trips per pairing, from both nodes' /metrics: a cross
        // pairing costs B at least its lookup of the key.
        let trips = m["engine_round_trips"].as_f64().unwrap();
        if target == "tryst-cluster-cross" {
            assert!(trips >= 1.0, "{m}");
        } else {
            assert!(trips >= 0.0, "{m}");
        }
        let m = cell("pingpong");
        assert!(m["round_trips"].as_f64().unwrap() > 0.0, "{m}");
        // The sink counts the bytes it received and the generator checks the count.
        let m = cell("bulk1");
        assert!(m["bytes"].as_f64().unwrap() > 0.0, "{m}");
        assert!(m["cpu_s_per_gb"].as_f64().unwrap() >= 0.0, "{m}");
    }
    let direct = cells
        .iter()
        .find(|c| c["target"] == "direct" && c["workload"] == "pairing")
        .unwrap();
    assert!(
        direct["metrics"]["engine_round_trips"].is_null(),
        "{direct}"
    );
}

/// Without a redis-server the cluster targets are skipped with the reason in the report
/// (the direct baseline still runs).
#[test]
fn compare_names_a_missing_redis_server() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no-redis-server");
    let (code, r, out) = run_json(
        &[
            "compare",
            "--targets",
            "direct,tryst-cluster-cross",
            "--workloads",
            "pingpong",
            "--repetitions",
            "3",
            "--duration",
            "100ms",
            "--no-pin",
            "--redis-server",
            missing.to_str().unwrap(),
        ],
        dir.path(),
    );
    assert_eq!(code, 0, "{out}");
    assert_eq!(
        r["skipped"]["tryst-cluster-cross"].as_str().unwrap(),
        format!(
            "{} not found: the cluster targets need a redis-server (run scripts/test-deps.sh)",
            missing.display()
        ),
        "{out}"
    );
    assert!(out.contains("SKIPPING tryst-cluster-cross"), "{out}");
    assert!(r["targets"].get("tryst-cluster-cross").is_none(), "{out}");
}

/// `loadgen cluster-recovery` at a tiny scale: both recoveries run (Redis restarted
/// empty, node A killed) and print their per-round and median lines. Correctness only:
/// the figures are a benchmark's (docs/performance.md), not checked here.
#[test]
fn cluster_recovery_runs_both_recoveries() {
    let out = Command::new(loadgen())
        .args([
            "cluster-recovery",
            "--hidden",
            "20",
            "--sample",
            "4",
            "--rounds",
            "1",
            "--client-wait",
            "1s",
        ])
        .env("TRYST_BIN", tryst())
        .output()
        .expect("running loadgen");
    let text = format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("round 1 valkey restarted: directory ") && text.contains("(4 samples"),
        "{text}"
    );
    assert!(
        text.contains("round 1 A killed: directory - sampled median "),
        "{text}"
    );
    assert!(
        text.contains("valkey restarted: directory holds all 20 keys after ")
            && text.contains("A killed: a client on B answered \"not parked\" after "),
        "{text}"
    );
    assert!(!text.contains(" - sampled median -"), "{text}");
}

/// The `-tls` targets (issue #18): TLS 1.3 on both legs through tryst and through
/// HAProxy terminating and re-encrypting, against the generator's TLS straight to the
/// sink. Bulk, ping-pong and pairings verify every byte with zero errors, and each
/// `-tls` target's figures are compared with its TLS counterpart. No speed is asserted.
#[test]
fn compare_runs_the_tls_targets_with_tls_baselines() {
    if !on_path("haproxy") {
        eprintln!(
            "SKIPPED compare_runs_the_tls_targets_with_tls_baselines: haproxy is not installed (scripts/test-deps.sh installs it)"
        );
        return;
    }
    let (r, out) = small_compare(
        "direct,direct-tls,tryst-tls,haproxy-tls",
        "bulk1,pingpong,pairing",
    );
    let cmd = r["targets"]["tryst-tls"].as_str().unwrap();
    assert!(cmd.contains("--tls-listen"), "{cmd}");
    let cells = r["cells"].as_array().unwrap();
    for target in ["direct-tls", "tryst-tls", "haproxy-tls"] {
        for workload in ["bulk1", "pingpong", "pairing"] {
            let mine: Vec<&serde_json::Value> = cells
                .iter()
                .filter(|c| c["target"] == target && c["workload"] == workload)
                .collect();
            assert_eq!(mine.len(), 3, "{target} {workload}: {out}");
            for c in mine {
                assert!(c["error"].is_null(), "{target} {workload}: {c}");
                let m = &c["metrics"];
                match workload {
                    // The sink counted every byte sent (checked by the workload).
                    "bulk1" => assert!(m["bytes"].as_f64().unwrap() > 0.0, "{c}"),
                    "pingpong" => assert!(m["round_trips"].as_f64().unwrap() >= 1.0, "{c}"),
                    _ => assert!(m["count"].as_f64().unwrap() >= 1.0, "{c}"),
                }
            }
        }
    }
    let summary = r["summary"].as_array().unwrap();
    let row = |target: &str, workload: &str, metric: &str| {
        summary
            .iter()
            .find(|s| s["target"] == target && s["workload"] == workload && s["metric"] == metric)
            .unwrap_or_else(|| panic!("{target} {workload} {metric}: {out}"))
            .clone()
    };
    assert_eq!(
        row("tryst-tls", "bulk1", "gbit_s")["baseline"],
        "direct-tls"
    );
    assert_eq!(
        row("tryst-tls", "bulk1", "cpu_s_per_gb")["baseline"],
        "haproxy-tls"
    );
    assert!(
        row("tryst-tls", "bulk1", "cpu_s_per_gb")["ratio"]
            .as_f64()
            .unwrap()
            > 0.0
    );
    assert_eq!(row("direct", "bulk1", "gbit_s")["baseline"], "direct");
}
