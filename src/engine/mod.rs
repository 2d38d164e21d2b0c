//! The engine: the payout job's row driver, its pure policy and the shared rate limiter.
//! Reconciliation jobs build on the same limiter, store and client; there is one engine.

pub mod limiter;
pub mod payout;
pub mod policy;
pub mod pool;
pub mod recon;
