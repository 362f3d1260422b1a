//! `loadgen compare` (in progress).

use crate::cli::CompareArgs;
use anyhow::Result;

/// Entry point.
pub(crate) fn main(args: &CompareArgs) -> Result<bool> {
    args.validate()?;
    anyhow::bail!("compare: not built yet")
}
