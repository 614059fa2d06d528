//! Large derived values kept beside the log in a JetStream object store: the scheduler's board
//! snapshot, which may outgrow a key-value entry (a message is at most 1 MiB by default; the store
//! chunks it and checks each object's SHA-256 digest on read).
//!
//! Nothing here is a source of truth: a value that cannot be read is the caller's to ignore.

use async_nats::jetstream::{self, object_store};
use bytes::Bytes;
use sha2::{Digest, Sha256};
use tokio::io::AsyncReadExt;

use crate::{EventLog, LogError};

/// An object store of derived values.
#[derive(Clone)]
pub struct Objects {
    store: object_store::ObjectStore,
}

impl Objects {
    /// Opens bucket `name`, creating it (file storage, the log's replicas, compressed) when it is
    /// missing.
    pub async fn open(log: &EventLog, name: String, description: &str) -> Result<Self, LogError> {
        let js = jetstream::new(log.client());
        let store = match js.get_object_store(&name).await {
            Ok(store) => store,
            Err(_) => js
                .create_object_store(object_store::Config {
                    bucket: name,
                    description: Some(description.into()),
                    storage: jetstream::stream::StorageType::File,
                    num_replicas: log.replicas(),
                    compression: true,
                    ..Default::default()
                })
                .await
                .map_err(|e| LogError::new("create an object store", e))?,
        };
        Ok(Self { store })
    }

    /// Stores `value` under `name`, replacing the previous one (whose chunks the store purges).
    pub async fn put(&self, name: &str, value: &[u8]) -> Result<(), LogError> {
        self.put_pieces(name, std::slice::from_ref(&value)).await
    }

    /// Stores the concatenation of `pieces` under `name`, as [`Objects::put`] does, without joining
    /// them into one buffer first.
    pub async fn put_pieces<P: AsRef<[u8]>>(
        &self,
        name: &str,
        pieces: &[P],
    ) -> Result<(), LogError> {
        let mut reader = concatenation(pieces);
        self.store
            .put(name, &mut reader)
            .await
            .map(|_| ())
            .map_err(|e| LogError::new("store an object", e))
    }

    /// The value under `name`; `None` when there is none. An error when it cannot be read whole, or
    /// its digest does not match.
    pub async fn get(&self, name: &str) -> Result<Option<Vec<u8>>, LogError> {
        let mut object = match self.store.get(name).await {
            Ok(object) => object,
            Err(e) if e.kind() == object_store::GetErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(LogError::new("get an object", e)),
        };
        let mut value = Vec::with_capacity(object.info().size);
        object
            .read_to_end(&mut value)
            .await
            .map_err(|e| LogError::new("read an object", e))?;
        Ok(Some(value))
    }
}

/// A reader of `pieces` one after the other.
fn concatenation<P: AsRef<[u8]>>(pieces: &[P]) -> impl tokio::io::AsyncRead + Unpin + '_ {
    let chunks = pieces.iter().map(|p| Ok::<_, std::io::Error>(p.as_ref()));
    tokio_util::io::StreamReader::new(futures::stream::iter(chunks))
}

/// What pins a snapshot to the history it was folded from: the event at the sequence it covers, its
/// subject and the SHA-256 of its stored bytes. A snapshot is trusted only while the log still holds
/// that very event there (a stream re-created or restored from another history does not).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Covered {
    /// The last sequence folded into the snapshot.
    pub seq: u64,
    /// The subject of the event at `seq`.
    pub subject: String,
    /// The hex SHA-256 of that event's stored bytes.
    pub digest: String,
}

impl Covered {
    /// The pin of the log's event at `seq`; `None` when the log holds none there.
    pub async fn of(log: &EventLog, seq: u64) -> Result<Option<Self>, LogError> {
        Ok(log.get(seq).await?.map(|raw| Self {
            seq,
            digest: digest(&raw.payload),
            subject: raw.subject,
        }))
    }

    /// Whether the log still holds, at this sequence, the event this pin was taken of.
    pub async fn holds(&self, log: &EventLog) -> Result<bool, LogError> {
        Ok(Self::of(log, self.seq).await?.as_ref() == Some(self))
    }
}

fn digest(payload: &Bytes) -> String {
    hex::encode(Sha256::digest(payload))
}

#[cfg(test)]
mod tests {
    use tokio::io::AsyncReadExt;

    use super::concatenation;

    #[tokio::test]
    async fn pieces_read_as_their_concatenation() {
        let pieces: [&[u8]; 5] = [b"", b"ab", b"", b"cde", b"f"];
        let mut read = Vec::new();
        concatenation(&pieces).read_to_end(&mut read).await.unwrap();
        assert_eq!(read, b"abcdef");
        // Through a buffer smaller than a piece.
        let mut reader = concatenation(&pieces);
        let mut two = [0u8; 2];
        let mut read = Vec::new();
        loop {
            let n = reader.read(&mut two).await.unwrap();
            if n == 0 {
                break;
            }
            read.extend_from_slice(&two[..n]);
        }
        assert_eq!(read, b"abcdef");
    }
}
