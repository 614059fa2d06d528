//! The project aggregate: a named group of tasks. Its progress is derived from its tasks, not stored.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::aggregate::{Aggregate, AggregateKind, EventSchema, check_text, refuse_event};
use crate::error::{DomainError, FoldError};

/// A project's state.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Project {
    /// Its name.
    pub name: String,
    /// What it is about.
    pub description: Option<String>,
    /// A free-form kind (Agent Hive 2.0's `type`).
    pub project_type: Option<String>,
    /// When it was created.
    pub created_at: DateTime<Utc>,
}

/// The facts of a project's life.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(tag = "type", content = "data")]
pub enum ProjectEvent {
    /// A project was created.
    ProjectCreated {
        /// Its name.
        name: String,
        /// What it is about.
        description: Option<String>,
        /// A free-form kind.
        project_type: Option<String>,
    },
}

impl EventSchema for ProjectEvent {
    fn from_domain(event: crate::DomainEvent) -> Option<Self> {
        match event {
            crate::DomainEvent::Project(event) => Some(event),
            _ => None,
        }
    }

    fn event_type(&self) -> &'static str {
        match self {
            Self::ProjectCreated { .. } => "ProjectCreated",
        }
    }
}

/// Orders to a project.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProjectCommand {
    /// Create it.
    Create {
        /// Its name, 1..=200 characters.
        name: String,
        /// What it is about.
        description: Option<String>,
        /// A free-form kind.
        project_type: Option<String>,
    },
}

impl Aggregate for Project {
    type Event = ProjectEvent;
    type Command = ProjectCommand;
    const KIND: AggregateKind = AggregateKind::Project;

    fn apply(
        state: Option<Self>,
        event: &ProjectEvent,
        at: DateTime<Utc>,
    ) -> Result<Self, FoldError> {
        match (state, event) {
            (
                None,
                ProjectEvent::ProjectCreated {
                    name,
                    description,
                    project_type,
                },
            ) => Ok(Project {
                name: name.clone(),
                description: description.clone(),
                project_type: project_type.clone(),
                created_at: at,
            }),
            (state, event) => Err(refuse_event(state.as_ref(), event)),
        }
    }

    fn decide(state: Option<&Self>, command: ProjectCommand) -> Result<ProjectEvent, DomainError> {
        match (state, command) {
            (
                None,
                ProjectCommand::Create {
                    name,
                    description,
                    project_type,
                },
            ) => {
                check_text("name", &name, 1, 200)?;
                if let Some(d) = &description {
                    check_text("description", d, 0, 20_000)?;
                }
                if let Some(t) = &project_type {
                    check_text("type", t, 1, 100)?;
                }
                Ok(ProjectEvent::ProjectCreated {
                    name,
                    description,
                    project_type,
                })
            }
            (Some(_), ProjectCommand::Create { .. }) => Err(DomainError::AlreadyExists {
                aggregate: "project",
            }),
        }
    }

    fn state_name(state: Option<&Self>) -> &'static str {
        state.map_or("absent", |_| "active")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn create() -> ProjectCommand {
        ProjectCommand::Create {
            name: "alpha".into(),
            description: Some("first".into()),
            project_type: Some("software".into()),
        }
    }

    #[test]
    fn create_then_refuse_a_second_create() {
        let at: DateTime<Utc> = "2026-01-02T03:04:05Z".parse().unwrap();
        let event = Project::decide(None, create()).unwrap();
        let project = Project::apply(None, &event, at).unwrap();
        assert_eq!(project.name, "alpha");
        assert_eq!(
            Project::decide(Some(&project), create()),
            Err(DomainError::AlreadyExists {
                aggregate: "project"
            })
        );
        assert!(Project::apply(Some(project), &event, at).is_err());
    }

    #[test]
    fn a_blank_name_is_refused() {
        let command = ProjectCommand::Create {
            name: String::new(),
            description: None,
            project_type: None,
        };
        assert!(matches!(
            Project::decide(None, command),
            Err(DomainError::Invalid { field: "name", .. })
        ));
    }
}
