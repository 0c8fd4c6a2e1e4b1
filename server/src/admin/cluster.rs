//! The admin operations in cluster mode: to the node holding a connection,
//! or to every live node with the answers summed. On a single node
//! (`state.cluster` is `None`) each goes straight to `local`.

use axum::http::StatusCode;
use serde_json::{Map, Value, json};

use super::local;
use crate::cluster::{Answer, ClusterError, Command, Node};
use crate::state::AppState;

fn unavailable(err: &ClusterError) -> Answer {
    let status = match err {
        ClusterError::Timeout(_) => StatusCode::GATEWAY_TIMEOUT,
        _ => StatusCode::SERVICE_UNAVAILABLE,
    };
    Answer {
        status: status.as_u16(),
        json: None,
        text: format!("cluster: {err}"),
    }
}

/// Every live node's connections, each row with its `node`, sorted by id.
pub async fn list(state: &AppState, node: &Node) -> Answer {
    let remote = match node.remote_clients().await {
        Ok(rows) => rows,
        Err(err) => return unavailable(&err),
    };
    let mut rows: Vec<Value> = state
        .registry
        .list(Some(node.id()))
        .iter()
        .filter_map(|row| serde_json::to_value(row).ok())
        .chain(remote)
        .collect();
    rows.sort_by(|a, b| a["id"].as_str().cmp(&b["id"].as_str()));
    Answer {
        status: 200,
        json: Some(Value::Array(rows)),
        text: String::new(),
    }
}

/// A command on one connection: here if it is held here, else on the node
/// that holds it; a connection held nowhere is this node's to answer (a
/// reliable session away from it, or 404).
pub async fn to_holder(state: &AppState, command: Command) -> Answer {
    let Some(node) = &state.cluster else {
        return local::execute(state, command).await;
    };
    let id = match &command {
        Command::Push { id, .. } | Command::Kick { id, .. } => id.clone(),
        _ => return local::execute(state, command).await,
    };
    if state.registry.contains(&id) {
        return local::execute(state, command).await;
    }
    match node.locate(&id).await {
        Ok(Some(holder)) => match node.send(&holder, command).await {
            Ok(answer) => answer,
            Err(err) => unavailable(&err),
        },
        Ok(None) => local::execute(state, command).await,
        Err(err) => unavailable(&err),
    }
}

/// A command for every live node (broadcast, user push and kick): run here
/// and sent to the others at once; the answers' counts are summed, and
/// nodes that did not answer in time are named in `unanswered`.
pub async fn to_all(state: &AppState, command: Command) -> Answer {
    let Some(node) = &state.cluster else {
        return local::execute(state, command).await;
    };
    if let Err(err) = node.check_up() {
        return unavailable(&err);
    }
    let others = node.others();
    let theirs_command = command.for_other_nodes();
    let remote = others
        .iter()
        .map(|other| node.send(other, theirs_command.clone()));
    let (mine, theirs) = tokio::join!(
        local::execute(state, command.clone()),
        futures_util::future::join_all(remote)
    );
    let mut answers = vec![mine];
    let mut unanswered = Vec::new();
    for (other, result) in others.into_iter().zip(theirs) {
        match result {
            Ok(answer) => answers.push(answer),
            Err(ClusterError::Timeout(_)) => unanswered.push(other),
            Err(err) => return unavailable(&err),
        }
    }
    combine(&command, answers, unanswered)
}

/// The fields of the answers that are counts, summed over the nodes.
const COUNTS: [&str; 5] = ["delivered", "dropped", "stored", "closed", "sessions_ended"];

/// Sums the counts of the 200 answers (other fields from the first);
/// every node 404 is 404, unless a node did not answer (504, it may hold
/// the user).
fn combine(command: &Command, answers: Vec<Answer>, unanswered: Vec<String>) -> Answer {
    let mut sum = Map::new();
    let mut found = false;
    let mut not_found = None;
    for answer in answers {
        match (answer.status, answer.json) {
            (200, Some(Value::Object(fields))) => {
                found = true;
                for (key, value) in fields {
                    match (sum.get_mut(&key), value.as_u64()) {
                        (Some(total), Some(n)) if COUNTS.contains(&key.as_str()) => {
                            *total = json!(total.as_u64().unwrap_or(0) + n);
                        }
                        (None, _) => {
                            sum.insert(key, value);
                        }
                        // The same on every node: the user, the close code.
                        _ => {}
                    }
                }
            }
            (404, _) => not_found = Some(answer.text),
            // Anything else from a node (a 503 of its own, say) is its answer.
            (status, json) => {
                return Answer {
                    status,
                    json,
                    text: answer.text,
                };
            }
        }
    }
    if !found {
        if !unanswered.is_empty() {
            return Answer {
                status: StatusCode::GATEWAY_TIMEOUT.as_u16(),
                json: None,
                text: format!("cluster: node(s) {unanswered:?} did not answer in time"),
            };
        }
        return Answer {
            status: 404,
            json: None,
            text: not_found.unwrap_or_default(),
        };
    }
    if matches!(command, Command::Broadcast { .. }) || !unanswered.is_empty() {
        sum.insert("unanswered".into(), json!(unanswered));
    }
    Answer {
        status: 200,
        json: Some(Value::Object(sum)),
        text: String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(value: Value) -> Answer {
        Answer {
            status: 200,
            json: Some(value),
            text: String::new(),
        }
    }

    fn not_found() -> Answer {
        Answer {
            status: 404,
            json: None,
            text: "no user \"u\"".into(),
        }
    }

    fn kick_user() -> Command {
        Command::KickUser {
            user: "u".into(),
            code: 4000,
            reason: "kicked".into(),
        }
    }

    #[test]
    fn counts_add_up_and_the_rest_is_each_node_s() {
        let answers = vec![
            ok(json!({ "user": "u", "closed": 1, "sessions_ended": 0, "code": 4000 })),
            not_found(),
            ok(json!({ "user": "u", "closed": 2, "sessions_ended": 1, "code": 4000 })),
        ];
        let answer = combine(&kick_user(), answers, Vec::new());
        assert_eq!(
            answer.json,
            Some(json!({ "user": "u", "closed": 3, "sessions_ended": 1, "code": 4000 }))
        );
    }

    #[test]
    fn unknown_everywhere_is_404_unless_a_node_did_not_answer() {
        let answer = combine(&kick_user(), vec![not_found(), not_found()], Vec::new());
        assert_eq!(
            (answer.status, answer.text.as_str()),
            (404, "no user \"u\"")
        );
        let answer = combine(&kick_user(), vec![not_found()], vec!["b".into()]);
        assert_eq!(answer.status, 504);
        assert!(answer.text.contains("\"b\""), "{}", answer.text);
    }

    #[test]
    fn a_broadcast_names_the_nodes_that_did_not_answer() {
        let broadcast = Command::Broadcast { body: "x".into() };
        let answers = vec![
            ok(json!({ "delivered": 2, "dropped": 0 })),
            ok(json!({ "delivered": 1, "dropped": 1 })),
        ];
        let answer = combine(&broadcast, answers, vec!["c".into()]);
        assert_eq!(
            answer.json,
            Some(json!({ "delivered": 3, "dropped": 1, "unanswered": ["c"] }))
        );
    }
}
