//! Backup and restore: a backup taken while commands keep coming restores, in another namespace, every
//! event it holds at its own sequence with its bytes and message id, read models equal to the
//! original's and tokens that still work; a stream that holds events and a damaged backup are refused.
//! The restore's harder cases (gaps, repeated message ids, a cluster, `hive up`'s home) are in
//! `restore.rs`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use hive_client::Method;
use hive_eventlog::RawEvent;
use hive_eventlog::backup::{self, BackupError, Manifest};
use hive_projector::fold::{fold_log, read_models};
use hive_tests::process::hive_command;
use hive_tests::{World, authorized_client, scenario, until};
use serde_json::json;

/// `world`'s configuration with its servers named, as an operator's would be.
pub(crate) fn config_of(world: &World) -> hive::Config {
    hive::Config {
        nats_url: Some(world.nats_url.clone()),
        database_url: Some(world.database_url.clone()),
        ..world.config.clone()
    }
}

/// A backup of `world` in a new directory of `tmp`.
pub(crate) async fn back_up(
    world: &World,
    tmp: &tempfile::TempDir,
) -> (std::path::PathBuf, Manifest) {
    let dir = tmp.path().join("backup");
    let manifest = hive::backup::backup(&world.config, &world.nats_url, &dir)
        .await
        .expect("back up");
    (dir, manifest)
}

/// `event`'s subject without its namespace.
fn relative(event: &RawEvent, world: &World) -> String {
    let prefix = format!("{}.", world.config.namespace);
    event
        .subject
        .strip_prefix(&prefix)
        .expect("an event of the namespace")
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_under_load_restores_every_event_at_its_sequence_in_a_new_namespace() {
    let original = World::new().await;
    scenario(original.log(), 4, 60).await;
    let hive = original.hive().await;

    // Commands keep coming, each with an Idempotency-Key (so its event carries a Nats-Msg-Id).
    let stop = Arc::new(AtomicBool::new(false));
    let created = Arc::new(AtomicU64::new(0));
    let load = {
        let (stop, created) = (stop.clone(), created.clone());
        let (http, url) = (hive.http.clone(), hive.url("/api/v1/tasks"));
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let n = created.load(Ordering::Relaxed);
                let r = http
                    .request(Method::POST, &url)
                    .header("Idempotency-Key", format!("backup-load-{n}"))
                    .json(&json!({"title": format!("during the backup {n}")}))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), 201);
                created.fetch_add(1, Ordering::Relaxed);
            }
        })
    };
    until(
        Duration::from_secs(20),
        "the load writes",
        || {},
        async || (created.load(Ordering::Relaxed) >= 20).then_some(()),
    )
    .await;
    let head_before = original.log().last_seq().await.unwrap();
    let written_before = created.load(Ordering::Relaxed);
    let tmp = tempfile::tempdir().unwrap();
    let (dir, manifest) = back_up(&original, &tmp).await;
    // The load went on during the backup and after it.
    until(
        Duration::from_secs(20),
        "writes after the backup",
        || {},
        async || (original.log().last_seq().await.unwrap() > manifest.last_seq).then_some(()),
    )
    .await;
    stop.store(true, Ordering::Relaxed);
    load.await.unwrap();
    assert!(created.load(Ordering::Relaxed) > written_before);
    assert!(manifest.last_seq >= head_before, "{manifest:?}");
    assert_eq!(manifest.first_seq, 1);
    assert_eq!(
        manifest.messages, manifest.last_seq,
        "no gaps in a hive's log"
    );
    assert_eq!(manifest.namespace, original.config.namespace);
    assert!(manifest.tokens >= 1);
    for file in [backup::EVENTS, backup::TOKENS, backup::MANIFEST] {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.join(file))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{file} is its owner's only");
    }
    let on_disk = std::fs::read_to_string(dir.join(backup::EVENTS)).unwrap();
    assert_eq!(on_disk.lines().count() as u64, manifest.messages);

    // Into a new namespace (an empty stream; its world's own admin token is kept beside the backup's).
    let restored = World::new().await;
    let done = hive::backup::restore(&config_of(&restored), &dir, false)
        .await
        .expect("restore");
    assert_eq!((done.events, done.gaps), (manifest.messages, 0));
    assert_eq!(restored.log().last_seq().await.unwrap(), manifest.last_seq);

    // Every event once, at its own sequence, with its bytes and message id.
    let before: Vec<RawEvent> = original
        .log()
        .read_to_head(1)
        .await
        .unwrap()
        .into_iter()
        .take_while(|e| e.seq <= manifest.last_seq)
        .collect();
    let after = restored.log().read_to_head(1).await.unwrap();
    assert_eq!(after.len(), before.len());
    let mut with_msg_id = 0;
    for (a, b) in before.iter().zip(&after) {
        assert_eq!(b.seq, a.seq);
        assert_eq!(
            relative(b, &restored),
            relative(a, &original),
            "event {}",
            a.seq
        );
        assert_eq!(b.payload, a.payload, "event {}", a.seq);
        assert_eq!(b.msg_id, a.msg_id, "event {}", a.seq);
        with_msg_id += usize::from(a.msg_id.is_some());
        let id = |e: &RawEvent| {
            hive_events::envelope::decode(&e.payload, None)
                .map(|d| d.meta.event_id)
                .ok()
        };
        assert_eq!(id(b), id(a), "event {}", a.seq);
    }
    assert!(with_msg_id >= 20, "the load's events carry message ids");
    // Every stored header too, but the publish-time conditions (`Nats-Expected-*`): a backup of the
    // restored stream holds what the original's backup held.
    let again = tmp.path().join("again");
    hive::backup::backup(&restored.config, &restored.nats_url, &again)
        .await
        .expect("back up the restored stream");
    let records = |dir: &std::path::Path| -> Vec<backup::Record> {
        std::fs::read_to_string(dir.join(backup::EVENTS))
            .unwrap()
            .lines()
            .map(|line| serde_json::from_str(line).unwrap())
            .collect()
    };
    let conditions = |r: &backup::Record| -> Vec<(String, String)> {
        let lower = |n: &str| n.to_ascii_lowercase();
        r.headers
            .iter()
            .filter(|(n, _)| !lower(n).starts_with("nats-expected-"))
            .cloned()
            .collect()
    };
    let (first, second) = (records(&dir), records(&again));
    assert_eq!(first.len(), second.len());
    for (a, b) in first.iter().zip(&second) {
        assert_eq!((b.seq, &b.payload), (a.seq, &a.payload));
        assert_eq!(conditions(b), conditions(a), "event {}", a.seq);
    }

    // The restore rebuilt the read models: equal to the original's fold of the same events.
    let expected = fold_log(&before, original.log().subjects());
    let actual = read_models(restored.db(), hive_projector::READ_MODELS)
        .await
        .unwrap();
    assert_eq!(actual.last_seq, manifest.last_seq, "checkpoint");
    assert_eq!(actual.agents, expected.agents, "agents");
    assert_eq!(actual.projects, expected.projects, "projects");
    assert_eq!(actual.tasks, expected.tasks, "tasks");
    assert_eq!(actual.counts, expected.counts, "status counts");
    assert_eq!(actual.dead, expected.dead, "dead letters");
    let report =
        hive_projector::verify::verify(restored.db(), restored.log(), hive_projector::READ_MODELS)
            .await
            .unwrap();
    assert!(report.differences.is_empty(), "{:?}", report.differences);
    // And row by row against the original's own tables, as its live projector made them: every row
    // whose last event is in the backup is the same, and the restored hive has no other.
    let head = original.log().last_seq().await.unwrap();
    let live = until(
        Duration::from_secs(30),
        "the original's projector",
        || {},
        async || {
            let tables = read_models(original.db(), hive_projector::READ_MODELS)
                .await
                .unwrap();
            (tables.last_seq >= head).then_some(tables)
        },
    )
    .await;
    let backed_up = |seq: i64| u64::try_from(seq).unwrap() <= manifest.last_seq;
    let mut compared = 0;
    for (id, row) in &live.tasks {
        if backed_up(row.last_seq) {
            assert_eq!(actual.tasks.get(id), Some(row), "task {id}");
            compared += 1;
        }
    }
    assert!(
        compared >= 60,
        "the scenario's tasks and the load's first ones"
    );
    for (id, row) in &live.agents {
        if backed_up(row.last_seq) {
            assert_eq!(actual.agents.get(id), Some(row), "agent {id}");
        }
    }
    for (id, row) in &live.projects {
        if backed_up(row.last_seq) {
            assert_eq!(actual.projects.get(id), Some(row), "project {id}");
        }
    }
    assert!(actual.tasks.keys().all(|id| live.tasks.contains_key(id)));
    assert!(actual.agents.keys().all(|id| live.agents.contains_key(id)));

    // The original's tokens work on the restored hive, and the restored stream keeps its denials.
    let restored_hive = restored.hive().await;
    let client = authorized_client(&restored_hive.base, &original.admin_token);
    let r = client
        .request(Method::GET, &restored_hive.url("/api/v1/tasks"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let js = async_nats::jetstream::new(restored.log().client());
    let info = js
        .get_stream(restored.namespace().stream())
        .await
        .unwrap()
        .get_info()
        .await
        .unwrap();
    assert!(info.config.deny_delete && info.config.deny_purge);
    assert_eq!(info.config.duplicate_window, Duration::from_secs(600));
    restored_hive.stop().await;
    hive.stop().await;
}

#[tokio::test]
async fn restoring_over_a_stream_that_holds_events_is_refused_unless_forced() {
    let original = World::new().await;
    let last = scenario(original.log(), 2, 10).await;
    let tmp = tempfile::tempdir().unwrap();
    // With the real program, as an operator would.
    let dir = tmp.path().join("backup");
    let taken = hive_command(&original, &["backup", dir.to_str().unwrap()]);
    let stdout = String::from_utf8_lossy(&taken.stdout);
    assert!(taken.status.success(), "{stdout}");
    assert!(
        stdout.starts_with(&format!("backed up {last} events (sequences 1..={last})")),
        "{stdout}"
    );
    let manifest = backup::verify(&dir).unwrap();
    assert_eq!(manifest.last_seq, last);
    // Into a directory that holds files: refused.
    let again = hive_command(&original, &["backup", dir.to_str().unwrap()]);
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("is not empty"));

    let busy = World::new().await;
    let head = scenario(busy.log(), 1, 3).await;
    let dir_arg = dir.to_str().unwrap();
    let refused = hive_command(&busy, &["restore", dir_arg]);
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success());
    assert!(
        stderr.contains("is not empty") && stderr.contains("--force"),
        "{stderr}"
    );
    assert_eq!(
        busy.log().last_seq().await.unwrap(),
        head,
        "nothing changed"
    );

    let forced = hive_command(&busy, &["restore", "--force", dir_arg]);
    let stdout = String::from_utf8_lossy(&forced.stdout);
    assert!(
        forced.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&forced.stderr)
    );
    assert!(stdout.contains("restored"), "{stdout}");
    assert_eq!(busy.log().last_seq().await.unwrap(), manifest.last_seq);
    // --force replaced the tokens too: the original's admin token is valid, the replaced one's not.
    let tokens = hive_eventlog::Tokens::open(busy.log()).await.unwrap();
    let id = |token: &str| hive_eventlog::tokens::id_of(token);
    assert!(
        tokens
            .grant(&id(&original.admin_token))
            .await
            .unwrap()
            .is_some()
    );
    assert!(
        tokens
            .grant(&id(&busy.admin_token))
            .await
            .unwrap()
            .is_none()
    );
    let verified = hive_command(&busy, &["verify"]);
    assert!(
        verified.status.success(),
        "{}",
        String::from_utf8_lossy(&verified.stdout)
    );
}

#[tokio::test]
async fn a_backup_whose_files_do_not_match_their_checksums_is_refused() {
    let original = World::new().await;
    scenario(original.log(), 1, 5).await;
    let tmp = tempfile::tempdir().unwrap();
    let (dir, _) = back_up(&original, &tmp).await;
    // One byte of one event changed.
    let events = dir.join(backup::EVENTS);
    let text = std::fs::read_to_string(&events).unwrap();
    std::fs::write(&events, text.replacen("\"seq\":3", "\"seq\":4", 1)).unwrap();

    let empty = World::new().await;
    let refused = hive_command(&empty, &["restore", dir.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success());
    assert!(
        stderr.contains("events.jsonl is corrupt") && stderr.contains("SHA-256"),
        "{stderr}"
    );
    assert_eq!(empty.log().last_seq().await.unwrap(), 0, "nothing restored");
    assert!(matches!(
        backup::verify(&dir),
        Err(BackupError::Checksum { .. })
    ));

    // A backup cut short (no manifest) is no backup either.
    std::fs::remove_file(dir.join(backup::MANIFEST)).unwrap();
    assert!(matches!(
        backup::verify(&dir),
        Err(BackupError::NoManifest { .. })
    ));
}
