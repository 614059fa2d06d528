//! Backup and restore of the log and the tokens bucket (`hive backup`, `hive restore`).
//!
//! A backup is a directory: `events.jsonl` (one stored event a line: its sequence, subject, headers,
//! time and bytes), `tokens.jsonl` (one token id and its stored grant a line) and `manifest.json`
//! ([`Manifest`]: what the backup holds and the SHA-256 of each file), written last, so a backup cut
//! short has none and cannot be restored. [`take`] reads the stream up to the last sequence it held
//! when the backup began (a consistent prefix: the log is only appended to), while writes go on.
//! [`restore`] loads a backup into an empty stream so that every event lands at its own sequence
//! again: each is appended with `Nats-Expected-Last-Sequence` = its sequence minus one, a gap (a
//! message deleted before the backup) is kept by appending a filler and deleting it, and a leading gap
//! by setting the empty stream's first sequence.

mod append;
mod restore;
mod take;

use std::collections::BTreeMap;
use std::io::{BufRead, Read};
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use thiserror::Error;

pub use restore::{Restored, restore};
pub use take::take;

use crate::LogError;

/// The manifest's file name.
pub const MANIFEST: &str = "manifest.json";
/// The events' file name.
pub const EVENTS: &str = "events.jsonl";
/// The tokens' file name.
pub const TOKENS: &str = "tokens.jsonl";
/// The backup format this code writes and reads.
pub const FORMAT: u32 = 1;

/// What a backup holds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// The backup format ([`FORMAT`]).
    pub format: u32,
    /// The version of Hive that took it.
    pub hive_version: String,
    /// When it was taken (when its last sequence was read).
    pub created_at: DateTime<Utc>,
    /// The namespace it was taken from.
    pub namespace: String,
    /// Its stream.
    pub stream: String,
    /// The stream's first sequence (0 for a stream that never held an event).
    pub first_seq: u64,
    /// The last sequence backed up: the stream's last when the backup began.
    pub last_seq: u64,
    /// How many events it holds (fewer than the sequences it spans if messages had been deleted).
    pub messages: u64,
    /// How many tokens it holds.
    pub tokens: u64,
    /// Each file's size and SHA-256.
    pub files: BTreeMap<String, FileSum>,
}

/// A file's size and SHA-256 (hex).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileSum {
    /// Its size in bytes.
    pub bytes: u64,
    /// Its SHA-256, in hex.
    pub sha256: String,
}

/// One stored event as a line of `events.jsonl`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// Its sequence.
    pub seq: u64,
    /// Its subject (in the backup's namespace).
    pub subject: String,
    /// When the stream stored it.
    pub time: DateTime<Utc>,
    /// Its headers, sorted (`Nats-Msg-Id` among them).
    pub headers: Vec<(String, String)>,
    /// Its bytes as text, when they are UTF-8 (every event Hive wrote).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload: Option<String>,
    /// Its bytes in hex, when they are not UTF-8 (a hostile publisher's): kept as they were.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload_hex: Option<String>,
}

impl Record {
    /// Its bytes.
    pub fn bytes(&self) -> Result<Vec<u8>, BackupError> {
        match (&self.payload, &self.payload_hex) {
            (Some(text), None) => Ok(text.as_bytes().to_vec()),
            (None, Some(hex)) => hex::decode(hex)
                .map_err(|e| BackupError::Malformed(format!("event {}: {e}", self.seq))),
            _ => Err(BackupError::Malformed(format!(
                "event {} has no payload, or two",
                self.seq
            ))),
        }
    }

    /// The value of header `name`, if it has one.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// One token as a line of `tokens.jsonl`: its id (the SHA-256 of the token) and its stored grant.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenRecord {
    /// The token's id.
    pub id: String,
    /// The grant, as stored (JSON).
    pub grant: String,
}

/// How far a backup or a restore is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Progress {
    /// Events done.
    pub done: u64,
    /// Events in all.
    pub total: u64,
}

/// Why a backup or a restore failed.
#[derive(Debug, Error)]
pub enum BackupError {
    /// The backup directory already holds files.
    #[error("{0} is not empty: a backup goes into a new or empty directory")]
    NotEmptyDir(PathBuf),
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The directory holds no complete backup.
    #[error("{dir} holds no complete backup ({MANIFEST}: {reason})")]
    NoManifest {
        /// The directory.
        dir: PathBuf,
        /// What is wrong with its manifest.
        reason: String,
    },
    /// A file is not what the manifest says: changed or damaged since the backup.
    #[error(
        "backup file {file} is corrupt: its SHA-256 is {actual} ({bytes} bytes), the manifest says {expected}; refusing to restore it"
    )]
    Checksum {
        /// The file.
        file: PathBuf,
        /// What the manifest says.
        expected: String,
        /// What the file hashes to.
        actual: String,
        /// Its size.
        bytes: u64,
    },
    /// The backup's content contradicts itself.
    #[error("the backup is malformed: {0}")]
    Malformed(String),
    /// The stream to restore into holds events.
    #[error(
        "stream {stream} is not empty ({messages} events, last sequence {last_seq}): restoring over it would \
         not keep the backup's sequences; --force deletes the stream (every event in it) first"
    )]
    NotEmpty {
        /// The stream.
        stream: String,
        /// How many events it holds.
        messages: u64,
        /// Its last sequence.
        last_seq: u64,
    },
    /// An event did not land at its own sequence.
    #[error("event {expected} landed at sequence {actual}: {why}")]
    Sequence {
        /// Its sequence in the backup.
        expected: u64,
        /// Where the stream put it.
        actual: u64,
        /// Why, as far as known.
        why: String,
    },
    /// NATS failed.
    #[error(transparent)]
    Log(#[from] LogError),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> BackupError + '_ {
    move |source| BackupError::Io {
        path: path.to_owned(),
        source,
    }
}

/// The size and SHA-256 of file `path`.
pub fn checksum(path: &Path) -> Result<FileSum, BackupError> {
    let mut file = std::fs::File::open(path).map_err(io(path))?;
    let mut hash = Sha256::new();
    let mut buffer = vec![0; 1 << 16];
    let mut bytes = 0;
    loop {
        let read = file.read(&mut buffer).map_err(io(path))?;
        if read == 0 {
            break;
        }
        hash.update(&buffer[..read]);
        bytes += read as u64;
    }
    Ok(FileSum {
        bytes,
        sha256: hex::encode(hash.finalize()),
    })
}

/// Reads the manifest of the backup in `dir` and checks every file it names against its checksum:
/// the manifest of a backup that is whole, or an error naming what is wrong.
pub fn verify(dir: &Path) -> Result<Manifest, BackupError> {
    let path = dir.join(MANIFEST);
    let no_manifest = |reason: String| BackupError::NoManifest {
        dir: dir.to_owned(),
        reason,
    };
    let text = std::fs::read_to_string(&path).map_err(|e| no_manifest(e.to_string()))?;
    let manifest: Manifest = serde_json::from_str(&text).map_err(|e| no_manifest(e.to_string()))?;
    if manifest.format != FORMAT {
        return Err(no_manifest(format!(
            "format {}, this hive reads format {FORMAT}",
            manifest.format
        )));
    }
    // The manifest is the one file no checksum covers: what it names must at least make sense.
    match crate::Namespace::parse(&manifest.namespace) {
        Some(namespace) if namespace.stream() == manifest.stream => {}
        _ => {
            return Err(no_manifest(format!(
                "namespace {:?} and stream {:?} do not go together",
                manifest.namespace, manifest.stream
            )));
        }
    }
    if manifest.last_seq < manifest.first_seq.saturating_sub(1) {
        return Err(no_manifest(format!(
            "first sequence {} after last sequence {}",
            manifest.first_seq, manifest.last_seq
        )));
    }
    for name in [EVENTS, TOKENS] {
        if !manifest.files.contains_key(name) {
            return Err(no_manifest(format!("{name} is not listed")));
        }
    }
    if let Some(other) = manifest
        .files
        .keys()
        .find(|n| ![EVENTS, TOKENS].contains(&n.as_str()))
    {
        return Err(no_manifest(format!(
            "it lists {other:?}, no file of a backup"
        )));
    }
    for (name, sum) in &manifest.files {
        let file = dir.join(name);
        let actual = checksum(&file)?;
        if actual.sha256 != sum.sha256 || actual.bytes != sum.bytes {
            return Err(BackupError::Checksum {
                file,
                expected: sum.sha256.clone(),
                actual: actual.sha256,
                bytes: actual.bytes,
            });
        }
    }
    Ok(manifest)
}

/// The JSON lines of file `path`, each parsed as a `T`.
fn lines<T: serde::de::DeserializeOwned>(
    path: &Path,
) -> Result<impl Iterator<Item = Result<T, BackupError>>, BackupError> {
    let file = std::fs::File::open(path).map_err(io(path))?;
    let owned = path.to_owned();
    Ok(std::io::BufReader::new(file)
        .lines()
        .enumerate()
        .map(move |(n, line)| {
            let line = line.map_err(io(&owned))?;
            serde_json::from_str(&line).map_err(|e| {
                BackupError::Malformed(format!("{} line {}: {e}", owned.display(), n + 1))
            })
        }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_keep_their_bytes_as_text_or_hex() {
        let text = Record {
            seq: 1,
            subject: "hive.events.task.x".into(),
            time: Utc::now(),
            headers: vec![("Nats-Msg-Id".into(), "k".into())],
            payload: Some("{\"a\":1}".into()),
            payload_hex: None,
        };
        assert_eq!(text.bytes().unwrap(), b"{\"a\":1}");
        assert_eq!(text.header("nats-msg-id"), Some("k"));
        let binary = Record {
            payload: None,
            payload_hex: Some(hex::encode([0xff, 0x00])),
            ..text.clone()
        };
        assert_eq!(binary.bytes().unwrap(), [0xff, 0x00]);
        let line = serde_json::to_string(&binary).unwrap();
        assert_eq!(serde_json::from_str::<Record>(&line).unwrap(), binary);
        let neither = Record {
            payload: None,
            ..text
        };
        assert!(neither.bytes().is_err());
    }

    #[test]
    fn a_changed_file_is_refused() {
        let dir = std::env::temp_dir().join(format!("hive-backup-unit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        for name in [EVENTS, TOKENS] {
            std::fs::write(dir.join(name), "{}\n").unwrap();
        }
        let files = [EVENTS, TOKENS]
            .map(|name| (name.to_owned(), checksum(&dir.join(name)).unwrap()))
            .into();
        let manifest = Manifest {
            format: FORMAT,
            hive_version: "0".into(),
            created_at: Utc::now(),
            namespace: "hive".into(),
            stream: "HIVE_EVENTS".into(),
            first_seq: 0,
            last_seq: 0,
            messages: 0,
            tokens: 0,
            files,
        };
        std::fs::write(
            dir.join(MANIFEST),
            serde_json::to_string(&manifest).unwrap(),
        )
        .unwrap();
        assert_eq!(verify(&dir).unwrap(), manifest);
        // The manifest itself must make sense: its stream is its namespace's, its files a backup's.
        let write = |m: &Manifest| {
            std::fs::write(dir.join(MANIFEST), serde_json::to_string(m).unwrap()).unwrap()
        };
        for odd in [
            Manifest {
                stream: "OTHER_EVENTS".into(),
                ..manifest.clone()
            },
            Manifest {
                namespace: "a.b".into(),
                ..manifest.clone()
            },
            Manifest {
                files: [("../x".to_owned(), manifest.files[EVENTS].clone())]
                    .into_iter()
                    .chain(manifest.files.clone())
                    .collect(),
                ..manifest.clone()
            },
        ] {
            write(&odd);
            assert!(matches!(verify(&dir), Err(BackupError::NoManifest { .. })));
        }
        write(&manifest);
        std::fs::write(dir.join(EVENTS), "{ }\n").unwrap();
        let refused = verify(&dir).unwrap_err();
        assert!(
            matches!(&refused, BackupError::Checksum { file, .. } if file.ends_with(EVENTS)),
            "{refused}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
