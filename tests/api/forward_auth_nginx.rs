//! The nginx `auth_request` set-up from docs/forward-auth.md, run against a real nginx.
//!
//! Skipped when no nginx binary is installed, except under `CI=true` (`.ci/run` installs it).

use crate::support::app::*;
use crate::support::nginx::{Nginx, nginx_binary};
use crate::support::{EchoUpstream, echoed_header};
use reqwest::StatusCode;
use serde_json::Value;

/// The server block documented in docs/forward-auth.md, with test ports.
fn nginx_server(port: u16, gateway: &str, upstream: &str) -> String {
    format!(
        r#"
    server {{
        listen 127.0.0.1:{port};

        location = /_portcullis_verify {{
            internal;
            proxy_pass http://{gateway}/api/auth/verify;
            proxy_pass_request_body off;
            proxy_set_header Content-Length "";
            proxy_set_header X-Original-URI $request_uri;
        }}

        location / {{
            auth_request /_portcullis_verify;
            auth_request_set $portcullis_user_id $upstream_http_x_user_id;
            auth_request_set $portcullis_email $upstream_http_x_user_email;
            auth_request_set $portcullis_verified $upstream_http_x_user_email_verified;
            auth_request_set $portcullis_roles $upstream_http_x_user_roles;
            auth_request_set $portcullis_session $upstream_http_x_session_id;
            auth_request_set $portcullis_assertion $upstream_http_x_identity_assertion;
            proxy_set_header X-User-Id $portcullis_user_id;
            proxy_set_header X-User-Email $portcullis_email;
            proxy_set_header X-User-Email-Verified $portcullis_verified;
            proxy_set_header X-User-Roles $portcullis_roles;
            proxy_set_header X-Session-Id $portcullis_session;
            proxy_set_header X-Identity-Assertion $portcullis_assertion;
            proxy_pass http://{upstream};
        }}
    }}
"#
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn nginx_auth_request_uses_portcullis_as_its_auth_service() {
    let Some(nginx) = nginx_binary() else {
        return;
    };
    let up = EchoUpstream::start().await;
    let app = TestApp::spawn(Backend::Embedded, "").await;
    app.verified_user("nginx@example.com").await;
    let t = app.login("nginx@example.com").await;

    let gateway = app.gw.addr.to_string();
    let upstream = up.addr.to_string();
    let nginx = Nginx::start(&nginx, |port| nginx_server(port, &gateway, &upstream));
    let base = nginx.url();

    let r = app.http.get(format!("{base}/page")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);

    let r = app
        .http
        .get(format!("{base}/page"))
        .bearer_auth(&t.access)
        .header("X-User-Email", "ceo@example.com")
        .header("X-User-Email-Verified", "false")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let echo: Value = r.json().await.unwrap();
    assert_eq!(
        echoed_header(&echo, "x-user-email"),
        vec!["nginx@example.com"],
        "{echo}"
    );
    assert_eq!(echoed_header(&echo, "x-user-email-verified"), ["true"]);
    assert_eq!(echoed_header(&echo, "x-user-id").len(), 1);
    assert_eq!(echoed_header(&echo, "x-identity-assertion").len(), 1);

    app.post_as(&t.access, "/api/auth/logout", serde_json::json!({}))
        .await;
    let r = app
        .http
        .get(format!("{base}/page"))
        .bearer_auth(&t.access)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
}
