//! Restoring a backup into an empty stream, each event at its own sequence.
//!
//! The stream is created for the restore without `deny_delete`/`deny_purge` and with JetStream's
//! shortest duplicate window, so that a leading gap can be set with a purge, an inner gap kept with a
//! filler that is deleted at once, and two events of the log with the same `Nats-Msg-Id` (appended more
//! than a window apart) both stored. Each event is appended with `Nats-Expected-Last-Sequence` = its
//! sequence minus one, so none can land elsewhere: a writer that slipped in refuses the restore instead
//! of shifting it. Then the stream gets its real settings (denials, window); JetStream lets those be
//! turned on, never off.

use std::path::Path;
use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::jetstream::{self, ErrorCode};
use bytes::Bytes;

use super::append::{Appender, Message};
use super::{BackupError, EVENTS, Manifest, Progress, Record, TOKENS, TokenRecord, lines, verify};
use crate::log::{led, stream_config};
use crate::{EventLog, LogConfig, LogError, Namespace, Tokens, patiently};

/// The duplicate window while restoring: JetStream's shortest.
const RESTORE_WINDOW: Duration = Duration::from_millis(100);
/// How long a restore waits for JetStream and then for the new stream to have a leader (a cluster
/// elects them).
const LEADER_PATIENCE: Duration = Duration::from_secs(30);

/// What a restore did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Restored {
    /// The backup's manifest.
    pub manifest: Manifest,
    /// Events restored.
    pub events: u64,
    /// Sequences kept empty (messages deleted before the backup), inner and trailing.
    pub gaps: u64,
    /// Tokens restored.
    pub tokens: u64,
    /// Whether a stream was there (empty, or emptied by `force`) and was deleted first.
    pub replaced: bool,
}

/// Restores the backup in `dir` into the stream of `config` (its namespace, replicas and limits),
/// after checking every file against the manifest. The stream must be empty or absent; with `force`, a
/// stream that holds events is deleted first, and so is the tokens bucket (else the backup's tokens are
/// added to those there). Not safe on a live hive: nothing else may write to the stream meanwhile
/// (an append that slips in stops the restore with an error).
#[tracing::instrument(skip_all, fields(dir = %dir.display(), stream = %config.namespace.stream()), err)]
pub async fn restore(
    client: async_nats::Client,
    config: &LogConfig,
    dir: &Path,
    force: bool,
    mut progress: impl FnMut(Progress),
) -> Result<Restored, BackupError> {
    let manifest = verify(dir)?;
    let js = jetstream::ContextBuilder::new()
        .timeout(Duration::from_secs(10))
        .build(client.clone());
    let name = config.namespace.stream();
    let replaced = clear(&js, &name, force).await?;

    let mut restoring = stream_config(config);
    restoring.deny_delete = false;
    restoring.deny_purge = false;
    restoring.duplicate_window = RESTORE_WINDOW;
    js.create_stream(restoring)
        .await
        .map_err(|e| LogError::new("create the stream", e))?;
    let stream = led_stream(&js, &name).await?;
    if manifest.first_seq > 1 {
        // An empty stream purged up to a sequence starts there.
        stream
            .purge()
            .sequence(manifest.first_seq)
            .await
            .map_err(|e| LogError::new("set the stream's first sequence", e))?;
    }

    let from = prefix(&Namespace::new(&manifest.namespace));
    let to = prefix(&config.namespace);
    let filler = |seq| Message {
        seq,
        subject: format!("{to}restore-gap"),
        headers: HeaderMap::new(),
        payload: Bytes::new(),
        filler: true,
    };
    let mut appender = Appender::new(js.clone(), stream.clone(), RESTORE_WINDOW);
    let total = manifest.messages;
    let mut next = manifest.first_seq.max(1);
    let (mut events, mut gaps) = (0, 0);
    progress(Progress { done: 0, total });
    for record in lines::<Record>(&dir.join(EVENTS))? {
        let record = record?;
        if record.seq < next || record.seq > manifest.last_seq {
            return Err(BackupError::Malformed(format!(
                "event {} is out of order or beyond the last sequence {}",
                record.seq, manifest.last_seq
            )));
        }
        while next < record.seq {
            appender.push(filler(next)).await?;
            (next, gaps) = (next + 1, gaps + 1);
        }
        let subject = match record.subject.strip_prefix(&from) {
            Some(rest) => format!("{to}{rest}"),
            None => {
                return Err(BackupError::Malformed(format!(
                    "event {} is on {}, outside namespace {}",
                    record.seq, record.subject, manifest.namespace
                )));
            }
        };
        appender
            .push(Message {
                seq: record.seq,
                subject,
                headers: headers(&record)?,
                payload: record.bytes()?.into(),
                filler: false,
            })
            .await?;
        (next, events) = (record.seq + 1, events + 1);
        if events % 1024 == 0 {
            progress(Progress {
                done: events,
                total,
            });
        }
    }
    while next <= manifest.last_seq {
        appender.push(filler(next)).await?;
        (next, gaps) = (next + 1, gaps + 1);
    }
    appender.finish().await?;
    progress(Progress {
        done: events,
        total,
    });
    if events != manifest.messages {
        return Err(BackupError::Malformed(format!(
            "{EVENTS} holds {events} events, the manifest says {}",
            manifest.messages
        )));
    }

    // The real settings, now that nothing is left to purge or delete.
    js.update_stream(stream_config(config))
        .await
        .map_err(|e| LogError::new("set the stream's settings", e))?;
    let state = stream
        .get_info()
        .await
        .map_err(|e| LogError::new("read the stream's state", e))?
        .state;
    if state.messages != manifest.messages || state.last_sequence != manifest.last_seq {
        return Err(BackupError::Sequence {
            expected: manifest.last_seq,
            actual: state.last_sequence,
            why: format!(
                "the restored stream holds {} events, the backup {}",
                state.messages, manifest.messages
            ),
        });
    }

    if force {
        match js.delete_key_value(config.namespace.tokens()).await {
            Ok(_) => {}
            Err(e) => tracing::debug!(error = %e, "no tokens bucket to delete"),
        }
    }
    let log = EventLog::open(client, config).await?;
    // A bucket made just now on a cluster has no leader for a moment.
    let bucket = patiently("the tokens bucket", LEADER_PATIENCE, async || {
        Tokens::open(&log).await
    })
    .await?;
    let mut tokens = 0;
    for token in lines::<TokenRecord>(&dir.join(TOKENS))? {
        let token = token?;
        bucket.put_raw(&token.id, Bytes::from(token.grant)).await?;
        tokens += 1;
    }
    Ok(Restored {
        manifest,
        events,
        gaps,
        tokens,
        replaced,
    })
}

/// `<ns>.events.`: what every event's subject starts with.
fn prefix(namespace: &Namespace) -> String {
    let all = namespace.subjects().all();
    all.strip_suffix('>').unwrap_or(&all).to_owned()
}

/// Deletes stream `name` if it is there and empty, or holds events and `force` is given; refuses
/// otherwise. Whether there was one.
async fn clear(js: &jetstream::Context, name: &str, force: bool) -> Result<bool, BackupError> {
    // A cluster that has just started answers nothing until it has elected its leaders: ask again.
    let stream = patiently("JetStream", LEADER_PATIENCE, async || {
        match js.get_stream(name).await {
            Ok(stream) => Ok(Some(stream)),
            Err(e) => match e.kind() {
                jetstream::context::GetStreamErrorKind::JetStream(js_error)
                    if js_error.error_code() == ErrorCode::STREAM_NOT_FOUND =>
                {
                    Ok(None)
                }
                _ => Err(LogError::new("look for the stream", e)),
            },
        }
    })
    .await?;
    let Some(stream) = stream else {
        return Ok(false);
    };
    let state = stream
        .get_info()
        .await
        .map_err(|e| LogError::new("read the stream's state", e))?
        .state;
    if (state.messages > 0 || state.last_sequence > 0) && !force {
        return Err(BackupError::NotEmpty {
            stream: name.to_owned(),
            messages: state.messages,
            last_seq: state.last_sequence,
        });
    }
    // Even an empty one: its sequences may have moved on, and its denials cannot be lifted.
    js.delete_stream(name)
        .await
        .map_err(|e| LogError::new("delete the stream", e))?;
    Ok(true)
}

/// The new stream, once it has a leader.
async fn led_stream(
    js: &jetstream::Context,
    name: &str,
) -> Result<jetstream::stream::Stream, BackupError> {
    patiently("the new stream's leader", LEADER_PATIENCE, async || {
        let stream = js
            .get_stream(name)
            .await
            .map_err(|e| LogError::new("open the stream", e))?;
        led(stream.cached_info()).map(|()| stream)
    })
    .await
    .map_err(Into::into)
}

/// The headers an event is appended with: its own but the publish-time conditions
/// (`Nats-Expected-*`), which held when it was first appended and are replaced by its sequence.
fn headers(record: &Record) -> Result<HeaderMap, BackupError> {
    let mut headers = HeaderMap::new();
    for (name, value) in &record.headers {
        if name.to_ascii_lowercase().starts_with("nats-expected-") {
            continue;
        }
        let header: async_nats::header::HeaderName = name.parse().map_err(|_| {
            BackupError::Malformed(format!("event {}: header {name:?}", record.seq))
        })?;
        headers.append(header, value.as_str());
    }
    Ok(headers)
}
