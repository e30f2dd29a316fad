//! `restguard app create | list | show | update | delete | rotate-secret` (CONTRACT §8).

use clap::{Args, Subcommand, ValueEnum};
use restguard::digest::{random_secret, SecretDigester};
use restguard_core::{
    invalidation::Invalidation,
    store::{Application, ApplicationUpdate, ClientType, NewApplication, Stores},
};
use restguard_oauth2::provider::CLIENT_SECRET_PREFIX;
use serde_json::json;
use time::OffsetDateTime;

use super::store_problem;
use crate::{config::Config, routes::rfc3339};

#[derive(Debug, Subcommand)]
pub(super) enum AppCommand {
    /// Register an OAuth2 client; prints {"client_id","client_secret"} (the secret only now).
    Create(CreateApp),
    /// List the clients (tab-separated: client_id, name, client type, grant types).
    List,
    /// Show one client as JSON (never its secret).
    Show {
        /// The client id.
        client_id: String,
    },
    /// Change a client's post-logout redirect URIs or allowed scopes (the flags given
    /// replace the current values; the others stay).
    Update(UpdateApp),
    /// Delete a client and every code and token issued to it.
    Delete {
        /// The client id.
        client_id: String,
    },
    /// Replace a confidential client's secret; prints {"client_id","client_secret"}.
    RotateSecret {
        /// The client id.
        client_id: String,
    },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub(super) enum ClientTypeArg {
    Confidential,
    Public,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(super) enum GrantArg {
    AuthorizationCode,
    ClientCredentials,
    Password,
}

impl GrantArg {
    fn as_str(self) -> &'static str {
        match self {
            Self::AuthorizationCode => "authorization_code",
            Self::ClientCredentials => "client_credentials",
            Self::Password => "password",
        }
    }
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub(super) enum AlgorithmArg {
    #[value(name = "RS256")]
    Rs256,
    #[value(name = "EdDSA")]
    EdDsa,
}

#[derive(Debug, Args)]
pub(super) struct CreateApp {
    /// Name shown on the consent page.
    #[arg(long)]
    name: String,
    /// confidential (has a secret) or public (PKCE only).
    #[arg(long, value_enum)]
    client_type: ClientTypeArg,
    /// Allowed grant type (repeatable).
    #[arg(long = "grant", value_enum, required = true)]
    grants: Vec<GrantArg>,
    /// Registered redirect URI, matched exactly (repeatable).
    #[arg(long = "redirect-uri")]
    redirect_uris: Vec<String>,
    /// Where RP-initiated logout (`/o/logout/`) may return, matched exactly (repeatable).
    #[arg(long = "post-logout-redirect-uri")]
    post_logout_redirect_uris: Vec<String>,
    /// Allowed scopes, space-separated (default: every scope of the server but
    /// `introspection`, which is granted only by naming it here).
    #[arg(long)]
    scopes: Option<String>,
    /// Skip the consent page.
    #[arg(long)]
    skip_authorization: bool,
    /// id_token signature algorithm.
    #[arg(long, value_enum, default_value = "RS256")]
    algorithm: AlgorithmArg,
}

#[derive(Debug, Args)]
pub(super) struct UpdateApp {
    /// The client id.
    client_id: String,
    /// Replaces the post-logout redirect URIs (repeatable).
    #[arg(
        long = "post-logout-redirect-uri",
        conflicts_with = "no_post_logout_redirect_uris"
    )]
    post_logout_redirect_uris: Vec<String>,
    /// Removes every post-logout redirect URI.
    #[arg(long)]
    no_post_logout_redirect_uris: bool,
    /// Replaces the allowed scopes, space-separated ("" for the server's default set).
    #[arg(long)]
    scopes: Option<String>,
}

fn check_redirect_uri(flag: &str, uri: &str) -> anyhow::Result<()> {
    restguard_oauth2::client::check_redirect_uri(uri)
        .map_err(|e| anyhow::anyhow!("{flag} {uri:?}: {e}"))
}

/// The scopes of a `--scopes` value.
fn parse_scopes(scopes: &str) -> anyhow::Result<Vec<String>> {
    restguard_oauth2::form::parse_scope(scopes).map_err(|e| {
        anyhow::anyhow!(
            "--scopes: {}",
            e.description.as_deref().unwrap_or("invalid scopes")
        )
    })
}

/// Tells running servers (with Redis, at once; otherwise within their cache lifetime) that
/// cached checks of this client are stale.
async fn announce(config: &Config) {
    match crate::scaleout::invalidation_bus(&config.redis) {
        Ok(bus) => crate::scaleout::announce(bus.as_ref(), Invalidation::All).await,
        Err(e) => tracing::warn!(error = %e, "cannot announce the change to running servers"),
    }
}

fn app_json(app: &Application) -> serde_json::Value {
    json!({
        "client_id": app.client_id,
        "name": app.name,
        "client_type": app.client_type.as_str(),
        "grant_types": app.grant_types,
        "redirect_uris": app.redirect_uris,
        "post_logout_redirect_uris": app.post_logout_redirect_uris,
        "allowed_scopes": app.allowed_scopes,
        "skip_authorization": app.skip_authorization,
        "algorithm": app.algorithm,
        "created": rfc3339(app.created),
    })
}

pub(super) async fn app_command(
    config: &Config,
    stores: &Stores,
    command: AppCommand,
) -> anyhow::Result<()> {
    let digester = SecretDigester::from_store(stores.secrets.as_ref())
        .await
        .map_err(store_problem)?;
    match command {
        AppCommand::Create(args) => {
            if args.name.trim().is_empty() {
                anyhow::bail!("--name may not be empty");
            }
            for uri in &args.redirect_uris {
                check_redirect_uri("--redirect-uri", uri)?;
            }
            for uri in &args.post_logout_redirect_uris {
                check_redirect_uri("--post-logout-redirect-uri", uri)?;
            }
            let client_type = match args.client_type {
                ClientTypeArg::Confidential => ClientType::Confidential,
                ClientTypeArg::Public => ClientType::Public,
            };
            if args.grants.contains(&GrantArg::AuthorizationCode) && args.redirect_uris.is_empty() {
                anyhow::bail!("the authorization-code grant needs at least one --redirect-uri");
            }
            if client_type == ClientType::Public
                && args.grants.contains(&GrantArg::ClientCredentials)
            {
                anyhow::bail!("a public client cannot use the client-credentials grant");
            }
            let mut grants: Vec<String> = Vec::new();
            for g in &args.grants {
                if !grants.iter().any(|x| x == g.as_str()) {
                    grants.push(g.as_str().to_owned());
                }
            }
            let scopes = match args.scopes.as_deref() {
                Some(scopes) => parse_scopes(scopes)?,
                None => Vec::new(),
            };
            let client_id = random_secret("").replace(['-', '_'], "");
            let secret = (client_type == ClientType::Confidential)
                .then(|| random_secret(CLIENT_SECRET_PREFIX));
            let app = stores
                .oauth
                .create_application(NewApplication {
                    client_id: client_id.clone(),
                    name: args.name.trim().to_owned(),
                    client_type,
                    secret_digest: secret.as_deref().map(|s| digester.digest(s)),
                    grant_types: grants,
                    redirect_uris: args.redirect_uris,
                    post_logout_redirect_uris: args.post_logout_redirect_uris,
                    allowed_scopes: scopes,
                    skip_authorization: args.skip_authorization,
                    algorithm: match args.algorithm {
                        AlgorithmArg::Rs256 => "RS256".into(),
                        AlgorithmArg::EdDsa => "EdDSA".into(),
                    },
                    owner: None,
                    created: OffsetDateTime::now_utc(),
                })
                .await
                .map_err(store_problem)?;
            match secret {
                Some(secret) => println!(
                    "{}",
                    json!({"client_id": app.client_id, "client_secret": secret})
                ),
                None => println!("{}", json!({"client_id": app.client_id})),
            }
        }
        AppCommand::List => {
            for app in stores.oauth.applications().await.map_err(store_problem)? {
                println!(
                    "{}\t{}\t{}\t{}",
                    app.client_id,
                    app.name,
                    app.client_type.as_str(),
                    app.grant_types.join(",")
                );
            }
        }
        AppCommand::Show { client_id } => {
            let app = stores
                .oauth
                .application_by_client_id(&client_id)
                .await
                .map_err(store_problem)?
                .ok_or_else(|| anyhow::anyhow!("no application with client_id {client_id:?}"))?;
            println!("{}", app_json(&app));
        }
        AppCommand::Update(args) => {
            for uri in &args.post_logout_redirect_uris {
                check_redirect_uri("--post-logout-redirect-uri", uri)?;
            }
            let post_logout_redirect_uris = if args.no_post_logout_redirect_uris {
                Some(Vec::new())
            } else {
                (!args.post_logout_redirect_uris.is_empty())
                    .then_some(args.post_logout_redirect_uris)
            };
            let allowed_scopes = args.scopes.as_deref().map(parse_scopes).transpose()?;
            if post_logout_redirect_uris.is_none() && allowed_scopes.is_none() {
                anyhow::bail!(
                    "nothing to change: give --post-logout-redirect-uri, --no-post-logout-redirect-uris or --scopes"
                );
            }
            let app = stores
                .oauth
                .update_application(
                    &args.client_id,
                    ApplicationUpdate {
                        post_logout_redirect_uris,
                        allowed_scopes,
                    },
                )
                .await
                .map_err(store_problem)?
                .ok_or_else(|| {
                    anyhow::anyhow!("no application with client_id {:?}", args.client_id)
                })?;
            announce(config).await;
            println!("{}", app_json(&app));
        }
        AppCommand::Delete { client_id } => {
            if !stores
                .oauth
                .delete_application(&client_id)
                .await
                .map_err(store_problem)?
            {
                anyhow::bail!("no application with client_id {client_id:?}");
            }
            announce(config).await;
        }
        AppCommand::RotateSecret { client_id } => {
            let app = stores
                .oauth
                .application_by_client_id(&client_id)
                .await
                .map_err(store_problem)?
                .ok_or_else(|| anyhow::anyhow!("no application with client_id {client_id:?}"))?;
            if app.client_type == ClientType::Public {
                anyhow::bail!("{client_id:?} is a public client: it has no secret");
            }
            let secret = random_secret(CLIENT_SECRET_PREFIX);
            stores
                .oauth
                .set_client_secret(&client_id, Some(digester.digest(&secret)))
                .await
                .map_err(store_problem)?;
            announce(config).await;
            println!(
                "{}",
                json!({"client_id": client_id, "client_secret": secret})
            );
        }
    }
    Ok(())
}
