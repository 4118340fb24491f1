//! Just enough W3C WebDriver to drive a headless Chromium through chromedriver: sessions,
//! navigation, finding, typing, clicking, running scripts and screenshots, over reqwest.

#![allow(dead_code)]

use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use serde_json::{Value, json};

/// The key W3C WebDriver uses for element references.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// Where Debian puts the browser and its driver.
const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// Whether the browser tests can run here.
pub fn available() -> bool {
    std::path::Path::new(CHROMIUM).exists() && std::path::Path::new(CHROMEDRIVER).exists()
}

/// A chromedriver process on a free port, ended on drop.
pub struct ChromeDriver {
    child: Child,
    pub url: String,
    profile: tempfile::TempDir,
}

impl ChromeDriver {
    /// Starts chromedriver and waits until it answers.
    pub async fn start() -> Self {
        let port = super::free_port();
        let child = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            // Its own process group, so that the browsers it starts end with it.
            .process_group(0)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver starts");
        let driver = Self {
            child,
            url: format!("http://127.0.0.1:{port}"),
            profile: tempfile::tempdir().expect("profile dir"),
        };
        let http = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(r) = http.get(format!("{}/status", driver.url)).send().await
                && let Ok(v) = r.json::<Value>().await
                && v["value"]["ready"] == true
            {
                return driver;
            }
            assert!(Instant::now() < deadline, "chromedriver did not start");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// A new headless browser with a fresh profile.
    pub async fn session(&self, language: &str) -> Browser {
        self.session_with(language, &[]).await
    }

    /// A new headless browser with a fresh profile and more command-line switches (such as
    /// `--host-resolver-rules=MAP victim.test 127.0.0.1`).
    pub async fn session_with(&self, language: &str, extra_args: &[String]) -> Browser {
        let profile = self.profile.path().join(format!("p{}", super::free_port()));
        let mut args = vec![
            json!("--headless"),
            json!("--no-sandbox"),
            json!("--disable-gpu"),
            json!("--disable-background-networking"),
            json!("--disable-component-update"),
            json!("--disable-sync"),
            json!("--no-first-run"),
            json!("--disable-dev-shm-usage"),
            json!("--window-size=1100,1400"),
            json!(format!("--lang={language}")),
            json!(format!("--user-data-dir={}", profile.display())),
        ];
        args.extend(extra_args.iter().map(|a| json!(a)));
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": CHROMIUM,
                "args": args,
                "prefs": {"intl.accept_languages": language},
            },
        }}});
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()
            .expect("client");
        let r: Value = http
            .post(format!("{}/session", self.url))
            .json(&caps)
            .send()
            .await
            .expect("new session")
            .json()
            .await
            .expect("session json");
        let id = r["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session: {r}"))
            .to_owned();
        let browser = Browser {
            http,
            base: format!("{}/session/{id}", self.url),
        };
        browser
            .command(
                "POST",
                "/timeouts",
                json!({"script": 30000, "pageLoad": 30000}),
            )
            .await;
        browser
    }
}

impl Drop for ChromeDriver {
    fn drop(&mut self) {
        // A failed test leaves its browsers open: end the whole group, then the driver.
        let _ = Command::new("kill")
            .args(["-KILL", "--"])
            .arg(format!("-{}", self.child.id()))
            .stderr(Stdio::null())
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One browser session.
pub struct Browser {
    http: reqwest::Client,
    base: String,
}

impl Browser {
    async fn command(&self, method: &str, path: &str, body: Value) -> Value {
        let url = format!("{}{path}", self.base);
        let request = match method {
            "GET" => self.http.get(url),
            "DELETE" => self.http.delete(url),
            _ => self.http.post(url).json(&body),
        };
        let r: Value = request
            .send()
            .await
            .expect("webdriver answers")
            .json()
            .await
            .expect("webdriver json");
        if let Some(error) = r["value"]["error"].as_str() {
            panic!(
                "webdriver {method} {path}: {error}: {}",
                r["value"]["message"]
            );
        }
        r["value"].clone()
    }

    /// Opens `url` and waits for it to load.
    pub async fn goto(&self, url: &str) {
        self.command("POST", "/url", json!({"url": url})).await;
    }

    /// The current URL.
    pub async fn url(&self) -> String {
        self.command("GET", "/url", Value::Null)
            .await
            .as_str()
            .unwrap_or("")
            .to_owned()
    }

    /// The page's HTML as the browser holds it.
    pub async fn source(&self) -> String {
        self.command("GET", "/source", Value::Null)
            .await
            .as_str()
            .unwrap_or("")
            .to_owned()
    }

    /// The element matching `css`, waiting up to 10 s for it.
    pub async fn find(&self, css: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let r: Value = self
                .http
                .post(format!("{}/elements", self.base))
                .json(&json!({"using": "css selector", "value": css}))
                .send()
                .await
                .expect("webdriver answers")
                .json()
                .await
                .expect("webdriver json");
            if let Some(id) = r["value"][0][ELEMENT].as_str() {
                return id.to_owned();
            }
            assert!(
                Instant::now() < deadline,
                "no element {css} on {}: {}",
                self.url().await,
                self.source().await
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Types `text` into the field matching `css`.
    pub async fn type_into(&self, css: &str, text: &str) {
        let id = self.find(css).await;
        self.command("POST", &format!("/element/{id}/clear"), json!({}))
            .await;
        self.command(
            "POST",
            &format!("/element/{id}/value"),
            json!({"text": text}),
        )
        .await;
    }

    /// Clicks the element matching `css`.
    pub async fn click(&self, css: &str) {
        let id = self.find(css).await;
        self.command("POST", &format!("/element/{id}/click"), json!({}))
            .await;
    }

    /// The text of the element matching `css`.
    pub async fn text(&self, css: &str) -> String {
        let id = self.find(css).await;
        self.command("GET", &format!("/element/{id}/text"), Value::Null)
            .await
            .as_str()
            .unwrap_or("")
            .to_owned()
    }

    /// Waits until the page's HTML contains `text` (after a click that navigates, the old
    /// page may still be there for a moment).
    pub async fn wait_for_text(&self, text: &str) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let source = self.source().await;
            if source.contains(text) {
                return;
            }
            assert!(Instant::now() < deadline, "never showed {text:?}: {source}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until the URL contains `part`.
    pub async fn wait_for_url(&self, part: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let url = self.url().await;
            if url.contains(part) {
                return url;
            }
            assert!(
                Instant::now() < deadline,
                "never reached {part}; at {url}: {}",
                self.source().await
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Runs a synchronous script.
    pub async fn execute(&self, script: &str, args: Value) -> Value {
        self.command(
            "POST",
            "/execute/sync",
            json!({"script": script, "args": args}),
        )
        .await
    }

    /// Runs a script that calls its last argument when done.
    pub async fn execute_async(&self, script: &str, args: Value) -> Value {
        self.command(
            "POST",
            "/execute/async",
            json!({"script": script, "args": args}),
        )
        .await
    }

    /// Adds a virtual WebAuthn authenticator to the session (WebAuthn Level 3 §11.3 "Add
    /// Virtual Authenticator"): a platform authenticator (CTAP2, internal) that keeps
    /// discoverable credentials, verifies the user and always consents. Returns its id.
    pub async fn add_virtual_authenticator(&self) -> String {
        self.command(
            "POST",
            "/webauthn/authenticator",
            json!({
                "protocol": "ctap2",
                "transport": "internal",
                "hasResidentKey": true,
                "hasUserVerification": true,
                "isUserConsenting": true,
                "isUserVerified": true,
            }),
        )
        .await
        .as_str()
        .expect("authenticator id")
        .to_owned()
    }

    /// The credentials a virtual authenticator holds (WebAuthn Level 3 §11.7 "Get Credentials").
    pub async fn virtual_credentials(&self, authenticator: &str) -> Vec<Value> {
        self.command(
            "GET",
            &format!("/webauthn/authenticator/{authenticator}/credentials"),
            Value::Null,
        )
        .await
        .as_array()
        .cloned()
        .unwrap_or_default()
    }

    /// Gives a virtual authenticator a credential (WebAuthn Level 3 §11.6 "Add Credential"),
    /// in the shape "Get Credentials" returns.
    pub async fn add_virtual_credential(&self, authenticator: &str, credential: Value) {
        self.command(
            "POST",
            &format!("/webauthn/authenticator/{authenticator}/credential"),
            credential,
        )
        .await;
    }

    /// Every cookie the browser holds, for every site (Chrome DevTools Protocol
    /// `Network.getAllCookies`, through chromedriver): objects with `name`, `value`,
    /// `domain`, `path`.
    pub async fn all_cookies(&self) -> Vec<Value> {
        self.command(
            "POST",
            "/goog/cdp/execute",
            json!({"cmd": "Network.getAllCookies", "params": {}}),
        )
        .await["cookies"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// Deletes the current page's cookie `name` (W3C WebDriver "Delete Cookie").
    pub async fn delete_cookie(&self, name: &str) {
        self.command("DELETE", &format!("/cookie/{name}"), Value::Null)
            .await;
    }

    /// Runs a Chrome DevTools Protocol command through chromedriver (`goog/cdp/execute`),
    /// such as `Emulation.setEmulatedMedia`; its result.
    pub async fn cdp(&self, command: &str, params: Value) -> Value {
        self.command(
            "POST",
            "/goog/cdp/execute",
            json!({"cmd": command, "params": params}),
        )
        .await
    }

    /// A PNG of the viewport.
    pub async fn screenshot(&self) -> Vec<u8> {
        let data = self.command("GET", "/screenshot", Value::Null).await;
        base64::engine::general_purpose::STANDARD
            .decode(data.as_str().unwrap_or(""))
            .expect("base64 screenshot")
    }

    /// Ends the session (closes the browser).
    pub async fn quit(self) {
        let _ = self.http.delete(&self.base).send().await;
    }
}
