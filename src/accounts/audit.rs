//! The account core's half of the audit trail: [`Accounts::audit`] appends an event in the
//! background, so no answer waits for it and no operation fails because of it.

use std::sync::Arc;

use super::{Accounts, Client};
use crate::domain::UserId;
use crate::store::{Actor, AuditKind, AuditOutcome, NewAuditEvent, User, UserStore};

impl Accounts {
    /// Appends `event` to the audit trail on the backend runtime, after the caller's answer.
    /// A write that fails is logged as a (throttled) warning and otherwise forgotten: the
    /// operation it records has already happened.
    pub fn audit(&self, event: NewAuditEvent) {
        let store = Arc::clone(&self.store);
        self.backend
            .spawn(async move { record(&*store, &event).await });
    }

    /// Audits `kind` done by `user` to their own account (from `client` when known), with
    /// `outcome` and the note `detail`.
    pub(crate) fn audit_own(
        &self,
        kind: AuditKind,
        user: &User,
        client: Option<&Client<'_>>,
        outcome: AuditOutcome,
        detail: &str,
    ) {
        let subject = Some((user.id, &user.email));
        let mut event = NewAuditEvent::new(kind, Actor::User(user.id), subject)
            .outcome(outcome)
            .detail(detail);
        event.client_ip = client.map(|c| c.ip);
        self.audit(event);
    }

    /// Audits a successful `kind` done to the account `user` by whoever held its mailed
    /// link; the address is looked up in the background too.
    pub(crate) fn audit_by_id(&self, kind: AuditKind, user: UserId, detail: &str) {
        let event = NewAuditEvent::new(kind, Actor::User(user), None).detail(detail);
        self.audit_about(user, event);
    }

    /// Audits `event` about the account `user`, whose address is looked up in the
    /// background (the event's subject is set here).
    pub(crate) fn audit_about(&self, user: UserId, mut event: NewAuditEvent) {
        let store = Arc::clone(&self.store);
        self.backend.spawn(async move {
            let email = match store.find_by_id(user).await {
                Ok(found) => found.map(|u| u.email),
                Err(_) => None,
            };
            event.subject = Some(user);
            event.subject_email = email;
            record(&*store, &event).await;
        });
    }
}

/// Writes `event`; a failure is logged as a warning (throttled per call site like every
/// warning), never answered.
pub(super) async fn record(store: &dyn UserStore, event: &NewAuditEvent) {
    if let Err(e) = store.record_audit_event(event).await {
        tracing::warn!(error = %e, kind = event.kind.as_str(), "could not write an audit event");
    }
}
