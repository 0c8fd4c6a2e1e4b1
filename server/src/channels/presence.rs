//! Presence in Redis (issue 24): who is subscribed to a channel, over every
//! node, exact when a node dies.
//!
//! Keys, under `--redis-prefix`, each with a TTL (four node TTLs, renewed
//! by the owning node every heartbeat: they outlive the detection of a
//! dead node):
//!
//! | key | what |
//! |---|---|
//! | `pr:{channel}` | hash: one field per member, `{run}/{conn}` → `{user}\n{member JSON}` |
//! | `prn:{run}` | set: the channels where run `{run}` has members |
//! | `prnodes` | set: the runs with members |
//! | `prlive:{run}` | the run is alive: set every heartbeat with the node TTL |
//!
//! A *run* is one process of a node (`{node id}:{random}`): a node killed
//! and started again under the same id is a new run, and the members of
//! the dead one do not pass for its own.
//!
//! * **A query is one script**, whatever the number of nodes: it reads the
//!   hash and judges each run alive by its `prlive` key inside the script,
//!   so members of a dead node are never listed, even before they are
//!   removed.
//! * **A dead run's members are removed by one script** ([`reap`], which
//!   every node runs every heartbeat): removal and its result are atomic,
//!   so each member is removed once, by one node, which then publishes its
//!   `leave` (where the namespace has `join_leave`). A node's `prlive`
//!   expires within the node TTL of its death, and the next heartbeat of
//!   any other node reaps it: within two node TTLs.
//! * **Join and leave** are published on the channel's pub/sub channel by
//!   the same script that adds or removes the member, so a member removed
//!   twice (a leave racing the reaper) gets one `leave`.
//! * **Redis lost its data** (or reaped a node that was only slow): the
//!   node finds its `prn` set gone at its next heartbeat and writes its
//!   members again.

use std::sync::Arc;
use std::time::Duration;

use redis::Script;
use shared::channel::Member;

use super::stream::StreamError;
use crate::reliable::Backend;

/// Adds a member; publishes its `join` if it is new and notices are on.
/// KEYS: `pr:{c}`, `prn:{run}`, `prnodes`, `prlive:{run}`. ARGV: field,
/// value, TTL (ms), run, channel, notify (`1`/`0`), max members (0: no
/// cap), pub/sub name, node TTL (ms). Returns 1 when added, 0 when it was
/// there, -1 when the channel is full.
///
/// The run is marked alive first if it is not yet (its first member came
/// before its first heartbeat): another node's reaper must never take a
/// run it can see in `prnodes` for a dead one while it is starting.
const JOIN: &str = r"
redis.call('SET', KEYS[4], 1, 'PX', ARGV[9], 'NX')
local max = tonumber(ARGV[7])
if max > 0 and redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0
   and redis.call('HLEN', KEYS[1]) >= max then
  return -1
end
local added = redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
redis.call('SADD', KEYS[2], ARGV[5])
redis.call('PEXPIRE', KEYS[2], ARGV[3])
redis.call('SADD', KEYS[3], ARGV[4])
redis.call('PEXPIRE', KEYS[3], ARGV[3])
if added == 1 and ARGV[6] == '1' then
  local nl = string.find(ARGV[2], '\n', 1, true)
  redis.call('PUBLISH', ARGV[8], 'J\n' .. string.sub(ARGV[2], nl + 1))
end
return added
";

/// Removes a member; publishes its `leave` if it was there and notices are
/// on. KEYS: `pr:{c}`. ARGV: field, notify, pub/sub name. Returns 1 when
/// removed.
const LEAVE: &str = r"
local value = redis.call('HGET', KEYS[1], ARGV[1])
if not value then return 0 end
redis.call('HDEL', KEYS[1], ARGV[1])
if ARGV[2] == '1' then
  local nl = string.find(value, '\n', 1, true)
  redis.call('PUBLISH', ARGV[3], 'L\n' .. string.sub(value, nl + 1))
end
return 1
";

/// The live members of a channel. KEYS: `pr:{c}`. ARGV: the key prefix,
/// the most to list (0: none, the counts only). Returns the number of
/// clients, of distinct users, then the listed members' JSON.
const QUERY: &str = r"
local all = redis.call('HGETALL', KEYS[1])
local alive = {}
local users = {}
local nusers = 0
local clients = 0
local out = {0, 0}
local limit = tonumber(ARGV[2])
for i = 1, #all, 2 do
  local run = string.match(all[i], '^(.*)/')
  local live = alive[run]
  if live == nil then
    live = redis.call('EXISTS', ARGV[1] .. 'prlive:' .. run) == 1
    alive[run] = live
  end
  if live then
    clients = clients + 1
    local value = all[i + 1]
    local nl = string.find(value, '\n', 1, true)
    local user = string.sub(value, 1, nl - 1)
    if user ~= '' and not users[user] then
      users[user] = true
      nusers = nusers + 1
    end
    if clients <= limit then
      table.insert(out, string.sub(value, nl + 1))
    end
  end
end
out[1] = clients
out[2] = nusers
return out
";

/// Removes the members of every dead run. KEYS: `prnodes`. ARGV: the key
/// prefix. Returns the channel and member JSON of each member removed.
const REAP: &str = r"
local runs = redis.call('SMEMBERS', KEYS[1])
local out = {}
for _, run in ipairs(runs) do
  if redis.call('EXISTS', ARGV[1] .. 'prlive:' .. run) == 0 then
    local channels = redis.call('SMEMBERS', ARGV[1] .. 'prn:' .. run)
    for _, c in ipairs(channels) do
      local key = ARGV[1] .. 'pr:' .. c
      local all = redis.call('HGETALL', key)
      for i = 1, #all, 2 do
        if string.sub(all[i], 1, #run + 1) == run .. '/' then
          redis.call('HDEL', key, all[i])
          local value = all[i + 1]
          local nl = string.find(value, '\n', 1, true)
          table.insert(out, c)
          table.insert(out, string.sub(value, nl + 1))
        end
      end
    end
    redis.call('DEL', ARGV[1] .. 'prn:' .. run)
    redis.call('SREM', KEYS[1], run)
  end
end
return out
";

/// A channel's presence as a query found it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    /// Members (connections).
    pub clients: u64,
    /// Distinct users.
    pub users: u64,
    /// The members listed (at most the limit asked).
    pub members: Vec<Member>,
}

/// One node's presence in Redis.
pub struct RedisPresence {
    node: Arc<dyn Backend>,
    /// This process: `{node id}:{random}`.
    run: String,
    /// The node TTL: how long `prlive` lasts without a heartbeat.
    node_ttl: Duration,
    join: Script,
    leave: Script,
    query: Script,
    reap: Script,
}

impl std::fmt::Debug for RedisPresence {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisPresence")
            .field("run", &self.run)
            .finish_non_exhaustive()
    }
}

/// `{user}\n{member JSON}`: the user first, for the query's count of users
/// without a JSON decoder in the script.
fn value(member: &Member) -> String {
    format!(
        "{}\n{}",
        member.user.as_deref().unwrap_or(""),
        serde_json::to_string(member).unwrap_or_default()
    )
}

impl RedisPresence {
    /// Presence on `node`'s Redis, for a run of it judged dead `node_ttl`
    /// after its last heartbeat.
    pub fn new(node: Arc<dyn Backend>, node_ttl: Duration) -> Self {
        let run = format!("{}:{:016x}", node.id(), rand::random::<u64>());
        Self {
            node,
            run,
            node_ttl,
            join: Script::new(JOIN),
            leave: Script::new(LEAVE),
            query: Script::new(QUERY),
            reap: Script::new(REAP),
        }
    }

    fn key(&self, what: &str, name: &str) -> String {
        format!("{}{what}:{name}", self.node.prefix())
    }

    fn keys_ttl_ms(&self) -> u64 {
        u64::try_from(self.node_ttl.as_millis())
            .unwrap_or(u64::MAX)
            .saturating_mul(4)
    }

    fn field(&self, conn: u64) -> String {
        format!("{}/{conn}", self.run)
    }

    async fn run<T>(
        &self,
        call: impl Future<Output = redis::RedisResult<T>>,
    ) -> Result<T, StreamError> {
        super::stream::redis::bounded(&*self.node, "channel presence", call).await
    }

    /// Adds connection `conn` as `member` of `channel`; `pubsub` is the
    /// channel's pub/sub name, where its `join` goes when `notify`.
    /// Returns false when the channel has `max_members` already.
    ///
    /// # Errors
    ///
    /// [`StreamError::Unavailable`] when Redis does not answer.
    pub async fn join(
        &self,
        (channel, pubsub): (&str, &str),
        conn: u64,
        member: &Member,
        (notify, max_members): (bool, usize),
    ) -> Result<bool, StreamError> {
        let mut call = self.join.prepare_invoke();
        call.key(self.key("pr", channel))
            .key(self.key("prn", &self.run))
            .key(format!("{}prnodes", self.node.prefix()))
            .key(self.key("prlive", &self.run))
            .arg(self.field(conn))
            .arg(value(member))
            .arg(self.keys_ttl_ms())
            .arg(&self.run)
            .arg(channel)
            .arg(u8::from(notify))
            .arg(max_members)
            .arg(pubsub)
            .arg(u64::try_from(self.node_ttl.as_millis()).unwrap_or(u64::MAX));
        let mut conn = self.node.connection();
        let added: i64 = self.run(call.invoke_async(&mut conn)).await?;
        Ok(added >= 0)
    }

    /// Removes connection `conn` from `channel`'s members.
    ///
    /// # Errors
    ///
    /// [`StreamError::Unavailable`] when Redis does not answer (the member
    /// goes with its node, or its key's TTL).
    pub async fn leave(
        &self,
        (channel, pubsub): (&str, &str),
        conn: u64,
        notify: bool,
    ) -> Result<(), StreamError> {
        let mut call = self.leave.prepare_invoke();
        call.key(self.key("pr", channel))
            .arg(self.field(conn))
            .arg(u8::from(notify))
            .arg(pubsub);
        let mut conn = self.node.connection();
        let _: i64 = self.run(call.invoke_async(&mut conn)).await?;
        Ok(())
    }

    /// `channel`'s live members, the first `limit` of them listed.
    ///
    /// # Errors
    ///
    /// [`StreamError::Unavailable`] when Redis does not answer.
    pub async fn query(&self, channel: &str, limit: usize) -> Result<Found, StreamError> {
        let mut call = self.query.prepare_invoke();
        call.key(self.key("pr", channel))
            .arg(self.node.prefix())
            .arg(limit);
        let mut conn = self.node.connection();
        let reply: Vec<redis::Value> = self.run(call.invoke_async(&mut conn)).await?;
        let number = |v: Option<&redis::Value>| match v {
            Some(redis::Value::Int(n)) => u64::try_from(*n).unwrap_or(0),
            _ => 0,
        };
        let members = reply
            .iter()
            .skip(2)
            .filter_map(|v| match v {
                redis::Value::BulkString(bytes) => serde_json::from_slice(bytes).ok(),
                _ => None,
            })
            .collect();
        Ok(Found {
            clients: number(reply.first()),
            users: number(reply.get(1)),
            members,
        })
    }

    /// The heartbeat of this run's presence: it is alive, its keys' TTLs
    /// renewed (`channels`: those where it has members). Returns false when
    /// its set of channels is gone (Redis lost its data, or the run was
    /// reaped while slow): its members must be written again.
    ///
    /// # Errors
    ///
    /// [`StreamError::Unavailable`] when Redis does not answer.
    pub async fn heartbeat(&self, channels: &[Arc<str>]) -> Result<bool, StreamError> {
        let ttl = self.keys_ttl_ms();
        let mut pipe = redis::pipe();
        pipe.cmd("SET")
            .arg(self.key("prlive", &self.run))
            .arg(1)
            .arg("PX")
            .arg(u64::try_from(self.node_ttl.as_millis()).unwrap_or(u64::MAX))
            .ignore()
            .exists(self.key("prn", &self.run))
            .pexpire(self.key("prn", &self.run), ttl as i64)
            .ignore()
            .pexpire(format!("{}prnodes", self.node.prefix()), ttl as i64)
            .ignore();
        for channel in channels {
            pipe.pexpire(self.key("pr", channel), ttl as i64).ignore();
        }
        let mut conn = self.node.connection();
        let (exists,): (bool,) = self.run(pipe.query_async(&mut conn)).await?;
        Ok(exists || channels.is_empty())
    }

    /// Publishes `member`'s `leave` on `pubsub` (a channel's): for the
    /// members [`RedisPresence::reap`] removed.
    ///
    /// # Errors
    ///
    /// [`StreamError::Unavailable`] when Redis does not answer.
    pub async fn announce_leave(&self, pubsub: &str, member: &Member) -> Result<(), StreamError> {
        let payload = format!("L\n{}", serde_json::to_string(member).unwrap_or_default());
        let mut conn = self.node.connection();
        let _: i64 = self
            .run(
                redis::cmd("PUBLISH")
                    .arg(pubsub)
                    .arg(payload)
                    .query_async(&mut conn),
            )
            .await?;
        Ok(())
    }

    /// Removes the members of every dead run; returns the channel and
    /// member of each, removed by this call alone.
    ///
    /// # Errors
    ///
    /// [`StreamError::Unavailable`] when Redis does not answer.
    pub async fn reap(&self) -> Result<Vec<(String, Member)>, StreamError> {
        let mut call = self.reap.prepare_invoke();
        call.key(format!("{}prnodes", self.node.prefix()))
            .arg(self.node.prefix());
        let mut conn = self.node.connection();
        let flat: Vec<String> = self.run(call.invoke_async(&mut conn)).await?;
        Ok(flat
            .chunks(2)
            .filter_map(|pair| match pair {
                [channel, member] => serde_json::from_str(member)
                    .ok()
                    .map(|member| (channel.clone(), member)),
                _ => None,
            })
            .collect())
    }
}
