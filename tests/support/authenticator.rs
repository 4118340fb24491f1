//! A software WebAuthn authenticator and client for API tests: what a browser and a
//! platform authenticator do with `navigator.credentials.create()` / `.get()` options,
//! built from `p256` (ES256 keys and signatures) and `ciborium` (CBOR), independently of
//! the relying-party library under test.
//!
//! It makes discoverable credentials (the user handle is kept and returned), reports user
//! verification, keeps a signature counter per credential, and can be cloned to play a
//! cloned authenticator. Sources: WebAuthn Level 3 §6.1 (authenticator data), §6.5.4
//! ("none" attestation), §5.8.1 (client data), RFC 9053 §7.1.1 (EC2 COSE keys).

#![allow(dead_code)]

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ciborium::Value as Cbor;
use p256::ecdsa::signature::Signer;
use p256::ecdsa::{Signature, SigningKey};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

/// Flag bits of authenticator data (WebAuthn §6.1).
const UP: u8 = 0x01;
const UV: u8 = 0x04;
const BE: u8 = 0x08;
const BS: u8 = 0x10;
const AT: u8 = 0x40;

#[derive(Clone)]
struct Credential {
    id: Vec<u8>,
    key: SigningKey,
    rp_id: String,
    user_handle: Vec<u8>,
    counter: u32,
}

/// A software authenticator with its client (the part of a browser that builds client data).
#[derive(Clone)]
pub struct SoftAuthenticator {
    credentials: Vec<Credential>,
    /// Whether it verifies the user (PIN, biometrics): sets the UV flag.
    pub verifies_user: bool,
    /// Whether its keys may be synced (sets BE and BS), like a cloud passkey.
    pub synced: bool,
    /// Whether it keeps a signature counter; without one it always reports 0.
    pub counts: bool,
}

impl Default for SoftAuthenticator {
    fn default() -> Self {
        Self::new()
    }
}

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

fn sha256(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

fn client_data(kind: &str, challenge: &str, origin: &str) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "type": kind,
        "challenge": challenge,
        "origin": origin,
        "crossOrigin": false,
    }))
    .unwrap()
}

impl SoftAuthenticator {
    /// A user-verifying authenticator with a counter and device-bound keys.
    pub fn new() -> Self {
        Self {
            credentials: Vec::new(),
            verifies_user: true,
            synced: false,
            counts: true,
        }
    }

    fn flags(&self) -> u8 {
        let mut flags = UP;
        if self.verifies_user {
            flags |= UV;
        }
        if self.synced {
            flags |= BE | BS;
        }
        flags
    }

    /// `navigator.credentials.create()`: `options` is `{"publicKey": …}` as the server sent
    /// it; returns the `PublicKeyCredential` in its JSON form.
    pub fn create(&mut self, options: &Value, origin: &str) -> Value {
        let pk = &options["publicKey"];
        let rp_id = pk["rp"]["id"].as_str().expect("rp.id").to_string();
        let challenge = pk["challenge"].as_str().expect("challenge");
        let user_handle = URL_SAFE_NO_PAD
            .decode(pk["user"]["id"].as_str().expect("user.id"))
            .expect("user.id is base64url");
        let excluded: Vec<String> = pk["excludeCredentials"]
            .as_array()
            .map(|list| {
                list.iter()
                    .filter_map(|c| c["id"].as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        assert!(
            !self
                .credentials
                .iter()
                .any(|c| c.rp_id == rp_id && excluded.contains(&b64(&c.id))),
            "InvalidStateError: this authenticator already holds an excluded credential"
        );
        let key = loop {
            if let Ok(key) = SigningKey::from_slice(&rand::random::<[u8; 32]>()) {
                break key;
            }
        };
        let id: Vec<u8> = sha256(&key.to_bytes())[..16].to_vec();
        let point = key.verifying_key().to_encoded_point(false);
        let cose_key = Cbor::Map(vec![
            (Cbor::Integer(1.into()), Cbor::Integer(2.into())),
            (Cbor::Integer(3.into()), Cbor::Integer((-7).into())),
            (Cbor::Integer((-1).into()), Cbor::Integer(1.into())),
            (
                Cbor::Integer((-2).into()),
                Cbor::Bytes(point.x().unwrap().to_vec()),
            ),
            (
                Cbor::Integer((-3).into()),
                Cbor::Bytes(point.y().unwrap().to_vec()),
            ),
        ]);
        let mut cose_bytes = Vec::new();
        ciborium::into_writer(&cose_key, &mut cose_bytes).unwrap();

        let mut auth_data = sha256(rp_id.as_bytes()).to_vec();
        auth_data.push(self.flags() | AT);
        auth_data.extend_from_slice(&0u32.to_be_bytes());
        auth_data.extend_from_slice(&[0u8; 16]); // AAGUID: none
        auth_data.extend_from_slice(&(id.len() as u16).to_be_bytes());
        auth_data.extend_from_slice(&id);
        auth_data.extend_from_slice(&cose_bytes);

        let attestation = Cbor::Map(vec![
            (Cbor::Text("fmt".into()), Cbor::Text("none".into())),
            (Cbor::Text("attStmt".into()), Cbor::Map(vec![])),
            (Cbor::Text("authData".into()), Cbor::Bytes(auth_data)),
        ]);
        let mut attestation_bytes = Vec::new();
        ciborium::into_writer(&attestation, &mut attestation_bytes).unwrap();

        self.credentials.push(Credential {
            id: id.clone(),
            key,
            rp_id,
            user_handle,
            counter: 0,
        });
        json!({
            "id": b64(&id),
            "rawId": b64(&id),
            "type": "public-key",
            "response": {
                "attestationObject": b64(&attestation_bytes),
                "clientDataJSON": b64(&client_data("webauthn.create", challenge, origin)),
                "transports": ["internal"],
            },
            "extensions": {},
        })
    }

    /// `navigator.credentials.get()`: `options` is `{"publicKey": …}` (a `mediation`
    /// member is ignored). With an empty `allowCredentials` it picks a discoverable
    /// credential for the relying party; returns the `PublicKeyCredential` in JSON form.
    pub fn get(&mut self, options: &Value, origin: &str) -> Value {
        let pk = &options["publicKey"];
        let rp_id = pk["rpId"].as_str().expect("rpId").to_string();
        let challenge = pk["challenge"].as_str().expect("challenge");
        let allowed: Vec<String> = pk["allowCredentials"]
            .as_array()
            .map(|list| {
                list.iter()
                    .filter_map(|c| c["id"].as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        let flags = self.flags();
        let counts = self.counts;
        let credential = self
            .credentials
            .iter_mut()
            .find(|c| c.rp_id == rp_id && (allowed.is_empty() || allowed.contains(&b64(&c.id))))
            .expect("NotAllowedError: no credential for this relying party");
        if counts {
            credential.counter += 1;
        }
        let mut auth_data = sha256(rp_id.as_bytes()).to_vec();
        auth_data.push(flags);
        auth_data.extend_from_slice(&credential.counter.to_be_bytes());
        let client_data = client_data("webauthn.get", challenge, origin);
        let mut signed = auth_data.clone();
        signed.extend_from_slice(&sha256(&client_data));
        let signature: Signature = credential.key.sign(&signed);
        json!({
            "id": b64(&credential.id),
            "rawId": b64(&credential.id),
            "type": "public-key",
            "response": {
                "authenticatorData": b64(&auth_data),
                "clientDataJSON": b64(&client_data),
                "signature": b64(signature.to_der().as_bytes()),
                "userHandle": b64(&credential.user_handle),
            },
            "extensions": {},
        })
    }
}
