//! Writes what the Debian package ships besides the binary and `deploy/`, generated from
//! the clap definitions so they cannot drift from the real command line:
//!
//! - `man/tryst.1` and one page per subcommand (`tryst-serve.1`, ...), by `clap_mangen`;
//! - `completions/tryst.bash`, `completions/_tryst` (zsh), `completions/tryst.fish`, by
//!   `clap_complete`;
//! - `tryst.toml`: `deploy/tryst.toml` with the optional listeners (TLS, STUN) and the
//!   example TLS name commented out, the package's `/etc/tryst/tryst.toml`.
//!
//! `cargo run -p tryst-relay --example dist_assets -- [OUT_DIR]` (default
//! `target/dist`); scripts/deb-build.sh runs it before `cargo deb`.

use anyhow::Context as _;
use clap::CommandFactory as _;
use clap_complete::Shell;
use std::path::{Path, PathBuf};
use tryst_relay::cli::Cli;

/// Keys of deploy/tryst.toml that turn on something beyond the main port; the package
/// leaves them commented so a fresh install opens one port only.
const OPTIONAL_KEYS: [&str; 3] = ["tls-listen", "tls-name", "stun-listen"];

fn main() -> anyhow::Result<()> {
    let out = std::env::args_os()
        .nth(1)
        .map_or_else(|| workspace().join("target/dist"), PathBuf::from);

    let man = out.join("man");
    std::fs::create_dir_all(&man).with_context(|| format!("creating {}", man.display()))?;
    clap_mangen::generate_to(Cli::command(), &man).context("writing man pages")?;

    let completions = out.join("completions");
    std::fs::create_dir_all(&completions)?;
    for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
        clap_complete::generate_to(shell, &mut Cli::command(), "tryst", &completions)
            .with_context(|| format!("writing {shell} completions"))?;
    }

    let sample = workspace().join("deploy/tryst.toml");
    let text = std::fs::read_to_string(&sample)
        .with_context(|| format!("reading {}", sample.display()))?;
    std::fs::write(out.join("tryst.toml"), packaged_config(&text))?;
    println!("dist_assets: wrote {}", out.display());
    Ok(())
}

/// `sample` with every line setting one of [`OPTIONAL_KEYS`] commented out.
fn packaged_config(sample: &str) -> String {
    let mut out = String::with_capacity(sample.len() + 64);
    for line in sample.lines() {
        let key = line.split('=').next().unwrap_or_default().trim();
        if OPTIONAL_KEYS.contains(&key) {
            out.push_str("# ");
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("relay/ has a parent")
        .to_owned()
}
