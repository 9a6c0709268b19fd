//! The server's integration tests: the real router on a real TCP listener, a real
//! SQLite store in a temporary directory, and a manual clock.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod harness;

mod agents;
mod authority;
mod corpus;
mod errors;
mod escalations;
mod pipeline;
mod policyops;
mod webhooks;
mod sessions;
mod signature;
mod vault;
