//! Agent Hive 2.0's team activation (`POST /api/agents/activate`): a team of real, supervised
//! `hive agent` processes with 2.0's roles, all of which turn ready; a repeat under the same
//! `Idempotency-Key` answers the same team; bad input is refused naming the field.

use hive_client::Method;
use hive_events::AggregateKind;
use hive_tests::World;
use serde_json::{Value, json};

#[tokio::test]
async fn activating_a_team_of_three_spawns_three_ready_agents_with_their_roles() {
    let world = World::new().await;
    let hive = world.full_hive().await;
    let activate = async |body: Value, key: &str| {
        let answer = hive
            .http
            .request(Method::POST, "/api/agents/activate")
            .header("Idempotency-Key", key)
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = answer.status().as_u16();
        (status, answer.json::<Value>().await.unwrap())
    };
    let (status, team) =
        activate(json!({"team_size": 3, "auto_start_tasks": true}), "team-1").await;
    assert_eq!(status, 200, "{team}");
    assert_eq!(team["success"], true);
    assert_eq!(team["message"], "Successfully activated 3 agents");
    let composition = team["team_composition"].as_object().unwrap();
    let roles: Vec<&str> = composition.keys().map(String::as_str).collect();
    assert_eq!(roles, ["architect", "backend_developer", "product_manager"]);
    assert_eq!(team["active_agents"].as_object().unwrap().len(), 3);

    for (role, agent) in composition {
        let agent = agent.as_str().unwrap();
        let member = &team["active_agents"][agent];
        assert_eq!(member["role"], role.as_str(), "{member}");
        let capabilities = member["capabilities"].as_array().unwrap();
        assert_eq!(capabilities.len(), 4, "the role and 2.0's three: {member}");
        assert!(capabilities.contains(&json!(role)), "{member}");
        // Its runtime, a real process, reports in.
        let ready = world
            .wait_for_event(AggregateKind::Agent, agent.parse().unwrap(), "AgentReady")
            .await;
        let (status, view) = hive.get_at(&format!("/api/v1/agents/{agent}"), ready).await;
        assert_eq!(status, 200, "{view}");
        assert_eq!(view["status"], "ready", "{view}");
        assert_eq!(view["agent_type"], role.as_str(), "{view}");
        assert_eq!(view["name"], format!("{role}_agent"), "{view}");
        assert_eq!(view["capabilities"], member["capabilities"], "{view}");
    }

    // The same request again (a client retrying) answers the same team and starts nothing more.
    let (status, again) =
        activate(json!({"team_size": 3, "auto_start_tasks": true}), "team-1").await;
    assert_eq!(status, 200, "{again}");
    assert_eq!(again["team_composition"], team["team_composition"]);

    for (body, field) in [
        (json!({"team_size": 0}), "team_size"),
        (json!({"team_size": 21}), "team_size"),
        (json!({"team_size": "three"}), "team_size"),
        (json!({"team_size": 2, "roles": ["barista"]}), "roles"),
    ] {
        let (status, refused) = activate(body.clone(), "bad").await;
        assert_eq!(status, 422, "{body}: {refused}");
        assert_eq!(refused["error"]["code"], "validation_failed", "{refused}");
        let message = refused["error"]["message"].as_str().unwrap();
        assert!(message.contains(field), "{body}: {message}");
    }
    hive.stop().await;
}
