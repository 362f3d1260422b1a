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
}

impl Drop for Relay {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_relay(data_dir: &Path) -> Relay {
    let mut child = Command::new(tryst())
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(data_dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("starting tryst");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("first line");
    let addr = line
        .trim()
        .strip_prefix("tryst: listening on ")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .to_string();
    Relay { child, addr }
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
