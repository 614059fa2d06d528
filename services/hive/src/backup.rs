//! `hive backup` and `hive restore`: the work is in [`hive_eventlog::backup`]; here the servers are
//! found (or started, for a restore), the progress is shown, and a restore is followed by a rebuild of
//! the read models.

use std::io::IsTerminal;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context;
use hive_eventlog::backup::{self, Manifest, Progress, Restored};
use hive_eventlog::users::Service;
use hive_eventlog::{EventLog, Tokens};

use crate::Config;

/// Backs up the log and the tokens of the hive whose NATS is at `nats_url` (the admin's credentials)
/// into `dir`. Safe on a live hive: it only reads, while writes go on.
pub async fn backup(config: &Config, nats_url: &str, dir: &Path) -> anyhow::Result<Manifest> {
    let client = crate::nats_client(nats_url).await?;
    // As it is: a backup only reads, so it must not bring the stream's settings to this config's.
    let log = EventLog::open_existing(client, &config.log())
        .await
        .context("open the event log")?;
    let tokens = Tokens::open(&log).await.context("open the tokens bucket")?;
    let began = Instant::now();
    let manifest = backup::take(&log, &tokens, dir, reporter("backup"))
        .await
        .with_context(|| format!("back up into {}", dir.display()))?;
    println!(
        "backed up {} events (sequences {}..={}) and {} tokens of stream {} into {} in {:.2} s",
        manifest.messages,
        manifest.first_seq,
        manifest.last_seq,
        manifest.tokens,
        manifest.stream,
        dir.display(),
        began.elapsed().as_secs_f64()
    );
    Ok(manifest)
}

/// Restores the backup in `dir` on the servers `hive up` would use (the configured ones, or those
/// under `HIVE_HOME`, started for the time of the restore), then rebuilds the read models from the
/// restored log. Not safe on a live hive: refused beside a running `hive up`.
pub async fn restore(config: &Config, dir: &Path, force: bool) -> anyhow::Result<Restored> {
    anyhow::ensure!(
        config.nats_url.is_some() || crate::up::endpoints(&config.home).is_none(),
        "a `hive up` is running in {}: stop it first (`hive restore` then starts its servers itself)",
        config.home.display()
    );
    // Checked before any server starts: a damaged backup changes nothing.
    backup::verify(dir).with_context(|| format!("check the backup in {}", dir.display()))?;
    // Both servers named: nothing to start, and nothing written under HIVE_HOME.
    let (nats, database, mut servers) = match (&config.nats_url, &config.database_url) {
        (Some(nats), Some(database)) => (nats.clone(), database.clone(), None),
        _ => {
            let (endpoints, servers) = crate::up::backends(config).await?;
            let nats = endpoints.nats(Service::Admin).to_owned();
            (nats, endpoints.database_url, Some(servers))
        }
    };
    let result = async {
        let nats = nats.as_str();
        let client = crate::nats_client(nats).await?;
        let began = Instant::now();
        let restored = backup::restore(client, &config.log(), dir, force, reporter("restore"))
            .await
            .with_context(|| format!("restore {}", dir.display()))?;
        // A nats-server that fsyncs no write itself (`hive up`'s, synced by its clients): the
        // restored events are on disk before the restore says it is done.
        let store = servers
            .as_ref()
            .and_then(|s| s.nats_store())
            .or(config.nats_store_dir.as_deref());
        if let Some(store) = store {
            hive_eventlog::StoreSync::open(store)?
                .durable()
                .await
                .context("sync the restored log to disk")?;
        }
        let m = &restored.manifest;
        println!(
            "restored {} events at their sequences {}..={} ({} kept empty) and {} tokens into stream {} in {:.2} s",
            restored.events,
            m.first_seq,
            m.last_seq,
            restored.gaps,
            restored.tokens,
            config.log().namespace.stream(),
            began.elapsed().as_secs_f64()
        );
        // The read models stand for the log they were folded from: fold them again from this one.
        let backends = crate::connect(config, nats, &database, true).await?;
        crate::ops::rebuild_projections(&backends, &[hive_projector::READ_MODELS.to_owned()])
            .await?;
        Ok(restored)
    }
    .await;
    if let Some(servers) = &mut servers {
        servers.stop();
    }
    result
}

/// A progress reporter: a bar (events/s, ETA) on a terminal, a plain line every 2 s otherwise.
fn reporter(what: &'static str) -> impl FnMut(Progress) {
    let bar = std::io::stderr().is_terminal().then(|| {
        let bar = indicatif::ProgressBar::new(0);
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{prefix} [{bar:40}] {pos}/{len} events ({per_sec}, ETA {eta})",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
            .progress_chars("=> "),
        );
        bar.set_prefix(what);
        bar
    });
    let mut last_line: Option<Instant> = None;
    move |p: Progress| match &bar {
        Some(bar) => {
            bar.set_length(p.total);
            bar.set_position(p.done);
            if p.done >= p.total {
                bar.finish_and_clear();
            }
        }
        None => {
            if last_line.is_none_or(|t| t.elapsed() >= Duration::from_secs(2)) || p.done >= p.total
            {
                last_line = Some(Instant::now());
                eprintln!("{what}: {}/{} events", p.done, p.total);
            }
        }
    }
}
