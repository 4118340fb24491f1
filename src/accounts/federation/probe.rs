//! `check-config`'s look at each `kind = "oidc"` provider: its discovery document fetched
//! (with a short timeout) and checked as a sign-in would check it. A provider that is down
//! is a finding to report, not an invalid configuration.

use std::time::Duration;

use super::discovery::{self, Metadata};
use super::http::Http;
use super::oidc::issuer_of;
use crate::config::{Config, ProviderKind};

/// How long `check-config` waits for one provider.
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

/// What one provider's discovery said.
#[derive(Debug)]
pub struct Probe {
    /// The provider's id.
    pub id: String,
    /// The endpoints its document names (name, URL), or why it cannot be used.
    pub outcome: Result<Vec<(&'static str, String)>, String>,
}

/// Fetches every `kind = "oidc"` provider's discovery document, in config order.
pub async fn probe_discovery(config: &Config) -> Vec<Probe> {
    let http = match Http::with_timeout(PROBE_TIMEOUT) {
        Ok(http) => http,
        Err(e) => {
            return oidc_ids(config)
                .map(|id| Probe {
                    id,
                    outcome: Err(e.to_string()),
                })
                .collect();
        }
    };
    let mut probes = Vec::new();
    for provider in config
        .identity_providers
        .iter()
        .filter(|p| p.kind == ProviderKind::Oidc)
    {
        let outcome = match issuer_of(provider) {
            Ok(issuer) => discovery::fetch(&http, &issuer)
                .await
                .map(|m| endpoints(&m))
                .map_err(|f| f.to_string()),
            Err(e) => Err(e),
        };
        probes.push(Probe {
            id: provider.id.to_string(),
            outcome,
        });
    }
    probes
}

fn oidc_ids(config: &Config) -> impl Iterator<Item = String> + '_ {
    config
        .identity_providers
        .iter()
        .filter(|p| p.kind == ProviderKind::Oidc)
        .map(|p| p.id.to_string())
}

/// The endpoints a document names, for the report.
fn endpoints(m: &Metadata) -> Vec<(&'static str, String)> {
    let extra = m.additional_metadata();
    [
        (
            "authorization_endpoint",
            Some(m.authorization_endpoint().url().to_string()),
        ),
        (
            "token_endpoint",
            m.token_endpoint().map(|u| u.url().to_string()),
        ),
        ("jwks_uri", Some(m.jwks_uri().url().to_string())),
        (
            "userinfo_endpoint",
            m.userinfo_endpoint().map(|u| u.url().to_string()),
        ),
        (
            "end_session_endpoint",
            extra
                .end_session_endpoint
                .as_ref()
                .map(|u| u.url().to_string()),
        ),
    ]
    .into_iter()
    .filter_map(|(name, url)| url.map(|u| (name, u)))
    .collect()
}
