//! `kind = "github"`: GitHub's OAuth2 apps, which have no ID token. The code is exchanged at
//! `{web_url}/login/oauth/access_token` (with the PKCE verifier), then who it is comes from
//! the REST API: `{api_url}/user` (the numeric `id` is the subject; a login can be renamed)
//! and `{api_url}/user/emails` (the primary address, and whether GitHub verified it).

use openidconnect::{CsrfToken, PkceCodeChallenge};
use serde::Deserialize;

use super::http::{Http, read_capped, transport_error};
use super::oidc::Started;
use super::{Asserted, FederationError, claims};
use crate::config::IdentityProviderConfig;

/// GitHub's REST API version this speaks (its `X-GitHub-Api-Version`).
const API_VERSION: &str = "2022-11-28";

/// One GitHub (or GitHub Enterprise Server) OAuth app.
pub struct GithubProvider {
    id: String,
    client_id: String,
    secret: String,
    redirect: String,
    scopes: Vec<String>,
    web_url: String,
    api_url: String,
}

#[derive(Deserialize)]
struct TokenAnswer {
    access_token: Option<String>,
    error: Option<String>,
    error_description: Option<String>,
}

#[derive(Deserialize)]
struct GithubUser {
    id: u64,
    #[serde(default)]
    name: Option<String>,
}

#[derive(Deserialize)]
struct GithubEmail {
    email: String,
    #[serde(default)]
    primary: bool,
    #[serde(default)]
    verified: bool,
}

impl GithubProvider {
    /// The app of `config` with its secret.
    pub fn new(config: &IdentityProviderConfig, secret: &str, redirect_uri: &str) -> Self {
        Self {
            id: config.id.to_string(),
            client_id: config.client_id.clone(),
            secret: secret.to_owned(),
            redirect: redirect_uri.to_owned(),
            scopes: config.effective_scopes(),
            web_url: config.web_url.as_str().trim_end_matches('/').to_owned(),
            api_url: config.api_url.as_str().trim_end_matches('/').to_owned(),
        }
    }

    /// The authorization request: a fresh `state` and PKCE (S256) verifier; no nonce.
    pub fn start(&self) -> Result<Started, FederationError> {
        let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
        let state = CsrfToken::new_random();
        let mut url = url::Url::parse(&format!("{}/login/oauth/authorize", self.web_url))
            .map_err(|e| self.unavailable("authorize URL", &e))?;
        url.query_pairs_mut()
            .append_pair("client_id", &self.client_id)
            .append_pair("redirect_uri", &self.redirect)
            .append_pair("scope", &self.scopes.join(" "))
            .append_pair("state", state.secret())
            .append_pair("code_challenge", challenge.as_str())
            .append_pair("code_challenge_method", "S256")
            .append_pair("allow_signup", "false");
        Ok(Started {
            url: url.to_string(),
            state: state.secret().clone(),
            nonce: String::new(),
            verifier: verifier.secret().clone(),
        })
    }

    /// RFC 9207 for an app that sends no `iss`: GitHub names no issuer, so a callback that
    /// carries one must name this app's `web_url` (the server it was sent to); anything else
    /// is another provider's answer.
    pub fn check_response_issuer(&self, iss: Option<&str>) -> Result<(), FederationError> {
        match iss {
            Some(iss) if iss.trim_end_matches('/') != self.web_url => {
                tracing::warn!(target: crate::telemetry::SECURITY, event = "federated_callback_refused", provider = %self.id, reason = "iss", present = true);
                Err(FederationError::InvalidToken("iss"))
            }
            _ => Ok(()),
        }
    }

    /// Exchanges `code`, then reads the user and their addresses.
    pub async fn finish(
        &self,
        http: &Http,
        code: &str,
        verifier: &str,
    ) -> Result<Asserted, FederationError> {
        let token = self.exchange(http, code, verifier).await?;
        let user: GithubUser = self.api(http, "/user", &token).await?;
        let emails: Vec<GithubEmail> = self.api(http, "/user/emails", &token).await?;
        let primary = emails.iter().find(|e| e.primary);
        let (first, last) = match user.name.as_deref().map(str::trim) {
            Some(name) => match name.rsplit_once(' ') {
                Some((first, last)) => (first.to_owned(), last.to_owned()),
                None => (name.to_owned(), String::new()),
            },
            None => (String::new(), String::new()),
        };
        Ok(Asserted {
            subject: claims::github_subject(&self.id, user.id)?,
            email: primary.map(|e| e.email.clone()),
            email_verified: primary.is_some_and(|e| e.verified),
            given_name: first,
            family_name: last,
            id_token: String::new(),
            amr: Vec::new(),
            auth_time: None,
            claims: serde_json::Map::new(),
        })
    }

    /// The token request (RFC 6749 §4.1.3 with RFC 7636's verifier); GitHub answers its
    /// errors with 200 and an `error` field.
    async fn exchange(
        &self,
        http: &Http,
        code: &str,
        verifier: &str,
    ) -> Result<String, FederationError> {
        let response = http
            .client()
            .post(format!("{}/login/oauth/access_token", self.web_url))
            .header("accept", "application/json")
            .form(&[
                ("client_id", self.client_id.as_str()),
                ("client_secret", self.secret.as_str()),
                ("code", code),
                ("redirect_uri", self.redirect.as_str()),
                ("code_verifier", verifier),
            ])
            .send()
            .await
            .map_err(|e| self.unavailable("token", &transport_error(&e)))?;
        let body = read_capped(response)
            .await
            .map_err(|e| self.unavailable("token", &e))?;
        let answer: TokenAnswer = serde_json::from_slice(&body)
            .map_err(|e| FederationError::invalid_answer(&self.id, "github token", &e))?;
        match (answer.access_token, answer.error) {
            (_, Some(error)) => Err(FederationError::ProviderRefused {
                error,
                description: answer.error_description,
            }),
            (Some(token), None) => Ok(token),
            (None, None) => Err(FederationError::invalid_answer(
                &self.id,
                "github token",
                &"no access token",
            )),
        }
    }

    /// A GET of the REST API with the user's token.
    async fn api<T: serde::de::DeserializeOwned>(
        &self,
        http: &Http,
        path: &str,
        token: &str,
    ) -> Result<T, FederationError> {
        let response = http
            .client()
            .get(format!("{}{path}", self.api_url))
            .bearer_auth(token)
            .header("accept", "application/vnd.github+json")
            .header("x-github-api-version", API_VERSION)
            .send()
            .await
            .map_err(|e| self.unavailable(path, &transport_error(&e)))?;
        if !response.status().is_success() {
            let status = response.status();
            return Err(self.unavailable(path, &status));
        }
        let body = read_capped(response)
            .await
            .map_err(|e| self.unavailable(path, &e))?;
        // Reached, but an answer of the wrong shape (an id that is not a positive integer,
        // a `verified` that is not a boolean): refused as such.
        serde_json::from_slice(&body)
            .map_err(|e| FederationError::invalid_answer(&self.id, &format!("github {path}"), &e))
    }

    fn unavailable(&self, what: &str, e: &dyn std::fmt::Display) -> FederationError {
        FederationError::unavailable(&self.id, &format!("github {what}"), e)
    }
}
