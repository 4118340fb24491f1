//! Outgoing mail over real transports: an SMTP server on a loopback socket and `.eml` files in
//! a temp dir.

use std::sync::Arc;
use std::time::Duration;

use crate::support::smtp::{ReceivedMail, SmtpSink};
use chrono::TimeZone as _;
use portcullis::config::MailConfig;
use portcullis::mail::{MailError, MailKind, MailSite, Mailer};
use portcullis::metrics::Metrics;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

const PUBLIC_URL: &str = "https://auth.example.test/";
const FROM: &str = "Portcullis <no-reply@portcullis.test>";
const TO: &str = "ada@example.test";
const WAIT: Duration = Duration::from_secs(10);

fn config(url: &str) -> MailConfig {
    MailConfig {
        url: url.parse().expect("a mail URL"),
        from: FROM.into(),
        templates_dir: String::new(),
        login_notifications: true,
    }
}

/// The value of `portcullis_{name}{kind="{kind}"}` in the exposition text.
fn counter(metrics: &Metrics, name: &str, kind: &str) -> u64 {
    let text = String::from_utf8(metrics.render()).unwrap();
    let prefix = format!("portcullis_{name}{{kind=\"{kind}\"}} ");
    text.lines()
        .find_map(|line| line.strip_prefix(&prefix))
        .unwrap_or_else(|| panic!("no {prefix} in:\n{text}"))
        .parse()
        .unwrap()
}

/// A loopback port with nothing listening on it.
fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

fn assert_well_formed(mail: &ReceivedMail) {
    assert_eq!(mail.mail_from, "no-reply@portcullis.test");
    assert_eq!(mail.rcpt_to, vec![TO.to_owned()]);
    let from = mail.header("From").unwrap();
    assert!(from.contains("<no-reply@portcullis.test>"), "{from}");
    let to = mail.header("To").unwrap();
    assert!(to.contains(TO), "{to}");
    let date = mail.header("Date").unwrap();
    chrono::DateTime::parse_from_rfc2822(&date).unwrap_or_else(|e| panic!("Date {date:?}: {e}"));
    let message_id = mail.header("Message-ID").unwrap();
    assert!(
        message_id.starts_with('<') && message_id.ends_with("@portcullis.test>"),
        "{message_id}"
    );
    assert_eq!(mail.header("MIME-Version").as_deref(), Some("1.0"));
    let content_type = mail.header("Content-Type").unwrap();
    assert!(
        content_type.starts_with("multipart/alternative"),
        "{content_type}"
    );
    let kinds: Vec<String> = mail.parts().into_iter().map(|(t, _)| t).collect();
    assert_eq!(kinds, ["text/plain", "text/html"]);
}

#[tokio::test]
async fn every_kind_arrives_over_smtp_with_headers_both_parts_and_the_token() {
    let sink = SmtpSink::start();
    let metrics = Metrics::new();
    let mailer = Mailer::new(&config(&sink.url()), PUBLIC_URL, &metrics).unwrap();
    let first_name = "Zoë <Ada> & co";
    let login_time = chrono::Utc.with_ymd_and_hms(2025, 1, 31, 14, 5, 0).unwrap();

    struct Case {
        mail: MailKind,
        subject: &'static str,
        text: Vec<&'static str>,
        html: Vec<&'static str>,
        link: Option<(&'static str, &'static str)>,
    }
    let cases = vec![
        Case {
            mail: MailKind::Verification {
                token: "tok+en/with=odd chars".into(),
                expires_in: Duration::from_secs(24 * 3600),
                return_to: None,
            },
            subject: "Portcullis: Confirm your email address",
            text: vec!["confirm your email address (ada@example.test)", "24 hours"],
            html: vec!["verify-email?token=tok%2Ben%2Fwith%3Dodd+chars", "24 hours"],
            link: Some((
                "https://auth.example.test/verify-email?token=tok%2Ben%2Fwith%3Dodd+chars",
                "tok+en/with=odd chars",
            )),
        },
        Case {
            mail: MailKind::PasswordReset {
                token: "Q2hhbmdlTWU_-0123456789abcdefghijklmnopqrstuvwxyz".into(),
                expires_in: Duration::from_secs(3600),
            },
            subject: "Portcullis: Reset your password",
            text: vec![
                "reset the password of the account ada@example.test",
                "1 hour",
            ],
            html: vec!["reset-password?token=Q2hhbmdlTWU_-0123456789", "1 hour"],
            link: Some((
                "https://auth.example.test/reset-password?token=Q2hhbmdlTWU_-0123456789abcdefghijklmnopqrstuvwxyz",
                "Q2hhbmdlTWU_-0123456789abcdefghijklmnopqrstuvwxyz",
            )),
        },
        Case {
            mail: MailKind::PasswordChanged,
            subject: "Portcullis: Your password was changed",
            text: vec!["password of your account ada@example.test was changed"],
            html: vec!["was changed"],
            link: None,
        },
        Case {
            mail: MailKind::LoginNotification {
                ip: "203.0.113.7".into(),
                user_agent: "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 \
                             Firefox/128.0 <a href=\"https://evil.example\">Click here</a>"
                    .into(),
                time: login_time,
            },
            subject: "Portcullis: New sign-in to your account",
            text: vec!["203.0.113.7", "Firefox · Linux", "2025-01-31 14:05 UTC"],
            html: vec!["203.0.113.7", "Firefox · Linux", "2025-01-31 14:05 UTC"],
            link: None,
        },
        Case {
            mail: MailKind::TwoFactorEnabled,
            subject: "Portcullis: Two-factor authentication is on",
            text: vec!["turned on for your account ada@example.test"],
            html: vec!["turned on"],
            link: None,
        },
        Case {
            mail: MailKind::TwoFactorDisabled,
            subject: "Portcullis: Two-factor authentication is off",
            text: vec!["turned off for your account ada@example.test"],
            html: vec!["turned off"],
            link: None,
        },
    ];

    for case in cases {
        let kind = case.mail.name();
        mailer.send(TO, first_name, case.mail).await.unwrap();
        let mail = sink
            .wait_for_message(WAIT)
            .await
            .unwrap_or_else(|| panic!("no {kind} mail"));
        assert_well_formed(&mail);
        assert_eq!(mail.subject().as_deref(), Some(case.subject), "{kind}");
        assert!(
            mail.header("To").unwrap().contains("Zoë"),
            "{kind}: {:?}",
            mail.header("To")
        );

        let text = mail.text_body().unwrap();
        let html = mail.html_body().unwrap();
        assert!(text.contains("Hello Zoë <Ada> & co,"), "{kind}: {text}");
        assert!(
            html.contains("Hello Zoë &lt;Ada&gt; &amp; co,"),
            "{kind}: {html}"
        );
        assert!(!html.contains("<Ada>"), "{kind}: {html}");
        for needle in &case.text {
            assert!(text.contains(needle), "{kind}: {needle:?} not in {text}");
        }
        // Text a client chose (its User-Agent) never reaches a mail: only the device it names.
        assert!(!text.contains("evil.example") && !html.contains("evil.example"));
        for needle in &case.html {
            assert!(html.contains(needle), "{kind}: {needle:?} not in {html}");
        }
        match case.link {
            Some((link, token)) => {
                assert_eq!(mail.link().as_deref(), Some(link), "{kind}");
                assert_eq!(mail.token().as_deref(), Some(token), "{kind}");
            }
            None => assert_eq!(mail.link(), None, "{kind}"),
        }
        assert_eq!(counter(&metrics, "mail_sent_total", kind), 1, "{kind}");
        assert_eq!(counter(&metrics, "mail_failed_total", kind), 0, "{kind}");
    }
    assert_eq!(sink.count(), 6);
}

#[tokio::test]
async fn links_match_what_the_mail_carries() {
    let sink = SmtpSink::start();
    let mailer = Mailer::new(&config(&sink.url()), PUBLIC_URL, &Metrics::new()).unwrap();
    assert_eq!(
        mailer.verification_link("a/b"),
        "https://auth.example.test/verify-email?token=a%2Fb"
    );
    assert_eq!(
        mailer.reset_link("xyz"),
        "https://auth.example.test/reset-password?token=xyz"
    );
    let token = "0123456789abcdef".repeat(4);
    mailer
        .send(
            TO,
            "Ada",
            MailKind::PasswordReset {
                token: token.clone(),
                expires_in: Duration::from_secs(3600),
            },
        )
        .await
        .unwrap();
    let mail = sink.wait_for_mail_to(TO, WAIT).await.unwrap();
    assert_eq!(mail.link(), Some(mailer.reset_link(&token)));
    assert_eq!(mail.token(), Some(token));
}

#[tokio::test]
async fn the_file_transport_writes_a_parseable_eml_and_creates_the_directory() {
    let temp = tempfile::tempdir().unwrap();
    let outbox = temp.path().join("data").join("outbox");
    let metrics = Metrics::new();
    let url = format!("file://{}", outbox.display());
    let mailer = Mailer::new(&config(&url), PUBLIC_URL, &metrics).unwrap();
    assert!(
        outbox.is_dir(),
        "the outbox is created when the mailer is built"
    );

    mailer
        .send(
            TO,
            "Ada",
            MailKind::Verification {
                token: "file-token".into(),
                expires_in: Duration::from_secs(24 * 3600),
                return_to: None,
            },
        )
        .await
        .unwrap();

    let files: Vec<_> = std::fs::read_dir(&outbox)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(files.len(), 1, "{files:?}");
    assert_eq!(files[0].extension().and_then(|e| e.to_str()), Some("eml"));
    let mail = ReceivedMail::from_eml(&std::fs::read_to_string(&files[0]).unwrap());
    assert_eq!(
        mail.subject().as_deref(),
        Some("Portcullis: Confirm your email address")
    );
    assert!(mail.header("To").unwrap().contains(TO));
    assert!(mail.html_body().unwrap().contains("file-token"));
    assert_eq!(mail.token().as_deref(), Some("file-token"));
    assert_eq!(counter(&metrics, "mail_sent_total", "verification"), 1);
}

#[tokio::test]
async fn an_override_directory_replaces_only_the_files_it_holds() {
    let sink = SmtpSink::start();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("verification.subject.txt"),
        "Welcome aboard, {{ first_name }}!\n",
    )
    .unwrap();
    let mut config = config(&sink.url());
    config.templates_dir = dir.path().display().to_string();
    let mailer = Mailer::new(&config, PUBLIC_URL, &Metrics::new()).unwrap();

    mailer
        .send(
            TO,
            "Ada",
            MailKind::Verification {
                token: "t0k3n".into(),
                expires_in: Duration::from_secs(24 * 3600),
                return_to: None,
            },
        )
        .await
        .unwrap();
    let mail = sink.wait_for_message(WAIT).await.unwrap();
    assert_eq!(mail.subject().as_deref(), Some("Welcome aboard, Ada!"));
    // The bodies are still the built-in ones.
    assert!(
        mail.text_body()
            .unwrap()
            .contains("Please confirm your email address")
    );
    assert_eq!(mail.token().as_deref(), Some("t0k3n"));
}

#[tokio::test]
async fn a_broken_override_fails_at_construction_naming_the_file() {
    let sink = SmtpSink::start();
    for (file, source) in [
        ("password_reset.html", "{% if %}broken"),
        ("layout.html", "<html>{% block content %}</html>"),
        (
            "login_notification.txt",
            "Signed in from {{ ip.address.city }}",
        ),
        ("two_factor_disabled.subject.txt", "Hi {{ nickname }}"),
    ] {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(file), source).unwrap();
        let mut config = config(&sink.url());
        config.templates_dir = dir.path().display().to_string();
        let err = Mailer::new(&config, PUBLIC_URL, &Metrics::new()).unwrap_err();
        assert!(matches!(err, MailError::Template { .. }), "{file}: {err:?}");
        assert!(err.to_string().contains(file), "{file}: {err}");
        let err = Mailer::check_config(&config).unwrap_err();
        assert!(
            err.to_string().contains(file),
            "check_config, {file}: {err}"
        );
    }

    let mut config = config(&sink.url());
    config.templates_dir = "/nonexistent/portcullis-templates".into();
    let err = Mailer::new(&config, PUBLIC_URL, &Metrics::new()).unwrap_err();
    assert!(err.to_string().contains("mail.templates_dir"), "{err}");
    assert_eq!(sink.count(), 0);
}

#[tokio::test]
async fn an_unreachable_relay_fails_the_send_and_is_counted() {
    let metrics = Metrics::new();
    let url = format!("smtp://127.0.0.1:{}", closed_port());
    let mailer = Arc::new(Mailer::new(&config(&url), PUBLIC_URL, &metrics).unwrap());

    let err = mailer
        .send(
            TO,
            "Ada",
            MailKind::Verification {
                token: "never-logged-token".into(),
                expires_in: Duration::from_secs(3600),
                return_to: None,
            },
        )
        .await
        .unwrap_err();
    assert!(matches!(err, MailError::Delivery(_)), "{err:?}");
    assert!(!err.to_string().contains("never-logged-token"), "{err}");
    assert_eq!(counter(&metrics, "mail_failed_total", "verification"), 1);
    assert_eq!(counter(&metrics, "mail_sent_total", "verification"), 0);

    // In the background the failure is only counted (and logged): nothing panics or waits.
    mailer.send_in_background(TO, "Ada", MailKind::PasswordChanged);
    let deadline = tokio::time::Instant::now() + WAIT;
    while counter(&metrics, "mail_failed_total", "password_changed") == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "background failure never counted"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(counter(&metrics, "mail_sent_total", "password_changed"), 0);
}

#[tokio::test]
async fn a_relay_that_refuses_the_recipient_fails_the_send() {
    let sink = SmtpSink::start();
    sink.reject_recipients(true);
    let metrics = Metrics::new();
    let mailer = Mailer::new(&config(&sink.url()), PUBLIC_URL, &metrics).unwrap();
    let err = mailer
        .send(TO, "Ada", MailKind::TwoFactorEnabled)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("550"), "{err}");
    assert_eq!(
        counter(&metrics, "mail_failed_total", "two_factor_enabled"),
        1
    );

    sink.reject_recipients(false);
    mailer
        .send(TO, "Ada", MailKind::TwoFactorEnabled)
        .await
        .unwrap();
    assert!(sink.wait_for_message(WAIT).await.is_some());
    assert_eq!(
        counter(&metrics, "mail_sent_total", "two_factor_enabled"),
        1
    );
}

#[tokio::test]
async fn an_invalid_recipient_is_an_error_not_a_panic() {
    let sink = SmtpSink::start();
    let metrics = Metrics::new();
    let mailer = Mailer::new(&config(&sink.url()), PUBLIC_URL, &metrics).unwrap();
    for to in [
        "",
        "not-an-address",
        "a@b@c",
        "ada@example.test\r\nBcc: x@evil.test",
    ] {
        let err = mailer
            .send(to, "Ada", MailKind::PasswordChanged)
            .await
            .unwrap_err();
        assert!(
            matches!(err, MailError::InvalidRecipient(_)),
            "{to:?}: {err:?}"
        );
    }
    assert_eq!(
        counter(&metrics, "mail_failed_total", "password_changed"),
        4
    );
    assert_eq!(sink.count(), 0);
}

#[tokio::test]
async fn send_in_background_delivers_without_being_awaited() {
    let sink = SmtpSink::start();
    let metrics = Metrics::new();
    let mailer = Arc::new(Mailer::new(&config(&sink.url()), PUBLIC_URL, &metrics).unwrap());
    mailer.send_in_background(
        TO,
        "Ada",
        MailKind::Verification {
            token: "bg-token".into(),
            expires_in: Duration::from_secs(24 * 3600),
            return_to: None,
        },
    );
    let mail = sink.wait_for_mail_to(TO, WAIT).await.unwrap();
    assert_eq!(mail.token().as_deref(), Some("bg-token"));
}

#[tokio::test]
async fn login_notifications_can_be_turned_off() {
    let sink = SmtpSink::start();
    let mut config = config(&sink.url());
    config.login_notifications = false;
    let metrics = Metrics::new();
    let mailer = Mailer::new(&config, PUBLIC_URL, &metrics).unwrap();
    assert!(!mailer.login_notifications());

    let login = MailKind::LoginNotification {
        ip: "198.51.100.4".into(),
        user_agent: "curl/8".into(),
        time: chrono::Utc::now(),
    };
    mailer.send(TO, "Ada", login).await.unwrap();
    mailer
        .send(TO, "Ada", MailKind::PasswordChanged)
        .await
        .unwrap();

    let mail = sink.wait_for_message(WAIT).await.unwrap();
    assert_eq!(
        mail.subject().as_deref(),
        Some("Portcullis: Your password was changed")
    );
    assert!(
        sink.wait_for_message(Duration::from_millis(300))
            .await
            .is_none()
    );
    assert_eq!(sink.count(), 1);
    assert_eq!(
        counter(&metrics, "mail_sent_total", "login_notification"),
        0
    );
}

/// The gateway builds the mailer on its backend runtime and calls it from Pingora's.
#[test]
fn a_mailer_built_on_one_runtime_serves_callers_on_others() {
    let sink = SmtpSink::start();
    let backend = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let mailer = {
        let _entered = backend.enter();
        Arc::new(Mailer::new(&config(&sink.url()), PUBLIC_URL, &Metrics::new()).unwrap())
    };

    // Each caller runtime is dropped after use; pooled connections must not depend on it.
    for round in 0..3 {
        let caller = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        caller.block_on(async {
            mailer
                .send(
                    TO,
                    "Ada",
                    MailKind::Verification {
                        token: format!("round-{round}"),
                        expires_in: Duration::from_secs(3600),
                        return_to: None,
                    },
                )
                .await
                .unwrap();
            let mail = sink.wait_for_message(WAIT).await.unwrap();
            assert_eq!(mail.token(), Some(format!("round-{round}")));
        });
    }

    // Background sends run on the backend runtime even when asked from a plain thread.
    mailer.send_in_background(TO, "Ada", MailKind::TwoFactorDisabled);
    let caller = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mail = caller.block_on(sink.wait_for_message(WAIT)).unwrap();
    assert_eq!(
        mail.subject().as_deref(),
        Some("Portcullis: Two-factor authentication is off")
    );

    // The last owner may be dropped outside any runtime.
    drop(mailer);
    drop(backend);
}

#[test]
fn a_mailer_whose_runtime_has_stopped_fails_cleanly() {
    let sink = SmtpSink::start();
    let metrics = Metrics::new();
    let backend = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let mailer = {
        let _entered = backend.enter();
        Arc::new(Mailer::new(&config(&sink.url()), PUBLIC_URL, &metrics).unwrap())
    };
    drop(backend);

    let caller = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let err = caller
        .block_on(mailer.send(TO, "Ada", MailKind::PasswordChanged))
        .unwrap_err();
    assert!(matches!(err, MailError::RuntimeGone), "{err:?}");
    assert_eq!(
        counter(&metrics, "mail_failed_total", "password_changed"),
        1
    );
    // Neither a background send nor the final drop may panic.
    mailer.send_in_background(TO, "Ada", MailKind::PasswordChanged);
    drop(mailer);
    assert_eq!(sink.count(), 0);
}

#[test]
fn building_a_mailer_outside_a_runtime_is_an_error() {
    let err = Mailer::new(&config("smtp://127.0.0.1:25"), PUBLIC_URL, &Metrics::new()).unwrap_err();
    assert!(matches!(err, MailError::NoRuntime), "{err:?}");
}

/// The sink itself, spoken to by hand: the end-to-end suites rely on it.
#[tokio::test]
async fn the_sink_speaks_smtp_and_unstuffs_dots() {
    let sink = SmtpSink::start();
    let stream = tokio::net::TcpStream::connect(sink.addr()).await.unwrap();
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read).lines();

    async fn reply(
        lines: &mut tokio::io::Lines<BufReader<tokio::net::tcp::OwnedReadHalf>>,
    ) -> String {
        // Multi-line replies use `250-`; the last line has a space after the code.
        loop {
            let line = lines.next_line().await.unwrap().unwrap();
            if line.as_bytes().get(3) != Some(&b'-') {
                return line;
            }
        }
    }

    assert!(reply(&mut lines).await.starts_with("220"));
    let mut expect = async |command: &str, code: &str| {
        write.write_all(command.as_bytes()).await.unwrap();
        let line = reply(&mut lines).await;
        assert!(line.starts_with(code), "{command:?} -> {line}");
    };
    expect("EHLO tester\r\n", "250").await;
    expect("DATA\r\n", "503").await;
    expect("RCPT TO:<early@example.test>\r\n", "503").await;
    expect("MAIL FROM:<dropped@example.test>\r\n", "250").await;
    expect("RCPT TO:<dropped@example.test>\r\n", "250").await;
    expect("RSET\r\n", "250").await;
    expect("NOOP\r\n", "250").await;
    expect("mail from:<sender@example.test> BODY=8BITMIME\r\n", "250").await;
    expect("RCPT TO:<one@example.test>\r\n", "250").await;
    expect("rcpt to:<two@example.test>\r\n", "250").await;
    expect("DATA\r\n", "354").await;
    expect("Subject: dots\r\n\r\nfirst\r\n..hidden\r\n.\r\n", "250").await;
    expect("BOGUS\r\n", "500").await;
    expect("QUIT\r\n", "221").await;

    let mail = sink.wait_for_message(WAIT).await.unwrap();
    assert_eq!(mail.mail_from, "sender@example.test");
    assert_eq!(mail.rcpt_to, ["one@example.test", "two@example.test"]);
    assert_eq!(mail.data, "Subject: dots\r\n\r\nfirst\r\n.hidden\r\n");
    assert_eq!(mail.subject().as_deref(), Some("dots"));
    assert_eq!(mail.text_body().as_deref(), Some("first\n.hidden\n"));
    assert_eq!(sink.count(), 1);
}

#[test]
fn the_sink_decodes_base64_parts_and_encoded_subjects() {
    let raw = concat!(
        "Subject: =?utf-8?q?Caf=C3=A9?= =?utf-8?b?INC/0YDQuNCy0LXRgg==?=\r\n",
        "MIME-Version: 1.0\r\n",
        "Content-Type: multipart/alternative; boundary=\"b1\"\r\n",
        "\r\n",
        "--b1\r\n",
        "Content-Type: text/plain; charset=utf-8\r\n",
        "Content-Transfer-Encoding: base64\r\n",
        "\r\n",
        "0J/RgNC40LLQtdGCOiBodHRwczovL2EudGVzdC92ZXJpZnktZW1haWw/dG9rZW49YSUyQmIg\r\n",
        "0LrQvtC90LXRhg==\r\n",
        "--b1\r\n",
        "Content-Type: text/html; charset=utf-8\r\n",
        "\r\n",
        "<p>html</p>\r\n",
        "--b1--\r\n",
    );
    let mail = ReceivedMail::from_eml(raw);
    assert_eq!(mail.subject().as_deref(), Some("Café привет"));
    assert_eq!(
        mail.text_body().as_deref(),
        Some("Привет: https://a.test/verify-email?token=a%2Bb конец")
    );
    assert_eq!(mail.html_body().as_deref(), Some("<p>html</p>"));
    assert_eq!(mail.token().as_deref(), Some("a+b"));
}

/// Every kind of mail, in both languages, names the site (`portal.title`) in its subject and
/// footer and colours its button with `portal.accent_color`; the subject leads with the title
/// (an invitation names it as what the reader is invited to).
#[tokio::test]
async fn mails_carry_the_sites_title_and_accent_colour() {
    let sink = SmtpSink::start();
    let site = MailSite {
        title: "Acme Gate".into(),
        accent: "#aa3300".into(),
    };
    let mailer = Mailer::new(&config(&sink.url()), PUBLIC_URL, &Metrics::new())
        .unwrap()
        .with_site(site);
    for language in ["en", "ru"] {
        for kind in MailKind::samples() {
            let name = kind.name();
            let has_button = matches!(
                kind,
                MailKind::Verification { .. }
                    | MailKind::PasswordReset { .. }
                    | MailKind::Invitation { .. }
            );
            mailer.send_in(language, TO, "Ada", kind).await.unwrap();
            let mail = sink.wait_for_mail_to(TO, WAIT).await.unwrap();
            let subject = mail.subject().unwrap_or_default();
            if name == "invitation" {
                assert!(
                    subject.ends_with(" Acme Gate"),
                    "{language} {name}: {subject}"
                );
            } else {
                assert!(
                    subject.starts_with("Acme Gate: "),
                    "{language} {name}: {subject}"
                );
            }
            let html = mail.html_body().unwrap();
            assert!(html.contains("Acme Gate"), "{language} {name}: {html}");
            assert!(!html.contains("#1f6feb"), "{language} {name}: {html}");
            if has_button {
                assert!(
                    html.contains("background:#aa3300"),
                    "{language} {name}: {html}"
                );
            }
        }
    }
}
