//! The command line (CONTRACT §8).

use std::{io::BufRead, net::SocketAddr, path::PathBuf, time::Duration};

use clap::{Args, Parser, Subcommand};
use restguard::{
    jwt::{rotate_signing_key, JwtAlgorithm},
    password::{HasherConfig, PasswordError, PasswordHasher},
    token::TokenService,
};
use restguard_core::{
    secret::SecretString,
    store::{NewUser, Stores},
    User,
};
use time::OffsetDateTime;

use crate::{app, config::Config, redact::redact_url, routes::rfc3339, stores::Backend};

mod oauth_apps;

/// restguard: DRF-compatible authentication server.
#[derive(Debug, Parser)]
#[command(name = "restguard", version, about)]
pub(crate) struct Cli {
    /// Configuration file (default: ./restguard.toml if present; also RESTGUARD_CONFIG).
    #[arg(long, global = true, env = "RESTGUARD_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Migrate the database if needed, then serve HTTP.
    Serve {
        /// Address to listen on (overrides server.bind).
        #[arg(long)]
        bind: Option<SocketAddr>,
    },
    /// Apply database migrations.
    Migrate,
    /// Manage users.
    #[command(subcommand)]
    User(UserCommand),
    /// Manage API tokens.
    #[command(subcommand)]
    Token(TokenCommand),
    /// Manage JWT signing keys.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Manage OAuth2 applications (clients).
    #[command(subcommand)]
    App(oauth_apps::AppCommand),
    /// Delete expired tokens, JWT refresh records and blacklist rows, and retired signing
    /// keys no token can need any more.
    FlushExpired,
}

#[derive(Debug, Subcommand)]
enum KeysCommand {
    /// Add a new JWT signing key; the previous one keeps verifying until its tokens have
    /// expired. Prints the new key's id.
    Rotate {
        /// Algorithm of the new key (default: jwt.algorithm).
        #[arg(long)]
        algorithm: Option<String>,
    },
    /// List the stored JWT signing keys (tab-separated: kid, algorithm, created, status).
    List,
    /// Delete every retired signing key now, of every algorithm, instead of when its tokens
    /// have expired: after `keys rotate`, when a previous key may have leaked. Tokens and
    /// id_tokens signed with them stop verifying on every running server within a second.
    PurgeRetired,
    /// Re-encrypt every stored key under a new key-encryption key, in one transaction. With a
    /// key file (the default), a new key is generated and replaces the file; with
    /// server.secret_key (RESTGUARD_SERVER__SECRET_KEY), give the new key on standard input
    /// and set the variable to it on every instance. Prints the new key's id.
    RotateKek {
        /// Read the new key (base64 of 32 bytes) from the first line of standard input.
        #[arg(long)]
        new_key_stdin: bool,
    },
}

#[derive(Debug, Subcommand)]
enum UserCommand {
    /// Create a user.
    Create(CreateUser),
    /// Set a user's password (ends their tokens).
    SetPassword {
        /// The user.
        username: String,
        /// Read the password from the first line of standard input.
        #[arg(long, required = true)]
        password_stdin: bool,
    },
    /// Deactivate a user (ends their tokens).
    Deactivate {
        /// The user.
        username: String,
    },
    /// Reactivate a user.
    Activate {
        /// The user.
        username: String,
    },
    /// Delete a user and everything they own.
    Delete {
        /// The user.
        username: String,
    },
}

#[derive(Debug, Args)]
struct CreateUser {
    /// Login name.
    username: String,
    /// E-mail address.
    #[arg(long, default_value = "")]
    email: String,
    /// Given name.
    #[arg(long, default_value = "")]
    first_name: String,
    /// Family name.
    #[arg(long, default_value = "")]
    last_name: String,
    /// Staff (passes is_admin_user).
    #[arg(long)]
    staff: bool,
    /// Superuser.
    #[arg(long)]
    superuser: bool,
    /// Create the account inactive.
    #[arg(long)]
    inactive: bool,
    /// Read the password from the first line of standard input (without it, the account has
    /// no usable password).
    #[arg(long)]
    password_stdin: bool,
}

#[derive(Debug, Subcommand)]
enum TokenCommand {
    /// Create an API token; prints the key alone on stdout.
    Create {
        /// The owner.
        username: String,
        /// Token name.
        #[arg(long, default_value = "")]
        name: String,
        /// Lifetime in seconds.
        #[arg(long, value_parser = clap::value_parser!(u64).range(1..=315_360_000))]
        expires_in: Option<u64>,
    },
}

fn read_password_line() -> anyhow::Result<SecretString> {
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .map_err(|e| anyhow::anyhow!("could not read the password from standard input: {e}"))?;
    if line.ends_with('\n') {
        line.pop();
        if line.ends_with('\r') {
            line.pop();
        }
    }
    Ok(SecretString::new(line))
}

fn password_problem(e: PasswordError) -> anyhow::Error {
    match e {
        PasswordError::Empty => anyhow::anyhow!("the password may not be empty"),
        PasswordError::TooLong => anyhow::anyhow!("the password is longer than 4096 bytes"),
        other => anyhow::anyhow!("{other}"),
    }
}

async fn find_user(stores: &Stores, username: &str) -> anyhow::Result<User> {
    stores
        .users
        .user_by_username(username)
        .await
        .map_err(store_problem)?
        .ok_or_else(|| anyhow::anyhow!("no user named {username:?}"))
}

fn store_problem(e: restguard_core::StoreError) -> anyhow::Error {
    anyhow::anyhow!("{}", crate::error_chain(&e))
}

/// Opens and migrates the database, and unlocks its keys with the key-encryption key (the
/// same resolution for every command, `serve` included).
async fn open(config: &Config) -> anyhow::Result<Backend> {
    let mut backend = Backend::open(&config.database)
        .await?
        .with_redis(&config.redis)?;
    backend.migrate().await?;
    backend.unlock(config).await?;
    Ok(backend)
}

fn cli_hasher() -> PasswordHasher {
    PasswordHasher::new(HasherConfig {
        workers: 1,
        low_priority: false,
        ..HasherConfig::default()
    })
}

impl Cli {
    /// The configuration the command runs with.
    pub(crate) fn config(&self) -> anyhow::Result<Config> {
        Config::load(self.config.as_deref())
            .map_err(|e| anyhow::anyhow!("invalid configuration: {e}"))
    }

    /// Runs the command with `config` (from [`Cli::config`]).
    pub(crate) async fn run(self, mut config: Config) -> anyhow::Result<()> {
        match self.command {
            Command::Serve { bind } => {
                if let Some(bind) = bind {
                    config.server.bind = bind;
                }
                let backend = open(&config).await?;
                let listener = tokio::net::TcpListener::bind(config.server.bind)
                    .await
                    .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", config.server.bind))?;
                let local = listener.local_addr()?;
                // The bound address (port 0 picks one): the default public URL and issuer.
                config.server.bind = local;
                let router = app::build(&config, &backend).await?;
                println!("restguard listening on http://{local}");
                tracing::info!(
                    %local,
                    database = %redact_url(&config.database.url),
                    "serving"
                );
                app::serve(listener, router, config.server.shutdown_grace.0).await?;
            }
            Command::Migrate => {
                open(&config).await?;
                eprintln!(
                    "database {} is up to date",
                    redact_url(&config.database.url)
                );
            }
            Command::User(command) => {
                let backend = open(&config).await?;
                user_command(&config, &backend.stores(), command).await?;
            }
            Command::Token(TokenCommand::Create {
                username,
                name,
                expires_in,
            }) => {
                let stores = open(&config).await?.stores();
                let user = find_user(&stores, &username).await?;
                let tokens = TokenService::from_stores(&stores)
                    .await
                    .map_err(store_problem)?;
                let issued = tokens
                    .issue(user.id, &name, expires_in.map(Duration::from_secs))
                    .await
                    .map_err(store_problem)?;
                println!("{}", issued.key.expose());
            }
            Command::App(command) => {
                let stores = open(&config).await?.stores();
                oauth_apps::app_command(&config, &stores, command).await?;
            }
            Command::Keys(command) => {
                let backend = open(&config).await?;
                keys_command(&config, &backend, command).await?;
            }
            Command::FlushExpired => {
                let stores = open(&config).await?.stores();
                let now = OffsetDateTime::now_utc();
                let tokens = stores
                    .tokens
                    .delete_expired_tokens(now)
                    .await
                    .map_err(store_problem)?;
                let jwt = stores
                    .jwt
                    .delete_expired_jwt(now)
                    .await
                    .map_err(store_problem)?;
                let keys = stores
                    .signing_keys
                    .delete_retired_signing_keys(now - config.jwt.settings().verify_window())
                    .await
                    .map_err(store_problem)?;
                let sessions = stores
                    .sessions
                    .delete_expired_sessions(now, Some(now - config.session.idle_timeout.0))
                    .await
                    .map_err(store_problem)?;
                let oauth = stores
                    .oauth
                    .delete_expired_oauth(now)
                    .await
                    .map_err(store_problem)?;
                eprintln!(
                    "deleted {tokens} expired tokens, {jwt} expired JWT records, {keys} retired signing keys, {sessions} expired sessions, {oauth} expired OAuth2 codes and tokens"
                );
            }
        }
        Ok(())
    }
}

async fn keys_command(
    config: &Config,
    backend: &Backend,
    command: KeysCommand,
) -> anyhow::Result<()> {
    let settings = config.jwt.settings();
    let stores = backend.stores();
    match command {
        KeysCommand::RotateKek { new_key_stdin } => {
            rotate_kek(config, backend, new_key_stdin).await?;
        }
        KeysCommand::Rotate { algorithm } => {
            let algorithm: JwtAlgorithm = match algorithm {
                Some(a) => a
                    .parse()
                    .map_err(|e: String| anyhow::anyhow!("--algorithm: {e}"))?,
                None => settings.algorithm,
            };
            if settings.signing_key.is_some() && algorithm == settings.algorithm {
                anyhow::bail!(
                    "jwt.signing_key is set in the configuration; change it there (keys rotate manages generated keys)"
                );
            }
            let key = rotate_signing_key(stores.signing_keys.as_ref(), algorithm)
                .await
                .map_err(|e| anyhow::anyhow!("{}", crate::error_chain(&e)))?;
            println!("{}", key.kid);
            eprintln!(
                "new {algorithm} signing key {}; previous keys verify for another {} s; running servers switch within {} s",
                key.kid,
                settings.verify_window().as_secs(),
                KEY_POLL_SECONDS,
            );
        }
        KeysCommand::PurgeRetired => {
            let deleted = stores
                .signing_keys
                .delete_retired_signing_keys(OffsetDateTime::now_utc())
                .await
                .map_err(store_problem)?;
            eprintln!(
                "deleted {deleted} retired signing keys; running servers stop accepting their tokens within {KEY_POLL_SECONDS} s"
            );
        }
        KeysCommand::List => {
            let keys = stores
                .signing_keys
                .signing_keys()
                .await
                .map_err(store_problem)?;
            let now = OffsetDateTime::now_utc();
            let window = settings.verify_window();
            // The newest active key of each algorithm signs.
            let signing: Vec<&str> = keys
                .iter()
                .filter(|k| k.retired_at.is_none())
                .fold(Vec::<(&str, &str)>::new(), |mut acc, k| {
                    acc.retain(|(alg, _)| *alg != k.algorithm);
                    acc.push((&k.algorithm, &k.kid));
                    acc
                })
                .into_iter()
                .map(|(_, kid)| kid)
                .collect();
            println!("kid\talgorithm\tcreated\tstatus");
            for key in &keys {
                let status = match key.retired_at {
                    None if signing.contains(&key.kid.as_str()) => "signing".to_owned(),
                    None => "verifying".to_owned(),
                    Some(retired) if retired + window > now => {
                        format!("verifying until {}", rfc3339(retired + window))
                    }
                    Some(_) => "expired".to_owned(),
                };
                println!(
                    "{}\t{}\t{}\t{status}",
                    key.kid,
                    key.algorithm,
                    rfc3339(key.created)
                );
            }
        }
    }
    Ok(())
}

/// How often running servers re-read the signing keys.
const KEY_POLL_SECONDS: u64 = 1;

/// `restguard keys rotate-kek`: the new key is on disk (`<file>.new`) before the database
/// switches to it in one transaction, and replaces the file afterwards; an interruption
/// between the two leaves both keys on disk, and the startup error names the file to move.
async fn rotate_kek(config: &Config, backend: &Backend, new_key_stdin: bool) -> anyhow::Result<()> {
    use crate::secret_key::{commit_new_key, stage_new_key, KeySource};
    use restguard::sealing::{rewrap_under, KeyEncryptionKey};

    let current = backend
        .kek()
        .ok_or_else(|| anyhow::anyhow!("the database is not unlocked"))?
        .clone();
    let source = KeySource::of(config)?;
    let new = if new_key_stdin {
        let line = read_password_line()?;
        KeyEncryptionKey::parse(line.expose())
            .map_err(|e| anyhow::anyhow!("--new-key-stdin: {e}"))?
    } else {
        match &source {
            KeySource::File(_) => KeyEncryptionKey::generate(),
            KeySource::Setting => anyhow::bail!(
                "the key-encryption key comes from server.secret_key (RESTGUARD_SERVER__SECRET_KEY):                  give the new key with --new-key-stdin (make one with `openssl rand -base64 32`)"
            ),
            KeySource::Ephemeral => anyhow::bail!(
                "database.url {:?} keeps nothing: there is no key-encryption key to rotate",
                config.database.url
            ),
        }
    };
    if new.id() == current.id() {
        anyhow::bail!("the new key-encryption key is the current one");
    }
    let staged = match &source {
        KeySource::File(path) => Some((path.clone(), stage_new_key(path, &new)?)),
        _ => None,
    };
    let store = backend.plain_stores().secrets;
    let rewrapped = match rewrap_under(store.as_ref(), &current, &new).await {
        Ok(n) => n,
        Err(e) => {
            if let Some((_, pending)) = &staged {
                let _ = std::fs::remove_file(pending);
            }
            anyhow::bail!("{}", crate::error_chain(&e));
        }
    };
    let place = match &staged {
        Some((path, pending)) => {
            commit_new_key(path, pending)?;
            format!("{} now holds it", path.display())
        }
        None => "set RESTGUARD_SERVER__SECRET_KEY to it on every instance".to_owned(),
    };
    println!("{}", new.id());
    eprintln!(
        "re-encrypted {rewrapped} stored keys under key-encryption key {} (was {}); {place}. \
         Restart every running server with the new key; backups taken before this need the old key",
        new.id(),
        current.id()
    );
    Ok(())
}

async fn user_command(
    config: &Config,
    stores: &Stores,
    command: UserCommand,
) -> anyhow::Result<()> {
    let now = OffsetDateTime::now_utc();
    // Running servers cache checks for a second; with Redis, tell them at once.
    let announce = |id: restguard_core::UserId| async move {
        match crate::scaleout::invalidation_bus(&config.redis) {
            Ok(bus) => {
                crate::scaleout::announce(
                    bus.as_ref(),
                    restguard_core::invalidation::Invalidation::User(id),
                )
                .await;
            }
            Err(e) => tracing::warn!(error = %e, "cannot announce the change to running servers"),
        }
    };
    match command {
        UserCommand::Create(args) => {
            if args.username.trim().is_empty() || args.username.chars().count() > 150 {
                anyhow::bail!("the username must be 1 to 150 characters");
            }
            let password_hash = if args.password_stdin {
                let password = read_password_line()?;
                Some(
                    cli_hasher()
                        .hash(&password)
                        .await
                        .map_err(password_problem)?,
                )
            } else {
                None
            };
            let user = stores
                .users
                .create_user(NewUser {
                    email: args.email,
                    first_name: args.first_name,
                    last_name: args.last_name,
                    password_hash,
                    is_active: !args.inactive,
                    is_staff: args.staff,
                    is_superuser: args.superuser,
                    ..NewUser::new(args.username.clone())
                })
                .await
                .map_err(|e| match e {
                    restguard_core::StoreError::Conflict(_) => {
                        anyhow::anyhow!("a user named {:?} already exists", args.username)
                    }
                    other => store_problem(other),
                })?;
            eprintln!("created user {} (id {})", user.username, user.id);
        }
        UserCommand::SetPassword { username, .. } => {
            let user = find_user(stores, &username).await?;
            let password = read_password_line()?;
            let hash = cli_hasher()
                .hash(&password)
                .await
                .map_err(password_problem)?;
            stores
                .users
                .set_password(user.id, &hash, now)
                .await
                .map_err(store_problem)?;
            announce(user.id).await;
            eprintln!("password of {username} changed; their tokens were revoked");
        }
        UserCommand::Deactivate { username } => {
            let user = find_user(stores, &username).await?;
            stores
                .users
                .set_active(user.id, false, now)
                .await
                .map_err(store_problem)?;
            announce(user.id).await;
            eprintln!("deactivated {username}; their tokens were revoked");
        }
        UserCommand::Activate { username } => {
            let user = find_user(stores, &username).await?;
            stores
                .users
                .set_active(user.id, true, now)
                .await
                .map_err(store_problem)?;
            announce(user.id).await;
            eprintln!("activated {username}");
        }
        UserCommand::Delete { username } => {
            let user = find_user(stores, &username).await?;
            stores
                .users
                .delete_user(user.id)
                .await
                .map_err(store_problem)?;
            announce(user.id).await;
            eprintln!("deleted {username}");
        }
    }
    Ok(())
}
