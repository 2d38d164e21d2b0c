//! The Starpay protocol: models, canonical bytes and signatures, the code catalogue, and a
//! one-attempt client. Knows nothing of CSV, SQLite or the CLI.

pub mod client;
pub mod codes;
pub mod model;
pub mod sign;
pub mod signing_pool;
pub mod stats;
