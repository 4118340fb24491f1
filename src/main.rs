//! The `portcullis` command line: nothing but argument parsing and dispatch.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};

use portcullis::accounts::AccountError;
use portcullis::app::App;
use portcullis::auth::password::PasswordHasher;
use portcullis::config::SessionBackend;
use portcullis::config::{Config, ConfigSource};
use portcullis::domain::{Email, NewPassword, UserId};
use portcullis::gateway::reload::Source;
use portcullis::mail::{MailKind, Mailer};
use portcullis::store::StoreError;
use portcullis::store::admin::{
    AuditQuery, InitialPassword, UserCommand, find_user, format_table, format_time,
    list_audit_events, run_user_command,
};
use portcullis::{server, session, store, telemetry};

/// Pingora allocates and frees many small buffers per request; jemalloc does that about 15%
/// cheaper than the system allocator and returns idle memory to the OS (measured with
/// benches/load.sh; mimalloc was as fast but held twice the resident memory). Its background
/// thread is on (the `background_threads` feature): without it, freed pages go back only when
/// the process allocates again, so memory held by thousands of connections closed at once
/// stayed resident while the gateway sat idle (benches/idle_connections.py).
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// A reverse-proxy authentication gateway.
#[derive(Parser)]
#[command(name = "portcullis", version, about, long_about = None)]
struct Cli {
    /// The configuration file [default: config/portcullis.toml if it exists, else the
    /// embedded defaults].
    #[arg(
        long,
        short,
        global = true,
        env = "PORTCULLIS_CONFIG",
        value_name = "PATH"
    )]
    config: Option<PathBuf>,

    /// What to do; `serve` when omitted.
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway (main and admin listeners) until SIGTERM or SIGINT.
    Serve,
    /// Validate the configuration and exit: 0 when valid, 2 with the offending key otherwise.
    CheckConfig,
    /// Apply database migrations and exit.
    Migrate,
    /// Ask the running gateway's admin listener (server.admin_listen) for /health: exit 0
    /// when it answers 200, 1 otherwise (the container's health check).
    Health,
    /// Ask the running gateway to read its configuration file again (as SIGHUP does), through
    /// the admin listener's `POST /reload` on loopback: exit 0 when the new configuration
    /// serves, 1 with the reason when it was refused (the running one stays).
    Reload,
    /// Manage accounts: create, invite, delete, roles, activation, lockout, sessions.
    User {
        #[command(subcommand)]
        action: UserAction,
    },
    /// Show the audit trail, newest first: sign-ins, account changes, operator commands.
    Audit {
        /// Only events about this account (or this address, once its account is deleted).
        #[arg(long, value_name = "EMAIL")]
        user: Option<String>,
        /// Only events of this kind (sign_in, password_change, role_grant, …).
        #[arg(long, value_name = "KIND")]
        kind: Option<String>,
        /// Only events at or after this time (RFC 3339: 2026-12-01T00:00:00Z).
        #[arg(long, value_name = "RFC3339")]
        since: Option<String>,
        /// At most this many events (up to 1000).
        #[arg(long, value_name = "N", default_value_t = 50)]
        limit: u32,
    },
}

#[derive(Subcommand)]
enum UserAction {
    /// List every account.
    List {
        /// Print a JSON array instead of the table.
        #[arg(long)]
        json: bool,
    },
    /// Show one account: its state, roles, passkeys and linked identities.
    Show {
        email: String,
        /// Print a JSON object instead of lines.
        #[arg(long)]
        json: bool,
    },
    /// Set an account's password (read from standard input, held to the password rules);
    /// every session of the account ends.
    SetPassword {
        email: String,
        /// Read the password from standard input (one line; a final newline is dropped).
        #[arg(long, required = true)]
        password_stdin: bool,
    },
    /// Mail an account a password-reset link (valid one hour), as "Forgot password?" does.
    SendReset { email: String },
    /// Create an account whose address counts as verified (you vouch for it); without
    /// --password-stdin no password works until the user sets one through "Forgot password?".
    Create {
        email: String,
        /// A role to grant; repeat for more.
        #[arg(long = "role", value_name = "ROLE")]
        roles: Vec<String>,
        /// Read the password from standard input (one line; a final newline is dropped).
        #[arg(long)]
        password_stdin: bool,
    },
    /// Delete an account: its sessions end, its 2FA, passkeys, roles and links go with it.
    Delete { email: String },
    /// Invite an address: mails a single-use link (registration.invitation_ttl, 7 days by
    /// default) that creates the account with the address verified and the roles given, in
    /// every registration mode; the link is printed too.
    Invite {
        email: String,
        /// A role the account gets; repeat for more.
        #[arg(long = "role", value_name = "ROLE")]
        roles: Vec<String>,
    },
    /// List invitations, newest first.
    Invitations,
    /// Stop an address's pending invitations from working.
    RevokeInvitation { email: String },
    /// Show an account's sessions (needs a shared session backend: redis://).
    Sessions { email: String },
    /// End every session of an account (it may sign in again).
    RevokeSessions { email: String },
    /// Give an account a role.
    GrantRole { email: String, role: String },
    /// Take a role from an account.
    RevokeRole { email: String, role: String },
    /// Stop an account from logging in and end its sessions.
    Deactivate { email: String },
    /// Allow a deactivated account to log in again.
    Activate { email: String },
    /// Clear a brute-force lockout.
    Unlock { email: String },
    /// Turn two-factor authentication off (lost authenticator): deletes the secret, the
    /// recovery codes and the passkeys and ends every session.
    #[command(name = "reset-2fa")]
    ResetTwoFactor { email: String },
}

/// `println!` for the commands' output, through [`say_all`]: a reader that stopped reading
/// (`portcullis user list | head -1`) ends the command quietly rather than in a panic.
macro_rules! say {
    ($($arg:tt)*) => {
        say_all(format_args!("{}\n", format_args!($($arg)*)))
    };
}

/// Writes `text` to standard output. A closed pipe ends the process with 0 at once (the
/// reader has what it wanted); any other write error ends it with 1, said on stderr.
fn say_all(text: std::fmt::Arguments<'_>) {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    if let Err(e) = out.write_fmt(text).and_then(|()| out.flush()) {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        eprintln!("portcullis: cannot write the output: {e}");
        std::process::exit(1);
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let (config, source) = match Config::locate(cli.config.as_deref()) {
        Ok(found) => found,
        Err(e) => {
            eprintln!("portcullis: {e}");
            return ExitCode::from(2);
        }
    };
    let command = cli.command.unwrap_or(Command::Serve);
    if source == ConfigSource::Embedded && !matches!(command, Command::Serve) {
        // `serve` logs it; the other commands say it where an operator reads them.
        eprintln!(
            "portcullis: no --config given and no {} here: using the embedded defaults",
            portcullis::config::DEFAULT_CONFIG_PATH
        );
    }
    if matches!(command, Command::CheckConfig | Command::Serve)
        && let Err(e) = preflight(&config)
    {
        // Before `serve` opens a database or writes a key: a config error exits 2.
        eprintln!("portcullis: {e} (in {source})");
        return ExitCode::from(2);
    }
    let result = match command {
        Command::CheckConfig => {
            // Upstreams are resolved here, as the gateway will at start.
            match portcullis::gateway::routes::RouteTable::from_config(
                &config,
                &portcullis::metrics::Metrics::new(),
            ) {
                Ok(table) => print_route_table(&table),
                Err(e) => {
                    eprintln!("portcullis: {e} (in {source})");
                    return ExitCode::from(2);
                }
            }
            match portcullis::passkeys::relying_party_of(&config.server.public_url) {
                Ok((rp_id, origin)) => say!(
                    "passkeys: on (relying-party id {rp_id}, origin {})",
                    origin.as_str().trim_end_matches('/')
                ),
                Err(reason) => say!("passkeys: off: {reason}"),
            }
            if let Err(e) = print_identity_providers(&config) {
                eprintln!("portcullis: {e} (in {source})");
                return ExitCode::from(2);
            }
            print_discovery(&config);
            let certificate_warnings = match print_certificates(&config) {
                Ok(warnings) => warnings,
                Err(e) => {
                    eprintln!("portcullis: {e} (in {source})");
                    return ExitCode::from(2);
                }
            };
            for warning in config.warnings().into_iter().chain(certificate_warnings) {
                eprintln!("portcullis: warning: {warning}");
            }
            let routes = config.routes.len();
            say!(
                "{source}: configuration is valid ({routes} route{})",
                if routes == 1 { "" } else { "s" }
            );
            Ok(())
        }
        Command::Migrate => migrate(&config),
        Command::Health => health(&config),
        Command::Reload => reload(&config, &source),
        Command::User { action } => user(&config, action),
        Command::Audit {
            user,
            kind,
            since,
            limit,
        } => audit(
            &config,
            AuditQuery {
                user,
                kind,
                since,
                limit,
            },
        ),
        Command::Serve => serve(config, source),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("portcullis: {}", error_chain(&e));
            ExitCode::FAILURE
        }
    }
}

/// What `serve` reads from files beside the configuration, read now so that `check-config`
/// finds what the start would refuse, and the start refuses it before it opens a database or
/// creates a key: the mail settings, the portal (templates, catalogues, images) and the key
/// files that exist.
fn preflight(config: &Config) -> Result<(), String> {
    Mailer::check_config(&config.mail).map_err(|e| format!("invalid value for `mail`: {e}"))?;
    config
        .portal
        .templates_dir()
        .and_then(|dir| {
            let languages = portcullis::i18n::Catalogs::load(dir, &config.portal.default_language)?;
            portcullis::portal::Portal::new(config, Arc::new(languages), &[0; 32])
        })
        .map_err(|e| e.to_string())?;
    portcullis::auth::jwt::KeyRing::check_files(&config.tokens)
        .map_err(|e| format!("`tokens`: {e}"))?;
    portcullis::auth::totp::SecretBox::check_file(&config.two_factor)
        .map_err(|e| format!("`two_factor.encryption_key_file`: {e}"))
}

/// An error and its causes on one line, each cause left out when the text before it already
/// says it (an error whose message quotes its source would otherwise say it twice).
fn error_chain(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if out.contains(&text) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&text);
    }
    out
}

/// `health`: one HTTP/1.0 request to the admin listener, three seconds at most.
fn health(config: &Config) -> anyhow::Result<()> {
    let (address, status, _) = ask_admin(config, "GET /health", Duration::from_secs(3))?;
    if status == "200" {
        say!("healthy ({address})");
        Ok(())
    } else {
        anyhow::bail!("unhealthy: {address} answered {status}")
    }
}

/// What a configuration source is called in a reload's answer: a file by its absolute path,
/// so that `reload` can tell whether the gateway read the file it checked.
fn source_name(source: &ConfigSource) -> String {
    match source {
        ConfigSource::File(path) => std::fs::canonicalize(path)
            .unwrap_or_else(|_| path.clone())
            .display()
            .to_string(),
        ConfigSource::Embedded => source.to_string(),
    }
}

/// `reload`: `POST /reload` on the admin listener; the answer's JSON says what happened.
/// The gateway reads the file it started from: when that is not the one checked here,
/// the command says so and fails.
fn reload(config: &Config, source: &ConfigSource) -> anyhow::Result<()> {
    // A reload resolves every upstream name: give it longer than a health check.
    let (address, status, body) = ask_admin(config, "POST /reload", Duration::from_secs(60))?;
    let answer: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
    match (
        status.as_str(),
        &answer["generation"],
        &answer["restart_needed"],
    ) {
        ("200", generation, serde_json::Value::Array(waiting)) => {
            let read = answer["source"].as_str().unwrap_or_default();
            say!("reloaded {read}: configuration generation {generation} serves");
            if read != source_name(source) {
                anyhow::bail!(
                    "the gateway at {address} read {read}, not {}: the file checked here is \
                     not the one it runs on",
                    source_name(source)
                );
            }
            let waiting: Vec<&str> = waiting.iter().filter_map(|v| v.as_str()).collect();
            if !waiting.is_empty() {
                say!("changed, but waiting for a restart: {}", waiting.join(", "));
            }
            Ok(())
        }
        ("422", ..) => anyhow::bail!(
            "reload refused, the running configuration stays: {}",
            answer["error"].as_str().unwrap_or("no reason given")
        ),
        _ => anyhow::bail!("{address} answered {status}: {body}"),
    }
}

/// One HTTP/1.0 request (`"METHOD /path"`) to the admin listener, a wildcard address asked
/// on loopback: the address asked, the status code and the body.
fn ask_admin(
    config: &Config,
    request: &str,
    limit: Duration,
) -> anyhow::Result<(std::net::SocketAddr, String, String)> {
    use std::io::{Read, Write};
    let address = server::startup::reachable(config.server.admin_listen);
    let mut stream = std::net::TcpStream::connect_timeout(&address, Duration::from_secs(3))
        .with_context(|| format!("connecting to the admin listener at {address}"))?;
    stream.set_read_timeout(Some(limit))?;
    write!(
        stream,
        "{request} HTTP/1.1\r\nHost: localhost\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )?;
    // Until the body is whole: the listener may keep the connection open regardless.
    let mut answer = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        let n = stream.read(&mut chunk)?;
        answer.extend_from_slice(&chunk[..n]);
        let text = String::from_utf8_lossy(&answer);
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let length = head
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().parse::<usize>())
                })
                .and_then(Result::ok);
            if n == 0 || length.is_some_and(|l| body.len() >= l) || answer.len() > 1 << 20 {
                let status = head.split(' ').nth(1).unwrap_or_default().to_owned();
                return Ok((address, status, body.to_owned()));
            }
        } else if n == 0 {
            anyhow::bail!("{address} closed the connection without an answer");
        }
    }
}

/// check-config's look at each oidc provider's discovery document: the endpoints it names,
/// or (a warning, not a failure: the provider may be down for now) why it cannot be used.
fn print_discovery(config: &Config) {
    let probes = match runtime() {
        Ok(rt) => rt.block_on(portcullis::accounts::federation::probe_discovery(config)),
        Err(e) => {
            eprintln!(
                "portcullis: warning: identity providers not checked: {}",
                error_chain(&e)
            );
            return;
        }
    };
    for probe in probes {
        match probe.outcome {
            Ok(endpoints) => {
                say!("identity provider {}: discovery ok", probe.id);
                for (name, url) in endpoints {
                    say!("  {name} {url}");
                }
            }
            Err(reason) => eprintln!(
                "portcullis: warning: identity provider {}: discovery {reason}; sign-in through \
                 it is refused until it answers a sound document",
                probe.id
            ),
        }
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting a runtime")
}

fn migrate(config: &Config) -> anyhow::Result<()> {
    runtime()?
        .block_on(store::migrate(&config.storage.url))
        .with_context(|| format!("migrating {}", config.storage.url.redacted()))?;
    say!("{}: migrations applied", config.storage.url.redacted());
    Ok(())
}

fn user(config: &Config, action: UserAction) -> anyhow::Result<()> {
    runtime()?.block_on(async {
        let store = store::connect(&config.storage.url, 2)
            .await
            .with_context(|| format!("opening {}", config.storage.url.redacted()))?;
        let command = match action {
            UserAction::Sessions { email } => {
                return list_sessions(config, &*store, &email).await;
            }
            UserAction::Invite { email, roles } => {
                return invite(config, &*store, &email, &roles).await;
            }
            UserAction::Invitations => UserCommand::Invitations,
            UserAction::RevokeInvitation { email } => UserCommand::RevokeInvitation { email },
            UserAction::Create {
                email,
                roles,
                password_stdin,
            } => {
                let password = initial_password(config, &[&email], password_stdin).await?;
                UserCommand::Create {
                    email,
                    roles,
                    password,
                }
            }
            UserAction::List { json } => UserCommand::List { json },
            UserAction::Show { email, json } => UserCommand::Show { email, json },
            UserAction::SetPassword { email, .. } => {
                return set_password(config, &*store, &email).await;
            }
            UserAction::SendReset { email } => {
                return send_reset(config, &*store, &email).await;
            }
            UserAction::GrantRole { email, role } => UserCommand::GrantRole { email, role },
            UserAction::RevokeRole { email, role } => UserCommand::RevokeRole { email, role },
            UserAction::Deactivate { email } => UserCommand::Deactivate { email },
            UserAction::Activate { email } => UserCommand::Activate { email },
            UserAction::Unlock { email } => UserCommand::Unlock { email },
            UserAction::ResetTwoFactor { email } => UserCommand::ResetTwoFactor { email },
            UserAction::Delete { email } => UserCommand::Delete { email },
            UserAction::RevokeSessions { email } => UserCommand::RevokeSessions { email },
        };
        // Looked up before the command runs: a deleted account cannot be found after it.
        let ending_sessions = match &command {
            UserCommand::Deactivate { email }
            | UserCommand::ResetTwoFactor { email }
            | UserCommand::Delete { email }
            | UserCommand::RevokeSessions { email } => Some(find_user(&*store, email).await?.id),
            _ => None,
        };
        let output = run_user_command(&*store, command).await?;
        say!("{output}");
        if let Some(user) = ending_sessions {
            end_sessions(config, user).await?;
        }
        anyhow::Ok(())
    })
}

/// `audit`: the audit trail, filtered, as a table.
fn audit(config: &Config, query: AuditQuery) -> anyhow::Result<()> {
    runtime()?.block_on(async {
        let store = store::connect(&config.storage.url, 1)
            .await
            .with_context(|| format!("opening {}", config.storage.url.redacted()))?;
        say_all(format_args!("{}", list_audit_events(&*store, query).await?));
        anyhow::Ok(())
    })
}

/// The password of `user create` and `user set-password`: read from standard input, held
/// to the password policy (`user_inputs`: the account's address and names) and hashed; or, without `--password-stdin`, the hash of a secret nobody holds.
async fn initial_password(
    config: &Config,
    user_inputs: &[&str],
    from_stdin: bool,
) -> anyhow::Result<InitialPassword> {
    let hasher = PasswordHasher::new(config.passwords.bcrypt_cost)?;
    if !from_stdin {
        return Ok(InitialPassword::Unusable(
            hasher.hash_of_unknown_secret().await?,
        ));
    }
    let mut input = String::new();
    std::io::Read::read_to_string(&mut std::io::stdin(), &mut input)
        .context("reading the password from standard input")?;
    let line = input.strip_suffix('\n').unwrap_or(&input);
    let line = line.strip_suffix('\r').unwrap_or(line);
    // A second line is refused rather than dropped: the password would not be what was sent.
    if line.contains('\n') {
        anyhow::bail!("standard input must hold the password alone, on one line");
    }
    let password = config
        .passwords
        .policy()
        .admit(NewPassword::new(line.to_owned()), user_inputs)
        .map_err(|e| anyhow::anyhow!("the password: {e}"))?;
    Ok(InitialPassword::Chosen(
        hasher.hash(password.expose()).await?,
    ))
}

/// Ends every session of an account whose sessions an operator command ended. With
/// `memory://` sessions live inside the running gateway, which ends them itself when it
/// reads the change feed (within a second).
async fn end_sessions(config: &Config, user: UserId) -> anyhow::Result<()> {
    if config.sessions.backend() == Ok(SessionBackend::Memory) {
        say!("sessions end on the running gateway within a second (they live inside it)");
        return Ok(());
    }
    let sessions = session::connect(&config.sessions).await?;
    let ended = sessions.revoke_all(user, None).await?;
    say!("{} session(s) ended", ended.len());
    Ok(())
}

/// `user invite`: stores the invitation, prints its link and mails it (a mail that cannot
/// go out is reported, and the printed link still works).
async fn invite(
    config: &Config,
    store: &dyn store::UserStore,
    email: &str,
    roles: &[String],
) -> anyhow::Result<()> {
    let email = Email::parse(email).map_err(|e| anyhow::anyhow!("{e} (got {email:?})"))?;
    let ttl = config.registration.invitation_ttl.get();
    let (invitation, token) = match portcullis::accounts::issue_invitation(
        store,
        ttl,
        email,
        roles,
        portcullis::store::admin::By::OPERATOR,
    )
    .await
    {
        Ok(issued) => issued,
        Err(AccountError::Store(StoreError::DuplicateEmail)) => {
            anyhow::bail!(
                "that address already has an account (see `portcullis user list`; one whose \
                     address is not verified may be someone else's sign-up: `portcullis user \
                     delete` it first)"
            )
        }
        Err(AccountError::Field { message, .. }) => anyhow::bail!("{message}"),
        Err(e) => anyhow::bail!("could not store the invitation: {e:?}"),
    };
    let mailer = operator_mailer(config)?;
    let link = mailer.invitation_link(&token);
    let roles = if invitation.roles.is_empty() {
        "no roles".to_owned()
    } else {
        format!("roles {}", invitation.roles.join(","))
    };
    say!(
        "invited {} ({roles}); the link works once, until {}:\n{link}",
        invitation.email,
        format_time(Some(invitation.expires_at))
    );
    let mail = MailKind::Invitation {
        token,
        expires_in: ttl,
    };
    let language = &config.portal.default_language;
    match mailer
        .send_in(language, invitation.email.as_str(), "", mail)
        .await
    {
        Ok(()) => say!("mailed to {}", invitation.email),
        Err(e) => eprintln!("portcullis: the invitation was not mailed ({e}); pass the link on"),
    }
    Ok(())
}

/// `user set-password`: the password from standard input, then every session ends.
async fn set_password(
    config: &Config,
    store: &dyn store::UserStore,
    email: &str,
) -> anyhow::Result<()> {
    let user = find_user(store, email).await?;
    let inputs = [user.email.as_str(), &user.first_name, &user.last_name];
    let InitialPassword::Chosen(hash) = initial_password(config, &inputs, true).await? else {
        anyhow::bail!("no password was read");
    };
    portcullis::store::admin::set_password(
        store,
        &user,
        &hash,
        portcullis::store::admin::By::OPERATOR,
    )
    .await?;
    say!("password of {} set", user.email);
    end_sessions(config, user.id).await
}

/// `user send-reset`: a reset link mailed to the account, in its language.
async fn send_reset(
    config: &Config,
    store: &dyn store::UserStore,
    email: &str,
) -> anyhow::Result<()> {
    let user = find_user(store, email).await?;
    let mailer = operator_mailer(config)?;
    let language = if user.language.is_empty() {
        &config.portal.default_language
    } else {
        &user.language
    };
    match portcullis::accounts::mail_operator_reset(store, &mailer, &user, language).await {
        Ok(()) => say!("a password-reset link was mailed to {}", user.email),
        Err(AccountError::Deactivated) => {
            anyhow::bail!("{} is deactivated (`user activate` it first)", user.email)
        }
        Err(AccountError::Internal { context, cause }) => {
            anyhow::bail!("the reset link was not mailed ({context}: {cause})")
        }
        Err(e) => anyhow::bail!("the reset link was not mailed: {e:?}"),
    }
    Ok(())
}

/// The mailer of the operator commands that mail (links to the portal's pages).
fn operator_mailer(config: &Config) -> anyhow::Result<Mailer> {
    let metrics = portcullis::metrics::Metrics::new();
    Ok(portcullis::app::configured_mailer(config, &metrics)?)
}

/// `user sessions`: the account's live sessions, from the shared session backend.
async fn list_sessions(
    config: &Config,
    store: &dyn store::UserStore,
    email: &str,
) -> anyhow::Result<()> {
    let user = find_user(store, email).await?;
    if config.sessions.backend() == Ok(SessionBackend::Memory) {
        anyhow::bail!(
            "sessions.url is memory://: sessions live inside the running gateway, out of this \
             command's reach; the account page lists them, or use redis:// to list them here \
             (`user revoke-sessions` works with either)"
        );
    }
    let sessions = session::connect(&config.sessions).await?;
    let mut list = sessions.list(user.id).await?;
    list.sort_by_key(|s| std::cmp::Reverse(s.last_seen_at));
    let rows: Vec<Vec<String>> = list
        .iter()
        .map(|s| {
            let mut id = s.id.to_string();
            id.truncate(8);
            let agent = s.user_agent.chars().take(60).collect::<String>();
            vec![
                id,
                format_time(Some(s.created_at)),
                format_time(Some(s.last_seen_at)),
                s.ip.clone(),
                if agent.is_empty() { "-".into() } else { agent },
            ]
        })
        .collect();
    let header = ["ID", "CREATED", "LAST SEEN", "IP", "USER AGENT"];
    say_all(format_args!("{}", format_table(&header, &rows)));
    say!("{} session(s) of {}", list.len(), user.email);
    Ok(())
}

fn serve(config: Config, source: ConfigSource) -> anyhow::Result<()> {
    let hangups = server::handle_hangups()?;
    let _guards = telemetry::init(&config.logging)?;
    server::startup::log_config_source(&source);
    server::check_binds(&config)?;
    let certificate_warnings = server::check_certificates(&config)?;
    let listen = config.server.listen;
    let admin = config.server.admin_listen;
    for warning in config.warnings().into_iter().chain(certificate_warnings) {
        tracing::warn!("{warning}");
    }
    let app = App::new(config)?;
    tracing::info!(%listen, %admin, version = env!("CARGO_PKG_VERSION"), "portcullis starting");
    server::startup::report_when_listening(app.clone())?;
    let source = Source {
        name: source_name(&source),
        load: Box::new(move || Config::reload(&source)),
    };
    server::run_forever(app, source, &hangups)?;
    tracing::info!("portcullis stopped");
    Ok(())
}

/// check-config's lines on `[tls]`: each certificate's file, names and expiry; the warnings
/// about their dates, or the first file that cannot be served.
fn print_certificates(
    config: &Config,
) -> Result<Vec<String>, portcullis::gateway::tls::CertificateError> {
    use portcullis::gateway::tls::Certificates;
    if !config.tls.enabled() {
        println!("tls: off (server.listen speaks plain HTTP)");
        return Ok(Vec::new());
    }
    let certificates = Certificates::load(&config.tls)?;
    println!("tls: on, TLS 1.2 and 1.3; certificates (the first is the default):");
    for leaf in certificates.leaves() {
        let expires = chrono::DateTime::from_timestamp(leaf.not_after, 0)
            .map_or_else(|| "?".to_owned(), |d| d.format("%Y-%m-%d").to_string());
        println!(
            "  {} ({}): {} — expires {expires}",
            leaf.key,
            leaf.path.display(),
            if leaf.names.is_empty() {
                "no DNS names".to_owned()
            } else {
                leaf.names.join(", ")
            }
        );
    }
    Ok(certificates.date_warnings(portcullis::gateway::reload::unix_now()))
}

/// check-config's route table: one line per route, in the order requests are matched.
fn print_route_table(table: &portcullis::gateway::routes::RouteTable) {
    say!("routes, in match order (host first, then the longest path prefix):");
    for route in table.iter() {
        say!("  {}", route.describe());
    }
}

/// check-config's lines on `[[identity_providers]]`: each one's redirect URI to register at
/// the provider; `Err` when a client secret file cannot be read.
fn print_identity_providers(config: &Config) -> Result<(), String> {
    for (i, provider) in config.identity_providers.iter().enumerate() {
        provider.read_client_secret().map_err(|e| {
            format!("invalid value for `identity_providers[{i}].client_secret_file`: {e}")
        })?;
        say!(
            "identity provider {} ({}, kind {}): register the redirect URI {}",
            provider.id,
            provider.name,
            provider.kind.as_str(),
            provider.redirect_uri(&config.server.public_url, &config.portal.path_prefix)
        );
    }
    Ok(())
}
