//! Taking a backup from a live hive: the tokens, then every event up to the last sequence the stream
//! held when the backup began, read with an ordered consumer while writes go on.

use std::io::Write;
use std::path::Path;
use std::time::Duration;

use async_nats::jetstream;
use futures::StreamExt;
use sha2::{Digest, Sha256};

use super::{
    BackupError, EVENTS, FORMAT, FileSum, MANIFEST, Manifest, Progress, Record, TOKENS,
    TokenRecord, io,
};
use crate::{EventLog, LogError, Tokens};

/// How long the reader waits for the next event it knows the stream holds before giving up.
const STALL: Duration = Duration::from_secs(10);

/// A file being written, hashed as it goes.
struct Hashed {
    file: std::io::BufWriter<std::fs::File>,
    hash: Sha256,
    bytes: u64,
    path: std::path::PathBuf,
}

impl Hashed {
    /// A new file, readable by its owner only: events hold what clients sent, tokens who may call.
    fn create(path: &Path) -> Result<Self, BackupError> {
        use std::os::unix::fs::OpenOptionsExt;
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .map_err(io(path))?;
        Ok(Self {
            file: std::io::BufWriter::new(file),
            hash: Sha256::new(),
            bytes: 0,
            path: path.to_owned(),
        })
    }

    fn line(&mut self, value: &impl serde::Serialize) -> Result<(), BackupError> {
        let mut line = serde_json::to_vec(value)
            .map_err(|e| BackupError::Malformed(format!("encode a line: {e}")))?;
        line.push(b'\n');
        self.file.write_all(&line).map_err(io(&self.path))?;
        self.hash.update(&line);
        self.bytes += line.len() as u64;
        Ok(())
    }

    /// Flushes and syncs the file: its size and SHA-256.
    fn finish(self) -> Result<FileSum, BackupError> {
        let file = self
            .file
            .into_inner()
            .map_err(|e| io(&self.path)(e.into_error()))?;
        file.sync_all().map_err(io(&self.path))?;
        Ok(FileSum {
            bytes: self.bytes,
            sha256: hex::encode(self.hash.finalize()),
        })
    }
}

/// Backs up the stream of `log` and the tokens of `tokens` into `dir` (created if missing; it must be
/// empty), calling `progress` as events are written. Safe on a live hive: it only reads, and events
/// appended while it runs are simply not in it.
#[tracing::instrument(skip_all, fields(dir = %dir.display(), stream = %log.namespace().stream()), err)]
pub async fn take(
    log: &EventLog,
    tokens: &Tokens,
    dir: &Path,
    mut progress: impl FnMut(Progress),
) -> Result<Manifest, BackupError> {
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    if std::fs::read_dir(dir).map_err(io(dir))?.next().is_some() {
        return Err(BackupError::NotEmptyDir(dir.to_owned()));
    }
    // The point the backup stands for: everything the stream held now, nothing appended later.
    let info = log
        .stream()
        .get_info()
        .await
        .map_err(|e| LogError::new("read the stream's state", e))?;
    let created_at = chrono::Utc::now();
    let (first_seq, last_seq) = (info.state.first_sequence, info.state.last_sequence);
    let total = info.state.messages;

    let mut token_file = Hashed::create(&dir.join(TOKENS))?;
    let entries = tokens.raw_entries().await?;
    for (id, grant) in &entries {
        let grant = String::from_utf8(grant.to_vec())
            .map_err(|e| BackupError::Malformed(format!("token {id}: {e}")))?;
        token_file.line(&TokenRecord {
            id: id.clone(),
            grant,
        })?;
    }
    let tokens_sum = token_file.finish()?;

    let mut events = Hashed::create(&dir.join(EVENTS))?;
    let mut messages = 0;
    progress(Progress { done: 0, total });
    if total > 0 && last_seq >= first_seq {
        let consumer = log
            .stream()
            .create_consumer(jetstream::consumer::pull::OrderedConfig {
                deliver_policy: jetstream::consumer::DeliverPolicy::ByStartSequence {
                    start_sequence: first_seq.max(1),
                },
                ..Default::default()
            })
            .await
            .map_err(|e| LogError::new("create a reader", e))?;
        let mut read = consumer
            .messages()
            .await
            .map_err(|e| LogError::new("read the log", e))?;
        loop {
            let next = tokio::time::timeout(STALL, read.next()).await;
            let message = match next {
                Ok(Some(message)) => message.map_err(|e| LogError::new("read the log", e))?,
                Ok(None) => return Err(LogError::new("read the log", "the reader ended").into()),
                Err(_) => {
                    let lost = format!("no event after {messages} of {total} for {STALL:?}");
                    return Err(LogError::new("read the log", lost).into());
                }
            };
            let record = record(&message)?;
            if record.seq > last_seq {
                break;
            }
            events.line(&record)?;
            messages += 1;
            if messages % 1024 == 0 {
                progress(Progress {
                    done: messages,
                    total,
                });
            }
            // The last sequence may have been deleted: the count tells the end as well.
            if record.seq == last_seq || messages == total {
                break;
            }
        }
    }
    progress(Progress {
        done: messages,
        total,
    });
    let events_sum = events.finish()?;

    let manifest = Manifest {
        format: FORMAT,
        hive_version: env!("CARGO_PKG_VERSION").to_owned(),
        created_at,
        namespace: log.namespace().as_str().to_owned(),
        stream: log.namespace().stream(),
        first_seq,
        last_seq,
        messages,
        tokens: entries.len() as u64,
        files: [
            (EVENTS.to_owned(), events_sum),
            (TOKENS.to_owned(), tokens_sum),
        ]
        .into(),
    };
    // Written last, and whole or not at all: a directory without it is no backup.
    let path = dir.join(MANIFEST);
    let partial = dir.join(format!("{MANIFEST}.partial"));
    let text = serde_json::to_string_pretty(&manifest)
        .map_err(|e| BackupError::Malformed(format!("encode the manifest: {e}")))?;
    let mut file = Hashed::create(&partial)?;
    file.file
        .write_all((text + "\n").as_bytes())
        .map_err(io(&partial))?;
    file.finish()?;
    std::fs::rename(&partial, &path).map_err(io(&path))?;
    Ok(manifest)
}

/// The line of a delivered event.
fn record(message: &jetstream::Message) -> Result<Record, BackupError> {
    let info = message
        .info()
        .map_err(|e| LogError::new("read the log", e))?;
    let mut headers: Vec<(String, String)> = message
        .headers
        .iter()
        .flat_map(|headers| headers.iter())
        .flat_map(|(name, values)| {
            values
                .iter()
                .map(move |value| (name.to_string(), value.as_str().to_owned()))
        })
        .collect();
    headers.sort();
    let (payload, payload_hex) = match std::str::from_utf8(&message.payload) {
        Ok(text) => (Some(text.to_owned()), None),
        Err(_) => (None, Some(hex::encode(&message.payload))),
    };
    Ok(Record {
        seq: info.stream_sequence,
        subject: message.subject.to_string(),
        time: info.published,
        headers,
        payload,
        payload_hex,
    })
}
