//! `hive up`: the whole hive in one process. For each backend URL that is not configured it starts the
//! server itself under `$HIVE_HOME` (nats-server with JetStream in `nats/`, PostgreSQL in `postgres/`),
//! and stops it on exit.

use std::collections::HashMap;
use std::net::TcpListener;
use std::path::Path;

use anyhow::Context;
use hive_devservers::{Durability, NatsServer, Postgres, free_port};
use hive_eventlog::users::{self, Service};

use crate::{Config, Parts};

/// The servers `hive up` started; they stop when this is dropped.
#[derive(Default)]
pub struct Servers {
    nats: Option<NatsServer>,
    /// Where the nats-server started here stores its streams.
    nats_store: Option<std::path::PathBuf>,
    postgres: Option<Postgres>,
}

impl Servers {
    /// The nats-server started here, if any.
    pub fn nats(&self) -> Option<&NatsServer> {
        self.nats.as_ref()
    }

    /// Where the nats-server started here stores its streams: the hive syncs it
    /// ([`hive_eventlog::StoreSync`]) for the server fsyncs no write itself.
    pub fn nats_store(&self) -> Option<&std::path::Path> {
        self.nats_store.as_deref()
    }

    /// Stops them (PostgreSQL last: the services are stopped before this is called).
    pub fn stop(&mut self) {
        if let Some(nats) = &mut self.nats {
            nats.stop();
        }
        if let Some(pg) = &mut self.postgres {
            pg.stop();
        }
    }
}

fn port_or_free(preferred: u16) -> anyhow::Result<u16> {
    if preferred != 0 && TcpListener::bind(("127.0.0.1", preferred)).is_ok() {
        return Ok(preferred);
    }
    let port = free_port()?;
    if preferred != 0 {
        tracing::warn!(preferred, port, "port taken; using another");
    }
    Ok(port)
}

/// Where each part of `hive up` connects, and as whom.
pub struct Endpoints {
    /// NATS as each service's user (all the configured URL when `hive up` did not start NATS).
    pub nats: HashMap<Service, String>,
    /// The read models, as their owner (migrations, the projector).
    pub database_url: String,
    /// The read models as a role that may only read, for the API (made by the migration step).
    pub api_database_url: Option<String>,
}

impl Endpoints {
    /// The NATS URL of `service`.
    pub fn nats(&self, service: Service) -> &str {
        &self.nats[&service]
    }
}

/// The passwords `hive up` made for the servers it starts, kept in `$HIVE_HOME/secrets.json`
/// (readable by its owner only) so that a restart finds them again.
#[derive(Default, serde::Serialize, serde::Deserialize)]
struct Secrets {
    nats: HashMap<String, String>,
    postgres_api: Option<String>,
}

impl Secrets {
    const FILE: &'static str = "secrets.json";

    fn load(home: &Path) -> Self {
        std::fs::read_to_string(home.join(Self::FILE))
            .ok()
            .and_then(|text| serde_json::from_str(&text).ok())
            .unwrap_or_default()
    }

    fn save(&self, home: &Path) -> anyhow::Result<()> {
        write_private(&home.join(Self::FILE), &serde_json::to_string_pretty(self)?)
    }

    fn nats(&mut self, service: Service) -> String {
        self.nats
            .entry(service.name().to_owned())
            .or_insert_with(users::new_password)
            .clone()
    }
}

/// Writes `text` (a line) to `path`, readable by its owner only.
fn write_private(path: &Path, text: &str) -> anyhow::Result<()> {
    Ok(hive_devservers::write_private(path, &format!("{text}\n"))?)
}

/// The backends: the configured ones, or servers started here. A nats-server started here has a user
/// per service, with only the permissions it needs ([`users`]); a PostgreSQL started here gets a
/// read-only role for the API.
pub async fn backends(config: &Config) -> anyhow::Result<(Endpoints, Servers)> {
    let mut servers = Servers::default();
    std::fs::create_dir_all(&config.home)
        .with_context(|| format!("create HIVE_HOME {}", config.home.display()))?;
    let home = std::fs::canonicalize(&config.home)?;
    let mut secrets = Secrets::load(&home);
    let nats = match &config.nats_url {
        Some(url) => Service::ALL.map(|s| (s, url.clone())).into(),
        None => {
            let port = port_or_free(config.nats_port)?;
            let passwords: HashMap<Service, String> =
                Service::ALL.map(|s| (s, secrets.nats(s))).into();
            let users =
                users::server_config(&config.log().namespace, |s| users::quoted(&passwords[&s]));
            let store = home.join("nats");
            let nats = NatsServer::start_configured(
                &store,
                Some(port),
                Durability::SyncedByClient,
                &users,
                &[],
            )
            .await?;
            let url = nats.url();
            servers.nats = Some(nats);
            servers.nats_store = Some(store);
            Service::ALL
                .into_iter()
                .map(|s| Ok((s, crate::with_credentials(&url, &s.user(), &passwords[&s])?)))
                .collect::<anyhow::Result<_>>()?
        }
    };
    let (database_url, api_database_url) = match &config.database_url {
        Some(url) => (url.clone(), config.api_database_url.clone()),
        None => {
            let port = port_or_free(config.pg_port)?;
            let pg = Postgres::start(
                &home.join("postgres"),
                Some(port),
                Durability::SyncedByClient,
            )
            .await?;
            let url = pg.url("hive");
            servers.postgres = Some(pg);
            let api = match &config.api_database_url {
                Some(api) => api.clone(),
                None => {
                    let password = secrets
                        .postgres_api
                        .get_or_insert_with(users::new_password)
                        .clone();
                    crate::with_credentials(&url, "hive_api", &password)?
                }
            };
            (url, Some(api))
        }
    };
    secrets.save(&home)?;
    Ok((
        Endpoints {
            nats,
            database_url,
            api_database_url,
        },
        servers,
    ))
}

/// The file in `HIVE_HOME` where a running `hive up` leaves its servers' URLs, for the operators'
/// commands (`hive verify`, `hive audit`, `hive projections ...`) run beside it.
pub const ENDPOINTS: &str = "endpoints.json";

/// The URLs a running `hive up` in `home` left: (NATS, PostgreSQL).
pub fn endpoints(home: &std::path::Path) -> Option<(String, String)> {
    let text = std::fs::read_to_string(home.join(ENDPOINTS)).ok()?;
    let value: serde_json::Value = serde_json::from_str(&text).ok()?;
    Some((
        value["nats_url"].as_str()?.to_owned(),
        value["database_url"].as_str()?.to_owned(),
    ))
}

/// The file in `HIVE_HOME` that holds the development admin token of `hive up` (mode 0600).
pub const ADMIN_TOKEN: &str = "admin.token";

/// The admin token of `hive up` in `home`: the one its file holds while it is valid, else a new one
/// written there (readable by its owner only).
async fn admin_token(
    tokens: &hive_eventlog::Tokens,
    home: &std::path::Path,
) -> anyhow::Result<String> {
    let path = home.join(ADMIN_TOKEN);
    if let Ok(kept) = std::fs::read_to_string(&path) {
        let kept = kept.trim().to_owned();
        if tokens
            .grant(&hive_eventlog::tokens::id_of(&kept))
            .await?
            .is_some()
        {
            return Ok(kept);
        }
    }
    let grant = hive_eventlog::Grant::new(hive_eventlog::Role::Admin, "hive up (development)");
    let (token, _) = tokens.issue(&grant).await?;
    write_private(&path, &token)?;
    Ok(token)
}

/// Runs the whole hive until SIGTERM or SIGINT.
pub async fn up(mut config: Config) -> anyhow::Result<()> {
    let (endpoints, mut servers) = backends(&config).await?;
    if let Some(store) = servers.nats_store() {
        config.nats_store_dir = Some(store.to_path_buf());
    }
    // One sync for every part in this process: their writes group together.
    if let Some(dir) = &config.nats_store_dir {
        config.store_sync = Some(hive_eventlog::StoreSync::open(dir)?);
    }
    let endpoints_file = config.home.join(ENDPOINTS);
    // The operators' commands run beside it connect as the admin.
    let written = serde_json::json!({
        "nats_url": endpoints.nats(Service::Admin),
        "database_url": endpoints.database_url,
    });
    if let Err(e) = write_private(&endpoints_file, &written.to_string()) {
        tracing::warn!(error = %e, "could not write {}", endpoints_file.display());
    }
    let result = async {
        // Provisioning as the admin: the stream, the buckets, the schema, the API's role, its token.
        let (token, api_db) = {
            let admin = crate::connect(
                &config,
                endpoints.nats(Service::Admin),
                &endpoints.database_url,
                true,
            )
            .await?;
            let api_db = match &endpoints.api_database_url {
                Some(url) => {
                    crate::provision_reader(&admin.db, url).await?;
                    url.clone()
                }
                None => {
                    tracing::warn!(
                        "the API reads the read models as their owner: set HIVE_API_DATABASE_URL to a \
                         role that may only read"
                    );
                    endpoints.database_url.clone()
                }
            };
            (admin_token(&admin.tokens, &config.home).await?, api_db)
        };
        let owner = &endpoints.database_url;
        let parts = crate::PartBackends {
            api: crate::connect(&config, endpoints.nats(Service::Api), &api_db, false).await?,
            projector: crate::connect(&config, endpoints.nats(Service::Projector), owner, false)
                .await?,
            scheduler: crate::connect(&config, endpoints.nats(Service::Scheduler), owner, false)
                .await?,
        };
        let running = crate::run(&config, parts, Parts::ALL, config.http_addr).await?;
        let addr = running.addr.expect("the API runs");
        println!("hive is up");
        println!("  API        http://{addr}/  (health: http://{addr}/health)");
        let token_file = config.home.join(ADMIN_TOKEN).display().to_string();
        if addr.ip().is_loopback() {
            println!("  dashboard  http://{addr}/dashboard#token={token}");
            println!("  admin      Authorization: Bearer {token}  (also in {token_file})");
        } else {
            println!("  dashboard  http://{addr}/dashboard  (the admin token is in {token_file})");
        }
        println!(
            "  NATS       {}  (stream {})",
            Config::redacted(endpoints.nats(Service::Admin)),
            config.log().namespace.stream()
        );
        println!("  PostgreSQL {}", Config::redacted(owner));
        println!("  data       {}", config.home.display());
        println!("Ctrl-C or SIGTERM stops it.");
        running.until(crate::termination()).await
    }
    .await;
    let _ = std::fs::remove_file(&endpoints_file);
    servers.stop();
    result
}
