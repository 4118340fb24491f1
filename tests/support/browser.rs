//! A browser-like HTTP client for the portal: a cookie jar, form posts, and reading values
//! out of the pages; plus TOTP codes computed as an authenticator app would.

#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use reqwest::StatusCode;
use reqwest::cookie::{CookieStore, Jar};
use reqwest::header::HeaderMap;

/// One answer: status, headers, body text.
pub struct Html {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: String,
}

impl Html {
    /// The `Location` header.
    pub fn location(&self) -> &str {
        self.headers
            .get("location")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }

    /// Every `Set-Cookie` value.
    pub fn set_cookies(&self) -> Vec<String> {
        self.headers
            .get_all("set-cookie")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .map(str::to_owned)
            .collect()
    }

    /// The (unescaped) value of the first input named `name`.
    pub fn input(&self, name: &str) -> Option<String> {
        let needle = format!("name=\"{name}\" value=\"");
        let start = self.body.find(&needle)? + needle.len();
        let end = self.body[start..].find('"')? + start;
        Some(unescape(&self.body[start..end]))
    }

    /// The JSON of the page's first `data-options` attribute (a passkey form's options),
    /// unescaped (panics when the page has none).
    pub fn data_options(&self) -> serde_json::Value {
        let needle = "data-options=\"";
        let start = self
            .body
            .find(needle)
            .unwrap_or_else(|| panic!("no data-options in {}", self.body))
            + needle.len();
        let end = self.body[start..].find('"').expect("a closing quote") + start;
        serde_json::from_str(&unescape(&self.body[start..end])).expect("options are JSON")
    }

    /// The form's CSRF token (panics when the page has no form).
    pub fn csrf(&self) -> String {
        self.input("csrf_token")
            .unwrap_or_else(|| panic!("no csrf_token in {}", self.body))
    }
}

/// Undoes minijinja's HTML escaping.
pub fn unescape(s: &str) -> String {
    s.replace("&#x2f;", "/")
        .replace("&#x27;", "'")
        .replace("&quot;", "\"")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&")
}

/// A client with its own cookie jar that follows no redirects.
pub struct Browser {
    pub http: reqwest::Client,
    pub jar: Arc<Jar>,
    pub base: String,
}

impl Browser {
    /// A fresh browser for the gateway at `base` (`http://127.0.0.1:PORT`).
    pub fn new(base: &str) -> Self {
        Self::with_builder(base, reqwest::Client::builder())
    }

    /// A fresh browser whose connections come from `address` (any `127.x.y.z` on Linux), so
    /// that a proxy in front can be seen to pass on the client's own address.
    pub fn from_address(base: &str, address: std::net::IpAddr) -> Self {
        Self::with_builder(base, reqwest::Client::builder().local_address(address))
    }

    /// A fresh browser made from `builder` (a CA to trust, names to resolve).
    pub fn with_builder(base: &str, builder: reqwest::ClientBuilder) -> Self {
        let jar = Arc::new(Jar::default());
        let http = builder
            .cookie_provider(jar.clone())
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(10))
            .build()
            .expect("client");
        Self {
            http,
            jar,
            base: base.to_owned(),
        }
    }

    fn url(&self, path: &str) -> String {
        if path.starts_with("http") {
            path.to_owned()
        } else {
            format!("{}{path}", self.base)
        }
    }

    async fn read(response: reqwest::Response) -> Html {
        let status = response.status();
        let headers = response.headers().clone();
        let body = response.text().await.expect("body");
        Html {
            status,
            headers,
            body,
        }
    }

    /// `GET path` as a browser navigating (Accept: text/html).
    pub async fn get(&self, path: &str) -> Html {
        self.get_with(path, &[]).await
    }

    /// `GET path` with extra headers.
    pub async fn get_with(&self, path: &str, headers: &[(&str, &str)]) -> Html {
        let mut request = self
            .http
            .get(self.url(path))
            .header("accept", "text/html,application/xhtml+xml");
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        Self::read(request.send().await.expect("request sent")).await
    }

    /// Posts a form as a same-origin page would.
    pub async fn post(&self, path: &str, fields: &[(&str, &str)]) -> Html {
        self.post_with(path, fields, &[("sec-fetch-site", "same-origin")])
            .await
    }

    /// Posts a form with the given extra headers (and no others).
    pub async fn post_with(
        &self,
        path: &str,
        fields: &[(&str, &str)],
        headers: &[(&str, &str)],
    ) -> Html {
        let mut request = self
            .http
            .post(self.url(path))
            .header("accept", "text/html")
            .form(fields);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        Self::read(request.send().await.expect("request sent")).await
    }

    /// The value of cookie `name` the jar would send to the gateway.
    pub fn cookie(&self, name: &str) -> Option<String> {
        self.cookie_for("/", name)
    }

    /// The value of cookie `name` the jar would send with a request for `path`.
    pub fn cookie_for(&self, path: &str, name: &str) -> Option<String> {
        let url = reqwest::Url::parse(&self.base)
            .and_then(|base| base.join(path))
            .expect("a URL");
        let header = self.jar.cookies(&url)?;
        header
            .to_str()
            .ok()?
            .split(';')
            .filter_map(|pair| pair.trim().split_once('='))
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.to_owned())
    }

    /// Signs in through the form; returns the answer to the post.
    pub async fn sign_in(&self, email: &str, password: &str, return_to: &str) -> Html {
        let page = self
            .get(&format!("/auth/login?return_to={}", urlencode(return_to)))
            .await;
        assert_eq!(page.status, StatusCode::OK, "{}", page.body);
        self.post(
            "/auth/login",
            &[
                ("csrf_token", &page.csrf()),
                ("email", email),
                ("password", password),
                ("return_to", return_to),
            ],
        )
        .await
    }
}

/// Percent-encodes a query value.
pub fn urlencode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}
