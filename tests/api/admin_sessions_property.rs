//! Property: no sequence of administrators' actions leaves a deleted account with a live
//! session on any instance. Two gateways share one database (and, on the shared pair, one
//! Redis); users sign in on either; an administrator, signed in with a second factor on the
//! first, deletes, deactivates, re-activates, resets, ends sessions, changes roles and
//! re-creates accounts in random order, through the account core. Afterwards every token a
//! deleted account ever held is refused on both instances within a second and a half, and
//! its refresh tokens renew nothing.

use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use portcullis::accounts::Client;
use portcullis::accounts::admin::{AccountAction, Administrator};
use portcullis::domain::{Email, NewPassword, UserId};
use portcullis::server::RunningGateway;
use portcullis::session::SessionId;
use proptest::prelude::*;
use proptest::test_runner::{Config as ProptestConfig, TestCaseError, TestRunner};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::support::app::{Backend, PASSWORD, TestApp, backends, tokens_of};
use crate::support::client;
use crate::support::otp::totp;

/// One step of an administrator's session, on user `user` (an index into the case's users).
#[derive(Clone, Copy, Debug)]
enum Step {
    /// The user signs in on instance 0 or 1.
    SignIn {
        user: usize,
        instance: usize,
    },
    Delete {
        user: usize,
    },
    Deactivate {
        user: usize,
    },
    Activate {
        user: usize,
    },
    ResetSecondFactors {
        user: usize,
    },
    EndSessions {
        user: usize,
    },
    GrantRole {
        user: usize,
    },
    RevokeRole {
        user: usize,
    },
    /// An account with the deleted one's address is made again (a new id).
    Recreate {
        user: usize,
    },
}

const USERS: usize = 3;

fn step() -> impl Strategy<Value = Step> {
    let user = 0..USERS;
    prop_oneof![
        3 => (user.clone(), 0..2usize).prop_map(|(user, instance)| Step::SignIn { user, instance }),
        2 => user.clone().prop_map(|user| Step::Delete { user }),
        1 => user.clone().prop_map(|user| Step::Deactivate { user }),
        1 => user.clone().prop_map(|user| Step::Activate { user }),
        1 => user.clone().prop_map(|user| Step::ResetSecondFactors { user }),
        1 => user.clone().prop_map(|user| Step::EndSessions { user }),
        1 => user.clone().prop_map(|user| Step::GrantRole { user }),
        1 => user.clone().prop_map(|user| Step::RevokeRole { user }),
        2 => user.prop_map(|user| Step::Recreate { user }),
    ]
}

/// A token pair some account held, and where it was issued.
struct Held {
    user: UserId,
    access: String,
    refresh: String,
    instance: usize,
}

struct World<'a> {
    app: &'a TestApp,
    peer: &'a RunningGateway,
    admin: Administrator,
    http: reqwest::Client,
}

fn client_of() -> Client<'static> {
    Client {
        ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
        user_agent: "property",
        language: "en",
    }
}

impl World<'_> {
    fn base(&self, instance: usize) -> String {
        match instance {
            0 => self.app.gw.url(),
            _ => self.peer.url(),
        }
    }

    async fn create(&self, email: &str) -> UserId {
        let password = NewPassword::new(PASSWORD.to_owned());
        let email = Email::parse(email).unwrap();
        let accounts = &self.app.gw.app.accounts;
        let user = accounts
            .create_account(&self.admin, email, &[], Some(password), &client_of())
            .await
            .expect("create");
        user.id
    }

    async fn sign_in(&self, email: &str, instance: usize) -> Option<(String, String)> {
        let r = self
            .http
            .post(format!("{}/api/auth/login", self.base(instance)))
            .json(&json!({"email": email, "password": PASSWORD}))
            .send()
            .await
            .unwrap();
        if r.status() != StatusCode::OK {
            return None;
        }
        let t = tokens_of(&r.json::<Value>().await.unwrap());
        Some((t.access, t.refresh))
    }

    async fn act(&self, user: UserId, action: AccountAction) {
        let accounts = &self.app.gw.app.accounts;
        accounts
            .act_on_account(&self.admin, user, action, &client_of())
            .await
            .expect("an action on an existing account");
    }

    /// Whether `held`'s access token is refused on `instance` and its refresh token renews
    /// nothing, by 1.5 s from now.
    async fn refused_everywhere(&self, held: &Held) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_millis(1500);
        for instance in 0..2 {
            loop {
                let status = self
                    .http
                    .get(format!("{}/api/auth/profile", self.base(instance)))
                    .bearer_auth(&held.access)
                    .send()
                    .await
                    .unwrap()
                    .status();
                if status == StatusCode::UNAUTHORIZED {
                    break;
                }
                if Instant::now() > deadline {
                    return Err(format!(
                        "token of {} answered {status} on {instance}",
                        held.user
                    ));
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        let r = self
            .http
            .post(format!(
                "{}/api/auth/refresh-token",
                self.base(held.instance)
            ))
            .json(&json!({"refresh_token": held.refresh}))
            .send()
            .await
            .unwrap();
        if r.status() == StatusCode::OK {
            return Err(format!("a refresh token of deleted {} renewed", held.user));
        }
        Ok(())
    }

    /// Runs `steps` on fresh users named after `case`; then checks the property.
    async fn run(&self, case: usize, steps: &[Step]) -> Result<(), TestCaseError> {
        let emails: Vec<String> = (0..USERS)
            .map(|i| format!("p{case}-u{i}@example.com"))
            .collect();
        let mut current: Vec<Option<UserId>> = Vec::new();
        for email in &emails {
            current.push(Some(self.create(email).await));
        }
        let mut held: Vec<Held> = Vec::new();
        for step in steps {
            self.apply(*step, &emails, &mut current, &mut held).await;
        }
        for h in &held {
            let email_index = held_email(&current, h);
            if email_index.is_none() {
                self.refused_everywhere(h)
                    .await
                    .map_err(|e| TestCaseError::fail(format!("{e} after {steps:?}")))?;
            }
        }
        Ok(())
    }

    async fn apply(
        &self,
        step: Step,
        emails: &[String],
        current: &mut [Option<UserId>],
        held: &mut Vec<Held>,
    ) {
        let accounts = &self.app.gw.app.accounts;
        match step {
            Step::SignIn { user, instance } => {
                if let (Some(id), Some((access, refresh))) =
                    (current[user], self.sign_in(&emails[user], instance).await)
                {
                    held.push(Held {
                        user: id,
                        access,
                        refresh,
                        instance,
                    });
                }
            }
            Step::Delete { user } => {
                if let Some(id) = current[user].take() {
                    accounts
                        .delete_account(&self.admin, id, &client_of())
                        .await
                        .expect("delete");
                }
            }
            Step::Recreate { user } => {
                if current[user].is_none() {
                    current[user] = Some(self.create(&emails[user]).await);
                }
            }
            Step::Deactivate { user } => self.maybe(current[user], AccountAction::Deactivate).await,
            Step::Activate { user } => self.maybe(current[user], AccountAction::Activate).await,
            Step::ResetSecondFactors { user } => {
                self.maybe(current[user], AccountAction::ResetSecondFactors)
                    .await;
            }
            Step::EndSessions { user } => {
                self.maybe(current[user], AccountAction::EndSessions).await
            }
            Step::GrantRole { user } => {
                self.maybe(current[user], AccountAction::GrantRole("ops".into()))
                    .await;
            }
            Step::RevokeRole { user } => {
                self.maybe(current[user], AccountAction::RevokeRole("ops".into()))
                    .await;
            }
        }
    }

    async fn maybe(&self, user: Option<UserId>, action: AccountAction) {
        if let Some(id) = user {
            self.act(id, action).await;
        }
    }
}

/// The index of the account `held` belongs to, if that account still exists.
fn held_email(current: &[Option<UserId>], held: &Held) -> Option<usize> {
    current.iter().position(|c| *c == Some(held.user))
}

/// Signs the administrator in with a second factor on `app` and returns it as the core
/// admits it.
async fn administrator(app: &TestApp) -> Administrator {
    let email = "root@example.com";
    app.verified_user(email).await;
    let store = app.store().await;
    let account = store
        .find_by_email(&Email::parse(email).unwrap())
        .await
        .unwrap()
        .unwrap();
    store.grant_role(account.id, "admin").await.unwrap();
    let access = app.login(email).await.access;
    let setup = app.post_as(&access, "/api/auth/setup-2fa", json!({})).await;
    let secret = setup.body["data"]["secret"].as_str().unwrap().to_owned();
    let enabled = app
        .post_as(
            &access,
            "/api/auth/enable-2fa",
            json!({"secret": secret, "token": totp(&secret, 0), "password": PASSWORD}),
        )
        .await;
    assert_eq!(enabled.status, StatusCode::OK, "{}", enabled.body);
    // The code just used is spent (replay protection): sign in with the next one.
    let r = app
        .post(
            "/api/auth/login",
            json!({"email": email, "password": PASSWORD, "two_factor_code": totp(&secret, 1)}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let token = tokens_of(&r.body).access;
    let claims: Value = serde_json::from_slice(
        &URL_SAFE_NO_PAD
            .decode(token.split('.').nth(1).unwrap())
            .unwrap(),
    )
    .unwrap();
    let session: SessionId = claims["sid"].as_str().unwrap().parse().unwrap();
    app.gw
        .app
        .accounts
        .administrator(account.id, session)
        .await
        .expect("an administrator with a fresh second factor")
}

fn check(backend: Backend) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let extra = "[admin]\nmax_auth_age = \"1h\"\n[sessions]\nmax_per_user = 50\n";
    let app = runtime.block_on(TestApp::spawn(backend, extra));
    let peer = app.spawn_peer();
    let admin = runtime.block_on(administrator(&app));
    let world = World {
        app: &app,
        peer: &peer,
        admin,
        http: client(),
    };
    let mut runner = TestRunner::new(ProptestConfig {
        cases: 10,
        failure_persistence: None,
        ..ProptestConfig::default()
    });
    let case = std::cell::Cell::new(0usize);
    runner
        .run(&proptest::collection::vec(step(), 1..14), |steps| {
            case.set(case.get() + 1);
            runtime.block_on(world.run(case.get(), &steps))
        })
        .unwrap_or_else(|e| panic!("{backend:?}: {e}"));
}

#[test]
fn no_admin_sequence_leaves_a_deleted_account_with_a_live_session() {
    for backend in backends() {
        check(backend);
    }
}
