//! The contracts: conformance suites every implementation of a seam must pass (`UserStore`,
//! `SessionStore`, `RateLimiter`, the mail transports), the crypto checked against independent
//! implementations, the documents in the repository held to the running gateway (the
//! OpenAPI document, the Grafana dashboard), the messages people and clients read (the
//! catalogues and the API's answers, held to one sentence style), and the account core
//! called directly.
//! `cargo test --test contracts store::` runs one.
//!
//! One binary, so the crate is linked once for all of them. Tests here share a process: each
//! owns its database, Redis prefix and ports, and a test that captures logs does so with a
//! subscriber scoped to its own thread, never the process-wide one.

#[path = "../support/mod.rs"]
mod support;

mod accounts;
mod auth_crypto;
mod mail;
mod messages;
mod observability;
mod openapi;
mod ratelimit;
mod sessions;
mod store;
mod store_audit;
mod store_federation;
mod totp;
