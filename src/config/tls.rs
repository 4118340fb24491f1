//! `[tls]`: TLS on the main listener (`server.listen`), its certificates, HSTS and the plain
//! HTTP listener that redirects to it. The files themselves are read by the gateway
//! (`gateway::tls`), at start and on each reload: here only what the keys say together.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::{Invalid, ServerConfig, invalid};
use crate::domain::HumanDuration;

/// One year, the HSTS lifetime browsers' preload lists ask for (hstspreload.org).
pub const ONE_YEAR: HumanDuration = HumanDuration::from_secs(365 * 24 * 60 * 60);

/// `[tls]`: off unless `cert_file` and `key_file` are set.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    /// The default certificate chain (PEM, leaf first): served when no other certificate's
    /// names match the client's SNI, or when it sends none.
    pub cert_file: PathBuf,
    /// The private key of `cert_file` (PEM: PKCS#8, PKCS#1 or SEC1).
    pub key_file: PathBuf,
    /// `[[tls.certificates]]`: more certificates, each chosen when one of its names
    /// (subjectAltName dNSName, wildcards per RFC 6125) matches the client's SNI.
    pub certificates: Vec<CertificateFiles>,
    /// A plain HTTP listener that answers every request with a 308 to `https://`; none when
    /// unset.
    pub redirect_listen: Option<SocketAddr>,
    /// How often the certificate files' modification times are looked at; changed files
    /// are read again and swapped in (at least 1 s).
    pub watch_interval: HumanDuration,
    /// `Strict-Transport-Security: max-age` on every answer over TLS; `"0s"` sends none.
    pub hsts_max_age: HumanDuration,
    /// Adds `includeSubDomains` to HSTS: every subdomain of the host too.
    pub hsts_include_subdomains: bool,
    /// Adds `preload` to HSTS (needs `hsts_include_subdomains` and a year or more).
    pub hsts_preload: bool,
}

/// A certificate chain and its key, as `[tls]` and each `[[tls.certificates]]` name them.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CertificateFiles {
    /// The certificate chain (PEM, leaf first).
    pub cert_file: PathBuf,
    /// Its private key (PEM).
    pub key_file: PathBuf,
}

/// A certificate and key pair with the config keys that name its files.
#[derive(Clone, Copy, Debug)]
pub struct KeyedPair<'a> {
    /// `None` for `[tls]`'s own pair (the default), else its `[[tls.certificates]]` index.
    pub entry: Option<usize>,
    /// The certificate chain file.
    pub cert_file: &'a Path,
    /// The key file.
    pub key_file: &'a Path,
}

impl KeyedPair<'_> {
    /// The config key of one of its files: `tls.cert_file`, `tls.certificates[1].key_file`.
    pub fn key(&self, field: &str) -> String {
        match self.entry {
            None => format!("tls.{field}"),
            Some(i) => format!("tls.certificates[{i}].{field}"),
        }
    }
}

impl Default for TlsConfig {
    fn default() -> Self {
        Self {
            cert_file: PathBuf::new(),
            key_file: PathBuf::new(),
            certificates: Vec::new(),
            redirect_listen: None,
            watch_interval: HumanDuration::from_secs(30),
            hsts_max_age: ONE_YEAR,
            hsts_include_subdomains: false,
            hsts_preload: false,
        }
    }
}

impl TlsConfig {
    /// Whether the main listener speaks TLS.
    pub fn enabled(&self) -> bool {
        !self.cert_file.as_os_str().is_empty()
    }

    /// Every certificate pair, the default first, with the keys that name it; empty when
    /// TLS is off.
    pub fn pairs(&self) -> Vec<KeyedPair<'_>> {
        if !self.enabled() {
            return Vec::new();
        }
        let default = KeyedPair {
            entry: None,
            cert_file: &self.cert_file,
            key_file: &self.key_file,
        };
        let others = self
            .certificates
            .iter()
            .enumerate()
            .map(|(i, c)| KeyedPair {
                entry: Some(i),
                cert_file: &c.cert_file,
                key_file: &c.key_file,
            });
        std::iter::once(default).chain(others).collect()
    }

    /// The `Strict-Transport-Security` value (RFC 6797 §6.1), or `None` when TLS is off or
    /// `hsts_max_age` is zero.
    pub fn hsts_value(&self) -> Option<String> {
        let max_age = self.hsts_max_age.get().as_secs();
        if !self.enabled() || max_age == 0 {
            return None;
        }
        let mut value = format!("max-age={max_age}");
        if self.hsts_include_subdomains {
            value.push_str("; includeSubDomains");
        }
        if self.hsts_preload {
            value.push_str("; preload");
        }
        Some(value)
    }

    /// What `[tls]` says together and with `[server]`.
    pub(super) fn validate(&self, server: &ServerConfig) -> Result<(), Invalid> {
        let key_set = !self.key_file.as_os_str().is_empty();
        if self.enabled() != key_set {
            let (set, unset) = if key_set {
                ("key_file", "cert_file")
            } else {
                ("cert_file", "key_file")
            };
            return Err(invalid(
                format!("tls.{unset}"),
                format!("tls.{set} is set: TLS needs both a certificate and its key"),
            ));
        }
        for (i, pair) in self.certificates.iter().enumerate() {
            for (field, path) in [("cert_file", &pair.cert_file), ("key_file", &pair.key_file)] {
                if path.as_os_str().is_empty() {
                    return Err(invalid(
                        format!("tls.certificates[{i}].{field}"),
                        "is empty: each certificate needs both files",
                    ));
                }
            }
        }
        if self.watch_interval.get() < std::time::Duration::from_secs(1) {
            return Err(invalid("tls.watch_interval", "must be at least 1s"));
        }
        if self.enabled() {
            self.validate_enabled(server)
        } else {
            self.validate_disabled()
        }
    }

    fn validate_disabled(&self) -> Result<(), Invalid> {
        if !self.certificates.is_empty() {
            return Err(invalid(
                "tls.certificates",
                "needs tls.cert_file and tls.key_file: the default certificate, served when \
                 no other one's names match",
            ));
        }
        if self.redirect_listen.is_some() {
            return Err(invalid(
                "tls.redirect_listen",
                "redirects to https, which needs TLS on (tls.cert_file and tls.key_file)",
            ));
        }
        Ok(())
    }

    fn validate_enabled(&self, server: &ServerConfig) -> Result<(), Invalid> {
        if !server.public_url.is_https() {
            return Err(invalid(
                "server.public_url",
                format!(
                    "{:?} must be an https:// URL when TLS is on ([tls] cert_file): links, \
                     cookies (Secure) and passkeys are built on it",
                    server.public_url.as_str()
                ),
            ));
        }
        if let Some(addr) = self.redirect_listen {
            for (key, other) in [
                ("server.listen", server.listen),
                ("server.admin_listen", server.admin_listen),
            ] {
                if addr == other {
                    return Err(invalid(
                        "tls.redirect_listen",
                        format!("{addr} is also {key}; give the redirect listener its own port"),
                    ));
                }
            }
        }
        if self.hsts_preload && (!self.hsts_include_subdomains || self.hsts_max_age < ONE_YEAR) {
            return Err(invalid(
                "tls.hsts_preload",
                "browsers' preload lists take only hsts_include_subdomains = true with an \
                 hsts_max_age of a year or more",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server(public_url: &str) -> ServerConfig {
        ServerConfig {
            public_url: public_url.parse().unwrap(),
            ..ServerConfig::default()
        }
    }

    fn on() -> TlsConfig {
        TlsConfig {
            cert_file: "c.pem".into(),
            key_file: "k.pem".into(),
            ..TlsConfig::default()
        }
    }

    #[test]
    fn keys_that_do_not_go_together_are_named() {
        let https = server("https://example.com");
        let cases: Vec<(TlsConfig, ServerConfig, &str)> = vec![
            (
                TlsConfig {
                    key_file: PathBuf::new(),
                    ..on()
                },
                https.clone(),
                "tls.key_file",
            ),
            (
                TlsConfig {
                    cert_file: PathBuf::new(),
                    ..on()
                },
                https.clone(),
                "tls.cert_file",
            ),
            (on(), server("http://example.com"), "server.public_url"),
            (
                TlsConfig {
                    redirect_listen: Some(https.listen),
                    ..on()
                },
                https.clone(),
                "tls.redirect_listen",
            ),
            (
                TlsConfig {
                    redirect_listen: Some("127.0.0.1:80".parse().unwrap()),
                    ..TlsConfig::default()
                },
                https.clone(),
                "tls.redirect_listen",
            ),
            (
                TlsConfig {
                    hsts_preload: true,
                    ..on()
                },
                https.clone(),
                "tls.hsts_preload",
            ),
            (
                TlsConfig {
                    certificates: vec![CertificateFiles {
                        cert_file: "a.pem".into(),
                        key_file: PathBuf::new(),
                    }],
                    ..on()
                },
                https.clone(),
                "tls.certificates[0].key_file",
            ),
            (
                TlsConfig {
                    watch_interval: HumanDuration::from_secs(0),
                    ..on()
                },
                https.clone(),
                "tls.watch_interval",
            ),
        ];
        for (tls, server, key) in cases {
            let (named, _) = tls.validate(&server).unwrap_err();
            assert_eq!(named, key, "{tls:?}");
        }
        assert!(on().validate(&https).is_ok());
        assert!(TlsConfig::default().validate(&server("http://x")).is_ok());
    }

    #[test]
    fn hsts_says_what_is_asked_and_nothing_when_off() {
        assert_eq!(on().hsts_value().as_deref(), Some("max-age=31536000"));
        let all = TlsConfig {
            hsts_include_subdomains: true,
            hsts_preload: true,
            hsts_max_age: HumanDuration::from_secs(63072000),
            ..on()
        };
        assert_eq!(
            all.hsts_value().as_deref(),
            Some("max-age=63072000; includeSubDomains; preload")
        );
        let zero = TlsConfig {
            hsts_max_age: HumanDuration::from_secs(0),
            ..on()
        };
        assert_eq!(zero.hsts_value(), None);
        assert_eq!(TlsConfig::default().hsts_value(), None);
    }
}
