//! What the log files may hold: no query string and no token, at any level.
//!
//! A test binary of its own: it installs the process-wide log subscriber (at debug level, to
//! stdout as well) and the panic hook that keeps panic messages out of the logs, which would
//! otherwise hold for every test sharing its process and hide their failure messages.

mod support;

use std::time::Duration;

use support::*;

#[tokio::test(flavor = "multi_thread")]
async fn proxied_query_strings_never_reach_the_logs_even_at_debug_level() {
    let scratch = Scratch::new();
    let logs = scratch.path("logs");
    let upstream = EchoUpstream::start().await;
    let route = format!(
        "[[routes]]\nname = \"pub\"\npath_prefix = \"/pub\"\nupstream = \"{}\"\npolicy = \"public\"\n",
        upstream.url()
    );
    let mut config = parse_config(&test_config_text(scratch.dir.path(), &route));
    config.logging.dir = logs.display().to_string();
    config.logging.level = "debug".into();
    let guards = portcullis::telemetry::init(&config.logging).expect("logging starts");
    let gw = start_gateway(config);

    let r = client()
        .get(format!("{}/pub/page?token=QUERYSECRET", gw.url()))
        .bearer_auth("BEARERSECRET")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    tokio::time::sleep(Duration::from_millis(200)).await;
    drop(gw);
    drop(guards); // flushes the writers

    let combined = std::fs::read_to_string(logs.join("combined.log")).expect("combined.log");
    assert!(
        combined.contains("\"level\":\"DEBUG\""),
        "debug lines are written"
    );
    for secret in ["QUERYSECRET", "BEARERSECRET"] {
        assert!(!combined.contains(secret), "{secret} logged:\n{combined}");
    }
}
