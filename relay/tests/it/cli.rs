//! The command line: help, provisioning, and configuration errors reported before start.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output, Stdio};

const ID: &str = "0b6c6f1e-3c4b-4a8e-9d2f-6a1c2b3d4e5f";

/// `tryst` with a clean environment: no `TRYST_*` variables, `HOME` in `home`.
fn tryst(home: &Path, args: &[&str]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tryst"));
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("TRYST_") || key == "XDG_DATA_HOME" {
            cmd.env_remove(key);
        }
    }
    cmd.env("HOME", home)
        .args(args)
        .output()
        .expect("run tryst")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn help_lists_the_subcommands() {
    let home = tempfile::tempdir().unwrap();
    let out = tryst(home.path(), &["--help"]);
    assert!(out.status.success(), "{out:?}");
    let help = text(&out.stdout);
    assert!(help.contains("serve"), "{help}");
    assert!(help.contains("provision"), "{help}");
}

#[test]
fn serve_help_lists_the_agreed_flags() {
    let home = tempfile::tempdir().unwrap();
    let out = tryst(home.path(), &["serve", "--help"]);
    assert!(out.status.success(), "{out:?}");
    let help = text(&out.stdout);
    for flag in [
        "--listen",
        "--data-dir",
        "--secrets",
        "--workers",
        "--threads",
        "--data-path",
        "--client-wait",
        "--head-timeout",
        "--idle-timeout",
        "--drain-timeout",
        "--max-parked-per-id",
        "--pipe-size",
        "--proof-window",
        "--config",
    ] {
        assert!(help.contains(flag), "{flag} missing from\n{help}");
    }
}

#[test]
fn provision_writes_refuses_duplicates_and_forces() {
    let home = tempfile::tempdir().unwrap();
    let data = home.path().join("data");
    let data_arg = data.to_str().unwrap();
    let secrets = data.join("secrets.toml");

    let out = tryst(
        home.path(),
        &["provision", &ID.to_uppercase(), "--data-dir", data_arg],
    );
    assert!(out.status.success(), "{out:?}");
    let printed = text(&out.stdout);
    assert!(printed.contains(&format!("id:     {ID}\n")), "{printed}");
    let file = fs::read_to_string(&secrets).unwrap();
    assert!(
        file.starts_with("# tryst secrets: rendezvous id -> shared secret"),
        "{file}"
    );
    let line = file
        .lines()
        .find(|l| l.starts_with(&format!("\"{ID}\" = \"")))
        .expect("entry");
    let secret = line.rsplit('"').nth(1).unwrap();
    assert_eq!(secret.len(), 43, "32 bytes, unpadded base64url");
    assert!(
        printed.contains(&format!("secret: {secret}\n")),
        "{printed}"
    );
    assert!(
        printed.contains("Proxy-Authorization: Tryst ts="),
        "{printed}"
    );
    assert_eq!(
        fs::metadata(&secrets).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert_eq!(
        fs::metadata(&data).unwrap().permissions().mode() & 0o777,
        0o700
    );

    let out = tryst(home.path(), &["provision", ID, "--data-dir", data_arg]);
    assert!(!out.status.success(), "duplicate must be refused: {out:?}");
    assert!(
        text(&out.stderr).contains("already has a secret"),
        "{out:?}"
    );
    assert_eq!(
        fs::read_to_string(&secrets).unwrap(),
        file,
        "file untouched"
    );

    let out = tryst(
        home.path(),
        &["provision", ID, "--data-dir", data_arg, "--force"],
    );
    assert!(out.status.success(), "{out:?}");
    let replaced = fs::read_to_string(&secrets).unwrap();
    assert_ne!(replaced, file);
    assert_eq!(replaced.lines().filter(|l| l.contains(ID)).count(), 1);
}

#[test]
fn provision_defaults_to_the_home_data_dir_and_honours_secrets() {
    let home = tempfile::tempdir().unwrap();
    let out = tryst(home.path(), &["provision", ID]);
    assert!(out.status.success(), "{out:?}");
    assert!(
        home.path()
            .join(".local/share/tryst/secrets.toml")
            .is_file()
    );

    let custom = home.path().join("elsewhere.toml");
    let out = tryst(
        home.path(),
        &["provision", ID, "--secrets", custom.to_str().unwrap()],
    );
    assert!(out.status.success(), "{out:?}");
    assert!(fs::read_to_string(&custom).unwrap().contains(ID));
}

#[test]
fn provision_refuses_malformed_ids() {
    let home = tempfile::tempdir().unwrap();
    for bad in [
        "not-a-uuid",
        "{0b6c6f1e-3c4b-4a8e-9d2f-6a1c2b3d4e5f}",
        "0b6c6f1e3c4b4a8e9d2f6a1c2b3d4e5f",
    ] {
        let out = tryst(home.path(), &["provision", bad]);
        assert!(!out.status.success(), "{bad}: {out:?}");
        assert!(
            text(&out.stderr).contains("is not a rendezvous id"),
            "{out:?}"
        );
    }
    assert!(!home.path().join(".local/share/tryst/secrets.toml").exists());
}

#[test]
fn serve_reports_bad_configuration_before_starting() {
    let home = tempfile::tempdir().unwrap();
    let out = tryst(home.path(), &["serve", "--client-wait", "2"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(text(&out.stderr).contains("`2` has no unit"), "{out:?}");

    let config = home.path().join("tryst.toml");
    fs::write(&config, "listen = \"127.0.0.1:0\"\nclient_wait = \"2s\"\n").unwrap();
    let out = tryst(
        home.path(),
        &["serve", "--config", config.to_str().unwrap()],
    );
    assert!(!out.status.success(), "{out:?}");
    let err = text(&out.stderr);
    assert!(err.contains("unknown field `client_wait`"), "{err}");
    assert!(err.contains("tryst.toml"), "{err}");
    assert!(
        out.stdout.is_empty(),
        "nothing printed before the config is valid"
    );
}

#[test]
fn serve_refuses_a_malformed_id_listen_naming_the_part_at_fault() {
    let home = tempfile::tempdir().unwrap();
    for (value, want) in [
        (
            "127.0.0.1:2222".to_owned(),
            "invalid value '127.0.0.1:2222' for '--id-listen <ADDR=UUID>': `127.0.0.1:2222` is not ADDR=UUID",
        ),
        (
            format!("127.0.0.1:2222={ID},127.0.0.1:2223=x"),
            "invalid value '127.0.0.1:2223=x' for '--id-listen <ADDR=UUID>': `x` is not a rendezvous id (a hyphenated UUID)",
        ),
        (
            format!("2222={ID}"),
            "`2222` is not a socket address (e.g. 0.0.0.0:2222 or [::]:2222)",
        ),
    ] {
        let out = tryst(home.path(), &["serve", "--id-listen", &value]);
        assert_eq!(out.status.code(), Some(2), "{out:?}");
        assert!(text(&out.stderr).contains(want), "{out:?}");
        assert!(out.stdout.is_empty(), "{out:?}");
    }
}

#[test]
fn provision_reads_paths_from_the_serve_config_file() {
    let home = tempfile::tempdir().unwrap();
    let data = home.path().join("from-config");
    let config = home.path().join("tryst.toml");
    fs::write(
        &config,
        format!("data-dir = {:?}\n", data.to_str().unwrap()),
    )
    .unwrap();
    let out = tryst(
        home.path(),
        &["provision", ID, "--config", config.to_str().unwrap()],
    );
    assert!(out.status.success(), "{out:?}");
    assert!(
        fs::read_to_string(data.join("secrets.toml"))
            .unwrap()
            .contains(ID)
    );
}

#[test]
fn serve_refuses_an_invalid_secrets_file_before_listening() {
    let home = tempfile::tempdir().unwrap();
    let data = home.path().join("data");
    fs::create_dir(&data).unwrap();
    fs::write(
        data.join("secrets.toml"),
        "[secrets]\n\"not-a-uuid\" = \"q83vEjRWeJASNFZ4kBI0VniQEjRWeJASNFZ4kBI0Vng\"\n",
    )
    .unwrap();
    let out = tryst(
        home.path(),
        &[
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--workers",
            "1",
            "--data-dir",
            data.to_str().unwrap(),
        ],
    );
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let err = text(&out.stderr);
    assert!(err.contains("`not-a-uuid` is not a rendezvous id"), "{err}");
    assert!(err.contains("secrets.toml"), "{err}");
    assert!(out.stdout.is_empty(), "{out:?}");
}

const SECRET: &str = "q83vEjRWeJASNFZ4kBI0VniQEjRWeJASNFZ4kBI0Vng";

/// `tryst serve --check-config --config <config>` plus `extra` flags.
fn check_config(home: &Path, config: &Path, extra: &[&str]) -> Output {
    let mut args = vec![
        "serve",
        "--check-config",
        "--config",
        config.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    tryst(home, &args)
}

#[test]
fn check_config_accepts_a_good_config_without_creating_or_binding_anything() {
    let home = tempfile::tempdir().unwrap();
    let data = home.path().join("not-yet");
    let secrets = home.path().join("secrets.toml");
    fs::write(&secrets, format!("[secrets]\n\"{ID}\" = \"{SECRET}\"\n")).unwrap();
    fs::set_permissions(&secrets, fs::Permissions::from_mode(0o600)).unwrap();
    let config = home.path().join("tryst.toml");
    fs::write(
        &config,
        format!(
            "listen = \"127.0.0.1:0\"\ndata-dir = {:?}\nsecrets = {:?}\nworkers = 2\ndata-path = \"splice-uring\"\n",
            data.to_str().unwrap(),
            secrets.to_str().unwrap()
        ),
    )
    .unwrap();
    let out = check_config(home.path(), &config, &["--workers", "3"]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let summary = text(&out.stdout);
    for line in [
        "tryst: configuration ok\n".to_owned(),
        "listen          127.0.0.1:0\n".to_owned(),
        format!("data directory  {} (will be created)\n", data.display()),
        format!("secrets         {} (1 id)\n", secrets.display()),
        "data path       splice-uring\n".to_owned(),
    ] {
        assert!(summary.contains(&line), "{line:?} missing from\n{summary}");
    }
    assert!(
        summary.contains("workers         3 ("),
        "the flag overrides the file: {summary}"
    );
    assert!(!summary.contains("tryst: listening on"), "{summary}");
    assert!(
        !data.exists(),
        "--check-config must not create the data dir"
    );
}

#[test]
fn check_config_names_an_unknown_key() {
    let home = tempfile::tempdir().unwrap();
    let config = home.path().join("tryst.toml");
    fs::write(&config, "listen = \"127.0.0.1:0\"\nmax-parked = 4\n").unwrap();
    let out = check_config(home.path(), &config, &[]);
    assert!(!out.status.success(), "{out:?}");
    let err = text(&out.stderr);
    assert!(err.contains("unknown field `max-parked`"), "{err}");
    assert!(
        err.contains("max-parked-per-id"),
        "lists the valid keys: {err}"
    );
    assert!(out.stdout.is_empty(), "{out:?}");
}

#[test]
fn check_config_refuses_bad_secrets_and_bad_values() {
    let home = tempfile::tempdir().unwrap();
    let data = home.path().join("data");
    fs::create_dir(&data).unwrap();
    fs::write(
        data.join("secrets.toml"),
        format!("[secrets]\n\"{ID}\" = \"not base64!\"\n"),
    )
    .unwrap();
    let config = home.path().join("tryst.toml");
    fs::write(
        &config,
        format!("data-dir = {:?}\n", data.to_str().unwrap()),
    )
    .unwrap();
    let out = check_config(home.path(), &config, &[]);
    assert!(!out.status.success(), "{out:?}");
    let err = text(&out.stderr);
    assert!(err.contains(&format!("secret for `{ID}`")), "{err}");
    assert!(out.stdout.is_empty(), "{out:?}");

    // A value only the resolution step refuses (not the parser) fails the check too.
    fs::remove_file(data.join("secrets.toml")).unwrap();
    let out = check_config(home.path(), &config, &["--pipe-size", "100"]);
    assert!(!out.status.success(), "{out:?}");
    assert!(text(&out.stderr).contains("pipe-size"), "{out:?}");

    // A data directory that is a file.
    let file = home.path().join("file");
    fs::write(&file, "").unwrap();
    let out = check_config(
        home.path(),
        &config,
        &["--data-dir", file.to_str().unwrap()],
    );
    assert!(!out.status.success(), "{out:?}");
    assert!(text(&out.stderr).contains("not a directory"), "{out:?}");
}

/// What `serve` would refuse at start, `--check-config` refuses too: a Qredo apps file
/// that is missing or does not parse, a dead-drop key that is not a PKCS#8 RSA key.
#[test]
fn check_config_refuses_the_families_unusable_files() {
    let home = tempfile::tempdir().unwrap();
    let data = home.path().join("data");
    fs::create_dir(&data).unwrap();
    let config = home.path().join("tryst.toml");
    fs::write(
        &config,
        format!("data-dir = {:?}\n", data.to_str().unwrap()),
    )
    .unwrap();
    let check = |extra: &[&str]| check_config(home.path(), &config, extra);
    assert_eq!(check(&[]).status.code(), Some(0));
    // `flag file` fails the check: exit 1, nothing on stdout; what it said.
    let refused = |flag: &str, file: &Path| {
        let out = check(&[flag, file.to_str().unwrap()]);
        assert_eq!(out.status.code(), Some(1), "{out:?}");
        assert!(out.stdout.is_empty(), "{out:?}");
        text(&out.stderr)
    };

    let missing = home.path().join("nope.toml");
    let err = refused("--qredo-apps", &missing);
    assert!(
        err.contains(&format!("qredo apps file {}", missing.display())),
        "{err}"
    );
    assert!(err.contains("No such file or directory"), "{err}");

    let malformed = home.path().join("apps.toml");
    fs::write(&malformed, "apps = 3\n").unwrap();
    let err = refused("--qredo-apps", &malformed);
    assert!(
        err.contains(&format!("qredo apps file {}", malformed.display())),
        "{err}"
    );

    let junk = home.path().join("junk.pem");
    fs::write(&junk, "not a key\n").unwrap();
    let err = refused("--deaddrop-key", &junk);
    assert!(
        err.contains(&format!("dead-drop key {}", junk.display())),
        "{err}"
    );
    assert!(err.contains("not a PKCS#8 RSA private key PEM"), "{err}");
    // A missing key is generated at start: fine, and not written by the check.
    let later = home.path().join("later.pem");
    let out = check(&["--deaddrop-key", later.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert!(!later.exists());
}

/// A data directory this user may not write into (or create) is refused by
/// `--check-config` and by `serve`, naming it, instead of passing the check and then
/// failing on the first file written. Run as `nobody` (through `setpriv`, with a copy
/// of the binary it may execute) when the tests run as root, whom no mode stops.
#[test]
fn a_data_directory_this_user_cannot_write_is_refused_by_the_check_and_by_serve() {
    let home = tempfile::tempdir().unwrap();
    fs::set_permissions(home.path(), fs::Permissions::from_mode(0o755)).unwrap();
    let ro = home.path().join("ro");
    fs::create_dir(&ro).unwrap();
    fs::set_permissions(&ro, fs::Permissions::from_mode(0o555)).unwrap();
    let exe = home.path().join("tryst");
    fs::copy(env!("CARGO_BIN_EXE_tryst"), &exe).unwrap();
    // /proc/self belongs to this process's effective user.
    let root = std::os::unix::fs::MetadataExt::uid(&fs::metadata("/proc/self").unwrap()) == 0;
    let run = |args: &[&str]| {
        let mut cmd = if root {
            let mut c = Command::new("setpriv");
            c.args(["--reuid=65534", "--regid=65534", "--clear-groups"])
                .arg(&exe);
            c
        } else {
            Command::new(&exe)
        };
        cmd.args(args)
            .env_clear()
            .env("HOME", home.path())
            .env("RUST_BACKTRACE", "0")
            .current_dir(home.path())
            .stdin(Stdio::null())
            .output()
            .unwrap()
    };
    let sub = ro.join("sub");
    for (dir, want) in [
        (
            &ro,
            format!(
                "data directory {} is not writable by this user",
                ro.display()
            ),
        ),
        (
            &sub,
            format!(
                "cannot create data directory {}: {} is not writable by this user",
                sub.display(),
                ro.display()
            ),
        ),
    ] {
        let dir = dir.to_str().unwrap();
        let check = run(&[
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
            dir,
            "--check-config",
        ]);
        assert_eq!(check.status.code(), Some(1), "{check:?}");
        assert!(text(&check.stderr).contains(&want), "{check:?}");
        assert!(check.stdout.is_empty(), "{check:?}");
    }
    let serve = run(&[
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--data-dir",
        ro.to_str().unwrap(),
    ]);
    assert_eq!(serve.status.code(), Some(1), "{serve:?}");
    assert!(
        text(&serve.stderr).contains(&format!(
            "data directory {} is not writable by this user",
            ro.display()
        )),
        "{serve:?}"
    );
}

/// The sample in deploy/ must stay valid and keep documenting every key.
#[test]
fn the_sample_deploy_config_passes_check_config() {
    let sample = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/tryst.toml");
    let text_of_sample = fs::read_to_string(&sample).unwrap();
    // Every settable key, straight from the CLI definition (config keys are the flag
    // names), so a new flag cannot be forgotten here. Keys that have no sensible value
    // in a sample (the operator's certificate files) may be shown commented out.
    use clap::Args as _;
    let settings = tryst_relay::cli::Settings::augment_args(clap::Command::new("sample"));
    let keys: Vec<String> = settings
        .get_arguments()
        .filter_map(|a| a.get_long().map(str::to_owned))
        .collect();
    assert!(keys.len() >= 19, "{keys:?}");
    for key in &keys {
        assert!(
            text_of_sample
                .lines()
                .any(|l| l.starts_with(&format!("{key} = "))
                    || l.starts_with(&format!("# {key} = "))),
            "deploy/tryst.toml does not document `{key}`"
        );
    }
    // Validate it as written, except that the paths point into a scratch directory
    // (the sample's /var/lib/tryst need not exist, or be readable, here).
    let home = tempfile::tempdir().unwrap();
    let data = home.path().join("data");
    let out = check_config(
        home.path(),
        &sample,
        &[
            "--data-dir",
            data.to_str().unwrap(),
            "--secrets",
            data.join("secrets.toml").to_str().unwrap(),
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert!(
        text(&out.stdout).contains("tryst: configuration ok"),
        "{out:?}"
    );
}

/// `tryst provision --totp`, `--export` and `--import` end to end.
#[test]
fn provision_totp_prints_uri_qr_and_record_and_exports_imports() {
    let home = tempfile::tempdir().unwrap();
    let data = home.path().join("data");
    let data_arg = data.to_str().unwrap();
    let node_id = "2f402f80-da50-11e1-9b23-0123456789ab";

    let out = tryst(
        home.path(),
        &[
            "provision",
            node_id,
            "--totp",
            "--data-dir",
            data_arg,
            "--issuer",
            "https://192.0.2.1:8899",
        ],
    );
    assert!(out.status.success(), "{out:?}");
    let printed = text(&out.stdout);
    let b32 = printed
        .lines()
        .find_map(|l| l.strip_prefix("base32: "))
        .expect("base32 line")
        .to_owned();
    let key = tryst_engine::totp::decode_base32(&b32).unwrap();
    assert_eq!(key.len(), 40, "a 40-character ASCII key");
    assert!(key.iter().all(u8::is_ascii_alphanumeric));
    assert!(
        printed.contains(&format!(
            "otpauth://totp/https%3A%2F%2F192.0.2.1%3A8899:{node_id}?secret={b32}&issuer=https%3A%2F%2F192.0.2.1%3A8899&algorithm=SHA1&digits=6&period=30"
        )),
        "{printed}"
    );
    assert!(
        printed.contains('\u{2588}') || printed.contains('\u{2580}'),
        "QR code: {printed}"
    );
    let record = format!(
        r#"{{"algorithm":"sha1","length":40,"name":"{node_id}","issuer":"https://192.0.2.1:8899","step":30,"base32":"{b32}","protocol":"totp"}}"#
    );
    assert!(printed.contains(&record), "{printed}");
    let file = fs::read_to_string(data.join("secrets.toml")).unwrap();
    assert!(file.contains("[totp]"), "{file}");
    assert!(
        file.contains(&format!("\"{node_id}\" = {{ base32 = \"{b32}\", step = 30")),
        "{file}"
    );

    // A second --totp for the same id is refused without --force.
    let out = tryst(
        home.path(),
        &["provision", node_id, "--totp", "--data-dir", data_arg],
    );
    assert!(!out.status.success(), "{out:?}");
    assert!(text(&out.stderr).contains("--force"), "{out:?}");

    // Export: one JSON record per line, importable elsewhere.
    let out = tryst(
        home.path(),
        &["provision", "--export", "--data-dir", data_arg],
    );
    assert!(out.status.success(), "{out:?}");
    let exported = text(&out.stdout);
    assert_eq!(exported.lines().count(), 1, "{exported}");
    assert!(exported.starts_with(&format!(r#"{{"uuid":"{node_id}","authURL":"otpauth://"#)));
    assert!(
        exported
            .trim_end()
            .ends_with(&format!(r#""authParams":{record}}}"#)),
        "{exported}"
    );

    let other = home.path().join("other");
    let records = home.path().join("records.json");
    // An upstream record with extra fields, plus ours, as a JSON array.
    let upstream = r#"{"uuid":"2f402f80-da50-11e1-9b23-00000000abcd","qrcodeURL":"https://x","authURL":"otpauth://totp/x","authParams":{"algorithm":"sha1","length":40,"name":"2f402f80-da50-11e1-9b23-00000000abcd","issuer":"https://192.0.2.1:8898","step":30,"base32":"KBFU2TDPM53DOU2GJRFHKYSQJF3GO2KSII3XCNTMG5KW26DNIFWXINSOJZDVOQ3Z","protocol":"totp"}}"#;
    fs::write(&records, format!("[{upstream},\n{}]", exported.trim_end())).unwrap();
    let other_arg = other.to_str().unwrap();
    let out = tryst(
        home.path(),
        &[
            "provision",
            "--import",
            records.to_str().unwrap(),
            "--data-dir",
            other_arg,
        ],
    );
    assert!(out.status.success(), "{out:?}");
    assert!(
        text(&out.stdout).contains("Imported 2 node-rendezvous record(s)"),
        "{out:?}"
    );
    let imported = fs::read_to_string(other.join("secrets.toml")).unwrap();
    assert!(imported.contains(&b32), "{imported}");
    assert!(imported.contains("KBFU2TDPM53DOU2GJRFHKYSQJF3GO2KSII3XCNTMG5KW26DNIFWXINSOJZDVOQ3Z"));
    assert_eq!(
        fs::metadata(other.join("secrets.toml"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o600
    );

    // Importing again is refused (ids exist); --force replaces.
    let import = |extra: &[&str]| {
        let mut args = vec![
            "provision",
            "--import",
            records.to_str().unwrap(),
            "--data-dir",
            other_arg,
        ];
        args.extend_from_slice(extra);
        tryst(home.path(), &args)
    };
    let out = import(&[]);
    assert!(!out.status.success(), "{out:?}");
    assert!(
        text(&out.stderr).contains("already has a TOTP record"),
        "{out:?}"
    );
    assert!(import(&["--force"]).status.success());

    // Malformed input is refused with the line named, and nothing is written.
    let before = fs::read_to_string(other.join("secrets.toml")).unwrap();
    fs::write(
        &records,
        format!("{upstream}\n{{\"uuid\":\"nope\",\"authParams\":{{\"base32\":\"MZXW6\"}}}}\n"),
    )
    .unwrap();
    let out = import(&["--force"]);
    assert!(!out.status.success(), "{out:?}");
    let err = text(&out.stderr);
    assert!(
        err.contains("line 2: `nope` is not a hyphenated UUID"),
        "{err}"
    );
    assert_eq!(
        fs::read_to_string(other.join("secrets.toml")).unwrap(),
        before
    );
}

/// Issue 12 item 12: the serve command `tryst provision --totp` prints runs, serves TLS,
/// and the printed park line parks a steward-style hidden server with the new record.
/// The test swaps the printed public addresses for ephemeral loopback ones and gives the
/// relay a data directory of its own; everything else is the printed command.
#[test]
fn the_serve_command_provision_totp_prints_runs() {
    use std::io::{Read, Write};
    let home = tempfile::tempdir().unwrap();
    let data = home.path().join("data");
    let node_id = "2f402f80-da50-11e1-9b23-0123456789ab";
    let out = tryst(
        home.path(),
        &[
            "provision",
            node_id,
            "--totp",
            "--data-dir",
            data.to_str().unwrap(),
        ],
    );
    assert!(out.status.success(), "{out:?}");
    let printed = text(&out.stdout);
    let command = printed
        .lines()
        .find_map(|l| l.trim_start().strip_prefix("tryst serve "))
        .unwrap_or_else(|| panic!("no serve command in {printed}"));
    let mut args: Vec<String> = Vec::new();
    for word in command.split_whitespace() {
        args.push(if word.starts_with("0.0.0.0:") {
            "127.0.0.1:0".into()
        } else {
            word.into()
        });
    }
    assert!(args.iter().any(|a| a == "--tls-listen"), "{args:?}");
    let relay = crate::relay::Relay::builder()
        .workers(1)
        .default_client_wait()
        .no_secrets()
        .home(home.path())
        .data_dir(home.path().join("serve-data"))
        .log_file(home.path().join("relay.log"))
        .args(&args)
        .start();
    assert!(relay.tls_addr.is_some(), "{:?}", relay.lines);
    let plain = relay.addr;
    // The printed park line, with the code oathtool would print now.
    let b32 = printed
        .lines()
        .find_map(|l| l.strip_prefix("base32: "))
        .unwrap();
    let park = printed
        .lines()
        .find_map(|l| l.trim_start().strip_prefix("CONNECT "))
        .expect("a park line");
    let key = tryst_engine::totp::decode_base32(b32).unwrap();
    let record =
        tryst_engine::totp::TotpRecord::new(key, 30, tryst_engine::totp::TotpAlgorithm::Sha1, None)
            .unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let oathtool = park
        .split("$(")
        .nth(1)
        .and_then(|r| r.split(')').next())
        .expect("an oathtool call");
    let send = |code: &str| {
        let line = park.replace(&format!("$({oathtool})"), code);
        let mut s = std::net::TcpStream::connect(plain).unwrap();
        s.set_read_timeout(Some(std::time::Duration::from_secs(10)))
            .unwrap();
        s.write_all(format!("CONNECT {line}\r\n\r\n").as_bytes())
            .unwrap();
        let mut ok = [0u8; 16];
        s.read_exact(&mut ok).unwrap();
        (s, ok)
    };
    let (_parked, mut ok) = send(&tryst_engine::totp::generate(&record, now, 6));
    // A 401 across a 30 s step boundary is the code's age, not the recipe: one retry.
    let _retry;
    if &ok != b"HTTP/1.1 200\r\n\r\n" {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        (_retry, ok) = send(&tryst_engine::totp::generate(&record, now, 6));
    }
    assert_eq!(&ok, b"HTTP/1.1 200\r\n\r\n");
}
