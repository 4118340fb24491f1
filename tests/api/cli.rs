//! The `portcullis` binary as an operator uses it: config errors, env overrides, binds, signals.

use std::io::Read;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::*;

fn portcullis() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_portcullis"));
    for (key, _) in std::env::vars() {
        if key.starts_with("PORTCULLIS_") {
            cmd.env_remove(key);
        }
    }
    cmd
}

fn write_config(scratch: &Scratch, extra: &str) -> std::path::PathBuf {
    let path = scratch.path("portcullis.toml");
    std::fs::write(&path, test_config_text(scratch.dir.path(), extra)).unwrap();
    path
}

fn run(cmd: &mut Command) -> (i32, String, String) {
    let out = cmd.output().expect("binary runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Waits for the child to exit, killing it after `limit`.
fn wait_exit(child: &mut Child, limit: Duration) -> Option<std::process::ExitStatus> {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if let Some(status) = child.try_wait().unwrap() {
            return Some(status);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    None
}

/// The `listen` address written in a config file's text.
fn listen_address(config_text: &str) -> String {
    config_text
        .lines()
        .find_map(|l| l.strip_prefix("listen = \""))
        .and_then(|l| l.strip_suffix('"'))
        .expect("a listen address")
        .to_string()
}

/// `portcullis serve` on a config, in the scratch directory, quiet.
fn serve(scratch: &Scratch, config: &std::path::Path) -> Child {
    portcullis()
        .arg("serve")
        .arg("--config")
        .arg(config)
        .current_dir(scratch.dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

fn sigterm(child: &Child) {
    let status = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status()
        .unwrap();
    assert!(status.success());
}

fn wait_listening(addr: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(addr).is_err() {
        assert!(Instant::now() < deadline, "{addr} never listened");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn check_config_accepts_the_shipped_configs() {
    // The embedded default keeps sign-up open for the quick start, and says what that means
    // for its role-less route; the production example takes invitations only.
    for (file, warned) in [
        ("config/portcullis.toml", true),
        ("config/production.example.toml", false),
    ] {
        let (code, out, err) = run(portcullis().args(["check-config", "--config", file]));
        assert_eq!(code, 0, "{file}: {out}{err}");
        assert!(out.contains("valid"), "{out}");
        assert_eq!(
            err.contains("warning: registration is open"),
            warned,
            "{file}: {err}"
        );
        if warned {
            assert!(err.contains("routes[0] (\"app\")"), "{err}");
        }
    }
}

#[test]
fn check_config_says_whether_passkeys_work_and_why_not() {
    let (code, out, err) =
        run(portcullis().args(["check-config", "--config", "config/portcullis.toml"]));
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("passkeys: on (relying-party id localhost, origin http://localhost:8080)"),
        "the embedded default has passkeys on: {out}"
    );
    // The test config's public URL is an IP address: valid, but no passkeys.
    let scratch = Scratch::new();
    let path = write_config(&scratch, "");
    let (code, out, err) = run(portcullis().arg("check-config").arg("--config").arg(&path));
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("passkeys: off"), "{out}");
    assert!(out.contains("IP address"), "{out}");
}

#[test]
fn unknown_key_names_the_key_and_the_file() {
    let scratch = Scratch::new();
    let path = write_config(&scratch, "");
    let text = std::fs::read_to_string(&path)
        .unwrap()
        .replace("threads = 2", "threads = 2\nthreds = 3");
    std::fs::write(&path, text).unwrap();
    let (code, _, err) = run(portcullis().arg("check-config").arg("--config").arg(&path));
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("threds"), "{err}");
    assert!(err.contains(&path.display().to_string()), "{err}");
}

#[test]
fn bad_values_name_their_key() {
    let cases = [
        ("[lockout]\nduration = \"a while\"\n", "lockout.duration"),
        (
            "[cors]\nallowed_origins = [\"not an origin\"]\n",
            "cors.allowed_origins[0]",
        ),
        (
            "[[routes]]\npath_prefix = \"/x\"\nupstream = \"gopher://x\"\n",
            "routes[0].upstream",
        ),
        // Well-formed but unresolvable (RFC 6761 §6.4): resolved by check-config as at start.
        (
            "[[routes]]\npath_prefix = \"/x\"\nupstream = \"http://upstream.invalid\"\n",
            "routes[0]: upstream: cannot resolve",
        ),
        (
            "[[routes]]\npath_prefix = \"/x\"\nupstream = \"http://127.0.0.1:1\"\npolicy = \"sometimes\"\n",
            "policy",
        ),
        (
            "[[routes]]\npath_prefix = \"/api/auth\"\nupstream = \"http://127.0.0.1:1\"\n",
            "routes[0].path_prefix",
        ),
    ];
    for (extra, key) in cases {
        let scratch = Scratch::new();
        let path = write_config(&scratch, extra);
        let (code, _, err) = run(portcullis().arg("check-config").arg("--config").arg(&path));
        assert_eq!(code, 2, "{extra}: {err}");
        assert!(err.contains(key), "expected {key} in: {err}");
    }
}

#[test]
fn a_broken_portal_template_fails_check_config_naming_the_file() {
    let scratch = Scratch::new();
    let templates = scratch.path("portal");
    std::fs::create_dir_all(&templates).unwrap();
    std::fs::write(
        templates.join("account.html"),
        "{% block content %}{{ oops(",
    )
    .unwrap();
    let config = write_config(
        &scratch,
        &format!(
            "[portal]\ntemplates_dir = {:?}\n",
            templates.display().to_string()
        ),
    );
    let (code, _, stderr) = run(portcullis()
        .arg("--config")
        .arg(&config)
        .arg("check-config"));
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("account.html"), "{stderr}");
}

/// What `serve` reads beside the configuration — key files, portal images — is read by
/// `check-config` too, and a start refuses it (exit 2, the variable named) before it opens
/// the database or creates a key.
#[test]
fn files_the_config_names_are_checked_before_anything_is_opened() {
    let scratch = Scratch::new();
    let path = write_config(&scratch, "");
    let missing = scratch.path("no-such.pem");
    let not_a_key = scratch.path("not-a-key.pem");
    std::fs::write(
        &not_a_key,
        "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n",
    )
    .unwrap();
    let cases = [
        (
            "PORTCULLIS_TOKENS__VERIFICATION_KEY_FILES",
            format!("[{:?}]", missing.display().to_string()),
            "no-such.pem",
        ),
        (
            "PORTCULLIS_TOKENS__VERIFICATION_KEY_FILES",
            format!("[{:?}]", not_a_key.display().to_string()),
            "not-a-key.pem",
        ),
        (
            "PORTCULLIS_PORTAL__FAVICON_FILE",
            scratch.path("icon.png").display().to_string(),
            "portal.favicon_file",
        ),
    ];
    for (variable, value, named) in cases {
        for command in ["check-config", "serve"] {
            let (code, _, err) = run(portcullis()
                .arg(command)
                .env("PORTCULLIS_CONFIG", &path)
                .env(variable, &value)
                .current_dir(scratch.dir.path()));
            assert_eq!(code, 2, "{command} {variable}={value}: {err}");
            assert!(err.contains(named), "{command}: {err}");
            let said_twice = err.matches("No such file or directory").count() > 1;
            assert!(!said_twice, "{command}: {err}");
            assert!(
                !scratch.path("data").exists(),
                "{command} {variable}: nothing written before the refusal"
            );
        }
    }
}

/// A reader that stops reading (`portcullis user list | head -1`) ends a command quietly:
/// exit 0, no panic.
#[test]
fn output_into_a_closed_pipe_ends_the_command_quietly() {
    let scratch = Scratch::new();
    let path = write_config(&scratch, "");
    for args in [
        &["user", "list"][..],
        &["user", "list", "--json"],
        &["audit"],
        &["check-config"],
    ] {
        let mut child = portcullis()
            .arg("--config")
            .arg(&path)
            .args(args)
            .current_dir(scratch.dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        drop(child.stdout.take());
        let status = wait_exit(&mut child, Duration::from_secs(30)).expect("the command ends");
        let mut err = String::new();
        child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut err)
            .unwrap();
        assert!(!err.contains("panicked"), "{args:?}: {err}");
        assert_eq!(status.code(), Some(0), "{args:?}: {err}");
    }
}

#[test]
fn missing_file_is_a_clear_error() {
    let (code, _, err) =
        run(portcullis().args(["check-config", "--config", "/nonexistent/p.toml"]));
    assert_eq!(code, 2);
    assert!(err.contains("/nonexistent/p.toml"), "{err}");
}

#[test]
fn env_overrides_apply_and_bad_ones_name_the_variable() {
    let scratch = Scratch::new();
    let path = write_config(&scratch, "");
    let (code, _, err) = run(portcullis()
        .arg("check-config")
        .env("PORTCULLIS_CONFIG", &path)
        .env("PORTCULLIS_SERVER__THREADS", "0"));
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("server.threads"), "{err}");
    assert!(err.contains("PORTCULLIS_SERVER__THREADS"), "{err}");

    let (code, _, err) = run(portcullis()
        .arg("check-config")
        .env("PORTCULLIS_CONFIG", &path)
        .env("PORTCULLIS_RATE_LIMITS__LOGIN", "ten per minute"));
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("rate_limits.login"), "{err}");

    let (code, _, err) = run(portcullis()
        .arg("check-config")
        .env("PORTCULLIS_CONFIG", &path)
        .env("PORTCULLIS_SERVER__NO_SUCH_KEY", "1"));
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("no_such_key"), "{err}");

    // A valid override takes effect: the gateway listens where the environment says.
    let port = free_port();
    let mut child = portcullis()
        .arg("serve")
        .env("PORTCULLIS_CONFIG", &path)
        .env("PORTCULLIS_SERVER__LISTEN", format!("127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .current_dir(scratch.dir.path())
        .spawn()
        .unwrap();
    wait_listening(&format!("127.0.0.1:{port}"));
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn taken_port_exits_non_zero_at_once() {
    let scratch = Scratch::new();
    let path = write_config(&scratch, "");
    let text = std::fs::read_to_string(&path).unwrap();
    let listen = listen_address(&text);
    let _holder = std::net::TcpListener::bind(&listen).unwrap();
    let started = Instant::now();
    let mut child = portcullis()
        .arg("serve")
        .arg("--config")
        .arg(&path)
        .current_dir(scratch.dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let status = wait_exit(&mut child, Duration::from_secs(10)).expect("exits by itself");
    assert!(!status.success());
    assert!(started.elapsed() < Duration::from_secs(10));
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert!(
        err.contains(&listen) && err.contains("server.listen"),
        "{err}"
    );
}

/// How long after its last answer a gateway told to stop may take to exit: far less than
/// its grace period (30 s where it matters), far more than it needs.
const EXIT_BOUND: Duration = Duration::from_secs(5);

#[test]
fn sigterm_shuts_down_cleanly_and_writes_log_files() {
    let scratch = Scratch::new();
    let path = write_config(&scratch, "");
    let text = std::fs::read_to_string(&path)
        .unwrap()
        .replace(
            "[logging]\ndir = \"\"",
            &format!(
                "[logging]\nformat = \"json\"\ndir = \"{}\"",
                scratch.path("logs").display()
            ),
        )
        .replace("shutdown_grace = \"1s\"", "shutdown_grace = \"30s\"");
    std::fs::write(&path, &text).unwrap();
    let listen = listen_address(&text);
    let health = || run(portcullis().arg("--config").arg(&path).arg("health"));
    let (code, out, err) = health();
    assert_ne!(code, 0, "nothing runs yet: {out}{err}");
    assert!(err.contains("admin listener"), "{err}");
    let mut child = serve(&scratch, &path);
    wait_listening(&listen);
    // `health` asks the admin listener the config names, as the container's check does.
    let (code, out, err) = health();
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.starts_with("healthy"), "{out}");
    // Pingora installs its signal handlers just after the listeners open.
    std::thread::sleep(Duration::from_millis(500));
    sigterm(&child);
    // Nothing in flight: no wait for the 30 s grace.
    let exit = wait_exit(&mut child, EXIT_BOUND).expect("stops with nothing in flight");
    assert!(exit.success(), "{exit:?}");
    assert_ne!(health().0, 0, "stopped");
    for file in ["combined.log", "error.log", "security.log"] {
        assert!(scratch.path("logs").join(file).exists(), "{file} missing");
    }
    let combined = std::fs::read_to_string(scratch.path("logs/combined.log")).unwrap();
    // Written just before the exit, so the files were flushed.
    assert!(combined.contains("portcullis stopped"), "{combined}");
    let first = combined.lines().next().expect("a log line");
    let line: serde_json::Value = serde_json::from_str(first).expect("JSON lines");
    assert!(line["timestamp"].is_string());
}

/// `serve` runs the proxy on one runtime per worker thread (the in-process test gateways use
/// a work-stealing one): authenticated requests over many connections, so both workers carry
/// some, all reach the upstream with the identity of the caller.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_forwards_authenticated_requests_on_every_worker() {
    let upstream = EchoUpstream::start().await;
    let scratch = Scratch::new();
    // The account below is never verified: this story is about workers, not addresses.
    let route = format!(
        "[[routes]]\npath_prefix = \"/\"\nupstream = \"{}\"\npolicy = \"authenticated\"\nrequire_verified_email = false\n",
        upstream.url()
    );
    let path = write_config(&scratch, &route);
    let text = std::fs::read_to_string(&path).unwrap();
    let listen = listen_address(&text);
    let mut child = serve(&scratch, &path);
    let waited = listen.clone();
    tokio::task::spawn_blocking(move || wait_listening(&waited))
        .await
        .unwrap();
    let base = format!("http://{listen}");
    let client = reqwest::Client::new();
    let credentials = serde_json::json!({
        "email": "serve@example.com",
        "password": "Serve-Test-Pass-1!",
        "first_name": "Serve",
        "last_name": "Test",
    });
    let registered = client
        .post(format!("{base}/api/auth/register"))
        .json(&credentials)
        .send()
        .await
        .unwrap();
    assert_eq!(registered.status(), 201);
    let login: serde_json::Value = client
        .post(format!("{base}/api/auth/login"))
        .json(&credentials)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = crate::support::app::tokens_of(&login).access;
    let user_id = login["data"]["user"]["id"].as_str().expect("a user id");

    let requests = (0..64).map(|i| {
        let client = client.clone();
        let (base, token) = (base.clone(), token.clone());
        async move {
            let answer = client
                .get(format!("{base}/app/{i}"))
                .bearer_auth(&token)
                .send()
                .await
                .unwrap();
            assert_eq!(answer.status(), 200, "request {i}");
            answer.json::<serde_json::Value>().await.unwrap()
        }
    });
    for (i, echo) in futures_util::future::join_all(requests)
        .await
        .into_iter()
        .enumerate()
    {
        assert_eq!(echo["path"], format!("/app/{i}"));
        assert_eq!(echoed_header(&echo, "x-user-id"), [user_id], "request {i}");
    }
    let unauthenticated = client.get(format!("{base}/app")).send().await.unwrap();
    assert_eq!(unauthenticated.status(), 401);

    sigterm(&child);
    let exit = tokio::task::spawn_blocking(move || wait_exit(&mut child, Duration::from_secs(10)))
        .await
        .unwrap();
    assert!(exit.is_some_and(|e| e.success()), "{exit:?}");
}

/// An operator's `user grant-role`, `revoke-role` and `deactivate`, run as separate
/// processes against the database of a running `portcullis serve` (SQLite and in-process
/// sessions: nothing else is shared), hold on its routes within a second, without a new login.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_commands_reach_a_running_gateway_within_a_second() {
    let upstream = EchoUpstream::start().await;
    let scratch = Scratch::new();
    // The account is never verified: this story is about roles and activation.
    let route = format!(
        "[[routes]]\npath_prefix = \"/admin\"\nupstream = \"{}\"\npolicy = \"authenticated\"\nroles = [\"admin\"]\nrequire_verified_email = false\n",
        upstream.url()
    );
    let path = write_config(&scratch, &route);
    let text = std::fs::read_to_string(&path).unwrap();
    let listen = listen_address(&text);
    let mut child = serve(&scratch, &path);
    let waited = listen.clone();
    tokio::task::spawn_blocking(move || wait_listening(&waited))
        .await
        .unwrap();
    let base = format!("http://{listen}");
    let client = reqwest::Client::new();
    let credentials = serde_json::json!({
        "email": "operator-story@example.com",
        "password": "Serve-Test-Pass-1!",
        "first_name": "Op",
        "last_name": "Story",
    });
    let registered = client
        .post(format!("{base}/api/auth/register"))
        .json(&credentials)
        .send()
        .await
        .unwrap();
    assert_eq!(registered.status(), 201);
    let login: serde_json::Value = client
        .post(format!("{base}/api/auth/login"))
        .json(&credentials)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = crate::support::app::tokens_of(&login).access;
    let status = |client: reqwest::Client, token: String| {
        let url = format!("{base}/admin/x");
        async move {
            client
                .get(url)
                .bearer_auth(token)
                .send()
                .await
                .unwrap()
                .status()
        }
    };
    assert_eq!(status(client.clone(), token.clone()).await, 403);

    for (args, want) in [
        (
            vec!["grant-role", "operator-story@example.com", "admin"],
            200,
        ),
        (
            vec!["revoke-role", "operator-story@example.com", "admin"],
            403,
        ),
        (
            vec!["grant-role", "operator-story@example.com", "admin"],
            200,
        ),
        (vec!["deactivate", "operator-story@example.com"], 401),
    ] {
        let (code, out, err) = run(portcullis()
            .arg("--config")
            .arg(&path)
            .arg("user")
            .args(&args)
            .current_dir(scratch.dir.path()));
        assert_eq!(code, 0, "{args:?}: {out}{err}");
        let started = Instant::now();
        loop {
            let got = status(client.clone(), token.clone()).await;
            if got == want {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(1),
                "{args:?}: still {got} after {:?}",
                started.elapsed()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let (code, out, _) = run(portcullis()
        .arg("--config")
        .arg(&path)
        .arg("user")
        .args(["reset-2fa", "operator-story@example.com"])
        .current_dir(scratch.dir.path()));
    assert_eq!(code, 0);
    assert!(
        out.contains("did not have two-factor authentication on"),
        "{out}"
    );

    sigterm(&child);
    let exit = tokio::task::spawn_blocking(move || wait_exit(&mut child, Duration::from_secs(10)))
        .await
        .unwrap();
    assert!(exit.is_some_and(|e| e.success()), "{exit:?}");
}

fn signal(child: &Child, name: &str) {
    let status = Command::new("kill")
        .arg(format!("-{name}"))
        .arg(child.id().to_string())
        .status()
        .unwrap();
    assert!(status.success());
}

/// Waits until `path` holds a line containing `needle`.
fn wait_for_line(path: &std::path::Path, needle: &str) -> bool {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if std::fs::read_to_string(path).is_ok_and(|text| text.contains(needle)) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

/// SIGHUP (sent by logrotate's `postrotate`, or by a terminal that closes) never ends the
/// gateway: it reopens the log files, so lines go to a new file once the old one was moved.
#[test]
fn sighup_reopens_the_log_files_and_never_stops_the_gateway() {
    let scratch = Scratch::new();
    let path = write_config(&scratch, "");
    let logs = scratch.path("logs");
    let text = std::fs::read_to_string(&path).unwrap().replace(
        "[logging]\ndir = \"\"",
        &format!("[logging]\nformat = \"json\"\ndir = \"{}\"", logs.display()),
    );
    std::fs::write(&path, &text).unwrap();
    let listen = listen_address(&text);
    let mut child = serve(&scratch, &path);
    // A SIGHUP during start-up (migrations, keys) must not end it either: the handler is in
    // place before the log files are opened.
    let opened = Instant::now() + Duration::from_secs(10);
    while !logs.join("combined.log").exists() {
        assert!(Instant::now() < opened, "no combined.log");
        std::thread::sleep(Duration::from_millis(1));
    }
    signal(&child, "HUP");
    wait_listening(&listen);
    assert!(
        child.try_wait().unwrap().is_none(),
        "a SIGHUP at start-up ended the gateway"
    );

    for round in 1..=3 {
        for file in ["combined.log", "access.log"] {
            std::fs::rename(logs.join(file), logs.join(format!("{file}.{round}"))).unwrap();
        }
        signal(&child, "HUP");
        assert!(
            wait_for_line(&logs.join("combined.log"), "log files reopened"),
            "round {round}: no new combined.log after SIGHUP"
        );
        assert!(
            child.try_wait().unwrap().is_none(),
            "SIGHUP ended the gateway"
        );
        let path = format!("/round-{round}");
        let answer = std::net::TcpStream::connect(&listen).and_then(|mut s| {
            use std::io::Write;
            write!(
                s,
                "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
            )?;
            let mut answer = String::new();
            s.read_to_string(&mut answer)?;
            Ok(answer)
        });
        assert!(answer.unwrap().starts_with("HTTP/1.1 404"), "round {round}");
        let line = format!("\"path\":\"{path}\"");
        assert!(
            wait_for_line(&logs.join("access.log"), &line),
            "round {round}: the access log was not reopened"
        );
        let moved = std::fs::read_to_string(logs.join(format!("access.log.{round}"))).unwrap();
        assert!(
            !moved.contains(&line),
            "round {round}: written to the moved file"
        );
    }
    sigterm(&child);
    let exit = wait_exit(&mut child, Duration::from_secs(10)).expect("stops");
    assert!(exit.success(), "{exit:?}");
}

/// SIGTERM under load: idle keep-alive connections close at once, requests in flight to a
/// slow upstream are all answered, each with `Connection: close`, and the process exits as
/// soon as the last one is, long before its 30 s grace period is over.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_answers_what_is_in_flight_closes_idle_connections_and_does_not_wait_the_grace() {
    use crate::connections::{answer, closed_within};
    use tokio::io::AsyncWriteExt;
    use tokio::net::TcpStream;

    let upstream = EchoUpstream::start().await;
    let scratch = Scratch::new();
    let route = format!(
        "[[routes]]\npath_prefix = \"/\"\nupstream = \"{}\"\npolicy = \"public\"\n",
        upstream.url()
    );
    let path = write_config(&scratch, &route);
    let text = std::fs::read_to_string(&path)
        .unwrap()
        .replace("shutdown_grace = \"1s\"", "shutdown_grace = \"30s\"")
        .replace("upstream_timeout = \"2s\"", "upstream_timeout = \"30s\"");
    std::fs::write(&path, &text).unwrap();
    let listen = listen_address(&text);
    let admin = text
        .lines()
        .find_map(|l| l.strip_prefix("admin_listen = \""))
        .and_then(|l| l.strip_suffix('"'))
        .unwrap()
        .to_string();
    let mut child = serve(&scratch, &path);
    let waited = listen.clone();
    tokio::task::spawn_blocking(move || wait_listening(&waited))
        .await
        .unwrap();
    // Pingora installs its signal handlers just after the listeners open.
    tokio::time::sleep(Duration::from_millis(500)).await;

    let request = |path: &str| format!("GET {path} HTTP/1.1\r\nHost: a.example\r\n\r\n");
    let mut idle = Vec::new();
    for i in 0..4 {
        let mut stream = TcpStream::connect(&listen).await.unwrap();
        stream
            .write_all(request(&format!("/idle/{i}")).as_bytes())
            .await
            .unwrap();
        assert_eq!(answer(&mut stream).await.map(|a| a.0), Some(200));
        idle.push(stream);
    }
    let mut busy = Vec::new();
    for _ in 0..4 {
        let mut stream = TcpStream::connect(&listen).await.unwrap();
        stream
            .write_all(request("/slow/3000").as_bytes())
            .await
            .unwrap();
        busy.push(stream);
    }
    metrics_containing(
        &format!("http://{admin}"),
        &["portcullis_http_requests_in_flight 4"],
    )
    .await;
    sigterm(&child);

    for stream in &mut idle {
        assert!(
            closed_within(stream, Duration::from_secs(10)).await,
            "an idle connection stayed open"
        );
    }
    // Closed while the slow requests were still in flight, not when they ended.
    for stream in &busy {
        let mut byte = [0u8; 1];
        assert!(
            stream.try_read(&mut byte).is_err(),
            "a slow request was answered before the idle connections closed"
        );
    }
    for stream in &mut busy {
        let (status, head, _) = answer(stream).await.expect("an answer, not a close");
        assert_eq!(status, 200, "{head}");
        assert!(head.contains("connection: close"), "{head}");
        assert!(closed_within(stream, Duration::from_secs(10)).await);
    }
    // A bound, not a measure: seconds, where waiting out the grace would take 27 more.
    let exit = tokio::task::spawn_blocking(move || wait_exit(&mut child, EXIT_BOUND))
        .await
        .unwrap()
        .expect("exits once nothing is in flight, without waiting out the 30 s grace");
    assert!(exit.success(), "{exit:?}");
}

/// How a client misbehaves in [`the_guards_answers_are_logged_and_a_clients_mistakes_are_no_errors`].
enum Mistake {
    /// Sends this and reads the answers (statuses expected in order).
    Answered(&'static [u16]),
    /// Sends this, then closes its side.
    Leaves,
    /// Sends this, then waits for the server to close (the head deadline).
    Stalls,
}

/// Every answer the connection guard writes itself (431, 414, 400) has its access-log line
/// (route `local`, the path only from a request-line that reads as one, never its query),
/// and a client's mistake (a head too large, a client leaving mid-head, a head deadline)
/// writes nothing to `error.log`, on either listener.
#[test]
fn the_guards_answers_are_logged_and_a_clients_mistakes_are_no_errors() {
    use std::io::Write;
    let scratch = Scratch::new();
    let path = write_config(&scratch, "");
    let logs = scratch.path("logs");
    let text = std::fs::read_to_string(&path)
        .unwrap()
        .replace(
            "[logging]\ndir = \"\"",
            &format!("[logging]\nformat = \"json\"\ndir = \"{}\"", logs.display()),
        )
        .replace(
            "shutdown_grace = \"1s\"",
            "shutdown_grace = \"1s\"\nmax_header_bytes = 4096\nheader_read_timeout = \"1s\"",
        );
    std::fs::write(&path, &text).unwrap();
    let listen = listen_address(&text);
    let admin = text
        .lines()
        .find_map(|l| l.strip_prefix("admin_listen = \""))
        .and_then(|l| l.strip_suffix('"'))
        .unwrap()
        .to_string();
    let mut child = serve(&scratch, &path);
    wait_listening(&listen);

    let big = format!("X-Big: {}\r\n", "v".repeat(5000));
    let get =
        |target: &str, fields: &str| format!("GET {target} HTTP/1.1\r\nHost: a\r\n{fields}\r\n");
    // (what, request bytes, mistake, (status, method, path) of the guard's access lines)
    type Case = (
        &'static str,
        String,
        Mistake,
        Vec<(u16, &'static str, &'static str)>,
    );
    let cases: Vec<Case> = vec![
        (
            "431, with a query",
            get("/health?token=s3cr3t", &big),
            Mistake::Answered(&[431]),
            vec![(431, "GET", "/health")],
        ),
        (
            "414",
            get(&format!("/health?{}", "q".repeat(5000)), ""),
            Mistake::Answered(&[414]),
            vec![(414, "", "")],
        ),
        (
            "empty lines only",
            "\r\n".repeat(2500),
            Mistake::Answered(&[400]),
            vec![(400, "", "")],
        ),
        (
            "too many fields",
            get("/x/y", &"F: 1\r\n".repeat(300)),
            Mistake::Answered(&[431]),
            vec![(431, "GET", "/x/y")],
        ),
        (
            "a request-line that is not one",
            get("nowhere", &big),
            Mistake::Answered(&[431]),
            vec![(431, "", "")],
        ),
        (
            "pipelined after a good one",
            format!("{}{}", get("/health", ""), get("/p?k=v", &big)),
            Mistake::Answered(&[200, 431]),
            vec![(431, "GET", "/p")],
        ),
        (
            "leaves mid-head",
            "GET /health HTTP/1.1\r\nX-A: ".into(),
            Mistake::Leaves,
            vec![],
        ),
        (
            "stalls mid-head",
            "GET /health HTTP/1.1\r\nX-A: 1\r\n".into(),
            Mistake::Stalls,
            vec![],
        ),
    ];
    let mut expected = Vec::new();
    for addr in [&listen, &admin] {
        for (what, request, mistake, lines) in &cases {
            let mut stream = std::net::TcpStream::connect(addr).unwrap();
            stream
                .set_read_timeout(Some(Duration::from_secs(10)))
                .unwrap();
            let _ = stream.write_all(request.as_bytes());
            match mistake {
                Mistake::Answered(statuses) => {
                    let mut answers = String::new();
                    let _ = stream.read_to_string(&mut answers);
                    let got: Vec<u16> = answers
                        .match_indices("HTTP/1.1 ")
                        .filter_map(|(i, _)| answers.get(i + 9..i + 12)?.parse().ok())
                        .collect();
                    assert_eq!(got, *statuses, "{addr}, {what}: {answers}");
                }
                Mistake::Leaves => drop(stream),
                Mistake::Stalls => {
                    let mut rest = Vec::new();
                    let _ = stream.read_to_end(&mut rest);
                    assert!(rest.is_empty(), "{addr}, {what}: answered");
                }
            }
            expected.extend(lines.iter().map(|l| (*what, *l)));
        }
    }
    sigterm(&child);
    let exit = wait_exit(&mut child, Duration::from_secs(10)).expect("stops");
    assert!(exit.success(), "{exit:?}");

    let access = std::fs::read_to_string(logs.join("access.log")).unwrap();
    assert!(
        !access.contains("s3cr3t") && !access.contains("qqq"),
        "{access}"
    );
    let refused: Vec<serde_json::Value> = access
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|l| l["status"].as_u64().is_some_and(|s| s >= 400))
        .collect();
    assert_eq!(refused.len(), expected.len(), "{access}");
    for (line, (what, (status, method, path))) in refused.iter().zip(&expected) {
        assert_eq!(line["status"], *status, "{what}: {line}");
        assert_eq!(line["method"], *method, "{what}: {line}");
        assert_eq!(line["path"], *path, "{what}: {line}");
        assert_eq!(line["route"], "local", "{what}: {line}");
    }
    let errors = std::fs::read_to_string(logs.join("error.log")).unwrap();
    assert!(
        errors.is_empty(),
        "a client's mistake logged as an error: {errors}"
    );
}

/// `user create` (a password from standard input, roles), `user sessions`, `user
/// revoke-sessions` and `user delete`, run as separate processes against a running `serve`:
/// with in-process sessions (the feed ends them; the CLI cannot list them) and, when Redis is
/// configured, with Redis (listed and ended by the CLI itself).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_creates_lists_signs_out_and_deletes_an_account() {
    let redis = crate::support::redis::TestRedis::start().await;
    let mut sessions = vec![String::new()];
    if let Some(redis) = &redis {
        sessions.push(format!(
            "[sessions]\nurl = \"{}\"\nkey_prefix = \"{}\"\n",
            redis.url, redis.prefix
        ));
    }
    for sessions in sessions {
        let shared = !sessions.is_empty();
        let upstream = EchoUpstream::start().await;
        let scratch = Scratch::new();
        let route = format!(
            "{sessions}[[routes]]\npath_prefix = \"/admin\"\nupstream = \"{}\"\npolicy = \"authenticated\"\nroles = [\"admin\"]\n",
            upstream.url()
        );
        let path = write_config(&scratch, &route);
        let listen = listen_address(&std::fs::read_to_string(&path).unwrap());
        let mut child = serve(&scratch, &path);
        let waited = listen.clone();
        tokio::task::spawn_blocking(move || wait_listening(&waited))
            .await
            .unwrap();
        let user = |args: &[&str], stdin: Option<&str>| {
            let mut cmd = portcullis();
            cmd.arg("--config").arg(&path).arg("user").args(args);
            cmd.current_dir(scratch.dir.path());
            run_with_input(&mut cmd, stdin)
        };
        let email = "cli-made@example.com";
        // A second line is refused, not dropped, and nothing is created.
        let (code, out, err) = user(
            &["create", email, "--password-stdin"],
            Some("Cli-Made-Pass-1!\nsecond line\n"),
        );
        assert_ne!(code, 0, "{out}{err}");
        assert!(err.contains("one line"), "{err}");
        let (code, out, err) = user(
            &["create", email, "--role", "admin", "--password-stdin"],
            Some("Cli-Made-Pass-1!\n"),
        );
        assert_eq!(code, 0, "{out}{err}");
        assert!(out.contains("address verified, roles admin"), "{out}");

        let base = format!("http://{listen}");
        let client = reqwest::Client::new();
        let login = || {
            client
                .post(format!("{base}/api/auth/login"))
                .header("user-agent", "cli-story/1.0")
                .json(&serde_json::json!({"email": email, "password": "Cli-Made-Pass-1!"}))
                .send()
        };
        let answer: serde_json::Value = login().await.unwrap().json().await.unwrap();
        let token = crate::support::app::tokens_of(&answer).access;
        let status = |token: String| {
            let (client, url) = (client.clone(), format!("{base}/admin/x"));
            async move {
                let r = client.get(url).bearer_auth(token).send().await.unwrap();
                r.status()
            }
        };
        // Verified and an admin at once: no mail to follow, no grant to wait for.
        assert_eq!(status(token.clone()).await, 200);

        let (code, out, err) = user(&["sessions", email], None);
        if shared {
            assert_eq!(code, 0, "{out}{err}");
            let lines: Vec<&str> = out.lines().collect();
            assert!(
                lines[0].starts_with("ID") && lines[0].contains("USER AGENT"),
                "{out}"
            );
            assert!(
                lines[1].contains("127.0.0.1") && lines[1].contains("cli-story/1.0"),
                "{out}"
            );
            assert!(
                out.contains("1 session(s) of cli-made@example.com"),
                "{out}"
            );
        } else {
            assert_ne!(code, 0, "{out}");
            assert!(err.contains("memory://"), "{err}");
        }

        for args in [["revoke-sessions", email], ["delete", email]] {
            let token = if args[0] == "delete" {
                let answer: serde_json::Value = login().await.unwrap().json().await.unwrap();
                crate::support::app::tokens_of(&answer).access
            } else {
                token.clone()
            };
            let (code, out, err) = user(&args, None);
            assert_eq!(code, 0, "{args:?}: {out}{err}");
            if shared {
                assert!(out.contains("1 session(s) ended"), "{out}");
            }
            let started = Instant::now();
            while status(token.clone()).await != 401 {
                assert!(
                    started.elapsed() < Duration::from_secs(1),
                    "{args:?}: the session outlived the command"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        assert_eq!(login().await.unwrap().status(), 401, "deleted");
        let (code, _, err) = user(&["delete", email], None);
        assert_ne!(code, 0);
        assert!(err.contains("no such user"), "{err}");

        // The trail outlives the account: the operator's commands and the gateway's sign-ins.
        let mut cmd = portcullis();
        cmd.arg("--config")
            .arg(&path)
            .current_dir(scratch.dir.path());
        let (code, out, err) = run(cmd.args(["audit", "--user", email, "--limit", "100"]));
        assert_eq!(code, 0, "{out}{err}");
        for kind in ["user_create", "sign_in", "sessions_revoke", "user_delete"] {
            assert!(out.contains(kind), "{kind}: {out}");
        }
        assert!(
            out.lines()
                .any(|l| l.contains("user_delete") && l.contains("operator")),
            "{out}"
        );
        assert!(!out.contains("Cli-Made-Pass-1!"), "{out}");

        sigterm(&child);
        let exit =
            tokio::task::spawn_blocking(move || wait_exit(&mut child, Duration::from_secs(10)))
                .await
                .unwrap();
        assert!(exit.is_some_and(|e| e.success()), "{exit:?}");
    }
}

/// Runs `cmd` with `input` on its standard input (none when `None`).
fn run_with_input(cmd: &mut Command, input: Option<&str>) -> (i32, String, String) {
    use std::io::Write;
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("binary runs");
    let mut stdin = child.stdin.take().unwrap();
    if let Some(input) = input {
        stdin.write_all(input.as_bytes()).unwrap();
    }
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `user invite` prints a link that works (and mails it to the outbox), `user invitations`
/// lists it, `user revoke-invitation` stops one; sign-up by oneself stays closed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_invites_and_the_printed_link_works() {
    let scratch = Scratch::new();
    let path = write_config(&scratch, "[registration]\nmode = \"invite\"\n");
    let listen = listen_address(&std::fs::read_to_string(&path).unwrap());
    let user = |args: &[&str]| {
        let mut cmd = portcullis();
        cmd.arg("--config").arg(&path).arg("user").args(args);
        cmd.current_dir(scratch.dir.path());
        run(&mut cmd)
    };
    let (code, out, err) = user(&["invite", "Guest@Example.com", "--role", "ops"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("invited guest@example.com (roles ops)"),
        "{out}"
    );
    assert!(out.contains("mailed to guest@example.com"), "{out}{err}");
    let link = out
        .split_whitespace()
        .find(|w| w.contains("/auth/invitation?token="))
        .unwrap_or_else(|| panic!("a link in {out}"));
    let token = link.split_once("token=").unwrap().1.to_owned();
    let (code, out, _) = user(&["invite", "guest@example.com", "--role", "bad,role"]);
    assert_ne!(code, 0, "{out}");

    let mut child = serve(&scratch, &path);
    let waited = listen.clone();
    tokio::task::spawn_blocking(move || wait_listening(&waited))
        .await
        .unwrap();
    let client = reqwest::Client::new();
    let r = client
        .post(format!("http://{listen}/api/auth/accept-invitation"))
        .json(&serde_json::json!({"token": token, "password": "Invited-Pass-1!", "first_name": "G", "last_name": "Uest"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["data"]["user"]["roles"], serde_json::json!(["ops"]));
    assert_eq!(body["data"]["user"]["is_verified"], true);

    let (code, out, err) = user(&["invitations"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("guest@example.com") && out.contains("used"),
        "{out}"
    );
    let (code, out, _) = user(&["invite", "guest@example.com"]);
    assert_ne!(code, 0, "an address with an account: {out}");
    let (code, _, err) = user(&["invite", "other@example.com"]);
    assert_eq!(code, 0, "{err}");
    let (code, out, err) = user(&["revoke-invitation", "other@example.com"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("revoked 1 pending invitation"), "{out}");
    let (_, out, _) = user(&["invitations"]);
    assert!(
        out.contains("revoked") && out.contains("2 invitations"),
        "{out}"
    );

    sigterm(&child);
    let exit = tokio::task::spawn_blocking(move || wait_exit(&mut child, Duration::from_secs(10)))
        .await
        .unwrap();
    assert!(exit.is_some_and(|e| e.success()), "{exit:?}");
}

#[test]
fn check_config_prints_each_identity_providers_redirect_uri() {
    let scratch = Scratch::new();
    let secret = scratch.path("github-secret");
    std::fs::write(&secret, "  s3cret\n").unwrap();
    let extra = format!(
        r#"
[[identity_providers]]
id = "corp"
name = "Corp SSO"
kind = "oidc"
issuer = "http://127.0.0.1:9/realms/corp"
client_id = "portcullis"
client_secret = "not-printed"

[[identity_providers]]
id = "github"
name = "GitHub"
kind = "github"
client_id = "Iv1.abc"
client_secret_file = "{}"
"#,
        secret.display()
    );
    let path = write_config(&scratch, &extra);
    let (code, out, err) = run(portcullis().arg("check-config").arg("--config").arg(&path));
    assert_eq!(code, 0, "{out}{err}");
    let public_url = std::fs::read_to_string(&path)
        .unwrap()
        .lines()
        .find_map(|l| {
            l.strip_prefix("public_url = \"")
                .map(|r| r.trim_end_matches('"').to_owned())
        })
        .unwrap();
    for id in ["corp", "github"] {
        let line = format!("register the redirect URI {public_url}/auth/oidc/{id}/callback");
        assert!(out.contains(&line), "{id}: {out}");
    }
    assert!(
        !out.contains("not-printed") && !err.contains("not-printed"),
        "{out}{err}"
    );
    assert!(
        !out.contains("s3cret") && !err.contains("s3cret"),
        "{out}{err}"
    );
}

#[test]
fn check_config_refuses_an_unsound_identity_provider_naming_the_key() {
    let entry = |body: &str| {
        format!(
            "[[identity_providers]]\nid = \"corp\"\nname = \"Corp\"\nclient_id = \"c\"\n{body}\n"
        )
    };
    let cases = [
        // A plain-http issuer is for loopback only.
        (
            entry("kind = \"oidc\"\nissuer = \"http://idp.example.com\"\nclient_secret = \"s\""),
            "identity_providers[0].issuer",
        ),
        (
            entry("kind = \"oidc\"\nclient_secret = \"s\""),
            "identity_providers[0].issuer",
        ),
        (
            entry("kind = \"oidc\"\nissuer = \"https://idp.example.com\""),
            "identity_providers[0].client_secret",
        ),
        (
            entry(
                "kind = \"oidc\"\nissuer = \"https://idp.example.com\"\nclient_secret = \"s\"\nclient_secret_file = \"/x\"",
            ),
            "identity_providers[0].client_secret_file",
        ),
        (
            entry("kind = \"saml\"\nissuer = \"https://idp.example.com\"\nclient_secret = \"s\""),
            "kind",
        ),
        (
            entry(
                "kind = \"oidc\"\nissuer = \"https://idp.example.com\"\nclient_secret = \"s\"\nrole_mapping = { admins = \"not a role\" }",
            ),
            "identity_providers[0].role_mapping",
        ),
        (
            entry("kind = \"github\"\nclient_secret = \"s\"\napi_url = \"http://api.example.com\""),
            "identity_providers[0].api_url",
        ),
        (
            entry("kind = \"github\"\nclient_secret = \"s\"\nissuer = \"https://github.com\""),
            "identity_providers[0].issuer",
        ),
        (
            entry("kind = \"github\"\nclient_secret = \"s\"\nallowed_groups = [\"staff\"]"),
            "identity_providers[0].allowed_groups",
        ),
        (
            entry("kind = \"github\"\nclient_secret = \"s\"\nend_session = true"),
            "identity_providers[0].end_session",
        ),
        (
            format!(
                "{}{}",
                entry("kind = \"github\"\nclient_secret = \"s\""),
                entry("kind = \"github\"\nclient_secret = \"t\"")
            ),
            "identity_providers[1].id",
        ),
        (
            entry(
                "kind = \"oidc\"\nissuer = \"https://idp.example.com\"\nclient_secret_file = \"/nonexistent/secret\"",
            ),
            "identity_providers[0].client_secret_file",
        ),
    ];
    for (extra, key) in cases {
        let scratch = Scratch::new();
        let path = write_config(&scratch, &extra);
        let (code, out, err) = run(portcullis().arg("check-config").arg("--config").arg(&path));
        assert_eq!(code, 2, "{extra}: {out}{err}");
        assert!(err.contains(key), "{extra}: expected {key} in {err}");
        assert!(!out.contains("configuration is valid"), "{out}");
    }
    // A bad slug.
    let scratch = Scratch::new();
    let path = write_config(
        &scratch,
        &entry("kind = \"github\"\nclient_secret = \"s\"").replace("\"corp\"", "\"Corp/x\""),
    );
    let (code, _, err) = run(portcullis().arg("check-config").arg("--config").arg(&path));
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("not a provider id"), "{err}");
}

/// `user show` and `user list --json` say what an account is (never a hash); `user
/// set-password` replaces the password and ends its sessions; `user send-reset` mails a
/// working reset link; each is in the audit trail as the operator's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_shows_an_account_sets_its_password_and_mails_a_reset() {
    let scratch = Scratch::new();
    let path = write_config(&scratch, "");
    let listen = listen_address(&std::fs::read_to_string(&path).unwrap());
    let user = |args: &[&str], stdin: Option<&str>| {
        let mut cmd = portcullis();
        cmd.arg("--config").arg(&path).arg("user").args(args);
        cmd.current_dir(scratch.dir.path());
        run_with_input(&mut cmd, stdin)
    };
    let email = "shown@example.com";
    let (code, out, err) = user(
        &["create", email, "--role", "ops", "--password-stdin"],
        Some("First-Pass-1!\n"),
    );
    assert_eq!(code, 0, "{out}{err}");

    let (code, out, err) = user(&["show", "Shown@Example.com"], None);
    assert_eq!(code, 0, "{out}{err}");
    for line in [
        "email           shown@example.com",
        "roles           ops",
        "2fa             no",
    ] {
        assert!(out.contains(line), "{line}: {out}");
    }
    let (code, out, err) = user(&["show", email, "--json"], None);
    assert_eq!(code, 0, "{out}{err}");
    let shown: serde_json::Value = serde_json::from_str(&out).expect("JSON");
    assert_eq!(shown["email"], email);
    assert_eq!(shown["verified"], true);
    assert_eq!(shown["roles"], serde_json::json!(["ops"]));
    assert_eq!(shown["passkeys"], serde_json::json!([]));
    assert_eq!(shown["linked_identities"], serde_json::json!([]));
    assert!(!out.contains("$2") && !out.contains("hash"), "{out}");
    let (code, out, err) = user(&["list", "--json"], None);
    assert_eq!(code, 0, "{out}{err}");
    let listed: Vec<serde_json::Value> = serde_json::from_str(&out).expect("a JSON array");
    assert_eq!(listed.len(), 1, "{out}");
    assert_eq!(listed[0]["id"], shown["id"]);
    let (code, _, err) = user(&["show", "nobody@example.com"], None);
    assert_ne!(code, 0);
    assert!(err.contains("no such user"), "{err}");

    let mut child = serve(&scratch, &path);
    let waited = listen.clone();
    tokio::task::spawn_blocking(move || wait_listening(&waited))
        .await
        .unwrap();
    let (base, client) = (format!("http://{listen}"), reqwest::Client::new());
    let login = |password: &'static str| {
        client
            .post(format!("{base}/api/auth/login"))
            .json(&serde_json::json!({"email": email, "password": password}))
            .send()
    };
    let answer: serde_json::Value = login("First-Pass-1!").await.unwrap().json().await.unwrap();
    let token = crate::support::app::tokens_of(&answer).access;

    // Refused without reading a password, or with one the rules refuse: nothing changes.
    let (code, out, err) = user(&["set-password", email], None);
    assert_ne!(code, 0, "{out}{err}");
    let (code, out, err) = user(
        &["set-password", email, "--password-stdin"],
        Some("short\n"),
    );
    assert_ne!(code, 0, "{out}{err}");
    assert_eq!(login("First-Pass-1!").await.unwrap().status(), 200);
    let (code, out, err) = user(
        &["set-password", email, "--password-stdin"],
        Some("Second-Pass-2!\n"),
    );
    assert_eq!(code, 0, "{out}{err}");
    let started = Instant::now();
    loop {
        let r = client
            .get(format!("{base}/api/auth/profile"))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        if r.status() == 401 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "the session outlived set-password"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(login("First-Pass-1!").await.unwrap().status(), 401);
    assert_eq!(login("Second-Pass-2!").await.unwrap().status(), 200);

    let (code, out, err) = user(&["send-reset", email], None);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("mailed to shown@example.com"), "{out}");
    let outbox = scratch.path("data/outbox");
    let mail = std::fs::read_dir(&outbox)
        .unwrap()
        .filter_map(|e| std::fs::read_to_string(e.unwrap().path()).ok())
        .map(|raw| crate::support::smtp::ReceivedMail::from_eml(&raw))
        .find(|m| m.token().is_some() && m.link().is_some_and(|l| l.contains("reset")))
        .expect("a reset mail in the outbox");
    let r = client
        .post(format!("{base}/api/auth/reset-password"))
        .json(&serde_json::json!({"token": mail.token().unwrap(), "password": "Third-Pass-3!"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(login("Third-Pass-3!").await.unwrap().status(), 200);

    let mut cmd = portcullis();
    cmd.arg("--config")
        .arg(&path)
        .current_dir(scratch.dir.path());
    let (code, out, err) = run(cmd.args(["audit", "--user", email, "--limit", "100"]));
    assert_eq!(code, 0, "{out}{err}");
    for kind in ["password_change", "password_reset_request"] {
        assert!(
            out.lines()
                .any(|l| l.contains(kind) && l.contains("operator")),
            "{kind}: {out}"
        );
    }
    assert!(!out.contains("Second-Pass-2!"), "{out}");
    sigterm(&child);
    let exit = tokio::task::spawn_blocking(move || wait_exit(&mut child, Duration::from_secs(10)))
        .await
        .unwrap();
    assert!(exit.is_some_and(|e| e.success()), "{exit:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_config_reports_each_providers_discovery_and_warns_when_one_is_down() {
    use crate::support::hostile_op::HostileOp;
    let up = HostileOp::start("portcullis").await;
    let unsound = HostileOp::start("portcullis").await;
    unsound.state.lock().unwrap().discovery.insert(
        "token_endpoint".into(),
        serde_json::json!("http://idp.example.com/token"),
    );
    let entry = |id: &str, issuer: &str| {
        format!(
            "[[identity_providers]]\nid = \"{id}\"\nname = \"{id}\"\nkind = \"oidc\"\n\
             issuer = \"{issuer}\"\nclient_id = \"portcullis\"\nclient_secret = \"s\"\n"
        )
    };
    let scratch = Scratch::new();
    let extra = format!(
        "{}{}{}",
        entry("up", &up.issuer),
        entry("unsound", &unsound.issuer),
        // Nothing listens on the discard port.
        entry("down", "http://127.0.0.1:9"),
    );
    let path = write_config(&scratch, &extra);
    let (code, out, err) = tokio::task::spawn_blocking(move || {
        run(portcullis().arg("check-config").arg("--config").arg(&path))
    })
    .await
    .unwrap();
    // A provider that is down or unsound is a warning: the configuration itself is valid.
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("configuration is valid"), "{out}");
    assert!(out.contains("identity provider up: discovery ok"), "{out}");
    for endpoint in ["authorize", "token", "jwks"] {
        let line = format!("{}/{endpoint}", up.issuer);
        assert!(out.contains(&line), "{line}: {out}");
    }
    assert!(
        err.contains("warning: identity provider unsound: discovery answered a document that is refused: token_endpoint"),
        "{err}"
    );
    assert!(
        err.contains("warning: identity provider down: discovery could not be reached"),
        "{err}"
    );
    assert_eq!(unsound.state.lock().unwrap().jwks_fetches, 0);
}

/// A warning repeated past the throttle's burst is dropped, not fatal: with no log directory
/// (`logging.dir = ""`, stdout only) the gateway keeps answering, and says how many it dropped.
#[test]
fn warnings_past_the_burst_are_dropped_and_the_gateway_keeps_answering() {
    let scratch = Scratch::new();
    let dead = free_port();
    let route = format!(
        "[[routes]]\npath_prefix = \"/\"\nupstream = \"http://127.0.0.1:{dead}\"\npolicy = \"public\"\n"
    );
    let path = write_config(&scratch, &route);
    let listen = listen_address(&std::fs::read_to_string(&path).unwrap());
    let mut child = portcullis()
        .arg("--config")
        .arg(&path)
        .arg("serve")
        .current_dir(scratch.dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("binary runs");
    wait_listening(&listen);
    for i in 0..20 {
        let mut stream = std::net::TcpStream::connect(&listen).expect("still listening");
        std::io::Write::write_all(
            &mut stream,
            b"GET /x HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
        )
        .unwrap();
        let mut answer = String::new();
        let _ = stream.read_to_string(&mut answer);
        assert!(
            answer.starts_with("HTTP/1.1 502"),
            "request {i}: {answer:?}"
        );
    }
    assert!(child.try_wait().unwrap().is_none(), "the gateway stopped");
    sigterm(&child);
    let exit = wait_exit(&mut child, EXIT_BOUND).expect("stops");
    assert!(exit.success(), "{exit:?}");
    let mut out = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    let warned = out
        .lines()
        .filter(|l| l.contains("upstream failed"))
        .count();
    assert_eq!(warned, 5, "{out}");
}

/// `portcullis serve` with its standard output read line by line on a thread.
struct Serving {
    child: Child,
    lines: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    reader: Option<std::thread::JoinHandle<()>>,
}

impl Serving {
    /// Spawns `command` (arguments, directory and environment set by the caller).
    fn start(command: &mut Command) -> Self {
        use std::io::BufRead;
        let mut child = command
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = std::io::BufReader::new(child.stdout.take().unwrap());
        let lines: std::sync::Arc<std::sync::Mutex<Vec<String>>> = std::sync::Arc::default();
        let kept = std::sync::Arc::clone(&lines);
        let reader = std::thread::spawn(move || {
            for line in stdout.split(b'\n').map_while(Result::ok) {
                let line = String::from_utf8_lossy(&line).into_owned();
                kept.lock().unwrap().push(line);
            }
        });
        Self {
            child,
            lines,
            reader: Some(reader),
        }
    }

    fn lines(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }

    /// The lines so far, once the start-up report's last one came (20 s at most).
    fn wait_ready(&self) -> Vec<String> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let lines = self.lines();
            if lines.iter().any(|l| is_ready(l)) {
                return lines;
            }
            assert!(
                Instant::now() < deadline,
                "never ready:\n{}",
                lines.join("\n")
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGTERM, then every line the gateway wrote until it exited.
    fn stop(mut self) -> Vec<String> {
        sigterm(&self.child);
        wait_exit(&mut self.child, EXIT_BOUND).expect("stops");
        if let Some(reader) = self.reader.take() {
            reader.join().unwrap();
        }
        self.lines()
    }
}

impl Drop for Serving {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Whether a line is the start-up report's `ready`, pretty or JSON (the mail transport's
/// "ready" is not it).
fn is_ready(line: &str) -> bool {
    line.contains("startup: ready") || line.contains("\"message\":\"ready\"")
}

/// The line that contains `needle`, and where it is; panics showing every line otherwise.
fn line_with(lines: &[String], needle: &str) -> (usize, String) {
    lines
        .iter()
        .enumerate()
        .find(|(_, l)| l.contains(needle))
        .map(|(i, l)| (i, l.clone()))
        .unwrap_or_else(|| panic!("no line with {needle:?} in:\n{}", lines.join("\n")))
}

#[test]
fn serve_says_where_to_go_what_it_runs_and_which_upstreams_do_not_answer() {
    // One upstream takes connections (the kernel accepts them into the backlog), the other
    // port is closed.
    let live = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let closed = free_port();
    let scratch = Scratch::new();
    let routes = format!(
        "[[routes]]\nname = \"live\"\npath_prefix = \"/live\"\nupstream = \"http://{}\"\n\
         policy = \"public\"\n\n[[routes]]\nname = \"down\"\npath_prefix = \"/down\"\n\
         upstream = \"http://127.0.0.1:{closed}\"\npolicy = \"authenticated\"\n",
        live.local_addr().unwrap()
    );
    let path = write_config(&scratch, &routes);
    let text = std::fs::read_to_string(&path).unwrap();
    let listen = listen_address(&text);
    let admin = text
        .lines()
        .find_map(|l| l.strip_prefix("admin_listen = \""))
        .and_then(|l| l.strip_suffix('"'))
        .unwrap()
        .to_owned();
    let serving = Serving::start(
        portcullis()
            .arg("serve")
            .arg("--config")
            .arg(&path)
            .current_dir(scratch.dir.path()),
    );
    let lines = serving.wait_ready();

    line_with(&lines, &format!("configuration: {}", path.display()));
    line_with(
        &lines,
        &format!(
            "main listener on {listen}: open http://{listen}/ (sign-in page http://{listen}/auth/login)"
        ),
    );
    line_with(
        &lines,
        &format!(
            "admin listener on {admin}: metrics http://{admin}/metrics, health http://{admin}/health"
        ),
    );
    let (live_route, _) = line_with(&lines, "route live: host any host path /live");
    let (down_route, _) = line_with(&lines, "route down: host any host path /down");
    assert!(live_route < down_route, "in match order");
    // The test config's public URL is an IP address.
    line_with(&lines, "passkeys: off: ");
    let (warned, warning) = line_with(&lines, &format!("upstream 127.0.0.1:{closed}"));
    assert!(warning.contains("WARN"), "{warning}");
    assert!(warning.contains("route down answers 502"), "{warning}");
    assert!(
        !lines.iter().any(|l| l.contains("route live answers")),
        "the live upstream answers:\n{}",
        lines.join("\n")
    );
    let (ready, _) = line_with(&lines, "startup: ready");
    assert!(warned < ready, "ready comes last");
    // Piped, so no colours.
    for line in &lines {
        assert!(!line.contains('\u{1b}'), "an ANSI escape in {line:?}");
    }
    drop(live);
}

#[test]
fn json_lines_carry_no_source_paths_of_the_build_machine() {
    let scratch = Scratch::new();
    let path = write_config(&scratch, "");
    let logs = scratch.path("logs");
    let text = std::fs::read_to_string(&path).unwrap().replace(
        "[logging]\ndir = \"\"",
        &format!("[logging]\nformat = \"json\"\ndir = \"{}\"", logs.display()),
    );
    std::fs::write(&path, &text).unwrap();
    let serving = Serving::start(
        portcullis()
            .arg("serve")
            .arg("--config")
            .arg(&path)
            .current_dir(scratch.dir.path()),
    );
    serving.wait_ready();
    // Stopping makes Pingora write more of its own lines.
    let stdout = serving.stop();
    let combined = std::fs::read_to_string(logs.join("combined.log")).unwrap();
    for (name, lines) in [
        ("stdout", stdout),
        (
            "combined.log",
            combined.lines().map(str::to_owned).collect(),
        ),
    ] {
        let parsed: Vec<serde_json::Value> = lines
            .iter()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{name}: {e}: {l}")))
            .collect();
        assert!(
            parsed.iter().any(|l| l["target"]
                .as_str()
                .is_some_and(|t| t.starts_with("pingora"))),
            "{name} has Pingora's own lines:\n{}",
            lines.join("\n")
        );
        assert!(parsed.iter().any(|l| l["message"] == "ready"), "{name}");
        for line in &lines {
            for leak in ["log.file", "log.module_path", ".cargo", "registry/src"] {
                assert!(!line.contains(leak), "{name}: {leak} in {line}");
            }
        }
    }
}

#[test]
fn from_an_empty_directory_it_runs_on_the_embedded_defaults() {
    let scratch = Scratch::new();
    let dir = scratch.dir.path();
    let (code, out, err) = run(portcullis().arg("check-config").current_dir(dir));
    assert_eq!(code, 0, "{out}{err}");
    assert!(err.contains("using the embedded defaults"), "{err}");
    assert!(
        out.contains("the embedded default configuration: configuration is valid"),
        "{out}"
    );

    let (listen, admin) = (free_port(), free_port());
    let with_ports = |command: &mut Command| {
        command
            .current_dir(dir)
            .env("PORTCULLIS_SERVER__LISTEN", format!("127.0.0.1:{listen}"))
            .env(
                "PORTCULLIS_SERVER__ADMIN_LISTEN",
                format!("127.0.0.1:{admin}"),
            );
    };
    let mut serve = portcullis();
    with_ports(serve.arg("serve"));
    let serving = Serving::start(&mut serve);
    let lines = serving.wait_ready();
    line_with(&lines, "configuration: the embedded defaults");
    line_with(&lines, "route app: host any host path / ");
    line_with(&lines, "passkeys: on (relying-party id localhost");
    // `health` finds the admin listener through the same defaults.
    let mut health = portcullis();
    with_ports(health.arg("health"));
    let (code, out, err) = run(&mut health);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.starts_with("healthy"), "{out}");
    serving.stop();
    // Whatever the defaults write lands in this directory.
    for written in [
        "data/portcullis.db",
        "data/signing-key.pem",
        "data/totp.key",
        "logs/combined.log",
    ] {
        assert!(dir.join(written).exists(), "{written} missing");
    }

    // A file named but missing is still an error, however it is named.
    let (code, _, err) = run(portcullis()
        .arg("check-config")
        .current_dir(dir)
        .env("PORTCULLIS_CONFIG", "missing.toml"));
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("missing.toml"), "{err}");
}
