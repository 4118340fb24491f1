//! Prometheus metrics. Labels are bounded: route names come from config, statuses are
//! HTTP codes, reasons are fixed strings. Never a user, token or IP.

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts, Registry,
    TextEncoder,
};

const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// Every metric the gateway exports, registered in one registry.
pub struct Metrics {
    registry: Registry,
    /// Requests answered, by route name and HTTP status.
    pub requests: IntCounterVec,
    /// Time from request start to the end of the response, by route name.
    pub request_duration: HistogramVec,
    /// Time from sending to an upstream to its response header, by route name.
    pub upstream_duration: HistogramVec,
    /// Upstream failures by route name and kind (`connect`, `timeout`, `other`).
    pub upstream_errors: IntCounterVec,
    /// Requests currently being handled.
    pub in_flight: IntGauge,
    /// Login attempts by result (`success`, `failure`, `locked`, `deactivated`, `two_factor_required`).
    pub logins: IntCounterVec,
    /// Accounts locked by brute-force protection.
    pub lockouts: IntCounter,
    /// Refresh tokens presented again after rotation (possible theft).
    pub refresh_reuse: IntCounter,
    /// Decisions on proxied and forward-auth requests, by route, outcome and reason.
    pub auth_decisions: IntCounterVec,
}

impl Metrics {
    /// Creates and registers every metric.
    pub fn new() -> Self {
        let registry = Registry::new_custom(Some("portcullis".into()), None)
            .unwrap_or_else(|_| Registry::new());
        let requests = IntCounterVec::new(
            Opts::new(
                "http_requests_total",
                "HTTP requests answered, by route and status",
            ),
            &["route", "status"],
        )
        .unwrap_or_else(|e| unreachable!("static metric definition: {e}"));
        let request_duration = HistogramVec::new(
            HistogramOpts::new(
                "http_request_duration_seconds",
                "Time to answer a request, by route",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
            &["route"],
        )
        .unwrap_or_else(|e| unreachable!("static metric definition: {e}"));
        let upstream_duration = HistogramVec::new(
            HistogramOpts::new(
                "upstream_duration_seconds",
                "Time for an upstream to send its response header, by route",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
            &["route"],
        )
        .unwrap_or_else(|e| unreachable!("static metric definition: {e}"));
        let upstream_errors = IntCounterVec::new(
            Opts::new(
                "upstream_errors_total",
                "Requests an upstream could not answer, by route and kind",
            ),
            &["route", "kind"],
        )
        .unwrap_or_else(|e| unreachable!("static metric definition: {e}"));
        let in_flight = IntGauge::new("http_requests_in_flight", "Requests being handled now")
            .unwrap_or_else(|e| unreachable!("static metric definition: {e}"));

        let logins = IntCounterVec::new(
            Opts::new("logins_total", "Login attempts by result"),
            &["result"],
        )
        .unwrap_or_else(|e| unreachable!("static metric definition: {e}"));
        let lockouts = IntCounter::new("lockouts_total", "Accounts locked after repeated failures")
            .unwrap_or_else(|e| unreachable!("static metric definition: {e}"));
        let refresh_reuse = IntCounter::new(
            "refresh_token_reuse_total",
            "Rotated-out refresh tokens presented again (the session is ended)",
        )
        .unwrap_or_else(|e| unreachable!("static metric definition: {e}"));

        let auth_decisions = IntCounterVec::new(
            Opts::new(
                "auth_decisions_total",
                "Access decisions on proxied requests, by route, outcome and reason",
            ),
            &["route", "outcome", "reason"],
        )
        .unwrap_or_else(|e| unreachable!("static metric definition: {e}"));

        for collector in [
            Box::new(requests.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(request_duration.clone()),
            Box::new(upstream_duration.clone()),
            Box::new(upstream_errors.clone()),
            Box::new(in_flight.clone()),
            Box::new(logins.clone()),
            Box::new(lockouts.clone()),
            Box::new(refresh_reuse.clone()),
            Box::new(auth_decisions.clone()),
        ] {
            // Names are unique by construction; a clash would be a programming error caught by tests.
            let _ = registry.register(collector);
        }
        Self {
            registry,
            requests,
            request_duration,
            upstream_duration,
            upstream_errors,
            in_flight,
            logins,
            lockouts,
            refresh_reuse,
            auth_decisions,
        }
    }

    /// Registers another collector (used by later subsystems).
    pub fn register(&self, collector: Box<dyn prometheus::core::Collector>) {
        let _ = self.registry.register(collector);
    }

    /// The registry in Prometheus text exposition format.
    pub fn render(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(8 * 1024);
        let families = self.registry.gather();
        if let Err(e) = TextEncoder::new().encode(&families, &mut out) {
            tracing::error!(error = %e, "cannot encode metrics");
        }
        out
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_prefixed_names() {
        let m = Metrics::new();
        m.requests.with_label_values(&["app", "200"]).inc();
        m.request_duration.with_label_values(&["app"]).observe(0.01);
        let text = String::from_utf8(m.render()).unwrap();
        assert!(
            text.contains("portcullis_http_requests_total{route=\"app\",status=\"200\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("portcullis_http_request_duration_seconds_bucket"),
            "{text}"
        );
        assert!(
            text.contains("portcullis_http_requests_in_flight 0"),
            "{text}"
        );
    }
}
