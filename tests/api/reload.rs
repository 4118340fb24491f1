//! Reloading the configuration of a running `portcullis serve`: SIGHUP and `portcullis
//! reload` swap routes and rules in, a bad file is refused with the old one kept, settings
//! that need a restart are named, and no request fails while reloads run under load.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
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

/// A `portcullis serve` of its own, its stdout (the log) kept in a file.
struct Served {
    child: Child,
    config: PathBuf,
    log: PathBuf,
    base: String,
    admin: String,
    /// The config text without the routes, which each test writes.
    head: String,
}

impl Served {
    fn start(scratch: &Scratch, routes: &str) -> Self {
        let head = test_config_text(scratch.dir.path(), "");
        let config = scratch.path("portcullis.toml");
        std::fs::write(&config, format!("{head}\n{routes}")).unwrap();
        let log = scratch.path("stdout.log");
        let child = portcullis()
            .args(["serve", "--config"])
            .arg(&config)
            .current_dir(scratch.dir.path())
            .stdout(std::fs::File::create(&log).unwrap())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let address = |key: &str| {
            head.lines()
                .find_map(|l| l.strip_prefix(&format!("{key} = \"")))
                .and_then(|l| l.strip_suffix('"'))
                .unwrap()
                .to_owned()
        };
        let (listen, admin) = (address("listen"), address("admin_listen"));
        let deadline = Instant::now() + Duration::from_secs(20);
        for addr in [&listen, &admin] {
            while std::net::TcpStream::connect(addr).is_err() {
                assert!(Instant::now() < deadline, "{addr} never listened");
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        Self {
            child,
            config,
            log,
            base: format!("http://{listen}"),
            admin: format!("http://{admin}"),
            head,
        }
    }

    /// Writes the file with `routes` (and `extra` settings) after the test head.
    fn write(&self, text: &str) {
        self.write_patched(("", ""), text);
    }

    /// As [`Served::write`], with `from` replaced by `to` in the head (a key in one of its
    /// sections).
    fn write_patched(&self, (from, to): (&str, &str), text: &str) {
        let head = if from.is_empty() {
            self.head.clone()
        } else {
            self.head.replacen(from, to, 1)
        };
        std::fs::write(&self.config, format!("{head}\n{text}")).unwrap();
    }

    fn hangup(&self) {
        let status = Command::new("kill")
            .args(["-HUP", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// `portcullis reload` against this instance: exit code, stdout, stderr.
    fn reload_command(&self) -> (i32, String, String) {
        let out = portcullis()
            .args(["reload", "--config"])
            .arg(&self.config)
            .output()
            .unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn route(name: &str, prefix: &str, upstream: &str, policy: &str) -> String {
    format!(
        "[[routes]]\nname = \"{name}\"\npath_prefix = \"{prefix}\"\nupstream = \"{upstream}\"\npolicy = \"{policy}\"\n"
    )
}

async fn status_of(url: &str) -> u16 {
    client().get(url).send().await.unwrap().status().as_u16()
}

/// Polls `url` until it answers `status`; panics after 10 s.
async fn until_status(url: &str, status: u16) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let got = status_of(url).await;
        if got == status {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{url} stayed {got}, never {status}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_swaps_routes_and_rules_and_a_bad_file_keeps_the_running_config() {
    let echo = EchoUpstream::start().await;
    let scratch = Scratch::new();
    let mut served = Served::start(&scratch, &route("a", "/a", &echo.url(), "public"));
    let (a, b) = (format!("{}/a", served.base), format!("{}/b", served.base));
    assert_eq!(status_of(&a).await, 200);
    assert_eq!(status_of(&b).await, 404, "no route for /b yet");
    metrics_containing(&served.admin, &["portcullis_config_generation 1"]).await;

    // A new route, and a stricter rule on the old one.
    served.write(&format!(
        "{}{}",
        route("a", "/a", &echo.url(), "authenticated"),
        route("b", "/b", &echo.url(), "public")
    ));
    served.hangup();
    until_status(&b, 200).await;
    assert_eq!(status_of(&a).await, 401, "the new rule judges /a");
    metrics_containing(
        &served.admin,
        &[
            "portcullis_config_generation 2",
            "portcullis_config_last_reload_successful 1",
            "portcullis_config_reloads_total{result=\"ok\"} 1",
        ],
    )
    .await;

    // A file that does not parse: refused, logged, the running config stays.
    served.write("[[routes]\nname = ");
    served.hangup();
    metrics_containing(
        &served.admin,
        &[
            "portcullis_config_last_reload_successful 0",
            "portcullis_config_reloads_total{result=\"refused\"} 1",
        ],
    )
    .await;
    assert!(served.running(), "a bad file never ends the gateway");
    assert_eq!(status_of(&b).await, 200);
    assert_eq!(status_of(&a).await, 401);
    let log = served.log_text();
    assert!(
        log.contains("configuration reload refused, the running one stays"),
        "{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_command_refuses_each_kind_of_bad_file_and_names_restart_settings() {
    let echo = EchoUpstream::start().await;
    let scratch = Scratch::new();
    let good = route("a", "/a", &echo.url(), "public");
    let served = Served::start(&scratch, &good);
    let a = format!("{}/a", served.base);

    // Each bad file: `reload` exits 1 naming why; generation 1 keeps serving.
    let missing = scratch.path("no-such-dir/key.pem");
    let keys = format!(
        "[tokens]\nverification_key_files = [\"{}\"]\n",
        missing.display()
    );
    let templates = format!(
        "{good}[portal]\ntemplates_dir = \"{}\"\n",
        scratch.path("nowhere").display()
    );
    let no_patch = ("", "");
    let cases: Vec<((&str, &str), String, &str)> = vec![
        (no_patch, "[[routes]\n".into(), "TOML"),
        (
            no_patch,
            route("a", "/a", &echo.url(), "sometimes"),
            "routes[0].policy",
        ),
        (
            no_patch,
            route("a", "/a", "http://no-such-host.invalid:80", "public"),
            "no-such-host.invalid",
        ),
        (("[tokens]\n", &keys), good.clone(), "key"),
        (no_patch, templates, "nowhere"),
        (no_patch, format!("{good}{good}"), "routes[1]"),
        (
            ("login = \"\"", "login = \"often\""),
            good.clone(),
            "rate_limits.login",
        ),
    ];
    for (patch, text, named) in &cases {
        served.write_patched(*patch, text);
        let answer = client()
            .post(format!("{}/reload", served.admin))
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status().as_u16(), 422, "{text}");
        let body: serde_json::Value = answer.json().await.unwrap();
        assert_eq!(body["status"], "refused", "{text}: {body}");
        let error = body["error"].as_str().unwrap_or_default().to_lowercase();
        assert!(
            error.contains(&named.to_lowercase()),
            "{text}: the reason names {named}: {error}"
        );
        assert_eq!(status_of(&a).await, 200, "{text}: the old routes serve");
    }
    // Valid only with its own restart settings: the running portal keeps /auth, which the
    // new file routes.
    served.write(&format!(
        "{good}{}[portal]\npath_prefix = \"/portal\"\n",
        route("auth", "/auth", &echo.url(), "deny")
    ));
    let answer = client()
        .post(format!("{}/reload", served.admin))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status().as_u16(), 422);
    let error = answer.text().await.unwrap();
    assert!(
        error.contains("routes[1]") && error.contains("portal.path_prefix"),
        "{error}"
    );
    // Only the operator: not a browser (a web page on the operator's machine), not a name
    // rebound onto 127.0.0.1.
    served.write(&good);
    for (name, value) in [
        ("origin", "http://evil.example"),
        ("sec-fetch-site", "cross-site"),
        ("sec-fetch-mode", "no-cors"),
        ("host", "evil.example"),
        ("host", "localhost.evil.example:80"),
    ] {
        let answer = client()
            .post(format!("{}/reload", served.admin))
            .header(name, value)
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status().as_u16(), 403, "{name}: {value}");
    }
    // The command checks the file first, as check-config does (exit 2, nothing asked), and
    // reports what the gateway refused (exit 1).
    served.write("[[routes]\n");
    let (code, _, err) = served.reload_command();
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("TOML parse error"), "{err}");
    served.write(&route(
        "a",
        "/a",
        "http://no-such-host.invalid:80",
        "public",
    ));
    let (code, _, err) = served.reload_command();
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("reload refused, the running configuration stays")
            && err.contains("no-such-host.invalid"),
        "{err}"
    );
    metrics_containing(
        &served.admin,
        &[
            "portcullis_config_generation 1",
            &format!(
                "portcullis_config_reloads_total{{result=\"refused\"}} {}",
                cases.len() + 2
            ),
        ],
    )
    .await;

    // A good file that also changes what only a restart changes: it serves, and says which.
    let other_port = free_port();
    served.write(&format!(
        "{}\n",
        route("a", "/a", &echo.url(), "authenticated")
    ));
    let text = std::fs::read_to_string(&served.config)
        .unwrap()
        .replace("threads = 2", "threads = 3")
        .replacen(
            &served.base.replace("http://", "listen = \""),
            &format!("listen = \"127.0.0.1:{other_port}"),
            1,
        );
    std::fs::write(&served.config, text).unwrap();
    let (code, out, err) = served.reload_command();
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("generation 2"), "{out}");
    assert!(
        out.contains("waiting for a restart: server.listen, server.threads"),
        "{out}"
    );
    assert_eq!(status_of(&a).await, 401, "the rest took effect");
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", other_port)).is_err(),
        "the listener stays where it was"
    );
    assert!(
        served
            .log_text()
            .contains("keep their running values until a restart")
    );

    // `reload --config` names a file; the gateway reads its own. Told apart, and said.
    let elsewhere = scratch.path("staged.toml");
    std::fs::copy(&served.config, &elsewhere).unwrap();
    let out = portcullis()
        .args(["reload", "--config"])
        .arg(&elsewhere)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("not the one it runs on"), "{err}");
    let (code, out, err) = served.reload_command();
    assert_eq!(code, 0, "{out}{err}");
    let canonical = std::fs::canonicalize(&served.config).unwrap();
    assert!(out.contains(&canonical.display().to_string()), "{out}");
}

/// Which configuration judged an answer from `/a` (see the two in
/// [`reloads_under_load_drop_no_request`]): `Some('1')` or `Some('2')` when every sign agrees,
/// `None` when they are mixed.
fn judged_by(echo: &serde_json::Value) -> Option<char> {
    let seen = |name| !echoed_header(echo, name).is_empty();
    match (seen("authorization"), seen("x-gen-one"), seen("x-gen-two")) {
        (false, true, false) => Some('1'),
        (true, false, true) => Some('2'),
        _ => None,
    }
}

/// Reloads while clients keep asking, on kept-alive and on new connections: no request
/// fails, and each answer is judged wholly by one generation. The two configurations differ
/// at both levels a request passes: the route (`/b` exists only in the second; `/a` forwards
/// the client's own `Authorization` only in the second) and the server (each strips the
/// other's marker header), so an answer judged by half of each shows it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reloads_under_load_drop_no_request() {
    let echo = EchoUpstream::start().await;
    let scratch = Scratch::new();
    let strip = |header: &str| {
        (
            "threads = 2",
            format!("threads = 2\nstrip_headers = [\"{header}\"]"),
        )
    };
    let one = route("a", "/a", &echo.url(), "public");
    let two = format!(
        "{}forward_authorization = true\n{}",
        route("a", "/a", &echo.url(), "public"),
        route("b", "/b", &echo.url(), "public")
    );
    let (strip_one, strip_two) = (strip("x-gen-two"), strip("x-gen-one"));
    let served = Served::start(&scratch, &one);
    served.write_patched((strip_one.0, &strip_one.1), &one);
    let (code, out, err) = served.reload_command();
    assert_eq!(code, 0, "{out}{err}");
    let stop = Arc::new(AtomicBool::new(false));
    let (done, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let seen = Arc::new(std::sync::Mutex::new(std::collections::HashSet::new()));
    let mut clients = Vec::new();
    for fresh_connections in [false, false, true] {
        let (stop, done, failed, seen) = (stop.clone(), done.clone(), failed.clone(), seen.clone());
        let base = served.base.clone();
        clients.push(tokio::spawn(async move {
            let kept = client();
            while !stop.load(Ordering::Relaxed) {
                let http = if fresh_connections {
                    client()
                } else {
                    kept.clone()
                };
                let a = http
                    .get(format!("{base}/a"))
                    .header("authorization", "Basic Zm9vOmJhcg==")
                    .header("x-gen-one", "1")
                    .header("x-gen-two", "1")
                    .send()
                    .await;
                let judged = match a {
                    Ok(r) if r.status() == 200 => r.json().await.ok().as_ref().and_then(judged_by),
                    Ok(r) => {
                        eprintln!("/a: {}", r.status());
                        None
                    }
                    Err(e) => {
                        eprintln!("/a: {e:?}");
                        None
                    }
                };
                let b = http.get(format!("{base}/b")).send().await;
                let b_ok = matches!(&b, Ok(r) if [200, 404].contains(&r.status().as_u16()));
                if let Some(generation) = judged.filter(|_| b_ok) {
                    seen.lock().unwrap().insert(generation);
                    done.fetch_add(2, Ordering::Relaxed);
                } else {
                    eprintln!("/a judged {judged:?}, /b {:?}", b.map(|r| r.status()));
                    failed.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    let reloads = 20;
    for i in 0..reloads {
        if i % 2 == 0 {
            served.write_patched((strip_two.0, &strip_two.1), &two);
        } else {
            served.write_patched((strip_one.0, &strip_one.1), &one);
        }
        let (code, out, err) = tokio::task::spawn_blocking({
            let config = served.config.clone();
            move || {
                let out = portcullis()
                    .args(["reload", "--config"])
                    .arg(&config)
                    .output()
                    .unwrap();
                (
                    out.status.code().unwrap_or(-1),
                    String::from_utf8_lossy(&out.stdout).into_owned(),
                    String::from_utf8_lossy(&out.stderr).into_owned(),
                )
            }
        })
        .await
        .unwrap();
        assert_eq!(code, 0, "reload {i}: {out}{err}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.await.unwrap();
    }
    let (done, failed) = (done.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    assert_eq!(
        failed, 0,
        "{failed} request pairs failed or were judged by a mix"
    );
    assert!(done > 200, "the clients kept asking throughout: {done}");
    assert_eq!(seen.lock().unwrap().len(), 2, "both generations answered");
    metrics_containing(
        &served.admin,
        &[&format!("portcullis_config_generation {}", reloads + 2)],
    )
    .await;
}

mod in_process {
    //! What a reload changes, judged over HTTP on both backend pairs: the instance is
    //! given each next configuration through its reloader, as SIGHUP gives it the file.

    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use reqwest::StatusCode;
    use serde_json::Value;

    use crate::support::app::*;
    use crate::support::{EchoUpstream, echoed_header};

    fn kid_of(token: &str) -> String {
        let part = token.split('.').next().expect("a JWT");
        let header: Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part).expect("base64url")).unwrap();
        header["kid"].as_str().expect("a kid").to_owned()
    }

    fn routes(upstream: &EchoUpstream) -> String {
        let up = upstream.url();
        format!(
            "[[routes]]\nname = \"app\"\npath_prefix = \"/app\"\nupstream = \"{up}\"\npolicy = \"authenticated\"\n\
             [[routes]]\nname = \"pub\"\npath_prefix = \"/pub\"\nupstream = \"{up}\"\npolicy = \"public\"\n"
        )
    }

    async fn jwks_kids(app: &TestApp) -> Vec<String> {
        let body: Value = app
            .http
            .get(app.url("/.well-known/jwks.json"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let mut kids: Vec<String> = body["keys"]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| k["kid"].as_str().unwrap().to_owned())
            .collect();
        kids.sort();
        kids
    }

    /// A new signing key by reload: tokens it signs work at once, tokens of the old key
    /// keep working while the old key is listed for verification, and stop the moment it
    /// is not (no cached verdict outlives the key).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn signing_keys_rotate_by_reload() {
        for backend in backends() {
            let echo = EchoUpstream::start().await;
            let app = TestApp::spawn(backend, &routes(&echo)).await;
            app.verified_user("rotate@example.com").await;
            let old = app.login("rotate@example.com").await.access;
            assert_eq!(app.get_as(&old, "/app/x").await.status, StatusCode::OK);

            let running = (*app.gw.app.config).clone();
            let old_key = running.tokens.signing_key_file.clone();
            let new_key = format!("{old_key}.next");
            let mut next = running.clone();
            next.tokens.signing_key_file = new_key.clone();
            next.tokens.verification_key_files = vec![old_key.clone()];
            let reloaded = app.gw.reloader.apply(next.clone()).expect("reloads");
            assert_eq!(reloaded.generation, 2);
            assert!(
                reloaded.restart_needed.is_empty(),
                "{:?}",
                reloaded.restart_needed
            );

            let new = app.login("rotate@example.com").await.access;
            assert_ne!(kid_of(&new), kid_of(&old), "{backend:?}: the new key signs");
            assert_eq!(
                jwks_kids(&app).await.len(),
                2,
                "{backend:?}: both keys published"
            );
            for token in [&old, &new] {
                let answer = app.get_as(token, "/app/x").await;
                assert_eq!(answer.status, StatusCode::OK, "{backend:?}");
            }

            // The old key retired: its tokens are refused at once, the new ones still pass.
            next.tokens.verification_key_files = Vec::new();
            app.gw.reloader.apply(next).expect("reloads");
            assert_eq!(jwks_kids(&app).await, vec![kid_of(&new)], "{backend:?}");
            let answer = app.get_as(&old, "/app/x").await;
            assert_eq!(answer.status, StatusCode::UNAUTHORIZED, "{backend:?}");
            assert_eq!(app.get_as(&new, "/app/x").await.status, StatusCode::OK);
        }
    }

    /// Identity header names, trusted proxies, route limits and the portal's texts change
    /// with a reload; a settings change that needs a restart is named and not applied.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn headers_proxies_limits_and_texts_follow_the_reload() {
        for backend in backends() {
            let echo = EchoUpstream::start().await;
            let app = TestApp::spawn(backend, &routes(&echo)).await;
            app.verified_user("names@example.com").await;
            let token = app.login("names@example.com").await.access;
            let spoofed = [("x-forwarded-for", "203.0.113.7")];
            let echoed = |answer: &Answer, name: &str| echoed_header(&answer.body, name);

            let before = app.get_as(&token, "/app/x").await;
            assert_eq!(echoed(&before, "x-auth-user-id").len(), 0, "{backend:?}");
            let mut request = app.http.get(app.url("/pub/x"));
            for (name, value) in spoofed {
                request = request.header(name, value);
            }
            let body: Value = request.send().await.unwrap().json().await.unwrap();
            let forwarded = echoed_header(&body, "x-forwarded-for").join(",");
            assert!(
                !forwarded.contains("203.0.113.7"),
                "{backend:?}: untrusted: {forwarded}"
            );

            let mut next = (*app.gw.app.config).clone();
            next.identity_headers.user_id = "x-auth-user-id".parse().unwrap();
            next.server.trusted_proxies = vec!["127.0.0.0/8".parse().unwrap()];
            next.routes[1].rate_limit = Some("2/1m".parse().unwrap());
            next.portal.title = "Reloaded Gate".into();
            next.server.threads = 5;
            let reloaded = app.gw.reloader.apply(next).expect("reloads");
            assert_eq!(reloaded.restart_needed, vec!["server.threads"]);
            assert_eq!(app.gw.reloader.current().app().config.server.threads, 2);

            let after = app.get_as(&token, "/app/x").await;
            assert_eq!(after.status, StatusCode::OK, "{backend:?}");
            let user_id = echoed(&after, "x-auth-user-id");
            assert_eq!(user_id.len(), 1, "{backend:?}: the new name carries the id");
            let mut statuses = Vec::new();
            for _ in 0..3 {
                let mut request = app.http.get(app.url("/pub/x"));
                for (name, value) in spoofed {
                    request = request.header(name, value);
                }
                let response = request.send().await.unwrap();
                statuses.push(response.status().as_u16());
                if response.status() == StatusCode::OK {
                    let body: Value = response.json().await.unwrap();
                    let forwarded = echoed_header(&body, "x-forwarded-for").join(",");
                    assert!(
                        forwarded.contains("203.0.113.7"),
                        "{backend:?}: {forwarded}"
                    );
                }
            }
            assert_eq!(
                statuses,
                vec![200, 200, 429],
                "{backend:?}: the route's new limit"
            );
            let page = app
                .http
                .get(app.url("/auth/login"))
                .send()
                .await
                .unwrap()
                .text()
                .await
                .unwrap();
            assert!(
                page.contains("Reloaded Gate"),
                "{backend:?}: the portal's new title"
            );
        }
    }
}
