//! `hive up`: the whole hive in one process. For each backend URL that is not configured it starts the
//! server itself under `$HIVE_HOME` (nats-server with JetStream in `nats/`, PostgreSQL in `postgres/`),
//! and stops it on exit.

use std::net::TcpListener;

use anyhow::Context;
use hive_devservers::{Durability, NatsServer, Postgres, free_port};

use crate::{Config, Parts};

/// The servers `hive up` started; they stop when this is dropped.
#[derive(Default)]
pub struct Servers {
    nats: Option<NatsServer>,
    postgres: Option<Postgres>,
}

impl Servers {
    /// The nats-server started here, if any.
    pub fn nats(&self) -> Option<&NatsServer> {
        self.nats.as_ref()
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

/// The backend URLs: the configured ones, or those of servers started here.
pub async fn backends(config: &Config) -> anyhow::Result<(String, String, Servers)> {
    let mut servers = Servers::default();
    std::fs::create_dir_all(&config.home)
        .with_context(|| format!("create HIVE_HOME {}", config.home.display()))?;
    let home = std::fs::canonicalize(&config.home)?;
    let nats_url = match &config.nats_url {
        Some(url) => url.clone(),
        None => {
            let port = port_or_free(config.nats_port)?;
            let nats =
                NatsServer::start(&home.join("nats"), Some(port), Durability::Safe, &[]).await?;
            let url = nats.url();
            servers.nats = Some(nats);
            url
        }
    };
    let database_url = match &config.database_url {
        Some(url) => url.clone(),
        None => {
            let port = port_or_free(config.pg_port)?;
            let pg = Postgres::start(&home.join("postgres"), Some(port), Durability::Safe).await?;
            let url = pg.url("hive");
            servers.postgres = Some(pg);
            url
        }
    };
    Ok((nats_url, database_url, servers))
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
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
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
    let _ = std::fs::remove_file(&path);
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .and_then(|mut f| writeln!(f, "{token}"))
        .with_context(|| format!("write {}", path.display()))?;
    Ok(token)
}

/// Runs the whole hive until SIGTERM or SIGINT.
pub async fn up(config: Config) -> anyhow::Result<()> {
    let (nats_url, database_url, mut servers) = backends(&config).await?;
    let endpoints = config.home.join(ENDPOINTS);
    let written = serde_json::json!({"nats_url": nats_url, "database_url": database_url});
    if let Err(e) = std::fs::write(&endpoints, written.to_string()) {
        tracing::warn!(error = %e, "could not write {}", endpoints.display());
    }
    let result = async {
        let backends = crate::connect(&config, &nats_url, &database_url, true).await?;
        let token = admin_token(&backends.tokens, &config.home).await?;
        let running = crate::run(&config, backends, Parts::ALL, config.http_addr).await?;
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
            "  NATS       {nats_url}  (stream {})",
            config.log().namespace.stream()
        );
        println!("  PostgreSQL {}", Config::redacted(&database_url));
        println!("  data       {}", config.home.display());
        println!("Ctrl-C or SIGTERM stops it.");
        running.until(crate::termination()).await
    }
    .await;
    let _ = std::fs::remove_file(&endpoints);
    servers.stop();
    result
}
