//! The settings a running instance takes on only at a restart, and what a reload does with
//! them: keeps the running values and names each one that changed.

use super::{Config, ConfigError};

impl Config {
    /// Makes `self`, a configuration just read for a reload, keep `running`'s value of every
    /// setting that needs a restart (listeners — TLS on or off and the redirect listener
    /// among them —, worker threads, the public URL and cookie scope, connection limits,
    /// storage, sessions, logging, the TOTP key, bcrypt's cost, the mail transport, the audit
    /// purger, where the portal lives), and answers the keys whose value differed — in the
    /// order written here — for the reload to log.
    ///
    /// Everything else (routes and their rules, rate limits, upstreams, identity headers,
    /// trusted proxies, token keys and lifetimes, templates and texts, registration, identity
    /// providers, lockout, CORS, admin, TLS certificates and HSTS) takes effect with the
    /// reload.
    ///
    /// # Errors
    ///
    /// [`ConfigError::Invalid`] when the file is valid only with its own values of those
    /// settings: a route at the prefix the running portal still serves, say.
    pub fn keep_restart_settings(
        &mut self,
        running: &Config,
    ) -> Result<Vec<&'static str>, ConfigError> {
        let changed = self.take_restart_settings(running);
        self.validate()
            .map_err(|(key, message)| ConfigError::Invalid {
                key,
                source_name: format!(
                    "the file, with the running values of {}",
                    changed.join(", ")
                ),
                message,
            })?;
        Ok(changed)
    }

    fn take_restart_settings(&mut self, running: &Config) -> Vec<&'static str> {
        let mut changed = Vec::new();
        // TLS on or off is the listener's kind: the whole section waits. With TLS on in
        // both, certificates and HSTS take effect, the redirect listener waits.
        if self.tls.enabled() != running.tls.enabled() {
            changed.push("tls");
            self.tls = running.tls.clone();
        }
        macro_rules! keep {
            ($($key:literal => $($field:ident).+;)*) => {$(
                if self.$($field).+ != running.$($field).+ {
                    changed.push($key);
                    self.$($field).+ = running.$($field).+.clone();
                }
            )*};
        }
        keep! {
            "server.listen" => server.listen;
            "server.admin_listen" => server.admin_listen;
            "server.threads" => server.threads;
            "server.public_url" => server.public_url;
            "server.shutdown_grace" => server.shutdown_grace;
            "server.header_read_timeout" => server.header_read_timeout;
            "server.max_header_bytes" => server.max_header_bytes;
            "server.keepalive_timeout" => server.keepalive_timeout;
            "server.max_connections" => server.max_connections;
            "server.max_connections_per_ip" => server.max_connections_per_ip;
            "server.admin_max_connections" => server.admin_max_connections;
            "server.admin_max_connections_per_ip" => server.admin_max_connections_per_ip;
            "tls.redirect_listen" => tls.redirect_listen;
            "storage" => storage;
            "sessions" => sessions;
            "logging" => logging;
            "two_factor" => two_factor;
            "passwords.bcrypt_cost" => passwords.bcrypt_cost;
            "mail.url" => mail.url;
            "audit.retention" => audit.retention;
            "portal.enabled" => portal.enabled;
            "portal.path_prefix" => portal.path_prefix;
        }
        changed
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    fn load(text: &str) -> Config {
        Config::load_from(Path::new("t.toml"), text, Vec::new()).unwrap()
    }

    #[test]
    fn restart_settings_keep_their_running_values_and_are_named() {
        let running = load("");
        let cases: &[(&str, &[&str])] = &[
            ("", &[]),
            ("[server]\nlisten = \"127.0.0.1:1\"\n", &["server.listen"]),
            ("[server]\nthreads = 7\n", &["server.threads"]),
            ("[sessions]\nmax_per_user = 3\n", &["sessions"]),
            ("[storage]\nmax_connections = 2\n", &["storage"]),
            ("[logging]\nlevel = \"debug\"\n", &["logging"]),
            (
                "[passwords]\nbcrypt_cost = 11\n",
                &["passwords.bcrypt_cost"],
            ),
            ("[mail]\nurl = \"file://elsewhere\"\n", &["mail.url"]),
            (
                "[portal]\npath_prefix = \"/login\"\n",
                &["portal.path_prefix"],
            ),
            (
                "[server]\ntrusted_proxies = [\"10.0.0.0/8\"]\nmax_connections = 9\n",
                &["server.max_connections"],
            ),
            ("[portal]\ntitle = \"Elsewhere\"\n", &[]),
            (
                "[server]\npublic_url = \"https://localhost\"\n[tls]\ncert_file = \"c\"\nkey_file = \"k\"\n",
                &["tls", "server.public_url"],
            ),
        ];
        for (text, expected) in cases {
            let mut next = load(text);
            let changed = next.keep_restart_settings(&running).unwrap();
            assert_eq!(&changed, expected, "{text}");
            let again = next.clone().keep_restart_settings(&running).unwrap();
            assert!(again.is_empty(), "{text}: running values kept: {again:?}");
        }
        // What a reload may change, it does change.
        let mut next =
            load("[server]\ntrusted_proxies = [\"10.0.0.0/8\"]\n[portal]\ntitle = \"X\"\n");
        next.keep_restart_settings(&running).unwrap();
        assert_eq!(next.portal.title, "X");
        assert_eq!(next.server.trusted_proxies.len(), 1);
    }

    #[test]
    fn a_file_valid_only_with_its_own_restart_settings_is_refused() {
        let running = load("");
        // The portal moves (at the next restart) and a route takes its running prefix.
        let mut next = load(
            "[portal]\npath_prefix = \"/portal\"\n[[routes]]\nname = \"r\"\npath_prefix = \"/auth\"\nupstream = \"http://127.0.0.1:1\"\n",
        );
        let err = next
            .keep_restart_settings(&running)
            .unwrap_err()
            .to_string();
        assert!(err.contains("routes[0]"), "{err}");
        assert!(err.contains("portal.path_prefix"), "{err}");
    }
}
