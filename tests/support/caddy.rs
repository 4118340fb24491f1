//! A real Caddy for tests, in its own temporary directory (its home, data and config too) on
//! its own port.
//!
//! Tests that need it are skipped when no caddy binary is installed, except under `CI=true`
//! (`.ci/run` installs it), where a missing caddy is a failure.

#![allow(dead_code)]

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The caddy binary, or `None` when it is not installed (a panic under `CI=true`).
pub fn caddy_binary() -> Option<String> {
    for candidate in ["/usr/bin/caddy", "/usr/local/bin/caddy"] {
        if Path::new(candidate).exists() {
            return Some(candidate.to_string());
        }
    }
    if super::in_ci() {
        panic!("CI=true but caddy is not installed (apt-get install caddy)");
    }
    None
}

/// A running Caddy; stopped (and its directory removed) on drop.
pub struct Caddy {
    child: Child,
    /// The port the site listens on (on 127.0.0.1), chosen by the caller.
    pub port: u16,
    dir: tempfile::TempDir,
}

impl Caddy {
    /// Starts `binary` with `sites` (Caddyfile site blocks that listen on `port`) after a
    /// global block that turns off the admin endpoint and automatic HTTPS. Waits until the
    /// port accepts connections.
    pub fn start_on(binary: &str, port: u16, sites: &str) -> Self {
        let dir = tempfile::tempdir().expect("caddy temp dir");
        let caddyfile = dir.path().join("Caddyfile");
        let text = format!("{{\n\tadmin off\n\tauto_https off\n}}\n\n{sites}\n");
        std::fs::write(&caddyfile, text).expect("Caddyfile written");
        let log = std::fs::File::create(dir.path().join("caddy.log")).expect("caddy log");
        let child = Command::new(binary)
            .arg("run")
            .arg("--config")
            .arg(&caddyfile)
            .args(["--adapter", "caddyfile"])
            .env("HOME", dir.path())
            .env("XDG_DATA_HOME", dir.path())
            .env("XDG_CONFIG_HOME", dir.path())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("caddy starts");
        let caddy = Self { child, port, dir };
        let deadline = Instant::now() + Duration::from_secs(15);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "caddy never listened: {}",
                caddy.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        caddy
    }

    /// `http://127.0.0.1:port`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// What Caddy logged so far (for failure messages).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("caddy.log")).unwrap_or_default()
    }
}

impl Drop for Caddy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
