//! `tryst provision`: a native secret, a node-rendezvous TOTP record, an import or an
//! export of provisioning records, into or out of the secrets file ([`secrets`],
//! [`crate::nodeprov`]).
//!
//! I/O contract: reads and writes the secrets file; `--import` reads its file or stdin.

use crate::secrets::{self, SecretsError};
use std::io;
use std::path::{Path, PathBuf};

/// Why `tryst provision` failed (the operator's arguments or files, named).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProvisionError {
    /// The secrets file could not be read, parsed or written, or an argument is bad.
    #[error(transparent)]
    Secrets(#[from] SecretsError),
    /// `--parking` names no parking mode.
    #[error(transparent)]
    Parking(#[from] tryst_engine::totp::TotpError),
    /// `--import -`: stdin could not be read.
    #[error("reading records from stdin")]
    Stdin(#[source] io::Error),
    /// `--import FILE`: the file could not be read.
    #[error("reading {}", path.display())]
    ReadImport {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// `--import`: the records were refused (nothing was written).
    #[error("importing {}", path.display())]
    Import {
        /// The file (`-` for stdin).
        path: PathBuf,
        /// Why.
        #[source]
        source: crate::nodeprov::ImportError,
    },
}

/// Runs `tryst provision` (a native secret, a TOTP record, an import or an export; see
/// [`secrets::provision`] and [`crate::nodeprov`]) and returns what to print.
pub fn run(
    secrets_path: &Path,
    args: &crate::cli::ProvisionArgs,
) -> Result<String, ProvisionError> {
    use crate::nodeprov;
    if args.export {
        return Ok(nodeprov::export(secrets_path)?);
    }
    if let Some(file) = &args.import {
        let text = if file.as_os_str() == "-" {
            io::read_to_string(io::stdin()).map_err(ProvisionError::Stdin)?
        } else {
            std::fs::read_to_string(file).map_err(|source| ProvisionError::ReadImport {
                path: file.clone(),
                source,
            })?
        };
        let ids = nodeprov::import(secrets_path, &text, args.force).map_err(|source| {
            ProvisionError::Import {
                path: file.clone(),
                source,
            }
        })?;
        return Ok(format!(
            "Imported {} node-rendezvous record(s) into {}\nA running relay loads them on SIGHUP (kill -HUP <pid of tryst serve>).\n",
            ids.len(),
            secrets_path.display()
        ));
    }
    let id = args.id.as_deref().unwrap_or_default();
    let mut rng = rand::rngs::OsRng;
    if args.totp {
        let parking = match args.parking.as_deref() {
            None => None,
            Some(p) => Some(tryst_engine::totp::TotpParking::parse(p)?),
        };
        let options = nodeprov::TotpOptions {
            step: args.step,
            parking,
            issuer: args.issuer.clone(),
        };
        let p = nodeprov::provision_totp(secrets_path, id, args.force, &options, &mut rng)?;
        return Ok(nodeprov::totp_instructions(&p));
    }
    let p = secrets::provision(secrets_path, id, args.force, &mut rng)?;
    Ok(secrets::provision_instructions(&p))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn provision_errors_name_the_file_and_keep_the_cause() {
        let e = ProvisionError::Import {
            path: "records.json".into(),
            source: crate::nodeprov::import(Path::new("/nonexistent/s.toml"), "not json", false)
                .unwrap_err(),
        };
        assert_eq!(e.to_string(), "importing records.json");
        assert!(std::error::Error::source(&e).is_some());
    }
}
