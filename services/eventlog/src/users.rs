//! Least privilege in NATS: one user per service, each allowed only the subjects its work needs.
//!
//! Only the command path — the API (commands over HTTP) and the scheduler (assignments, lost agents,
//! requeues) — may publish events. The projector only reads the log, announces its checkpoints and
//! answers the API's requests to fold a dead letter's aggregate again (`allow_responses`: it may
//! publish to a reply subject only once, and only to a request it received). No
//! service may create, change, purge or delete the event stream or remove a message from it: that is
//! the admin's (`hive migrate`, the operators' commands). The tokens bucket is read and written by the
//! API alone; the aggregates' snapshots by the command path (the API and the scheduler). Each service receives replies on an inbox of its own (`_INBOX_<service>.`), so no
//! service can read another's answers. The agents' runtimes have no NATS user: they talk HTTP.
//!
//! One user is not a part of Hive: `hive-integrator`, for those who read the log itself. It may read
//! the event stream and keep durable consumers of its own on it (create, read, acknowledge), and
//! nothing else: no publishing events, no changing, purging or deleting, no buckets.
//!
//! [`server_config`] renders these users as nats-server configuration; `hive up` starts its
//! nats-server with it, and `compose/nats.conf` is the same text with each password taken from the
//! environment.

use crate::Namespace;

/// A part of Hive that connects to NATS.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Service {
    /// The HTTP API (with the spawner).
    Api,
    /// The read-model projector.
    Projector,
    /// The scheduler.
    Scheduler,
    /// Provisioning and the operators' commands: everything.
    Admin,
    /// Outside readers of the log: read-only, with durable consumers of their own.
    Integrator,
}

/// The one durable consumer the integrator user may create and read from (an integrator that needs
/// more is given a user of its own by the admin).
pub const INTEGRATOR_CONSUMER: &str = "integrator";

/// What a user may publish to and subscribe to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Permissions {
    /// Subjects it may publish to (wildcards allowed).
    pub publish: Vec<String>,
    /// Subjects it may subscribe to.
    pub subscribe: Vec<String>,
    /// Whether it may answer the requests it receives (publish once to each one's reply subject,
    /// and to nothing else of another's inbox).
    pub allow_responses: bool,
}

impl Service {
    /// Every service, in the order the configuration lists them.
    pub const ALL: [Service; 5] = [
        Service::Api,
        Service::Projector,
        Service::Scheduler,
        Service::Admin,
        Service::Integrator,
    ];

    /// Its short name.
    pub fn name(self) -> &'static str {
        match self {
            Service::Api => "api",
            Service::Projector => "projector",
            Service::Scheduler => "scheduler",
            Service::Admin => "admin",
            Service::Integrator => "integrator",
        }
    }

    /// Its NATS user name.
    pub fn user(self) -> String {
        format!("hive-{}", self.name())
    }

    /// The prefix of the inboxes it receives replies on.
    pub fn inbox_prefix(self) -> String {
        format!("_INBOX_{}", self.name())
    }

    /// The environment variable `compose/nats.conf` takes its password from.
    pub fn password_variable(self) -> String {
        format!("HIVE_NATS_{}_PASSWORD", self.name().to_ascii_uppercase())
    }

    /// What it may do in namespace `ns`.
    pub fn permissions(self, ns: &Namespace) -> Permissions {
        let stream = ns.stream();
        let bucket = |name: String| format!("KV_{name}");
        let (heartbeats, tokens, lease, projector_lease, snapshots) = (
            bucket(ns.heartbeats()),
            bucket(ns.tokens()),
            bucket(ns.scheduler_lease()),
            bucket(ns.projector_lease()),
            bucket(ns.aggregate_snapshots()),
        );
        let events = ns.subjects().all();
        let mut publish = vec!["$JS.API.INFO".to_owned()];
        let mut subscribe = vec![format!("{}.>", self.inbox_prefix())];
        if self == Service::Admin {
            return Permissions {
                publish: vec![">".into()],
                subscribe: vec![">".into()],
                allow_responses: false,
            };
        }
        if self == Service::Integrator {
            // Reading, and only through its own durable consumer: Hive's readers are consumers of
            // the same stream, and one who could pull from them would steal their events.
            let own = INTEGRATOR_CONSUMER;
            publish.extend([
                format!("$JS.API.STREAM.INFO.{stream}"),
                format!("$JS.API.STREAM.MSG.GET.{stream}"),
                format!("$JS.API.DIRECT.GET.{stream}"),
                format!("$JS.API.DIRECT.GET.{stream}.>"),
                format!("$JS.API.CONSUMER.CREATE.{stream}.{own}"),
                format!("$JS.API.CONSUMER.CREATE.{stream}.{own}.>"),
                format!("$JS.API.CONSUMER.DURABLE.CREATE.{stream}.{own}"),
                format!("$JS.API.CONSUMER.INFO.{stream}.{own}"),
                format!("$JS.API.CONSUMER.DELETE.{stream}.{own}"),
                format!("$JS.API.CONSUMER.MSG.NEXT.{stream}.{own}"),
                format!("$JS.ACK.{stream}.{own}.>"),
            ]);
            publish.sort();
            return Permissions {
                publish,
                subscribe,
                allow_responses: false,
            };
        }
        // Every service reads the log and opens the buckets it is handed (their state only).
        read_stream(&mut publish, &stream);
        for b in [&heartbeats, &tokens, &snapshots] {
            publish.push(format!("$JS.API.STREAM.INFO.{b}"));
        }
        // The heartbeats live in memory: after a nats-server restart whoever opens the bucket first
        // creates it again (creates only: changing its settings is the admin's).
        publish.push(format!("$JS.API.STREAM.CREATE.{heartbeats}"));
        // The command path loads aggregates from their snapshots and saves new ones.
        if matches!(self, Service::Api | Service::Scheduler) {
            read_values(&mut publish, &snapshots);
            publish.push(format!("$KV.{}.>", ns.aggregate_snapshots()));
        }
        match self {
            Service::Api => {
                publish.push(events.clone());
                for b in [&heartbeats, &tokens] {
                    read_stream(&mut publish, b);
                }
                publish.push(format!("$KV.{}.>", ns.heartbeats()));
                publish.push(format!("$KV.{}.>", ns.tokens()));
                // The spawner follows its agents' events; read-your-writes follows the projections;
                // an agent's assignment stream follows the scheduler's pushes.
                subscribe.push(events);
                subscribe.push(format!("{}.projections.>", ns.as_str()));
                subscribe.push(format!("{}.assignments.>", ns.as_str()));
                // An operator's retry of a dead letter is a request to the leading projector.
                publish.push(format!("{}.refold.>", ns.as_str()));
            }
            Service::Projector => {
                publish.push(format!("{}.projections.>", ns.as_str()));
                // It answers the API's requests to fold a dead letter's aggregate again (the reply
                // goes to the API's inbox, which only `allow_responses` lets it publish to).
                subscribe.push(format!("{}.refold.>", ns.as_str()));
                // One projector folds at a time: its lease, whose time to live is its setting.
                lease_bucket(&mut publish, &projector_lease, &ns.projector_lease());
            }
            Service::Scheduler => {
                publish.push(events);
                publish.push(format!("{}.assignments.>", ns.as_str()));
                read_stream(&mut publish, &heartbeats);
                // Its lease's time to live is the scheduler's setting.
                lease_bucket(&mut publish, &lease, &ns.scheduler_lease());
                // Its board's snapshot: the object store's stream (created by whoever leads first),
                // its chunks and metadata, and the purge of a replaced snapshot's chunks.
                let board = format!("OBJ_{}", ns.board_snapshots());
                read_stream(&mut publish, &board);
                recreate(&mut publish, &board);
                publish.push(format!("$JS.API.STREAM.PURGE.{board}"));
                publish.push(format!("$O.{}.>", ns.board_snapshots()));
            }
            Service::Admin | Service::Integrator => unreachable!("answered above"),
        }
        for list in [&mut publish, &mut subscribe] {
            list.sort();
            list.dedup();
        }
        Permissions {
            publish,
            subscribe,
            allow_responses: self == Service::Projector,
        }
    }
}

/// Reading `stream`: its state, consumers of it (ordered readers, watches; an ordered reader deletes
/// its own when it resets), direct gets.
fn read_stream(publish: &mut Vec<String>, stream: &str) {
    publish.push(format!("$JS.API.CONSUMER.DELETE.{stream}.>"));
    publish.extend([
        format!("$JS.API.STREAM.INFO.{stream}"),
        format!("$JS.API.STREAM.MSG.GET.{stream}"),
        format!("$JS.API.DIRECT.GET.{stream}"),
        format!("$JS.API.DIRECT.GET.{stream}.>"),
        format!("$JS.API.CONSUMER.CREATE.{stream}"),
        format!("$JS.API.CONSUMER.CREATE.{stream}.>"),
        format!("$JS.API.CONSUMER.INFO.{stream}.>"),
        format!("$JS.API.CONSUMER.MSG.NEXT.{stream}.>"),
        format!("$JS.FC.{stream}.>"),
    ]);
}

/// Reading single values of bucket stream `stream` by key (no consumers: nothing watches it).
fn read_values(publish: &mut Vec<String>, stream: &str) {
    publish.extend([
        format!("$JS.API.STREAM.INFO.{stream}"),
        format!("$JS.API.STREAM.MSG.GET.{stream}"),
        format!("$JS.API.DIRECT.GET.{stream}"),
        format!("$JS.API.DIRECT.GET.{stream}.>"),
    ]);
}

/// Holding a lease in bucket `name` (stream `stream`): reading and writing its key, and creating the
/// bucket again (it lives in memory) or changing its time to live.
fn lease_bucket(publish: &mut Vec<String>, stream: &str, name: &str) {
    read_stream(publish, stream);
    recreate(publish, stream);
    publish.push(format!("$KV.{name}.>"));
}

/// Creating `stream` again (a bucket in memory, gone after a restart of its server), or changing its
/// settings.
fn recreate(publish: &mut Vec<String>, stream: &str) {
    publish.extend([
        format!("$JS.API.STREAM.CREATE.{stream}"),
        format!("$JS.API.STREAM.UPDATE.{stream}"),
    ]);
}

/// The nats-server `authorization` block for every [`Service`] of namespace `ns`; `password` gives
/// each one's password as configuration text: a quoted string, or `$VARIABLE` to read it from the
/// environment.
pub fn server_config(ns: &Namespace, password: impl Fn(Service) -> String) -> String {
    let list = |subjects: &[String]| {
        subjects
            .iter()
            .map(|s| format!("\n            \"{s}\""))
            .collect::<Vec<_>>()
            .join(",")
    };
    let mut out = String::from("authorization {\n  users = [\n");
    for service in Service::ALL {
        let permissions = service.permissions(ns);
        let responses = if permissions.allow_responses {
            "\n        allow_responses: true"
        } else {
            ""
        };
        out.push_str(&format!(
            "    {{\n      user: \"{}\"\n      password: {}\n      permissions: {{\n        \
             publish: {{\n          allow: [{}\n          ]\n        }}\n        \
             subscribe: {{\n          allow: [{}\n          ]\n        }}{responses}\n      }}\n    }}\n",
            service.user(),
            password(service),
            list(&permissions.publish),
            list(&permissions.subscribe),
        ));
    }
    out.push_str("  ]\n}\n");
    out
}

/// A quoted password literal for [`server_config`].
pub fn quoted(password: &str) -> String {
    format!(
        "\"{}\"",
        password.replace('\\', "\\\\").replace('"', "\\\"")
    )
}

/// A new random password (256 bits, hex).
pub fn new_password() -> String {
    use rand::Rng;
    hex::encode(rand::rng().random::<[u8; 32]>())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_command_path_publishes_events() {
        let ns = Namespace::new("hive");
        let publishes = |s: Service| s.permissions(&ns).publish.contains(&"hive.events.>".into());
        assert!(publishes(Service::Api));
        assert!(publishes(Service::Scheduler));
        assert!(!publishes(Service::Projector));
        for service in [Service::Api, Service::Projector, Service::Scheduler] {
            let p = service.permissions(&ns);
            assert!(
                !p.publish.iter().any(|s| s.contains("HIVE_EVENTS")
                    && (s.contains("STREAM.CREATE")
                        || s.contains("STREAM.UPDATE")
                        || s.contains("STREAM.DELETE")
                        || s.contains("STREAM.PURGE")
                        || s.contains("MSG.DELETE"))),
                "{service:?} may not change the stream"
            );
            assert!(!p.publish.iter().any(|s| s == ">" || s == "$JS.API.>"));
        }
    }

    #[test]
    fn the_api_asks_and_only_the_projector_answers_refolds() {
        let ns = Namespace::new("hive");
        let (api, projector) = (
            Service::Api.permissions(&ns),
            Service::Projector.permissions(&ns),
        );
        assert!(api.publish.contains(&"hive.refold.>".into()));
        assert!(projector.subscribe.contains(&"hive.refold.>".into()));
        assert!(projector.allow_responses);
        // It answers through the permission to respond, never by publishing into another's inbox.
        assert!(!projector.publish.iter().any(|s| s.starts_with("_INBOX")));
        for other in [Service::Api, Service::Scheduler, Service::Integrator] {
            let p = other.permissions(&ns);
            assert!(!p.allow_responses, "{other:?}");
            assert!(!p.subscribe.contains(&"hive.refold.>".into()), "{other:?}");
        }
        assert!(server_config(&ns, |_| "p".into()).contains("allow_responses: true"));
    }

    #[test]
    fn each_leader_holds_only_its_own_lease() {
        let ns = Namespace::new("hive");
        let may = |s: Service, subject: &str| s.permissions(&ns).publish.contains(&subject.into());
        assert!(may(Service::Scheduler, "$KV.hive_scheduler.>"));
        assert!(!may(Service::Scheduler, "$KV.hive_projector.>"));
        assert!(may(Service::Projector, "$KV.hive_projector.>"));
        assert!(may(
            Service::Projector,
            "$JS.API.STREAM.CREATE.KV_hive_projector"
        ));
        assert!(!may(Service::Projector, "$KV.hive_scheduler.>"));
        assert!(!may(Service::Api, "$KV.hive_projector.>"));
    }

    #[test]
    fn only_the_command_path_reads_and_writes_snapshots() {
        let ns = Namespace::new("hive");
        let may = |s: Service, subject: &str| s.permissions(&ns).publish.contains(&subject.into());
        for service in [Service::Api, Service::Scheduler] {
            assert!(may(service, "$KV.hive_snapshots.>"));
            assert!(may(service, "$JS.API.DIRECT.GET.KV_hive_snapshots.>"));
            assert!(!may(service, "$JS.API.STREAM.CREATE.KV_hive_snapshots"));
            assert!(!may(service, "$JS.API.CONSUMER.CREATE.KV_hive_snapshots.>"));
        }
        assert!(may(
            Service::Projector,
            "$JS.API.STREAM.INFO.KV_hive_snapshots"
        ));
        assert!(!may(Service::Projector, "$KV.hive_snapshots.>"));
        assert!(!may(
            Service::Projector,
            "$JS.API.DIRECT.GET.KV_hive_snapshots.>"
        ));
    }

    #[test]
    fn the_integrator_reads_and_acknowledges_only() {
        let ns = Namespace::new("hive");
        let p = Service::Integrator.permissions(&ns);
        assert!(!p.publish.iter().any(|s| s.starts_with("hive.")), "{p:?}");
        assert!(
            !p.publish
                .iter()
                .any(|s| s.contains("KV_") || s.contains("$KV."))
        );
        for forbidden in [
            "STREAM.CREATE",
            "STREAM.UPDATE",
            "STREAM.DELETE",
            "STREAM.PURGE",
            "MSG.DELETE",
            "CONSUMER.LIST",
            "CONSUMER.NAMES",
        ] {
            assert!(
                !p.publish.iter().any(|s| s.contains(forbidden)),
                "{forbidden}"
            );
        }
        // Every consumer operation names its own consumer, never a wildcard over Hive's readers.
        let consumers = p
            .publish
            .iter()
            .filter(|s| s.contains("CONSUMER") || s.contains("$JS.ACK"));
        for subject in consumers {
            assert!(subject.contains(".integrator"), "{subject}");
        }
        assert_eq!(p.subscribe, ["_INBOX_integrator.>"]);
    }

    #[test]
    fn the_configuration_names_every_user() {
        let text = server_config(&Namespace::new("hive"), |s| {
            format!("${}", s.password_variable())
        });
        for service in Service::ALL {
            assert!(text.contains(&format!("user: \"{}\"", service.user())));
            assert!(text.contains(&format!(
                "password: $HIVE_NATS_{}",
                service.name().to_uppercase()
            )));
        }
    }
}
