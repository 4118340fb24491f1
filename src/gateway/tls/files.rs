//! Reading one certificate chain and its key from their PEM files, with every way they can be
//! wrong named by the config key of the file at fault. No message quotes what a file holds:
//! a key file's bytes never reach a log line or an answer.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;

use crate::config::KeyedPair;

/// A certificate or key file that cannot be served, with the key that names it.
#[derive(Debug, thiserror::Error)]
#[error("invalid value for `{key}` ({}): {reason}", path.display())]
pub struct CertificateError {
    /// `tls.cert_file`, `tls.certificates[1].key_file`…
    pub key: String,
    /// The file, as configured.
    pub path: PathBuf,
    /// What is wrong with it, never its content.
    pub reason: String,
}

/// What a pair's leaf certificate says, for SNI and for the warnings about its dates.
#[derive(Clone, Debug)]
pub struct Leaf {
    /// The key of its certificate file (`tls.cert_file`, `tls.certificates[0].cert_file`).
    pub key: String,
    /// The certificate file.
    pub path: PathBuf,
    /// Its subjectAltName dNSNames, lower case, no trailing dot (`*.example.com` kept so).
    pub names: Vec<String>,
    /// Not valid before, Unix seconds.
    pub not_before: i64,
    /// Not valid after, Unix seconds.
    pub not_after: i64,
}

/// Reads a pair: the chain, the key, that they belong together, and the leaf's names and
/// dates.
pub(super) fn load_pair(
    pair: &KeyedPair<'_>,
) -> Result<(Arc<CertifiedKey>, Leaf), CertificateError> {
    let cert_key = pair.key("cert_file");
    let key_key = pair.key("key_file");
    let fail = |key: &str, path: &Path, reason: &str| CertificateError {
        key: key.to_owned(),
        path: path.to_owned(),
        reason: reason.to_owned(),
    };
    let chain = read_chain(pair.cert_file).map_err(|r| fail(&cert_key, pair.cert_file, &r))?;
    let private = read_key(pair.key_file).map_err(|r| fail(&key_key, pair.key_file, &r))?;
    let signer = rustls::crypto::ring::sign::any_supported_type(&private).map_err(|_| {
        let reason = "is a kind of key this server cannot sign with (RSA, ECDSA P-256 or \
                      P-384, and Ed25519 are)";
        fail(&key_key, pair.key_file, reason)
    })?;
    let leaf = read_leaf(&chain[0]).map_err(|r| fail(&cert_key, pair.cert_file, &r))?;
    let certified = CertifiedKey::new(chain, signer);
    match certified.keys_match() {
        // A key whose public half cannot be derived is taken on trust.
        Ok(()) | Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => {}
        Err(rustls::Error::InconsistentKeys(_)) => {
            let reason =
                format!("is not the key of {cert_key}'s certificate (its public key differs)");
            return Err(fail(&key_key, pair.key_file, &reason));
        }
        Err(_) => {
            let reason = "its first certificate cannot be read as an X.509 certificate";
            return Err(fail(&cert_key, pair.cert_file, reason));
        }
    }
    if pair.entry.is_some() && leaf.names.is_empty() {
        let reason = "names no host (no subjectAltName dNSName), so no SNI could choose it";
        return Err(fail(&cert_key, pair.cert_file, reason));
    }
    let leaf = Leaf {
        key: cert_key,
        path: pair.cert_file.to_owned(),
        ..leaf
    };
    Ok((Arc::new(certified), leaf))
}

fn read(path: &Path) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("cannot be read: {e}"))
}

fn read_chain(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let bytes = read(path)?;
    let chain = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| "is not a readable PEM file of certificates".to_owned())?;
    if chain.is_empty() {
        return Err("holds no PEM certificate (-----BEGIN CERTIFICATE-----)".to_owned());
    }
    Ok(chain)
}

fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, String> {
    let bytes = read(path)?;
    PrivateKeyDer::from_pem_slice(&bytes).map_err(|e| match e {
        pem::Error::NoItemsFound => "holds no PEM private key (PKCS#8, PKCS#1 or SEC1)".to_owned(),
        _ => "is not a readable PEM private key".to_owned(),
    })
}

/// The leaf's dNSNames and validity (RFC 5280 §4.2.1.6, §4.1.2.5).
fn read_leaf(der: &CertificateDer<'_>) -> Result<Leaf, String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der)
        .map_err(|_| "its first certificate is not a readable X.509 certificate".to_owned())?;
    let san = cert
        .subject_alternative_name()
        .map_err(|_| "its first certificate's subjectAltName cannot be read".to_owned())?;
    let names = san
        .map(|ext| {
            ext.value
                .general_names
                .iter()
                .filter_map(|name| match name {
                    x509_parser::extensions::GeneralName::DNSName(dns) => {
                        Some(dns.strip_suffix('.').unwrap_or(dns).to_ascii_lowercase())
                    }
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default();
    let validity = cert.validity();
    Ok(Leaf {
        key: String::new(),
        path: PathBuf::new(),
        names,
        not_before: validity.not_before.timestamp(),
        not_after: validity.not_after.timestamp(),
    })
}
