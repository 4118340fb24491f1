//! Passkeys: signing in with one, as the second factor of a password sign-in or alone (a
//! discoverable passkey with user verification), and the account's own keys — adding,
//! listing, renaming and removing them. Counters and the backup flag are checked on every
//! use; a refused passwordless use counts against the account's lockout.
//!
//! Adding a passkey needs a verified address and the step-up (the password, and a current
//! code when TOTP is on), as every security change does; so does removing one. Renaming
//! does not. A registration is finished only by the session that began it.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::Utc;
use webauthn_rs::prelude::{
    AuthenticationResult, CreationChallengeResponse, Credential, Passkey, PublicKeyCredential,
    RegisterPublicKeyCredential, WebauthnError,
};

use super::fields::FieldErrors;
use super::proof::Failed;
use super::{AccountError, Accounts, Client, PasskeyChallenge, SignedIn, StepUp, lockout};
use crate::domain::{PasskeyId, UserId};
use crate::mail::MailKind;
use crate::passkeys::{Ceremony, CeremonyId};
use crate::session::{PasskeyUse, SessionId};
use crate::store::{
    AuditKind, AuditOutcome, MAX_PASSKEY_NAME_CHARS, PasskeyUse as RecordedUse, StoredPasskey, User,
};
use crate::telemetry::SECURITY;

/// Why an account must have proven its address first, as the refusal says it.
const PASSKEY_NEEDS_VERIFIED_EMAIL: &str = "Verify your email address before adding a passkey.";

/// A browser's answer to a passkey challenge: the ceremony it finishes and the
/// `PublicKeyCredential` (`toJSON()` shape) it signed.
pub struct PasskeyAnswer {
    /// The id of the ceremony whose challenge was signed.
    pub ceremony: CeremonyId,
    /// The signed assertion, as the browser's `PublicKeyCredential.toJSON()` gives it.
    pub credential: PublicKeyCredential,
}

/// A passwordless sign-in.
pub struct PasskeySignIn {
    /// The discoverable passkey's answer; it names the user.
    pub answer: PasskeyAnswer,
    /// A longer session, as with a password.
    pub remember_me: bool,
}

/// A passkey's name as the account shows it: trimmed, 1 to 64 characters
/// ([`crate::store::MAX_PASSKEY_NAME_CHARS`]), no control characters and nothing invisible
/// or direction-changing (Unicode TR #36 §2.2), so that one name cannot pose as another.
/// [`PasskeyName::parse`] holds a name to those rules, for the API's JSON reader and the
/// portal's forms alike.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PasskeyName(String);

impl PasskeyName {
    /// A name as typed, trimmed and held to the rules above.
    ///
    /// Errors: `Invalid` naming the field `name` (`is required`, or the rule broken).
    pub fn parse(text: &str) -> Result<Self, AccountError> {
        let mut found = FieldErrors::default();
        let name = found.required("name", text).map(str::to_owned);
        let name = name.filter(|n| found.display_text("name", n, MAX_PASSKEY_NAME_CHARS));
        found.finish_with(name.map(Self))
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether two names are one to the account's owner: equal once trimmed (as parsed),
    /// in Unicode NFKC (full-width `Ｌａｐｔｏｐ` and `ℒaptop` are `Laptop`) and case-folded
    /// (`STRASSE` is `Straße`). Letters of other scripts that look alike (a Cyrillic `а`)
    /// stay different names.
    pub fn same_as(&self, other: &str) -> bool {
        folded(&self.0) == folded(other.trim())
    }
}

/// `name` as [`PasskeyName::same_as`] compares it: NFKC, lower case, and the two full case
/// folds lower case lacks (`ß` → `ss`, final `ς` → `σ`; Unicode CaseFolding.txt).
fn folded(name: &str) -> String {
    use unicode_normalization::UnicodeNormalization;
    let lower = name.nfkc().collect::<String>().to_lowercase();
    lower.replace('ß', "ss").replace('ς', "σ")
}

/// The options of a passkey registration: the ceremony to finish and what
/// `navigator.credentials.create()` takes (discoverable credentials required).
pub struct RegistrationChallenge {
    /// The id the answer must name to finish the ceremony (a bearer: never logged).
    pub ceremony: CeremonyId,
    /// The WebAuthn creation options.
    pub options: CreationChallengeResponse,
}

impl std::fmt::Debug for RegistrationChallenge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The ceremony id is a bearer of the challenge: kept out of logs.
        f.write_str("RegistrationChallenge")
    }
}

/// A passkey the browser created, to store under `name`.
pub struct NewPasskey {
    /// The registration ceremony it answers.
    pub ceremony: CeremonyId,
    /// The browser's `PublicKeyCredential` (`toJSON()` shape) from `create()`.
    pub credential: RegisterPublicKeyCredential,
    /// What the account calls it.
    pub name: PasskeyName,
}

/// A passkey the relying party just registered, as stored for `user`.
pub(super) fn stored_passkey(
    user: UserId,
    passkey: Passkey,
    name: PasskeyName,
) -> Result<StoredPasskey, AccountError> {
    let record = serde_json::to_string(&passkey)
        .map_err(|e| AccountError::internal("writing a passkey", &e))?;
    let cred = Credential::from(passkey);
    Ok(StoredPasskey {
        id: PasskeyId::random(),
        user_id: user,
        credential_id: credential_key(&cred.cred_id),
        name: name.0,
        credential: record,
        sign_count: cred.counter,
        backup_eligible: cred.backup_eligible,
        backup_state: cred.backup_state,
        created_at: crate::store::now(),
        last_used_at: None,
    })
}

/// Registration options that ask for a discoverable credential, so the key can also sign
/// in without a password (WebAuthn §5.4.4 `residentKey`).
pub(super) fn require_resident_key(options: &mut CreationChallengeResponse) {
    let selection = options
        .public_key
        .authenticator_selection
        .get_or_insert_with(Default::default);
    selection.resident_key = Some(webauthn_rs_proto::ResidentKeyRequirement::Required);
    selection.require_resident_key = true;
}

/// Adding a passkey takes a verified address; `EmailNotVerified` otherwise.
pub fn verified_for_passkeys(user: &User) -> Result<(), AccountError> {
    if user.is_verified {
        Ok(())
    } else {
        Err(AccountError::EmailNotVerified(PASSKEY_NEEDS_VERIFIED_EMAIL))
    }
}

/// base64url (unpadded) of a credential id, as stored.
pub fn credential_key(id: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(id)
}

impl Accounts {
    /// The relying party, or `PasskeysDisabled`.
    pub fn relying_party(&self) -> Result<&webauthn_rs::Webauthn, AccountError> {
        self.passkeys
            .relying_party()
            .ok_or(AccountError::PasskeysDisabled)
    }

    /// The user's passkeys, when passkeys are on (none otherwise).
    pub async fn usable_passkeys(&self, user: &User) -> Result<Vec<StoredPasskey>, AccountError> {
        if self.passkeys.relying_party().is_none() {
            return Ok(Vec::new());
        }
        Ok(self.store.list_passkeys(user.id).await?)
    }

    /// A passkey challenge for the second step of `user`'s password sign-in, when they
    /// have passkeys (and one can be started).
    pub(super) async fn second_factor_challenge(
        &self,
        user: &User,
    ) -> Result<Option<PasskeyChallenge>, AccountError> {
        let keys = self.usable_passkeys(user).await?;
        let Some(rp) = self.passkeys.relying_party().filter(|_| !keys.is_empty()) else {
            return Ok(None);
        };
        let passkeys: Vec<Passkey> = keys
            .iter()
            .filter_map(|k| serde_json::from_str(&k.credential).ok())
            .collect();
        match rp.start_passkey_authentication(&passkeys) {
            Ok((options, state)) => {
                let ceremony = Ceremony::SecondFactor {
                    user_id: user.id,
                    state,
                };
                let ceremony = self.passkeys.begin(&*self.sessions, &ceremony).await?;
                Ok(Some(PasskeyChallenge { ceremony, options }))
            }
            Err(e) => {
                tracing::warn!(error = %e, user_id = %user.id, "could not start a passkey sign-in");
                Ok(None)
            }
        }
    }

    /// Checks a passkey answer as the second factor of `user`'s sign-in.
    pub(super) async fn second_factor_passkey(
        &self,
        user: &User,
        answer: Option<&PasskeyAnswer>,
        client: &Client<'_>,
    ) -> Result<(), Failed> {
        let Some(rp) = self.passkeys.relying_party() else {
            return Err(Failed::Wrong);
        };
        let Some(answer) = answer else {
            self.refused(client, Some(user.id), "answer_malformed");
            return Err(Failed::Wrong);
        };
        let state = match self
            .passkeys
            .finish(&*self.sessions, &answer.ceremony)
            .await
        {
            Ok(Some(Ceremony::SecondFactor { user_id, state })) if user_id == user.id => state,
            Ok(_) => {
                self.refused(client, Some(user.id), "ceremony_invalid");
                return Err(Failed::Wrong);
            }
            Err(e) => return Err(AccountError::from(e).into()),
        };
        let result = match rp.finish_passkey_authentication(&answer.credential, &state) {
            Ok(r) => r,
            Err(e) => {
                self.refused_by_library(client, user.id, &e);
                return Err(Failed::Wrong);
            }
        };
        let stored = match self
            .store
            .find_passkey(&credential_key(result.cred_id()))
            .await
        {
            Ok(Some(stored)) if stored.user_id == user.id => stored,
            Ok(_) => {
                self.refused(client, Some(user.id), "unknown_credential");
                return Err(Failed::Wrong);
            }
            Err(e) => return Err(AccountError::from(e).into()),
        };
        self.accept_use(&stored, &result, client)
            .await
            .map_err(|refusal| refusal.map_or(Failed::Wrong, Failed::Backend))
    }

    /// Logs and counts a refused passkey use.
    pub fn refused(&self, client: &Client<'_>, user: Option<UserId>, reason: &'static str) {
        self.passkeys.count("refused", reason);
        match user {
            Some(user_id) => {
                tracing::warn!(target: SECURITY, event = "passkey_refused", reason, user_id = %user_id, client_ip = %client.ip);
            }
            None => {
                tracing::warn!(target: SECURITY, event = "passkey_refused", reason, client_ip = %client.ip);
            }
        }
    }

    /// Logs a use the library refused; a counter that did not move forward is a possible
    /// clone and gets its own event.
    fn refused_by_library(&self, client: &Client<'_>, user: UserId, error: &WebauthnError) {
        match error {
            WebauthnError::CredentialPossibleCompromise => {
                self.refused(client, Some(user), "counter_regression");
                tracing::warn!(target: SECURITY, event = "passkey_clone_suspected", user_id = %user, client_ip = %client.ip);
            }
            WebauthnError::CredentialBackupEligibilityInconsistent => {
                self.refused(client, Some(user), "backup_eligibility_changed");
            }
            _ => self.refused(client, Some(user), "assertion_invalid"),
        }
    }

    /// Checks the counter of an accepted assertion against the stored one (read now, not
    /// when the ceremony began) and records the use over it. `Err(None)` refuses the use;
    /// `Err(Some(_))` is a backend failure.
    async fn accept_use(
        &self,
        stored: &StoredPasskey,
        result: &AuthenticationResult,
        client: &Client<'_>,
    ) -> Result<(), Option<AccountError>> {
        let counter = result.counter();
        // WebAuthn §6.1.1: with either counter non-zero, the new one must be greater.
        if (counter > 0 || stored.sign_count > 0) && counter <= stored.sign_count {
            self.refused(client, Some(stored.user_id), "counter_regression");
            tracing::warn!(
                target: SECURITY,
                event = "passkey_clone_suspected",
                user_id = %stored.user_id,
                passkey_id = %stored.id,
                stored_count = stored.sign_count,
                presented_count = counter,
                client_ip = %client.ip,
            );
            return Err(None);
        }
        if stored.backup_eligible && !result.backup_eligible() {
            // The BE flag of a credential never changes (WebAuthn §6.1.3).
            self.refused(client, Some(stored.user_id), "backup_eligibility_changed");
            return Err(None);
        }
        let mut passkey: Passkey = serde_json::from_str(&stored.credential)
            .map_err(|e| Some(AccountError::internal("reading a stored passkey", &e)))?;
        passkey.update_credential(result);
        let record = serde_json::to_string(&passkey)
            .map_err(|e| Some(AccountError::internal("writing a passkey", &e)))?;
        let recorded = self
            .store
            .record_passkey_use(&RecordedUse {
                id: stored.id,
                previous_sign_count: stored.sign_count,
                sign_count: counter.max(stored.sign_count),
                backup_state: result.backup_state(),
                credential: record,
            })
            .await
            .map_err(|e| Some(e.into()))?;
        if !recorded {
            // Another use of the same count got there first: one of them is a clone.
            self.refused(client, Some(stored.user_id), "counter_regression");
            tracing::warn!(target: SECURITY, event = "passkey_clone_suspected", user_id = %stored.user_id, passkey_id = %stored.id, client_ip = %client.ip);
            return Err(None);
        }
        self.passkeys.count("used", "ok");
        tracing::info!(target: SECURITY, event = "passkey_used", user_id = %stored.user_id, passkey_id = %stored.id, client_ip = %client.ip);
        Ok(())
    }

    /// The challenge of a passwordless sign-in (`navigator.credentials.get()`, with
    /// `mediation: "conditional"` for autofill).
    pub async fn passwordless_challenge(&self) -> Result<PasskeyChallenge, AccountError> {
        let (options, state) = self
            .relying_party()?
            .start_discoverable_authentication()
            .map_err(|e| AccountError::internal("starting a passkey sign-in", &e))?;
        let ceremony = Ceremony::Passwordless { state };
        let ceremony = self.passkeys.begin(&*self.sessions, &ceremony).await?;
        Ok(PasskeyChallenge { ceremony, options })
    }

    /// Signs in with a discoverable passkey alone: the passkey names the user and must
    /// have verified them (PIN or biometrics); the session counts as two factors.
    ///
    /// Errors: `PasskeysDisabled`, `CeremonyInvalid`, `PasskeyRefused`, `Locked`,
    /// `Deactivated`, backend failures.
    pub async fn sign_in_with_passkey(
        &self,
        input: PasskeySignIn,
        client: &Client<'_>,
    ) -> Result<SignedIn, AccountError> {
        let result = self.check_passwordless(&input.answer, client).await;
        let user = self.counted(result)?;
        self.open_session(
            &user,
            true,
            PasskeyUse::Passwordless,
            input.remember_me,
            client,
        )
        .await
        .map(|tokens| SignedIn { user, tokens })
    }

    /// The checks of [`Accounts::sign_in_with_passkey`]: the account it signs in.
    async fn check_passwordless(
        &self,
        answer: &PasskeyAnswer,
        client: &Client<'_>,
    ) -> Result<User, AccountError> {
        let rp = self.relying_party()?;
        let Some(Ceremony::Passwordless { state }) = self
            .passkeys
            .finish(&*self.sessions, &answer.ceremony)
            .await?
        else {
            self.refused(client, None, "ceremony_invalid");
            return Err(AccountError::CeremonyInvalid);
        };
        let credential = &answer.credential;
        let Ok((user_id, _)) = rp.identify_discoverable_authentication(credential) else {
            self.refused(client, None, "no_user_handle");
            return Err(AccountError::PasskeyRefused);
        };
        let user_id = UserId::from_uuid(user_id);
        let stored = self
            .store
            .find_passkey(&credential_key(credential.get_credential_id()))
            .await?
            .filter(|stored| stored.user_id == user_id);
        let user = match stored {
            Some(_) => self.store.find_by_id(user_id).await?,
            None => None,
        };
        let (Some(stored), Some(user)) = (stored, user) else {
            self.refused(client, None, "unknown_credential");
            return Err(AccountError::PasskeyRefused);
        };
        if user.is_locked(Utc::now()) {
            tracing::warn!(target: SECURITY, event = "login_refused_locked", user_id = %user.id, client_ip = %client.ip);
            self.audit_own(
                AuditKind::SignIn,
                &user,
                Some(client),
                AuditOutcome::Refused,
                "locked",
            );
            return Err(AccountError::Locked);
        }
        let passkey: Passkey = serde_json::from_str(&stored.credential)
            .map_err(|e| AccountError::internal("reading a stored passkey", &e))?;
        let result = match rp.finish_discoverable_authentication_v2(credential, state, &passkey) {
            Ok(result) if result.user_verified() => result,
            Ok(_) => {
                self.refused(client, Some(user.id), "user_not_verified");
                return Err(self.count_failure(&user, client).await);
            }
            Err(e) => {
                self.refused_by_library(client, user.id, &e);
                return Err(self.count_failure(&user, client).await);
            }
        };
        match self.accept_use(&stored, &result, client).await {
            Ok(()) => {}
            Err(Some(e)) => return Err(e),
            Err(None) => return Err(self.count_failure(&user, client).await),
        }
        if !user.is_active {
            tracing::warn!(target: SECURITY, event = "login_refused_deactivated", user_id = %user.id, client_ip = %client.ip);
            self.audit_own(
                AuditKind::SignIn,
                &user,
                Some(client),
                AuditOutcome::Refused,
                "deactivated",
            );
            return Err(AccountError::Deactivated);
        }
        Ok(user)
    }

    /// Counts a refused passwordless sign-in against the account's lockout, like a wrong code.
    async fn count_failure(&self, user: &User, client: &Client<'_>) -> AccountError {
        match lockout::claim(self, user, "", client, AuditKind::SignIn).await {
            Ok(guess) => {
                guess.failed(self, client, "passkey_refused").await;
                AccountError::PasskeyRefused
            }
            Err(refusal) => refusal,
        }
    }
}

impl Accounts {
    /// Whether this server can be a WebAuthn relying party (passkeys are on).
    pub fn passkeys_enabled(&self) -> bool {
        self.passkeys.relying_party().is_some()
    }

    /// All of `user`'s passkeys, oldest first, whether or not passkeys are on.
    pub async fn passkeys_of(&self, user: &User) -> Result<Vec<StoredPasskey>, AccountError> {
        Ok(self.store.list_passkeys(user.id).await?)
    }

    /// Begins adding a passkey to `user`'s account from `session`, after the step-up
    /// (`proof`: the password, and a code when TOTP is on): the options for `navigator.credentials.create()`, which exclude the keys
    /// the account has and require a discoverable credential, so the key can also sign in
    /// without a password (WebAuthn §5.4.4 `residentKey`).
    ///
    /// Errors: `PasskeysDisabled`, `EmailNotVerified`, `Invalid` (a missing password or
    /// code), those of [`Accounts::step_up`], backend failures.
    pub async fn begin_passkey_registration(
        &self,
        user: &User,
        session: &SessionId,
        proof: StepUp<'_>,
        client: &Client<'_>,
    ) -> Result<RegistrationChallenge, AccountError> {
        let rp = self.relying_party()?;
        verified_for_passkeys(user)?;
        if let Err(e) = self.step_up_with_code(user, proof, client).await {
            tracing::warn!(target: SECURITY, event = "passkey_registration_refused", reason = "step_up", user_id = %user.id);
            self.passkeys.count("refused", "step_up");
            return Err(e);
        }
        let existing = self.store.list_passkeys(user.id).await?;
        let exclude: Vec<Vec<u8>> = existing
            .iter()
            .filter_map(|p| URL_SAFE_NO_PAD.decode(&p.credential_id).ok())
            .collect();
        let display_name = format!("{} {}", user.first_name, user.last_name);
        let (mut options, state) = rp
            .start_passkey_registration(
                user.id.as_uuid(),
                user.email.as_str(),
                display_name.trim(),
                Some(exclude),
            )
            .map_err(|e| AccountError::internal("starting a passkey registration", &e))?;
        require_resident_key(&mut options);
        let ceremony = Ceremony::Registration {
            user_id: user.id,
            session_id: session.to_string(),
            state,
        };
        let ceremony = self.passkeys.begin(&*self.sessions, &ceremony).await?;
        Ok(RegistrationChallenge { ceremony, options })
    }

    /// Finishes adding a passkey: the ceremony `session` began for `user` (once), the
    /// authenticator's answer checked, the key stored and the owner mailed.
    ///
    /// Errors: `PasskeysDisabled`, `EmailNotVerified`, `CeremonyInvalid` (expired, used,
    /// or another account's or session's), `PasskeyInvalid`, `PasskeyAlreadyRegistered`,
    /// backend failures.
    pub async fn add_passkey(
        &self,
        user: &User,
        session: &SessionId,
        input: NewPasskey,
        client: &Client<'_>,
    ) -> Result<StoredPasskey, AccountError> {
        let rp = self.relying_party()?;
        verified_for_passkeys(user)?;
        // Before the ceremony is spent: another name can be tried with the same answer.
        self.passkey_name_is_free(user, None, &input.name).await?;
        let state = match self
            .passkeys
            .finish(&*self.sessions, &input.ceremony)
            .await?
        {
            Some(Ceremony::Registration {
                user_id,
                session_id,
                state,
            }) if user_id == user.id && session_id == session.to_string() => state,
            _ => return Err(AccountError::CeremonyInvalid),
        };
        let passkey = rp
            .finish_passkey_registration(&input.credential, &state)
            .map_err(|e| {
                tracing::warn!(target: SECURITY, event = "passkey_registration_refused", reason = %e, user_id = %user.id);
                self.passkeys.count("refused", "registration_invalid");
                AccountError::PasskeyInvalid
            })?;
        let stored = stored_passkey(user.id, passkey, input.name)?;
        if !self.store.add_passkey(&stored).await? {
            return Err(AccountError::PasskeyAlreadyRegistered);
        }
        self.passkeys.count("registered", "ok");
        tracing::info!(target: SECURITY, event = "passkey_registered", user_id = %user.id, passkey_id = %stored.id, backup_eligible = stored.backup_eligible);
        let detail = format!("passkey {}", stored.id);
        self.audit_own(
            AuditKind::PasskeyAdd,
            user,
            Some(client),
            AuditOutcome::Success,
            &detail,
        );
        self.mailer.send_in_background_in(
            self.mail_language(user, client),
            user.email.as_str(),
            &user.first_name,
            MailKind::PasskeyAdded {
                name: stored.name.clone(),
            },
        );
        Ok(stored)
    }

    /// `PasskeyNameTaken` when another of `user`'s passkeys (not `except`) has `name`
    /// (the portal asks before the authenticator is, the core again on add and rename).
    pub async fn passkey_name_is_free(
        &self,
        user: &User,
        except: Option<PasskeyId>,
        name: &PasskeyName,
    ) -> Result<(), AccountError> {
        let keys = self.store.list_passkeys(user.id).await?;
        let taken = keys
            .iter()
            .any(|k| Some(k.id) != except && name.same_as(&k.name));
        match taken {
            true => Err(AccountError::PasskeyNameTaken),
            false => Ok(()),
        }
    }

    /// Renames one of `user`'s passkeys; answers it as now stored.
    ///
    /// Errors: `PasskeyNotFound` (none of theirs has that id), backend failures.
    pub async fn rename_passkey(
        &self,
        user: &User,
        id: PasskeyId,
        name: &PasskeyName,
    ) -> Result<StoredPasskey, AccountError> {
        self.passkey_name_is_free(user, Some(id), name).await?;
        if !self
            .store
            .rename_passkey(user.id, id, name.as_str())
            .await?
        {
            return Err(AccountError::PasskeyNotFound);
        }
        // The name is the user's own text: the trail keeps the key's id, not what it is called.
        let detail = format!("passkey {id}");
        self.audit_own(
            AuditKind::PasskeyRename,
            user,
            None,
            AuditOutcome::Success,
            &detail,
        );
        let keys = self.store.list_passkeys(user.id).await?;
        keys.into_iter()
            .find(|k| k.id == id)
            .ok_or(AccountError::PasskeyNotFound)
    }

    /// Removes one of `user`'s passkeys after the step-up (`proof`: the password, and a
    /// code when TOTP is on) and mails them. `id`
    /// is `None` when what was sent is no passkey id at all: answered like an unknown one,
    /// after the step-up all the same.
    ///
    /// Errors: `Invalid`, those of [`Accounts::step_up`], `PasskeyNotFound`, backend
    /// failures.
    pub async fn remove_passkey(
        &self,
        user: &User,
        id: Option<PasskeyId>,
        proof: StepUp<'_>,
        client: &Client<'_>,
    ) -> Result<(), AccountError> {
        if let Err(e) = self.step_up_with_code(user, proof, client).await {
            tracing::warn!(target: SECURITY, event = "passkey_removal_refused", user_id = %user.id);
            self.passkeys.count("refused", "step_up");
            return Err(e);
        }
        let id = id.ok_or(AccountError::PasskeyNotFound)?;
        let keys = self.store.list_passkeys(user.id).await?;
        let key = keys
            .into_iter()
            .find(|k| k.id == id)
            .ok_or(AccountError::PasskeyNotFound)?;
        if !self.store.remove_passkey(user.id, id).await? {
            return Err(AccountError::PasskeyNotFound);
        }
        self.passkeys.count("removed", "ok");
        tracing::info!(target: SECURITY, event = "passkey_removed", user_id = %user.id, passkey_id = %id);
        let detail = format!("passkey {id}");
        self.audit_own(
            AuditKind::PasskeyRemove,
            user,
            Some(client),
            AuditOutcome::Success,
            &detail,
        );
        self.mailer.send_in_background_in(
            self.mail_language(user, client),
            user.email.as_str(),
            &user.first_name,
            MailKind::PasskeyRemoved { name: key.name },
        );
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_one_owner_cannot_tell_apart_are_the_same() {
        let laptop = PasskeyName::parse("Laptop").unwrap();
        for same in [
            "laptop",
            " LAPTOP ",
            "Ｌａｐｔｏｐ",
            "ℒaptop",
            "\u{3000}Laptop",
        ] {
            assert!(laptop.same_as(same), "{same:?}");
        }
        for other in ["Laptop 2", "Lаptop", "Lap top"] {
            assert!(!laptop.same_as(other), "{other:?}");
        }
        let street = PasskeyName::parse("Straße").unwrap();
        assert!(street.same_as("STRASSE"));
        let sigma = PasskeyName::parse("ΟΔΟΣ").unwrap();
        assert!(sigma.same_as("οδος") && sigma.same_as("οδοσ"));
    }
}
