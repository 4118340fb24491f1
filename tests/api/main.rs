//! The stories over HTTP: the real gateway (and the `portcullis` binary) on ephemeral ports,
//! spoken to as a client, a browser, a raw socket or nginx would. One module per story file;
//! `cargo test --test api login_api::` runs one of them.
//!
//! One binary, so the crate is linked once for all of them. Tests here share a process: they
//! take ports from `support::free_port`, own their database and Redis prefix, and install no
//! process-wide state (the log subscriber is `tests/logs.rs`'s, the counting allocator
//! `tests/allocations.rs`'s).

#[path = "../support/mod.rs"]
mod support;

mod account_api;
mod admin_api;
mod admin_sessions_property;
mod audit_trail;
mod auth_age;
mod browser_refusals;
mod canonical_requests;
mod cli;
mod connections;
mod console;
mod cookies;
mod enforcement;
mod federation;
mod federation_accounts;
mod federation_attacks;
mod federation_github;
mod federation_protocol;
mod federation_sessions;
mod federation_takeover;
mod forward_auth;
mod forward_auth_proxies;
mod forwarding;
mod gateway;
mod identity;
mod invitations_api;
mod login_api;
mod passkeys_api;
mod password_policy;
mod portal;
mod portal_browser;
mod portal_layout;
mod rate_limits;
mod recovery_codes;
mod reload;
mod route_rules;
mod storage_faults;
mod tls;
mod token_times;
mod two_factor_api;
