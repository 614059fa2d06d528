//! API tokens: who may call the API, and as what. A token is shown once, when it is issued; the bucket
//! keeps only its SHA-256 (the token's id) with its grant. Tokens live in a JetStream key-value bucket
//! (on disk, replicated like the log), not in the log (a secret's hash has no place in an immutable
//! history) and not in the read models (a rebuild drops those).

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use async_nats::jetstream::{self, kv};
use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures::{Stream, StreamExt};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::{EventLog, LogError};

/// What a token lets its holder do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Everything, including spawning agents (which runs a command on the host) and managing tokens.
    Admin,
    /// Commands and reads.
    Operator,
    /// One agent: its own record and the tasks assigned to it.
    Agent,
    /// Reads.
    Viewer,
}

impl Role {
    /// Its name.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Admin => "admin",
            Self::Operator => "operator",
            Self::Agent => "agent",
            Self::Viewer => "viewer",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "admin" => Ok(Self::Admin),
            "operator" => Ok(Self::Operator),
            "agent" => Ok(Self::Agent),
            "viewer" => Ok(Self::Viewer),
            other => Err(format!(
                "unknown role {other:?}: admin, operator, agent or viewer"
            )),
        }
    }
}

/// What one token grants.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Grant {
    /// Its role.
    pub role: Role,
    /// Who holds it, for people (an agent's token names its agent).
    pub name: String,
    /// The agent an agent token belongs to.
    pub agent_id: Option<Uuid>,
    /// When it was issued.
    pub issued_at: DateTime<Utc>,
}

impl Grant {
    /// A grant of `role` to `name`, now.
    pub fn new(role: Role, name: impl Into<String>) -> Self {
        Self {
            role,
            name: name.into(),
            agent_id: None,
            issued_at: Utc::now(),
        }
    }

    /// The grant of agent `agent`'s own token.
    pub fn agent(agent: Uuid) -> Self {
        Self {
            agent_id: Some(agent),
            ..Self::new(Role::Agent, format!("agent {agent}"))
        }
    }

    /// Who its holder is in the events they cause: `agent:<id>`, or `<role>:<name>`.
    pub fn actor(&self) -> String {
        match self.agent_id {
            Some(agent) => format!("agent:{agent}"),
            None => format!("{}:{}", self.role, self.name),
        }
    }
}

/// A token's id: the hex SHA-256 of the token.
pub fn id_of(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// A new token: `hive_` and 256 random bits in hex.
fn fresh() -> String {
    format!("hive_{}", hex::encode(rand::random::<[u8; 32]>()))
}

/// The bucket of tokens.
#[derive(Clone)]
pub struct Tokens {
    store: Arc<kv::Store>,
    /// The log's store sync: a token answered issued or revoked is on disk.
    sync: Option<crate::StoreSync>,
}

/// A change to the bucket: a grant under a token id, or its revocation (`None`).
pub type TokenChange = (String, Option<Grant>);

impl Tokens {
    /// Opens (or creates) the bucket.
    pub async fn open(log: &EventLog) -> Result<Self, LogError> {
        let store = crate::kv::bucket(
            log,
            log.namespace().tokens(),
            "Hive API tokens (SHA-256 of each, with its grant)",
            std::time::Duration::ZERO,
            jetstream::stream::StorageType::File,
        )
        .await?;
        Ok(Self {
            store: Arc::new(store),
            sync: log.store_sync().cloned(),
        })
    }

    /// Issues a token with `grant`: the token (shown once) and its id.
    pub async fn issue(&self, grant: &Grant) -> Result<(String, String), LogError> {
        let token = fresh();
        let id = id_of(&token);
        let value = serde_json::to_vec(grant).map_err(|e| LogError::new("store a token", e))?;
        self.store
            .put(id.clone(), Bytes::from(value))
            .await
            .map_err(|e| LogError::new("store a token", e))?;
        crate::durable::on(self.sync.as_ref()).await?;
        Ok((token, id))
    }

    /// The grant of token id `id`, if it is valid.
    pub async fn grant(&self, id: &str) -> Result<Option<Grant>, LogError> {
        let value = self
            .store
            .get(id)
            .await
            .map_err(|e| LogError::new("read a token", e))?;
        Ok(value.and_then(|v| serde_json::from_slice(&v).ok()))
    }

    /// Revokes token id `id`; false when there was none.
    pub async fn revoke(&self, id: &str) -> Result<bool, LogError> {
        if self.grant(id).await?.is_none() {
            return Ok(false);
        }
        self.store
            .purge(id)
            .await
            .map_err(|e| LogError::new("revoke a token", e))?;
        crate::durable::on(self.sync.as_ref()).await?;
        Ok(true)
    }

    /// Every grant: the current ones first, then each change as it comes.
    pub async fn watch(&self) -> Result<impl Stream<Item = TokenChange> + Send + use<>, LogError> {
        let watch = self
            .store
            .watch_with_history(">")
            .await
            .map_err(|e| LogError::new("watch tokens", e))?;
        Ok(watch.filter_map(|entry| async move {
            let entry = entry.ok()?;
            let grant = match entry.operation {
                kv::Operation::Put => Some(serde_json::from_slice(&entry.value).ok()?),
                kv::Operation::Delete | kv::Operation::Purge => None,
            };
            Some((entry.key, grant))
        }))
    }

    /// Every token's id and stored grant, as stored (for a backup).
    pub(crate) async fn raw_entries(&self) -> Result<Vec<(String, Bytes)>, LogError> {
        let mut keys = self
            .store
            .keys()
            .await
            .map_err(|e| LogError::new("list tokens", e))?;
        let mut entries = Vec::new();
        while let Some(key) = keys.next().await {
            let key = key.map_err(|e| LogError::new("list tokens", e))?;
            let value = self
                .store
                .get(&key)
                .await
                .map_err(|e| LogError::new("read a token", e))?;
            // Revoked since it was listed: not in the backup.
            if let Some(value) = value {
                entries.push((key, value));
            }
        }
        entries.sort();
        Ok(entries)
    }

    /// Stores `value` under token id `id` as it is (for a restore).
    pub(crate) async fn put_raw(&self, id: &str, value: Bytes) -> Result<(), LogError> {
        self.store
            .put(id, value)
            .await
            .map_err(|e| LogError::new("restore a token", e))?;
        crate::durable::on(self.sync.as_ref()).await
    }

    /// Every token's id and grant.
    pub async fn all(&self) -> Result<Vec<(String, Grant)>, LogError> {
        let mut keys = self
            .store
            .keys()
            .await
            .map_err(|e| LogError::new("list tokens", e))?;
        let mut all = Vec::new();
        while let Some(key) = keys.next().await {
            let Ok(key) = key else { continue };
            if let Some(grant) = self.grant(&key).await? {
                all.push((key, grant));
            }
        }
        all.sort_by_key(|(_, grant)| grant.issued_at);
        Ok(all)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_is_stored_only_as_its_hash() {
        let token = fresh();
        assert!(token.starts_with("hive_") && token.len() == 5 + 64);
        assert_ne!(fresh(), token);
        let id = id_of(&token);
        assert_eq!(id.len(), 64);
        assert!(!id.contains(&token[5..]));
        assert_eq!(id_of(&token), id);
    }

    #[test]
    fn roles_parse_and_actors_name_the_holder() {
        assert_eq!("viewer".parse::<Role>(), Ok(Role::Viewer));
        assert!("root".parse::<Role>().is_err());
        let agent = Uuid::nil();
        assert_eq!(Grant::agent(agent).actor(), format!("agent:{agent}"));
        assert_eq!(Grant::new(Role::Operator, "ci").actor(), "operator:ci");
    }
}
