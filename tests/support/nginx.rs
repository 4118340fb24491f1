//! A real nginx for tests, in its own temporary directory on its own port.
//!
//! Tests that need it are skipped when no nginx binary is installed, except under `CI=true`
//! (`.ci/run` installs it), where a missing nginx is a failure.

#![allow(dead_code)]

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::free_port;

/// The nginx binary, or `None` when it is not installed (a panic under `CI=true`).
pub fn nginx_binary() -> Option<String> {
    for candidate in ["/usr/sbin/nginx", "/usr/bin/nginx", "/usr/local/sbin/nginx"] {
        if Path::new(candidate).exists() {
            return Some(candidate.to_string());
        }
    }
    if super::in_ci() {
        panic!("CI=true but nginx is not installed (apt-get install nginx)");
    }
    None
}

/// A running nginx; stopped (and its directory removed) on drop.
pub struct Nginx {
    child: Child,
    /// The port every `server` block of the config listens on.
    pub port: u16,
    dir: tempfile::TempDir,
}

impl Nginx {
    /// Starts `binary` with `servers` as the body of the `http` block. `servers` receives the
    /// port to listen on (on 127.0.0.1). Waits until nginx accepts connections.
    pub fn start(binary: &str, servers: impl FnOnce(u16) -> String) -> Self {
        let port = free_port();
        Self::start_on(binary, port, &servers(port))
    }

    /// As [`Nginx::start`], on a port chosen beforehand (when what nginx proxies to must
    /// know its address first).
    pub fn start_on(binary: &str, port: u16, servers: &str) -> Self {
        let dir = tempfile::tempdir().expect("nginx temp dir");
        let d = dir.path().display();
        let conf_text = format!(
            r#"
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{ worker_connections 64; }}
http {{
    access_log off;
    client_body_temp_path {d}/body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
{servers}
}}
"#
        );
        let conf = dir.path().join("nginx.conf");
        std::fs::write(&conf, conf_text).expect("nginx.conf written");
        let child = Command::new(binary)
            .arg("-p")
            .arg(dir.path())
            .arg("-c")
            .arg(&conf)
            .args(["-g", "daemon off; master_process off;"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nginx starts");
        let nginx = Self { child, port, dir };
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "nginx never listened: {}",
                nginx.error_log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        nginx
    }

    /// `127.0.0.1:port`.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// `http://127.0.0.1:port`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr())
    }

    /// What nginx logged so far (for failure messages).
    pub fn error_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("error.log")).unwrap_or_default()
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
