//! Qredo's own wire: the Lingua Franca RPC at `/services`, so the Qredo SDK's
//! rendezvous and conversations work unchanged.
//!
//! - [`lf`]: the codec (canonical S-expressions, marked atoms, the RPC envelope).

pub mod lf;
