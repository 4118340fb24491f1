#![warn(missing_docs)]
//! Portcullis: a reverse-proxy authentication gateway on Pingora.
//!
//! See `ARCHITECTURE.md` for the map of the code.

pub mod access;
pub mod accounts;
pub mod api;
pub mod app;
pub mod auth;
pub mod backend;
pub mod config;
pub mod domain;
pub mod gateway;
pub mod i18n;
pub mod mail;
pub mod metrics;
pub mod passkeys;
pub mod portal;
pub mod ratelimit;
pub mod reply;
pub mod server;
pub mod session;
pub mod store;
pub mod telemetry;
