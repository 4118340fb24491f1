//! TLS on the main listener (`[tls]`): the certificates read from their files, chosen by SNI
//! in each handshake, and swapped whole — by a reload, or when the files change — without
//! touching a connection; the rustls configuration; HSTS on every answer ([`hsts`]).
//!
//! The handshake itself runs inside the connection guard (`connections::Guarded`), after the
//! connection is counted and under the head deadline, so a client that opens a connection
//! and never finishes its handshake is held to the same limits as one that never finishes
//! its request head, and a failed handshake (a scanner, an old client) is the client's
//! mistake, logged at DEBUG.

mod files;
pub mod hsts;

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use arc_swap::ArcSwap;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

pub use files::{CertificateError, Leaf};

use crate::config::TlsConfig;

/// The only protocol offered by ALPN (RFC 7301): the guard runs HTTP/1.1 on every connection.
pub const ALPN_HTTP11: &[u8] = b"http/1.1";

/// A file's modification time and length: what tells the watch that it was rewritten.
type Stamp = Option<(SystemTime, u64)>;

/// One generation of certificates: the default (`[tls]`'s pair) and the others, indexed by
/// the names they serve.
#[derive(Debug)]
pub struct Certificates {
    /// Index 0 is the default, then `[[tls.certificates]]` in order.
    keys: Vec<Arc<CertifiedKey>>,
    names: Names,
    leaves: Vec<Leaf>,
    /// The files' stamps taken before they were read.
    stamps: Vec<Stamp>,
}

impl Certificates {
    /// Reads every pair `config` names; the first that cannot be served fails the whole.
    pub fn load(config: &TlsConfig) -> Result<Self, CertificateError> {
        let stamps = stamps_of(config);
        let mut this = Self {
            keys: Vec::new(),
            names: Names::default(),
            leaves: Vec::new(),
            stamps,
        };
        for pair in config.pairs() {
            let (key, leaf) = files::load_pair(&pair)?;
            let index = this.keys.len();
            for name in &leaf.names {
                this.names.insert(name, index);
            }
            this.keys.push(key);
            this.leaves.push(leaf);
        }
        Ok(this)
    }

    /// The certificate for a client's SNI: the pair that lists the name itself, else one
    /// whose wildcard covers it (one label, RFC 6125 §6.4.3), else the default.
    pub fn pick(&self, sni: Option<&str>) -> &Arc<CertifiedKey> {
        let chosen = sni.and_then(|name| self.names.choose(name));
        &self.keys[chosen.unwrap_or(0)]
    }

    /// What each pair's leaf says, the default first.
    pub fn leaves(&self) -> &[Leaf] {
        &self.leaves
    }

    /// A sentence for each certificate that is expired, not valid yet, or expires within
    /// 30 days, at `now` (Unix seconds).
    pub fn date_warnings(&self, now: i64) -> Vec<String> {
        const SOON: i64 = 30 * 24 * 60 * 60;
        let date = |t: i64| {
            chrono::DateTime::from_timestamp(t, 0).map_or_else(
                || t.to_string(),
                |d| d.format("%Y-%m-%d %H:%M UTC").to_string(),
            )
        };
        let mut warnings = Vec::new();
        for leaf in &self.leaves {
            let what = format!(
                "the certificate of `{}` ({})",
                leaf.key,
                leaf.path.display()
            );
            if leaf.not_after < now {
                warnings.push(format!(
                    "{what} expired on {}: clients refuse it; replace the files (a reload \
                     or the file watch takes the new ones)",
                    date(leaf.not_after)
                ));
            } else if leaf.not_before > now {
                warnings.push(format!(
                    "{what} is not valid before {}: clients refuse it until then",
                    date(leaf.not_before)
                ));
            } else if leaf.not_after - now < SOON {
                warnings.push(format!("{what} expires on {}", date(leaf.not_after)));
            }
        }
        warnings
    }
}

/// The names certificates serve, to the index of the first pair that lists each.
#[derive(Debug, Default)]
struct Names {
    exact: HashMap<String, usize>,
    /// `*.example.com` as `example.com`.
    wildcards: HashMap<String, usize>,
}

impl Names {
    /// Adds a dNSName (lower case, no trailing dot) of pair `index`, unless an earlier pair
    /// lists it. RFC 6125 §6.4.3: a wildcard is a whole leftmost label over a name of two
    /// labels or more; any other `*` matches nothing.
    fn insert(&mut self, name: &str, index: usize) {
        match name.strip_prefix("*.") {
            Some(parent) if parent.contains('.') && !parent.contains('*') => {
                self.wildcards.entry(parent.to_owned()).or_insert(index);
            }
            _ if name.contains('*') => {}
            _ => {
                self.exact.entry(name.to_owned()).or_insert(index);
            }
        }
    }

    /// The pair for an SNI name: one listing it, else one whose wildcard stands for its
    /// first label (exactly one).
    fn choose(&self, sni: &str) -> Option<usize> {
        let name = sni.strip_suffix('.').unwrap_or(sni).to_ascii_lowercase();
        self.exact.get(&name).copied().or_else(|| {
            let (label, parent) = name.split_once('.')?;
            (!label.is_empty())
                .then(|| self.wildcards.get(parent).copied())
                .flatten()
        })
    }
}

/// The stamps of every file `config` names, in order (cert, key, cert, key…).
fn stamps_of(config: &TlsConfig) -> Vec<Stamp> {
    let stamp = |path: &Path| {
        let meta = std::fs::metadata(path).ok()?;
        Some((meta.modified().ok()?, meta.len()))
    };
    config
        .pairs()
        .iter()
        .flat_map(|pair| [stamp(pair.cert_file), stamp(pair.key_file)])
        .collect()
}

/// The certificates the listener serves now: its rustls certificate resolver. A new set
/// replaces the old whole; a handshake under way keeps the one it picked.
#[derive(Debug)]
pub struct CertStore {
    current: ArcSwap<Certificates>,
    /// The stamps of the files last tried (served or refused), so the watch tries a change
    /// once.
    tried: Mutex<Vec<Stamp>>,
}

impl CertStore {
    /// Serves `certificates`.
    pub fn new(certificates: Certificates) -> Self {
        let tried = Mutex::new(certificates.stamps.clone());
        Self {
            current: ArcSwap::from_pointee(certificates),
            tried,
        }
    }

    /// The set served now.
    pub fn current(&self) -> Arc<Certificates> {
        self.current.load_full()
    }

    /// Serves `certificates` from the next handshake on.
    pub fn install(&self, certificates: Certificates) {
        *self.tried.lock().unwrap_or_else(|e| e.into_inner()) = certificates.stamps.clone();
        self.current.store(Arc::new(certificates));
    }

    /// Reads the files of `config` again when one changed since they were last tried, and
    /// serves them; `None` when nothing changed, else what came of it (a refusal keeps the
    /// certificates served).
    pub fn refresh_if_changed(&self, config: &TlsConfig) -> Option<Result<(), CertificateError>> {
        let stamps = stamps_of(config);
        {
            let mut tried = self.tried.lock().unwrap_or_else(|e| e.into_inner());
            if *tried == stamps {
                return None;
            }
            *tried = stamps;
        }
        Some(Certificates::load(config).map(|fresh| self.install(fresh)))
    }

    /// The rustls configuration of the listener: TLS 1.2 and 1.3 with rustls's defaults on
    /// the ring provider, certificates from `store`, ALPN `http/1.1` only.
    pub fn server_config(store: Arc<Self>) -> Arc<rustls::ServerConfig> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .unwrap_or_else(|e| unreachable!("ring offers TLS 1.2 and 1.3: {e}"))
            .with_no_client_auth()
            .with_cert_resolver(store);
        config.alpn_protocols = vec![ALPN_HTTP11.to_vec()];
        Arc::new(config)
    }
}

impl ResolvesServerCert for CertStore {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load().pick(hello.server_name()).clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wildcard_covers_one_label_and_an_exact_name_comes_first() {
        let mut names = Names::default();
        for (name, index) in [
            ("a.example.com", 1),
            ("*.example.com", 2),
            ("*.com", 3),
            ("f*.example.org", 3),
            ("a.example.com", 3),
        ] {
            names.insert(name, index);
        }
        let cases = [
            ("a.example.com", Some(1)),
            ("A.Example.COM.", Some(1)),
            ("b.example.com", Some(2)),
            ("x.b.example.com", None),
            ("example.com", None),
            (".example.com", None),
            ("x.com", None),
            ("foo.example.org", None),
        ];
        for (sni, expected) in cases {
            assert_eq!(names.choose(sni), expected, "{sni}");
        }
    }
}
