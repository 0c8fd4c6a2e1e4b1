//! Node-addressed commands: one Redis Stream per node (`cmd:{id}`), read
//! with `XREAD BLOCK` from the last id seen, so a command written while the
//! reader reconnects is read when it is back, not lost as a pub/sub
//! message would be. The answer goes to the sender's own stream
//! (`reply:{id}`), read by the same loop, and is matched to the waiting
//! request by number (numbered from a random start at each run, so that a
//! late answer meant for a node's previous run matches nothing); the sender gives up after `--cluster-command-timeout`
//! (504). A command carries its deadline: a node that reads it too late
//! (frozen meanwhile) drops it rather than act after the sender answered
//! 504. The deadline is in the cluster's clock (Redis's, see `clock.rs`),
//! so that nodes whose own clocks disagree still agree on it.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use redis::streams::StreamReadReply;
use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

use super::{ClusterError, Node};

/// An admin operation run on the node that holds its target.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
#[non_exhaustive]
pub enum Command {
    /// `POST /api/clients/{id}/push`.
    Push {
        /// The client id.
        id: String,
        /// The push's text.
        body: String,
    },
    /// `DELETE /api/clients/{id}`.
    Kick {
        /// The client id.
        id: String,
        /// The close code.
        code: u16,
        /// The close reason.
        reason: String,
    },
    /// `POST /api/users/{user}/push`: this node's part.
    PushUser {
        /// The user.
        user: String,
        /// The push's text.
        body: String,
        /// Whether this node also stores it for the user's reliable
        /// sessions that are away. They are in Redis, shared: only the
        /// node asked stores it, or each would store a copy.
        #[serde(default)]
        away: bool,
    },
    /// `DELETE /api/users/{user}`: this node's part.
    KickUser {
        /// The user.
        user: String,
        /// The close code.
        code: u16,
        /// The close reason.
        reason: String,
    },
    /// `POST /api/broadcast`: this node's part.
    Broadcast {
        /// The push's text.
        body: String,
    },
    /// `GET /api/channels`: this node's channels and their subscribers.
    Channels,
    /// `DELETE /api/channels/{channel}/subscribers/{id}`: on the node that
    /// holds connection `id`.
    Unsubscribe {
        /// The client id.
        id: String,
        /// The channel.
        channel: String,
    },
    /// A resume on another node took reliable session `session` over at
    /// attach `epoch`: the connection attached to it here closes with 4002.
    Takeover {
        /// The session id.
        session: String,
        /// The epoch of the resume.
        epoch: u64,
    },
}

impl Command {
    /// The command as the other nodes get it (a user push's sessions
    /// away are stored by the node asked only).
    #[must_use]
    pub fn for_other_nodes(&self) -> Self {
        match self {
            Self::PushUser { user, body, .. } => Self::PushUser {
                user: user.clone(),
                body: body.clone(),
                away: false,
            },
            other => other.clone(),
        }
    }
}

/// An admin answer: what a node would answer alone, and what travels back
/// to the node that was asked.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Answer {
    /// The HTTP status.
    pub status: u16,
    /// A JSON body, or
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub json: Option<serde_json::Value>,
    /// a text body.
    #[serde(default)]
    pub text: String,
}

/// Runs a command on this node (the admin module's local operations).
pub type Executor =
    Arc<dyn Fn(Command) -> Pin<Box<dyn Future<Output = Answer> + Send>> + Send + Sync>;

#[derive(Debug, Serialize, Deserialize)]
struct Envelope {
    request: u64,
    from: String,
    /// Milliseconds since the Unix epoch after which the sender no longer waits.
    deadline: u64,
    command: Command,
}

#[derive(Debug, Serialize, Deserialize)]
struct Reply {
    request: u64,
    answer: Answer,
}

/// The first request id of a node's run: random. Counting from 1 at every
/// start, a node restarted with the same `--node-id` numbered its requests
/// as its previous run did, and an answer to the previous run that came
/// late (its reply stream outlives the process by the node TTL) matched a
/// new request. From a random start in 2^64 (ids wrap), two runs' ids meet
/// with negligible odds.
pub(super) fn first_request() -> u64 {
    rand::random::<u64>()
}

/// Bound on each stream's length (approximate trimming: cheap in Redis).
const STREAM_MAX: usize = 1000;

impl Node {
    /// Sends `command` to `node` and waits for its answer.
    ///
    /// # Errors
    ///
    /// [`ClusterError::Redis`] when the command cannot be written,
    /// [`ClusterError::Timeout`] when no answer comes in time.
    pub async fn send(&self, node: &str, command: Command) -> Result<Answer, ClusterError> {
        self.check_up()?;
        self.send_anyway(node, command).await
    }

    /// As [`Node::send`], without failing fast while the heartbeat has not
    /// reached Redis: for a takeover, which a resume sends right after it
    /// reached Redis itself (perhaps before this node's first heartbeat).
    ///
    /// # Errors
    ///
    /// As [`Node::send`].
    pub async fn send_anyway(&self, node: &str, command: Command) -> Result<Answer, ClusterError> {
        let request = self.next_request.fetch_add(1, Relaxed);
        let (tx, rx) = oneshot::channel();
        self.pending_lock().insert(request, tx);
        let result = self.send_inner(node, request, command, rx).await;
        self.pending_lock().remove(&request);
        if matches!(result, Err(ClusterError::Timeout(_))) {
            self.commands_timed_out.fetch_add(1, Relaxed);
        }
        result
    }

    async fn send_inner(
        &self,
        node: &str,
        request: u64,
        command: Command,
        rx: oneshot::Receiver<Answer>,
    ) -> Result<Answer, ClusterError> {
        let timeout_ms = u64::try_from(self.command_timeout.as_millis()).unwrap_or(u64::MAX);
        let deadline = crate::clock::now_ms().saturating_add(timeout_ms);
        let envelope = Envelope {
            request,
            from: self.id.clone(),
            deadline,
            command,
        };
        let message = serde_json::to_string(&envelope)
            .map_err(|err| ClusterError::Redis(format!("encoding a command: {err}")))?;
        let pipe = self.append(&self.key("cmd", node), message);
        let started = tokio::time::Instant::now();
        self.query::<()>(&pipe).await?;
        match tokio::time::timeout_at(started + self.command_timeout, rx).await {
            Ok(Ok(answer)) => Ok(answer),
            _ => Err(ClusterError::Timeout(node.to_owned())),
        }
    }

    fn pending_lock(
        &self,
    ) -> std::sync::MutexGuard<'_, std::collections::HashMap<u64, oneshot::Sender<Answer>>> {
        self.pending
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Appends `message` to the stream `key`, trimmed to about
    /// [`STREAM_MAX`] entries, and gives the stream the node TTL again (a
    /// node's streams expire with it), in one transaction.
    fn append(&self, key: &str, message: String) -> redis::Pipeline {
        let mut pipe = redis::pipe();
        pipe.atomic()
            .cmd("XADD")
            .arg(key)
            .arg("MAXLEN")
            .arg("~")
            .arg(STREAM_MAX)
            .arg("*")
            .arg("m")
            .arg(message)
            .ignore()
            .pexpire(key, i64::try_from(self.ttl_ms()).unwrap_or(i64::MAX))
            .ignore();
        pipe
    }

    /// Writes `answer` to `to`'s reply stream.
    async fn answer(&self, to: &str, request: u64, answer: Answer) -> Result<(), ClusterError> {
        let message = serde_json::to_string(&Reply { request, answer })
            .map_err(|err| ClusterError::Redis(format!("encoding an answer: {err}")))?;
        let pipe = self.append(&self.key("reply", to), message);
        self.query(&pipe).await
    }
}

/// Reads this node's command and reply streams until `stop`, on a
/// connection of its own (a blocking read stalls its connection), which it
/// opens again with backoff after an error. The last ids read survive a
/// reconnect, so nothing written meanwhile is skipped.
pub async fn read(node: Arc<Node>, executor: Executor, stop: CancellationToken) {
    const BLOCK: Duration = Duration::from_secs(1);
    let keys = [node.key("cmd", &node.id), node.key("reply", &node.id)];
    let mut last: Option<[String; 2]> = None;
    const FIRST_BACKOFF: Duration = Duration::from_millis(50);
    let mut backoff = Duration::ZERO;
    loop {
        // After a failure (none at the first pass): 50 ms, doubling up to 2 s,
        // back to 50 ms once a read succeeds.
        if !backoff.is_zero() {
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(backoff) => {}
            }
        }
        backoff = (backoff * 2).clamp(FIRST_BACKOFF, Duration::from_secs(2));
        let config = redis::AsyncConnectionConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(1)))
            .set_response_timeout(Some(BLOCK + Duration::from_secs(2)));
        let connected = tokio::select! {
            () = stop.cancelled() => return,
            conn = node.client.get_multiplexed_async_connection_with_config(&config) => conn,
        };
        let mut conn = match connected {
            Ok(conn) => conn,
            Err(err) => {
                tracing::debug!(node = %node.id, "command reader: cannot reach Redis: {err}");
                continue;
            }
        };
        let ids = match &last {
            Some(ids) => ids.clone(),
            // First start: what is already there is older than this process.
            None => match start_ids(&mut conn, &keys).await {
                Ok(ids) => ids,
                Err(err) => {
                    tracing::debug!(node = %node.id, "command reader: {err}");
                    continue;
                }
            },
        };
        last = Some(ids);
        loop {
            let [cmd_id, reply_id] = last.clone().unwrap_or_default();
            let mut xread = redis::cmd("XREAD");
            xread
                .arg("COUNT")
                .arg(100)
                .arg("BLOCK")
                .arg(u64::try_from(BLOCK.as_millis()).unwrap_or(1000))
                .arg("STREAMS")
                .arg(&keys[0])
                .arg(&keys[1])
                .arg(cmd_id)
                .arg(reply_id);
            let read = xread.query_async::<Option<StreamReadReply>>(&mut conn);
            let reply = tokio::select! {
                () = stop.cancelled() => return,
                reply = read => reply,
            };
            let reply = match reply {
                Ok(reply) => {
                    backoff = Duration::ZERO;
                    reply
                }
                Err(err) => {
                    tracing::debug!(node = %node.id, "command reader: {err}; reconnecting");
                    break;
                }
            };
            for stream in reply.map(|r| r.keys).unwrap_or_default() {
                let Some(last_id) = stream.ids.last().map(|e| e.id.clone()) else {
                    continue;
                };
                let is_command = stream.key == keys[0];
                for entry in &stream.ids {
                    let Some(message) = entry.get::<String>("m") else {
                        continue;
                    };
                    if is_command {
                        run_command(&node, &executor, &message);
                    } else if let Ok(reply) = serde_json::from_str::<Reply>(&message)
                        && let Some(waiting) = node.pending_lock().remove(&reply.request)
                    {
                        let _ = waiting.send(reply.answer);
                    }
                }
                if let Some(ids) = &mut last {
                    ids[usize::from(!is_command)] = last_id;
                }
            }
        }
    }
}

/// The ids of the newest entries of `keys` ("0-0" for an empty stream).
async fn start_ids(
    conn: &mut redis::aio::MultiplexedConnection,
    keys: &[String; 2],
) -> Result<[String; 2], redis::RedisError> {
    let mut ids = [String::from("0-0"), String::from("0-0")];
    for (key, id) in keys.iter().zip(ids.iter_mut()) {
        let newest: redis::streams::StreamRangeReply = redis::cmd("XREVRANGE")
            .arg(key)
            .arg("+")
            .arg("-")
            .arg("COUNT")
            .arg(1)
            .query_async(conn)
            .await?;
        if let Some(entry) = newest.ids.first() {
            id.clone_from(&entry.id);
        }
    }
    Ok(ids)
}

/// Runs one command (on its own task: a slow one does not hold up the
/// reader) and writes the answer back, unless its deadline has passed.
fn run_command(node: &Arc<Node>, executor: &Executor, message: &str) {
    let envelope = match serde_json::from_str::<Envelope>(message) {
        Ok(envelope) => envelope,
        Err(err) => {
            tracing::warn!(node = %node.id, "ignoring a command that does not parse: {err}");
            return;
        }
    };
    if crate::clock::now_ms() > envelope.deadline {
        tracing::info!(node = %node.id, from = %envelope.from, "dropping a command read after its deadline");
        return;
    }
    let (node, executor) = (node.clone(), executor.clone());
    tokio::spawn(async move {
        let answer = executor(envelope.command).await;
        if let Err(err) = node.answer(&envelope.from, envelope.request, answer).await {
            tracing::warn!(node = %node.id, to = %envelope.from, "cannot answer a command: {err}");
        }
    });
}
