//! The log for auditors: each event as a [`Record`] (its stored form, decoded where it can be), and the
//! folds "as it was at" a sequence or a time.

use chrono::{DateTime, Utc};
use hive_events::envelope::decode;
use hive_events::replay::{Fed, Folded, OnRejected, Replay};
use hive_events::subject::Subjects;
use hive_events::{Aggregate, AggregateKind};
use serde::Serialize;
use serde_json::Value;
use uuid::Uuid;

use crate::RawEvent;

/// One event as an auditor reads it (and as the API answers it).
#[derive(Clone, Debug, PartialEq, Serialize, serde::Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Record {
    /// Its position in the log.
    pub seq: u64,
    /// `agent`, `task` or `project` (from the subject).
    pub aggregate: Option<AggregateKind>,
    /// The entity (from the subject).
    pub aggregate_id: Option<Uuid>,
    /// Its type.
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    pub event_type: Option<String>,
    /// The version of its stored data.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub schema_version: Option<u64>,
    /// Its id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub event_id: Option<Uuid>,
    /// When it happened.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub occurred_at: Option<DateTime<Utc>>,
    /// Who caused it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub actor: Option<String>,
    /// The flow it belongs to.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub correlation_id: Option<Uuid>,
    /// What caused it directly.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub causation_id: Option<Uuid>,
    /// Its data as stored.
    #[serde(default, skip_serializing_if = "Value::is_null")]
    pub data: Value,
    /// Why it cannot be read, for an event no fold can apply.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl Record {
    /// The record of `raw`.
    pub fn of(raw: &RawEvent, subjects: &Subjects) -> Self {
        Self::with_status(raw, subjects).0
    }

    /// The event this record was made of, on `subjects`: [`Record::of`] undone, so that a history
    /// read as records (through the API) folds as the log's own events do. A record of an
    /// unreadable event gives bytes that are still unreadable.
    pub fn raw(&self, subjects: &Subjects) -> RawEvent {
        let subject = match (self.aggregate, self.aggregate_id) {
            (Some(kind), Some(id)) => subjects.of(kind, id),
            _ => subjects.all(),
        };
        RawEvent {
            seq: self.seq,
            subject,
            payload: self.stored().into(),
            msg_id: None,
            pending: 0,
        }
    }

    /// The stored bytes this record was made of (an unreadable event's are still unreadable).
    fn stored(&self) -> Vec<u8> {
        let stored = serde_json::json!({
            "event_id": self.event_id,
            "type": self.event_type,
            "schema_version": self.schema_version,
            "aggregate": self.aggregate,
            "aggregate_id": self.aggregate_id,
            "occurred_at": self.occurred_at,
            "correlation_id": self.correlation_id,
            "causation_id": self.causation_id,
            "actor": self.actor,
            "data": self.data,
        });
        serde_json::to_vec(&stored).unwrap_or_default()
    }

    /// The record of `raw`, and the name of the status its agent or task is in after it, where the
    /// event alone says so ([`hive_events::DomainEvent::status_after`]).
    pub fn with_status(raw: &RawEvent, subjects: &Subjects) -> (Self, Option<&'static str>) {
        let at = subjects.parse(&raw.subject);
        let stored: Option<Value> = serde_json::from_slice(&raw.payload).ok();
        let mut record = Self {
            seq: raw.seq,
            aggregate: at.map(|(kind, _)| kind),
            aggregate_id: at.map(|(_, id)| id),
            event_type: None,
            schema_version: None,
            event_id: None,
            occurred_at: None,
            actor: None,
            correlation_id: None,
            causation_id: None,
            data: Value::Null,
            error: None,
        };
        let mut status = None;
        match decode(&raw.payload, at) {
            Ok(envelope) => {
                status = envelope.event.status_after();
                let stored = stored.unwrap_or_default();
                record.event_type = Some(envelope.event.event_type().to_owned());
                record.schema_version = stored["schema_version"].as_u64();
                record.event_id = Some(envelope.meta.event_id.as_uuid());
                record.occurred_at = Some(envelope.meta.occurred_at);
                record.actor = Some(envelope.meta.actor.as_str().to_owned());
                record.correlation_id = Some(envelope.meta.correlation_id);
                record.causation_id = envelope.meta.causation_id;
                record.data = stored["data"].clone();
            }
            Err(e) => {
                record.event_type = stored
                    .as_ref()
                    .and_then(|s| s["type"].as_str().map(str::to_owned));
                record.error = Some(e.to_string());
            }
        }
        (record, status)
    }

    /// Whether this event names `agent` as its task's holder ([`Record::holding`]).
    pub fn names_agent(&self, agent: Uuid) -> bool {
        self.holding().is_some_and(|(_, holder)| holder == agent)
    }

    /// The task and the agent this event names as the task's holder, if it names one: the rule of
    /// [`holding`], asked of the event this record was made of (a record read through the API
    /// carries no decoded event, so it is decoded again from its stored form).
    pub fn holding(&self) -> Option<(Uuid, Uuid)> {
        if self.error.is_some() {
            return None;
        }
        let (Some(AggregateKind::Task), Some(task)) = (self.aggregate, self.aggregate_id) else {
            return None;
        };
        let envelope = decode(&self.stored(), Some((AggregateKind::Task, task))).ok()?;
        let (task, agent) = envelope.holding()?;
        Some((task, agent.as_uuid()))
    }
}

/// The task and the agent a stored event names as the task's holder, if it names one: a task's event
/// on its own subject, readable, that names an agent ([`hive_events::Envelope::holding`]: an
/// assignment), decoded as the projector decodes it. The rule by which `hive audit agent` finds an
/// agent's tasks in the log is the one the projector keeps its index of them by (`agent_tasks`), so
/// the two cannot disagree.
pub fn holding(raw: &RawEvent, subjects: &Subjects) -> Option<(Uuid, Uuid)> {
    let at @ Some((AggregateKind::Task, _)) = subjects.parse(&raw.subject) else {
        return None;
    };
    let (task, agent) = decode(&raw.payload, at).ok()?.holding()?;
    Some((task, agent.as_uuid()))
}

/// A point in the log's history: the replay's bound.
pub use hive_events::replay::Until as At;

/// Reads `N` (a sequence) or an RFC 3339 time as a point in the log's history.
pub fn parse_at(text: &str) -> Result<At, String> {
    if let Ok(seq) = text.trim().parse::<u64>() {
        return Ok(At::Seq(seq));
    }
    DateTime::parse_from_rfc3339(text.trim())
        .map(|t| At::Time(t.with_timezone(&Utc)))
        .map_err(|_| format!("{text:?} is neither a sequence number nor an RFC 3339 time"))
}

/// One aggregate folded from its `history` up to `at`: its state and the sequence of the last event
/// folded, or `None` if it did not exist yet. Events that cannot be applied are passed over, as the
/// projector passes them over.
pub fn state_at<A: Aggregate>(
    history: &[RawEvent],
    subjects: &Subjects,
    id: Uuid,
    at: At,
) -> Option<(A, u64)> {
    // As of a point in time, the auditor sees what the read models showed: bad events passed over.
    let replay = Replay::new(subjects.clone(), OnRejected::Skip).until(at);
    let mut folded = Folded::<A>::new(id);
    for raw in history {
        let fed = replay.feed_stored(&mut folded, raw.seq, &raw.subject, &raw.payload);
        if fed == Ok(Fed::Past) {
            break;
        }
    }
    folded.state.map(|state| (state, folded.last_seq))
}

#[cfg(test)]
mod tests {
    use hive_events::agent::AgentEvent;
    use hive_events::envelope::encode;
    use hive_events::task::TaskEvent;
    use hive_events::{Actor, AgentId, EventMeta};

    use super::*;

    fn stored(seq: u64, kind: AggregateKind, id: Uuid, payload: Vec<u8>) -> RawEvent {
        RawEvent {
            seq,
            subject: Subjects::default().of(kind, id),
            payload: payload.into(),
            msg_id: None,
            pending: 0,
        }
    }

    fn meta() -> EventMeta {
        EventMeta::new(
            Utc::now(),
            Uuid::now_v7(),
            None,
            Actor::new("system:scheduler"),
        )
    }

    /// The rule the log is scanned by, the one a record answers (read from the log, or through the
    /// API as JSON), and the one the projector indexes by are one.
    #[test]
    fn an_assignment_names_its_agent_wherever_it_is_read_from() {
        let subjects = Subjects::default();
        let (task, agent) = (Uuid::now_v7(), Uuid::now_v7());
        let assigned = TaskEvent::TaskAssigned {
            agent_id: AgentId::from_uuid(agent),
            lease_expires_at: Utc::now(),
        };
        let raw = stored(
            7,
            AggregateKind::Task,
            task,
            encode(&meta(), AggregateKind::Task, task, &assigned),
        );
        assert_eq!(holding(&raw, &subjects), Some((task, agent)));
        let record = Record::of(&raw, &subjects);
        assert_eq!(record.holding(), Some((task, agent)));
        assert!(record.names_agent(agent) && !record.names_agent(Uuid::now_v7()));
        let through_the_api: Record =
            serde_json::from_str(&serde_json::to_string(&record).unwrap()).unwrap();
        assert_eq!(through_the_api.holding(), Some((task, agent)));
        let envelope = decode(&raw.payload, subjects.parse(&raw.subject)).unwrap();
        assert_eq!(
            envelope.holding(),
            Some((task, AgentId::from_uuid(agent))),
            "the projector's"
        );

        // The same assignment on another task's subject is unreadable there: it names nobody.
        let elsewhere = RawEvent {
            subject: subjects.of(AggregateKind::Task, Uuid::now_v7()),
            ..raw.clone()
        };
        assert_eq!(holding(&elsewhere, &subjects), None);
        assert_eq!(Record::of(&elsewhere, &subjects).holding(), None);

        // Other events name no holder: a task's start, an agent's own event.
        let started = stored(
            8,
            AggregateKind::Task,
            task,
            encode(
                &meta(),
                AggregateKind::Task,
                task,
                &TaskEvent::TaskStarted {},
            ),
        );
        let ready = stored(
            9,
            AggregateKind::Agent,
            agent,
            encode(
                &meta(),
                AggregateKind::Agent,
                agent,
                &AgentEvent::AgentReady {},
            ),
        );
        for raw in [started, ready] {
            assert_eq!(holding(&raw, &subjects), None);
            assert!(!Record::of(&raw, &subjects).names_agent(agent));
        }
    }
}
