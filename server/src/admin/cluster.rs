//! The admin operations in cluster mode: to the node holding a connection,
//! or to every live node with the answers summed. On a single node
//! (`state.cluster` is `None`) each goes straight to `local`.

use axum::http::StatusCode;
use serde_json::{Map, Value, json};

use super::local;
use crate::cluster::{Answer, ClusterError, Command, Node};
use crate::state::AppState;

pub(super) fn unavailable(err: &ClusterError) -> Answer {
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
        Command::Push { id, .. } | Command::Kick { id, .. } | Command::Unsubscribe { id, .. } => {
            id.clone()
        }
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
/// nodes that did not answer in time, could not be reached or failed are
/// named in `unanswered`.
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
    let answers = std::iter::once((node.id().to_owned(), Ok(mine)))
        .chain(others.into_iter().zip(theirs))
        .collect();
    combine(&command, answers)
}

/// The fields of the answers that are counts, summed over the nodes.
const COUNTS: [&str; 5] = ["delivered", "dropped", "stored", "closed", "sessions_ended"];

/// Sums the counts of the 200 answers (other fields from the first). A
/// node that did not answer, could not be reached or answered anything but
/// 200 or 404 (a 503 of its own, say) is named in `unanswered`: once a node
/// delivered a push or broadcast, the answer is 200 with what was
/// delivered, never a bare error that a retry would answer by delivering
/// twice. A user's kick is safe to retry, and a failed node may hold
/// sessions still resumable: its failure (503, or 504 for a node that did
/// not answer in time) with the counts and `unanswered` as its JSON body.
/// When no node found the target, every node 404 is 404, and a failure of
/// any node is that failure (it may hold the target).
fn combine(command: &Command, answers: Vec<(String, Result<Answer, ClusterError>)>) -> Answer {
    let mut sum = Map::new();
    let mut found = false;
    let mut not_found = None;
    let mut unanswered = Vec::new();
    let mut failure = None;
    for (node, result) in answers {
        let answer = match result {
            Ok(answer) => answer,
            Err(err) => unavailable(&err),
        };
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
            (status, _) => {
                failure.get_or_insert((status, answer.text));
                unanswered.push(node);
            }
        }
    }
    if let Some((status, _)) = failure
        && found
        && matches!(command, Command::KickUser { .. })
    {
        sum.insert("unanswered".into(), json!(unanswered));
        return Answer {
            status,
            json: Some(Value::Object(sum)),
            text: String::new(),
        };
    }
    if !found {
        if let Some((status, text)) = failure {
            return Answer {
                status,
                json: None,
                text: format!("cluster: node(s) {unanswered:?} failed: {text}"),
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

    /// The answers of nodes a, b, c, ... in order.
    fn of_nodes(
        answers: Vec<Result<Answer, ClusterError>>,
    ) -> Vec<(String, Result<Answer, ClusterError>)> {
        answers
            .into_iter()
            .enumerate()
            .map(|(i, answer)| (char::from(b'a' + i as u8).to_string(), answer))
            .collect()
    }

    fn timeout(node: &str) -> Result<Answer, ClusterError> {
        Err(ClusterError::Timeout(node.into()))
    }

    #[test]
    fn counts_add_up_and_the_rest_is_each_node_s() {
        let answers = of_nodes(vec![
            Ok(ok(
                json!({ "user": "u", "closed": 1, "sessions_ended": 0, "code": 4000 }),
            )),
            Ok(not_found()),
            Ok(ok(
                json!({ "user": "u", "closed": 2, "sessions_ended": 1, "code": 4000 }),
            )),
        ]);
        let answer = combine(&kick_user(), answers);
        assert_eq!(
            answer.json,
            Some(json!({ "user": "u", "closed": 3, "sessions_ended": 1, "code": 4000 }))
        );
    }

    #[test]
    fn unknown_everywhere_is_404_unless_a_node_did_not_answer() {
        let answer = combine(
            &kick_user(),
            of_nodes(vec![Ok(not_found()), Ok(not_found())]),
        );
        assert_eq!(
            (answer.status, answer.text.as_str()),
            (404, "no user \"u\"")
        );
        let answer = combine(&kick_user(), of_nodes(vec![Ok(not_found()), timeout("b")]));
        assert_eq!(answer.status, 504);
        assert!(answer.text.contains("\"b\""), "{}", answer.text);
        let unreachable = Err(ClusterError::Redis("WRONGTYPE".into()));
        let answer = combine(&kick_user(), of_nodes(vec![Ok(not_found()), unreachable]));
        assert_eq!(answer.status, 503);
    }

    #[test]
    fn a_broadcast_names_the_nodes_that_did_not_answer() {
        let broadcast = Command::Broadcast { body: "x".into() };
        let answers = of_nodes(vec![
            Ok(ok(json!({ "delivered": 2, "dropped": 0 }))),
            Ok(ok(json!({ "delivered": 1, "dropped": 1 }))),
            timeout("c"),
        ]);
        let answer = combine(&broadcast, answers);
        assert_eq!(
            answer.json,
            Some(json!({ "delivered": 3, "dropped": 1, "unanswered": ["c"] }))
        );
    }

    #[test]
    fn after_a_partial_delivery_the_failed_nodes_are_named_never_a_bare_error() {
        let broadcast = Command::Broadcast { body: "x".into() };
        let answers = of_nodes(vec![
            Ok(ok(json!({ "delivered": 2, "dropped": 0 }))),
            Err(ClusterError::Redis("WRONGTYPE".into())),
            Ok(Answer {
                status: 503,
                json: None,
                text: "busy".into(),
            }),
            Ok(ok(json!({ "delivered": 1, "dropped": 0 }))),
        ]);
        let answer = combine(&broadcast, answers);
        assert_eq!(answer.status, 200);
        assert_eq!(
            answer.json,
            Some(json!({ "delivered": 3, "dropped": 0, "unanswered": ["b", "c"] }))
        );
        // A user's push too.
        let push_user = Command::PushUser {
            user: "u".into(),
            body: "x".into(),
            away: true,
        };
        let answers = of_nodes(vec![
            Ok(ok(json!({ "delivered": 1, "stored": 1 }))),
            timeout("b"),
        ]);
        let answer = combine(&push_user, answers);
        assert_eq!(answer.status, 200);
        assert_eq!(
            answer.json,
            Some(json!({ "delivered": 1, "stored": 1, "unanswered": ["b"] }))
        );
    }

    #[test]
    fn a_user_s_kick_that_failed_on_a_node_is_its_failure_with_the_counts() {
        // Safe to retry, and the sessions of a failed node may be resumable.
        let answers = of_nodes(vec![
            Ok(Answer {
                status: 503,
                json: None,
                text: "the session store did not answer".into(),
            }),
            Ok(ok(
                json!({ "user": "u", "closed": 1, "sessions_ended": 0, "code": 4000 }),
            )),
        ]);
        let answer = combine(&kick_user(), answers);
        assert_eq!(answer.status, 503);
        let body = answer.json.unwrap();
        assert_eq!(
            (&body["closed"], &body["unanswered"]),
            (&json!(1), &json!(["a"]))
        );
    }
}
