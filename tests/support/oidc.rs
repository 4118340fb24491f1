//! A real OpenID Provider on loopback: `oidc-provider` from npm (tests/oidc/op.mjs, its
//! packages installed by `.ci/run` with `npm ci --prefix tests/oidc`), and the steps of its
//! development login and consent as a browser takes them.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::Value;

use super::browser::{Browser, Html, unescape};

/// One running `oidc-provider`; killed when dropped.
pub struct TestOp {
    /// `http://127.0.0.1:PORT`, the issuer as its discovery document names it.
    pub issuer: String,
    port: u16,
    child: Option<Child>,
}

/// The directory of the OP's script and packages.
fn op_dir() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/oidc")
}

impl TestOp {
    /// Picks the port (the issuer must be known before the gateway's config is written);
    /// [`TestOp::start`] starts it once the redirect URIs are known. `None` when node or the
    /// packages are missing outside CI (under `CI=true` that is a failure).
    pub fn reserve() -> Option<Self> {
        let ready = op_dir().join("node_modules/oidc-provider").is_dir()
            && Command::new("node").arg("--version").output().is_ok();
        if !ready {
            assert!(
                !super::in_ci(),
                "the test OpenID Provider needs node and `npm ci --prefix tests/oidc`"
            );
            eprintln!("skipped: node or tests/oidc/node_modules missing");
            return None;
        }
        let port = super::free_port();
        Some(Self {
            issuer: format!("http://127.0.0.1:{port}"),
            port,
            child: None,
        })
    }

    /// Starts it with `clients` (`client_id`, `client_secret`, redirect URI) and `users`
    /// (account id → claims); returns once it listens.
    pub fn start(&mut self, clients: &[(&str, &str, &str)], users: Value) {
        let clients: Vec<Value> = clients
            .iter()
            .map(|(id, secret, redirect)| {
                // The portal's sign-in page is where a sign-out at the provider comes back to.
                let origin = reqwest::Url::parse(redirect)
                    .map(|u| u.origin().ascii_serialization())
                    .unwrap_or_default();
                serde_json::json!({
                    "client_id": id, "client_secret": secret, "redirect_uris": [redirect],
                    "post_logout_redirect_uris": [format!("{origin}/auth/login")],
                })
            })
            .collect();
        let config = serde_json::json!({"port": self.port, "clients": clients, "users": users});
        let mut child = Command::new("node")
            .arg("op.mjs")
            .arg(config.to_string())
            .current_dir(op_dir())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("node starts");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            let ready = lines.any(|l| l.is_ok_and(|l| l.trim() == "ready"));
            let _ = tx.send(ready);
            // Keep reading so the child never blocks on a full pipe.
            for _ in lines {}
        });
        self.child = Some(child);
        let ready = rx.recv_timeout(Duration::from_secs(20)).unwrap_or(false);
        assert!(ready, "the OpenID Provider did not start");
    }
}

impl Drop for TestOp {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// `url` resolved against `base`.
fn resolve(base: &str, url: &str) -> String {
    reqwest::Url::parse(base)
        .and_then(|b| b.join(url))
        .map(|u| u.to_string())
        .unwrap_or_else(|_| url.to_owned())
}

/// The first form of a page: its action and its inputs (name, value).
fn form_of(page: &Html) -> Option<(String, Vec<(String, String)>)> {
    let start = page.body.find("<form")?;
    let form = &page.body[start..];
    let end = form.find("</form>").unwrap_or(form.len());
    let form = &form[..end];
    let action = attribute(form, "action")?;
    let mut inputs = Vec::new();
    for chunk in form.split("<input").skip(1) {
        let tag = &chunk[..chunk.find('>').unwrap_or(chunk.len())];
        if let Some(name) = attribute(tag, "name") {
            inputs.push((name, attribute(tag, "value").unwrap_or_default()));
        }
    }
    Some((unescape(&action), inputs))
}

fn attribute(tag: &str, name: &str) -> Option<String> {
    let needle = format!("{name}=\"");
    let start = tag.find(&needle)? + needle.len();
    let end = tag[start..].find('"')? + start;
    Some(tag[start..end].to_owned())
}

/// Follows redirects from `url` and answers the OP's login (as `login`) and consent forms,
/// until an answer that is neither: the gateway's answer after its callback (or an error).
/// Returns that answer and the URL it came from.
pub async fn through_op(browser: &Browser, url: &str, login: &str) -> (Html, String) {
    through_op_until(browser, url, login, |_| false).await
}

/// [`through_op`], stopping before a redirect to a URL `stop` accepts: returns the page that
/// redirected there and that URL (not fetched).
pub async fn through_op_until(
    browser: &Browser,
    url: &str,
    login: &str,
    stop: impl Fn(&str) -> bool,
) -> (Html, String) {
    let mut url = resolve(&browser.base, url);
    let mut page = browser.get(&url).await;
    for _ in 0..20 {
        if page.status.is_redirection() {
            url = resolve(&url, page.location());
            if stop(&url) {
                return (page, url);
            }
            page = browser.get(&url).await;
            continue;
        }
        let on_op = !url.starts_with(&browser.base);
        match form_of(&page) {
            Some((action, inputs)) if on_op && page.status == StatusCode::OK => {
                // The OP's sign-out confirmation submits with its "yes" button.
                let confirm = page.body.contains("name=\"logout\"");
                let fields: Vec<(String, String)> = inputs
                    .into_iter()
                    .chain(confirm.then(|| ("logout".to_owned(), "yes".to_owned())))
                    .map(|(n, v)| match n.as_str() {
                        "login" => (n, login.to_owned()),
                        "password" => (n, "any password".to_owned()),
                        _ => (n, v),
                    })
                    .collect();
                let fields: Vec<(&str, &str)> = fields
                    .iter()
                    .map(|(n, v)| (n.as_str(), v.as_str()))
                    .collect();
                url = resolve(&url, &action);
                page = browser.post_with(&url, &fields, &[]).await;
            }
            _ => return (page, url),
        }
    }
    panic!("too many steps at the OpenID Provider: {url}");
}
