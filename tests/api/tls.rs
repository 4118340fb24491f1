//! TLS on the main listener: TLS 1.2 and 1.3 (1.1 refused), the certificate chosen by SNI,
//! the default without it, certificates swapped by a reload or by rewriting their files with
//! no request failing, a bad replacement refused with the old one still served, HSTS,
//! `Secure` cookies, `X-Forwarded-Proto: https` upstream, and the plain listener that
//! redirects to `https://` without becoming an open redirect.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use reqwest::StatusCode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName, UnixTime};

use crate::support::app::*;
use crate::support::browser::Browser;
use crate::support::{EchoUpstream, echoed_header, free_port};

/// A test CA and the certificate files it issues, in a directory of their own.
struct Pki {
    issuer: Issuer<'static, KeyPair>,
    ca_pem: String,
    dir: tempfile::TempDir,
}

impl Pki {
    fn new() -> Self {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, "Portcullis test CA");
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca = params.self_signed(&key).unwrap();
        Self {
            issuer: Issuer::new(params, key),
            ca_pem: ca.pem(),
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// A certificate for `names` (DNS names or IP addresses), signed by the CA, valid from
    /// `from` to `until` (years).
    fn issue_dated(&self, names: &[&str], from: i32, until: i32) -> (String, String) {
        let key = KeyPair::generate().unwrap();
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let mut params = CertificateParams::new(names).unwrap();
        params.not_before = rcgen::date_time_ymd(from, 1, 1);
        params.not_after = rcgen::date_time_ymd(until, 1, 1);
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    }

    fn issue(&self, names: &[&str]) -> (String, String) {
        self.issue_dated(names, 2024, 2099)
    }

    /// Writes a certificate and its key as `{stem}.crt` and `{stem}.key`.
    fn write(&self, stem: &str, (cert, key): &(String, String)) {
        std::fs::write(self.path(&format!("{stem}.crt")), cert).unwrap();
        std::fs::write(self.path(&format!("{stem}.key")), key).unwrap();
    }

    /// `[tls]` with `gw` as the default and `app` and `wild` by SNI.
    fn section(&self, more: &str) -> String {
        let p = |name: &str| self.path(name).display().to_string();
        format!(
            "[tls]\ncert_file = \"{}\"\nkey_file = \"{}\"\n{more}\n\
             [[tls.certificates]]\ncert_file = \"{}\"\nkey_file = \"{}\"\n\
             [[tls.certificates]]\ncert_file = \"{}\"\nkey_file = \"{}\"\n",
            p("gw.crt"),
            p("gw.key"),
            p("app.crt"),
            p("app.key"),
            p("wild.crt"),
            p("wild.key"),
        )
    }
}

/// A gateway on `backend` with TLS: `gw.test` (and 127.0.0.1) the default certificate,
/// `app.test` and `*.apps.test` by SNI, `public_url` `https://gw.test:PORT`, a redirect
/// listener, `/app` proxied to `upstream` for signed-in users.
async fn tls_gateway(backend: Backend, pki: &Pki, upstream: &str, more: &str) -> TestApp {
    pki.write("gw", &pki.issue(&["gw.test", "127.0.0.1"]));
    pki.write("app", &pki.issue(&["app.test"]));
    pki.write("wild", &pki.issue(&["*.apps.test"]));
    let redirect = free_port();
    let extra = format!(
        "{}\n[[routes]]\nname = \"app\"\nhost = \"app.test\"\npath_prefix = \"/app\"\n\
         upstream = \"{upstream}\"\npolicy = \"authenticated\"\n\
         [[routes]]\nname = \"mine\"\npath_prefix = \"/app\"\nupstream = \"{upstream}\"\n\
         policy = \"authenticated\"\n",
        pki.section(&format!(
            "redirect_listen = \"127.0.0.1:{redirect}\"\nwatch_interval = \"1s\"\n{more}"
        ))
    );
    let edit = |text: String| {
        let listen = text
            .lines()
            .find_map(|l| l.strip_prefix("listen = \"127.0.0.1:"))
            .and_then(|l| l.strip_suffix('"'))
            .unwrap()
            .to_owned();
        text.replace(
            &format!("public_url = \"http://127.0.0.1:{listen}\""),
            &format!("public_url = \"https://gw.test:{listen}\""),
        )
    };
    let mut app = TestApp::spawn_edited(backend, &extra, edit, |_| {}).await;
    app.http = https_client(pki, app.gw.addr, true);
    app
}

/// A client that trusts the test CA and reaches the gateway's names at `addr`.
fn https_client(pki: &Pki, addr: SocketAddr, keep_alive: bool) -> reqwest::Client {
    https_builder(pki, addr, keep_alive).build().unwrap()
}

fn https_builder(pki: &Pki, addr: SocketAddr, keep_alive: bool) -> reqwest::ClientBuilder {
    let mut builder = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(pki.ca_pem.as_bytes()).unwrap())
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(10));
    for name in ["gw.test", "app.test", "x.apps.test"] {
        builder = builder.resolve(name, addr);
    }
    if !keep_alive {
        builder = builder.pool_max_idle_per_host(0);
    }
    builder
}

/// Accepts any server certificate: these handshakes look at which one was sent.
#[derive(Debug)]
struct AnyCertificate;

impl rustls::client::danger::ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        let algorithms = rustls::crypto::ring::default_provider().signature_verification_algorithms;
        rustls::crypto::verify_tls12_signature(message, cert, dss, &algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        let algorithms = rustls::crypto::ring::default_provider().signature_verification_algorithms;
        rustls::crypto::verify_tls13_signature(message, cert, dss, &algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        rustls::crypto::ring::default_provider()
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// What a handshake gave: the version, the ALPN protocol, the leaf's DNS names.
#[derive(Debug)]
struct Handshake {
    version: rustls::ProtocolVersion,
    alpn: Option<Vec<u8>>,
    names: Vec<String>,
}

/// A handshake with `addr` sending `sni` (none when `None`), offering `versions` and `alpn`.
async fn handshake(
    addr: SocketAddr,
    sni: Option<&str>,
    versions: &[&'static rustls::SupportedProtocolVersion],
    alpn: &[&[u8]],
) -> Result<Handshake, std::io::Error> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(versions)
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyCertificate))
        .with_no_client_auth();
    config.enable_sni = sni.is_some();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    let name = ServerName::try_from(sni.unwrap_or("gw.test").to_owned()).unwrap();
    let tcp = TcpStream::connect(addr).await?;
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await?;
    let (_, conn) = tls.get_ref();
    let leaf = conn.peer_certificates().unwrap()[0].clone();
    Ok(Handshake {
        version: conn.protocol_version().unwrap(),
        alpn: conn.alpn_protocol().map(<[u8]>::to_vec),
        names: dns_names(&leaf),
    })
}

fn dns_names(der: &CertificateDer<'_>) -> Vec<String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).unwrap();
    let san = cert.subject_alternative_name().unwrap().unwrap();
    san.value
        .general_names
        .iter()
        .filter_map(|n| match n {
            x509_parser::extensions::GeneralName::DNSName(d) => Some(d.to_string()),
            _ => None,
        })
        .collect()
}

/// The DNS names of the certificate a new connection gets for `sni`, by TLS 1.3.
async fn served_names(addr: SocketAddr, sni: Option<&str>) -> Vec<String> {
    handshake(addr, sni, &[&rustls::version::TLS13], &[])
        .await
        .unwrap()
        .names
}

/// A ClientHello of `version` (RFC 5246 §7.4.1.2; 0x0302 is TLS 1.1) offering ECDHE with
/// AES-GCM, for `gw.test`; the first bytes of the server's answer.
async fn hello_answer(addr: SocketAddr, version: [u8; 2]) -> Vec<u8> {
    fn extension(kind: u16, data: &[u8]) -> Vec<u8> {
        let mut out = kind.to_be_bytes().to_vec();
        out.extend_from_slice(&(data.len() as u16).to_be_bytes());
        out.extend_from_slice(data);
        out
    }
    let name = b"gw.test";
    let mut sni = ((name.len() + 3) as u16).to_be_bytes().to_vec();
    sni.push(0);
    sni.extend_from_slice(&(name.len() as u16).to_be_bytes());
    sni.extend_from_slice(name);
    let mut extensions = extension(0x0000, &sni);
    // Groups x25519 and P-256; uncompressed points; ECDSA P-256, RSA-PSS, RSA PKCS#1.
    extensions.extend(extension(0x000a, &[0, 4, 0x00, 0x1d, 0x00, 0x17]));
    extensions.extend(extension(0x000b, &[1, 0]));
    extensions.extend(extension(0x000d, &[0, 6, 4, 3, 8, 4, 4, 1]));
    let mut body = version.to_vec();
    body.extend_from_slice(&[7; 32]);
    body.push(0);
    // TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256, TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256.
    body.extend_from_slice(&[0x00, 0x04, 0xc0, 0x2b, 0xc0, 0x2f]);
    body.extend_from_slice(&[0x01, 0x00]);
    body.extend_from_slice(&(extensions.len() as u16).to_be_bytes());
    body.extend_from_slice(&extensions);
    let mut hello = vec![0x01, 0x00];
    hello.extend_from_slice(&(body.len() as u16).to_be_bytes());
    hello.extend_from_slice(&body);
    let mut record = vec![0x16, 0x03, 0x01];
    record.extend_from_slice(&(hello.len() as u16).to_be_bytes());
    record.extend_from_slice(&hello);
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    tcp.write_all(&record).await.unwrap();
    let mut answer = vec![0; 16];
    let read = tokio::time::timeout(Duration::from_secs(5), tcp.read(&mut answer)).await;
    answer.truncate(read.ok().and_then(Result::ok).unwrap_or(0));
    answer
}

#[tokio::test(flavor = "multi_thread")]
async fn tls_12_and_13_are_spoken_11_refused_and_sni_picks_the_certificate() {
    let pki = Pki::new();
    let up = EchoUpstream::start().await;
    let app = tls_gateway(Backend::Embedded, &pki, &up.url(), "").await;
    let addr = app.gw.addr;
    for version in [&rustls::version::TLS12, &rustls::version::TLS13] {
        let done = handshake(addr, Some("gw.test"), &[version], &[b"h2", b"http/1.1"])
            .await
            .unwrap();
        assert_eq!(done.version, version.version);
        // Only HTTP/1.1 is offered, whatever the client prefers.
        assert_eq!(done.alpn.as_deref(), Some(&b"http/1.1"[..]));
    }
    // The same hello as TLS 1.2 gets a ServerHello (a handshake record, 22); as TLS 1.1, a
    // fatal alert (21, level 2) and nothing else.
    let answer = hello_answer(addr, [3, 3]).await;
    assert_eq!(answer.first(), Some(&22), "TLS 1.2: {answer:?}");
    let answer = hello_answer(addr, [3, 2]).await;
    assert_eq!(answer.first(), Some(&21), "TLS 1.1: {answer:?}");
    assert_eq!(answer.get(5), Some(&2), "TLS 1.1: {answer:?}");
    let cases: [(Option<&str>, &str); 6] = [
        (Some("app.test"), "app.test"),
        (Some("APP.test"), "app.test"),
        (Some("x.apps.test"), "*.apps.test"),
        (Some("gw.test"), "gw.test"),
        (Some("a.b.apps.test"), "gw.test"),
        (None, "gw.test"),
    ];
    for (sni, expected) in cases {
        let names = served_names(addr, sni).await;
        assert!(names.contains(&expected.to_owned()), "{sni:?}: {names:?}");
    }
    // A client verifying against the CA reaches each name.
    for host in ["gw.test", "app.test", "x.apps.test"] {
        let port = addr.port();
        let r = app
            .http
            .get(format!("https://{host}:{port}/health"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK, "{host}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn over_tls_upstreams_hear_https_cookies_are_secure_and_hsts_is_sent() {
    for backend in backends() {
        let pki = Pki::new();
        let up = EchoUpstream::start().await;
        let app = tls_gateway(backend, &pki, &up.url(), "").await;
        let email = "tls-user@example.com";
        app.verified_user(email).await;
        let tokens = app.login(email).await;
        let r = app
            .http
            .get(app.url("/app/page"))
            .bearer_auth(&tokens.access)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK, "{backend:?}");
        let hsts = r.headers().get("strict-transport-security").cloned();
        let echo: serde_json::Value = r.json().await.unwrap();
        assert_eq!(echoed_header(&echo, "x-forwarded-proto"), ["https"]);
        assert_eq!(hsts.unwrap(), "max-age=31536000", "{backend:?}: proxied");
        // Local answers and refusals carry it too.
        for path in ["/health", "/api/auth/me", "/nowhere", "/app/page"] {
            let r = app.http.get(app.url(path)).send().await.unwrap();
            assert_eq!(
                r.headers().get("strict-transport-security").unwrap(),
                "max-age=31536000",
                "{backend:?} {path}: {}",
                r.status()
            );
        }
        let port = app.gw.addr.port();
        let base = format!("https://gw.test:{port}");
        let browser = Browser::with_builder(&base, https_builder(&pki, app.gw.addr, true));
        let page = browser.sign_in(email, PASSWORD, "/").await;
        let cookies = page.set_cookies();
        assert!(!cookies.is_empty(), "{backend:?}: {}", page.status);
        for cookie in cookies {
            assert!(cookie.contains("; Secure"), "{backend:?}: {cookie}");
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn hsts_follows_its_keys_through_a_reload_and_zero_turns_it_off() {
    let pki = Pki::new();
    let up = EchoUpstream::start().await;
    let app = tls_gateway(Backend::Embedded, &pki, &up.url(), "").await;
    // The same value on every kind of answer: a local one, a portal page, an API
    // refusal, a 404 — or none on any of them.
    let hsts = || async {
        let mut seen = Vec::new();
        for path in [
            "/health",
            "/auth/login",
            "/api/auth/profile",
            "/api/auth/nowhere",
        ] {
            let r = app.http.get(app.url(path)).send().await.unwrap();
            let value = r.headers().get_all("strict-transport-security");
            let values: Vec<String> = value.iter().map(|v| v.to_str().unwrap().into()).collect();
            assert!(values.len() <= 1, "{path}: {values:?}");
            seen.push(values.into_iter().next());
        }
        assert!(seen.windows(2).all(|w| w[0] == w[1]), "{seen:?}");
        seen.swap_remove(0)
    };
    assert_eq!(hsts().await.as_deref(), Some("max-age=31536000"));
    let cases = [
        (
            "hsts_max_age = \"730d\"\nhsts_include_subdomains = true\nhsts_preload = true\n",
            Some("max-age=63072000; includeSubDomains; preload"),
        ),
        (
            "hsts_include_subdomains = true\n",
            Some("max-age=31536000; includeSubDomains"),
        ),
        ("hsts_max_age = \"0s\"\n", None),
    ];
    for (keys, expected) in cases {
        let mut config = (*app.gw.app.config).clone();
        let text = format!("{}\n", pki.section(keys));
        let parsed: portcullis::config::Config = portcullis::config::Config::load_from(
            Path::new("t.toml"),
            &format!("[server]\npublic_url = \"https://gw.test\"\n{text}"),
            Vec::new(),
        )
        .unwrap();
        config.tls = parsed.tls;
        config.tls.redirect_listen = app.gw.app.config.tls.redirect_listen;
        let reloader = app.gw.reloader.clone();
        tokio::task::spawn_blocking(move || reloader.apply(config))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(hsts().await.as_deref(), expected, "{keys}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_redirect_listener_sends_to_https_on_configured_hosts_only() {
    let pki = Pki::new();
    let up = EchoUpstream::start().await;
    let app = tls_gateway(Backend::Embedded, &pki, &up.url(), "").await;
    let port = app.gw.addr.port();
    let plain = format!("http://{}", app.gw.redirect_addr.unwrap());
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let cases = [
        (
            "app.test",
            "/app/x?y=1",
            format!("https://app.test:{port}/app/x?y=1"),
        ),
        ("APP.TEST:80", "/", format!("https://app.test:{port}/")),
        (
            "gw.test",
            "/auth/login",
            format!("https://gw.test:{port}/auth/login"),
        ),
        (
            "evil.example",
            "/steal?x=1",
            format!("https://gw.test:{port}/steal?x=1"),
        ),
        (
            "127.0.0.1",
            "//evil.example/",
            format!("https://gw.test:{port}//evil.example/"),
        ),
    ];
    for (host, path, expected) in cases {
        for method in [reqwest::Method::GET, reqwest::Method::POST] {
            let r = http
                .request(method.clone(), format!("{plain}{path}"))
                .header("host", host)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), StatusCode::PERMANENT_REDIRECT, "{host} {path}");
            assert_eq!(
                r.headers()["location"],
                expected.as_str(),
                "{method} {host}"
            );
            assert!(r.headers().get("strict-transport-security").is_none());
        }
    }
    // Reserved for HTTP-01 answers.
    let r = http
        .get(format!("{plain}/.well-known/acme-challenge/some-token"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    assert!(r.headers().get("location").is_none());
}

/// Requests `/health` over kept-alive and new connections until `stop`; counts failures.
fn keep_requesting(
    pki: &Pki,
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
) -> (
    Arc<AtomicUsize>,
    Arc<AtomicUsize>,
    tokio::task::JoinHandle<()>,
) {
    let (ok, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let clients = [
        https_client(pki, addr, true),
        https_client(pki, addr, false),
    ];
    let url = format!("https://gw.test:{}/health", addr.port());
    let (ok2, failed2) = (ok.clone(), failed.clone());
    let task = tokio::spawn(async move {
        while !stop.load(Ordering::SeqCst) {
            for client in &clients {
                match client.get(&url).send().await {
                    Ok(r) if r.status() == StatusCode::OK => ok2.fetch_add(1, Ordering::SeqCst),
                    other => {
                        eprintln!("failed: {other:?}");
                        failed2.fetch_add(1, Ordering::SeqCst)
                    }
                };
            }
        }
    });
    (ok, failed, task)
}

#[tokio::test(flavor = "multi_thread")]
async fn certificates_are_swapped_by_reload_and_by_their_files_without_a_failed_request() {
    for backend in backends() {
        let pki = Pki::new();
        let up = EchoUpstream::start().await;
        let app = tls_gateway(backend, &pki, &up.url(), "").await;
        let addr = app.gw.addr;
        let stop = Arc::new(AtomicBool::new(false));
        let (ok, failed, task) = keep_requesting(&pki, addr, stop.clone());
        tokio::time::sleep(Duration::from_millis(300)).await;

        // Rewritten files and a reload: new connections get the new certificate.
        pki.write("gw", &pki.issue(&["gw.test", "127.0.0.1", "renewed.test"]));
        let reloader = app.gw.reloader.clone();
        let config = (*app.gw.app.config).clone();
        tokio::task::spawn_blocking(move || reloader.apply(config))
            .await
            .unwrap()
            .unwrap();
        assert!(
            served_names(addr, None)
                .await
                .contains(&"renewed.test".into())
        );

        // Rewritten files alone: the watch (every second) swaps them in.
        pki.write("app", &pki.issue(&["app.test", "watched.test"]));
        let deadline = Instant::now() + Duration::from_secs(10);
        while !served_names(addr, Some("app.test"))
            .await
            .contains(&"watched.test".into())
        {
            assert!(
                Instant::now() < deadline,
                "{backend:?}: the watch never swapped"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        stop.store(true, Ordering::SeqCst);
        task.await.unwrap();
        assert_eq!(failed.load(Ordering::SeqCst), 0, "{backend:?}");
        assert!(ok.load(Ordering::SeqCst) > 10, "{backend:?}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_bad_replacement_is_refused_by_name_and_the_old_certificate_stays() {
    let pki = Pki::new();
    let up = EchoUpstream::start().await;
    let app = tls_gateway(Backend::Embedded, &pki, &up.url(), "").await;
    let addr = app.gw.addr;
    let (good_cert, good_key) = pki.issue(&["gw.test", "127.0.0.1"]);
    let (_, other_key) = pki.issue(&["gw.test"]);
    let cases: [(&str, String, String, &str); 4] = [
        (
            "a key of another",
            good_cert.clone(),
            other_key.clone(),
            "tls.key_file",
        ),
        (
            "no key",
            good_cert.clone(),
            "not a key\n".into(),
            "tls.key_file",
        ),
        (
            "no certificate",
            "not a certificate\n".into(),
            good_key.clone(),
            "tls.cert_file",
        ),
        (
            "a key for a certificate",
            good_key.clone(),
            good_key.clone(),
            "tls.cert_file",
        ),
    ];
    for (what, cert, key, named) in cases {
        pki.write("gw", &(cert, key.clone()));
        let reloader = app.gw.reloader.clone();
        let config = (*app.gw.app.config).clone();
        let refused = tokio::task::spawn_blocking(move || reloader.apply(config))
            .await
            .unwrap()
            .unwrap_err()
            .to_string();
        assert!(refused.contains(&format!("`{named}`")), "{what}: {refused}");
        // Never a word of the key's content.
        for line in key
            .lines()
            .filter(|l| !l.starts_with("-----") && l.len() > 8)
        {
            assert!(!refused.contains(line), "{what}: {refused}");
        }
        assert!(!refused.contains("PRIVATE KEY"), "{what}: {refused}");
        let names = served_names(addr, Some("gw.test")).await;
        assert_eq!(names, ["gw.test"], "{what}");
        let r = app.http.get(app.url("/health")).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::OK, "{what}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn check_config_names_a_bad_file_and_warns_of_an_expired_certificate() {
    let pki = Pki::new();
    pki.write("gw", &pki.issue_dated(&["gw.test"], 2020, 2021));
    pki.write("app", &pki.issue(&["app.test"]));
    pki.write("wild", &pki.issue(&["*.apps.test"]));
    let scratch = crate::support::Scratch::new();
    let text = crate::support::test_config_text(scratch.dir.path(), &pki.section(""));
    let text = text.replace("public_url = \"http://", "public_url = \"https://");
    let config = scratch.path("portcullis.toml");
    std::fs::write(&config, &text).unwrap();
    let check = || {
        std::process::Command::new(env!("CARGO_BIN_EXE_portcullis"))
            .args(["check-config", "--config"])
            .arg(&config)
            .env_remove("PORTCULLIS_CONFIG")
            .output()
            .unwrap()
    };
    let out = check();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stderr}");
    assert!(stdout.contains("tls: on"), "{stdout}");
    assert!(
        stderr.contains("`tls.cert_file`") && stderr.contains("expired on 2021-01-01"),
        "{stderr}"
    );
    std::fs::remove_file(pki.path("wild.key")).unwrap();
    let out = check();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("`tls.certificates[1].key_file`"),
        "{stderr}"
    );
    assert!(stderr.contains("cannot be read"), "{stderr}");
}
