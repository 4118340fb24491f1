//! The shared state of one gateway instance: config, routes, metrics and backends.

use std::sync::Arc;

use http::StatusCode;
use serde_json::{Map, Value, json};

use crate::config::Config;
use crate::gateway::identity::IdentityHeaderNames;
use crate::gateway::routes::RouteTable;
use crate::metrics::Metrics;

/// Everything a request handler may need, built once at start.
pub struct App {
    pub config: Arc<Config>,
    pub routes: RouteTable,
    pub metrics: Metrics,
    pub identity_headers: IdentityHeaderNames,
}

impl App {
    /// Builds the application state from a validated config.
    pub fn new(config: Config) -> anyhow::Result<Arc<Self>> {
        let routes = RouteTable::from_config(&config).map_err(|e| anyhow::anyhow!(e))?;
        let identity_headers = IdentityHeaderNames::new(&config.identity_headers);
        Ok(Arc::new(Self {
            config: Arc::new(config),
            routes,
            metrics: Metrics::new(),
            identity_headers,
        }))
    }

    /// The health report: 200 when every dependency answers, 503 naming those that do not.
    pub async fn health(&self) -> (StatusCode, Value) {
        let checks: Vec<(&str, Result<(), String>)> = Vec::new();
        let mut report = Map::new();
        let mut healthy = true;
        for (name, result) in checks {
            let value = match result {
                Ok(()) => json!("ok"),
                Err(e) => {
                    healthy = false;
                    json!({"status": "down", "error": e})
                }
            };
            report.insert(name.to_string(), value);
        }
        if healthy {
            (StatusCode::OK, json!({"status": "ok", "checks": report}))
        } else {
            (
                StatusCode::SERVICE_UNAVAILABLE,
                json!({"status": "degraded", "checks": report}),
            )
        }
    }
}
