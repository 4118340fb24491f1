//! Who may pass: credentials, the cached per-request check, policy decisions and identity
//! header values, for the proxy and the account API alike.

pub mod credentials;
pub mod gatekeeper;
pub mod identity;
pub mod policy;
