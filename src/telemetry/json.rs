//! The JSON lines written to stdout (`logging.format = "json"`) and to the log files: one
//! object per event, `timestamp`, `level`, the event's fields in order (`message` first),
//! then `target`.
//!
//! Records of the `log` crate (Pingora, rustls, lettre) reach tracing through its bridge
//! with `log.target`, `log.module_path`, `log.file` and `log.line` fields; `log.file` is an
//! absolute path on the machine that built the binary (the cargo registry), which says
//! nothing to an operator and leaks the build host's layout. tracing-subscriber's own JSON
//! format writes them all, so this one takes `log.target` as the line's `target` and drops
//! the rest.

use std::fmt;

use serde_json::Value;
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

/// The event format of every JSON log line.
pub(super) struct JsonLines;

impl<S, N> FormatEvent<S, N> for JsonLines
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        _ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let mut fields = Fields::default();
        event.record(&mut fields);
        let meta = event.metadata();
        let target = fields.log_target.as_deref().unwrap_or(meta.target());
        let timestamp = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
        write!(
            writer,
            "{{\"timestamp\":{},\"level\":{}",
            Value::from(timestamp),
            Value::from(meta.level().as_str())
        )?;
        for (name, value) in &fields.values {
            write!(writer, ",{}:{value}", Value::from(*name))?;
        }
        writeln!(writer, ",\"target\":{}}}", Value::from(target))
    }
}

/// An event's fields as JSON values, in the order they were recorded.
#[derive(Default)]
struct Fields {
    values: Vec<(&'static str, Value)>,
    /// A bridged `log` record's target, which names the crate that wrote it.
    log_target: Option<String>,
}

impl Fields {
    fn push(&mut self, field: &Field, value: Value) {
        match field.name() {
            "log.target" => self.log_target = value.as_str().map(str::to_owned),
            // Where in the writing crate's source the record came from: a build-machine path.
            "log.module_path" | "log.file" | "log.line" => {}
            name => self.values.push((name, value)),
        }
    }
}

impl Visit for Fields {
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.push(field, Value::from(value));
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.push(field, Value::from(value));
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.push(field, Value::from(value));
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.push(field, Value::from(value));
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        self.push(field, Value::from(value));
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.push(field, Value::from(format!("{value:?}")));
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use tracing_subscriber::fmt::MakeWriter;
    use tracing_subscriber::layer::SubscriberExt;

    use super::*;

    /// Lines written by a subscriber, kept for the test to read.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl<'a> MakeWriter<'a> for Captured {
        type Writer = Self;

        fn make_writer(&'a self) -> Self {
            self.clone()
        }
    }

    #[test]
    fn fields_keep_their_types_and_order_and_log_records_lose_their_source_paths() {
        let out = Captured::default();
        let layer = tracing_subscriber::fmt::layer()
            .event_format(JsonLines)
            .with_writer(out.clone());
        let subscriber = tracing_subscriber::registry().with(layer);
        tracing::subscriber::with_default(subscriber, || {
            tracing::info!(status = 200u16, ok = true, path = "/x", "served \"it\"");
            tracing::error!(
                log.target = "pingora_core::server",
                log.module_path = "pingora_core::server",
                log.file = "/root/.cargo/registry/src/pingora-core/src/server/mod.rs",
                log.line = 643u32,
                "Server starting"
            );
        });
        let text = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).expect("a JSON line"))
            .collect();
        assert_eq!(lines.len(), 2, "{text}");
        assert!(lines[0]["timestamp"].as_str().unwrap().ends_with('Z'));
        assert_eq!(lines[0]["level"], "INFO");
        assert_eq!(lines[0]["message"], "served \"it\"");
        assert_eq!(lines[0]["status"], 200);
        assert_eq!(lines[0]["ok"], true);
        assert_eq!(lines[0]["path"], "/x");
        assert!(text.lines().next().unwrap().starts_with("{\"timestamp\":"));
        assert_eq!(lines[1]["target"], "pingora_core::server");
        assert_eq!(lines[1]["message"], "Server starting");
        assert!(!text.contains(".cargo"), "{text}");
        assert!(!text.contains("log."), "{text}");
    }
}
