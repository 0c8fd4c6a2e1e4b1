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
//! | `pru:{channel}` | hash: how many members each run has per user in the channel, `{run}\n{user}` → count (token mode's users only) |
//! | `prn:{run}` | hash: how many members run `{run}` has in each channel |
//! | `prnodes` | set: the runs with members |
//! | `prlive:{run}` | the run is alive: set every heartbeat with the node TTL |
//! | `prsync:{run}` | the run's members are all written: set after a complete write, removed with the run's other keys by a reap or a data loss |
//!
//! A *run* is one process of a node (`{node id}:{random}`): a node killed
//! and started again under the same id is a new run, and the members of
//! the dead one do not pass for its own.
//!
//! * **A query is one script**, whatever the number of nodes: it judges
//!   each run alive by its `prlive` key inside the script, so members of a
//!   dead node are never counted nor listed, even before they are removed.
//! * **A query reads no member it does not list**: its script adds up the
//!   live runs' counts in `prn:{run}` and counts the distinct users of live
//!   runs in `pru:{channel}`, one call per node (and one field per user and
//!   node in token mode), then lists members of live runs by `HSCAN` until
//!   it has as many as asked: `presence_stats` reads no member, and a
//!   `presence` capped at 1,000 reads about 1,000 of 10,000. Nodes of the release
//!   before this one keep no `pru`: during a rolling deploy their members
//!   count as clients but not as users until they are restarted.
//! * **A dead run's members are removed by scripts** (`REAP`, which
//!   every node runs after its heartbeat, a bounded number of members per
//!   call so that Redis is not held): each removes members and publishes
//!   their `leave`s (where the namespace has `join_leave`) atomically, so
//!   each member is removed once, with one `leave`. A node's `prlive`
//!   expires within the node TTL of its death, and the next heartbeat of
//!   any other node reaps it: within two node TTLs.
//! * **Join and leave** are published on the channel's pub/sub channel by
//!   the same script that adds or removes the member, so a member removed
//!   twice (a leave racing the reaper) gets one `leave`.
//! * **Redis lost its data** (or reaped a node that was only slow): the
//!   node finds its `prsync` mark gone at its next heartbeat and writes its
//!   members again (those still subscribed once written: one that left
//!   meanwhile is removed again).

use std::sync::Arc;
use std::time::Duration;

use redis::Script;
use shared::channel::Member;

use super::stream::StreamError;
use crate::reliable::Backend;

/// Adds a member; publishes its `join` if it is new and notices are on.
/// KEYS: `pr:{c}`, `prn:{run}`, `prnodes`, `prlive:{run}`, `pru:{c}`. ARGV: field,
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
if added == 1 then redis.call('HINCRBY', KEYS[2], ARGV[5], 1) end
redis.call('PEXPIRE', KEYS[2], ARGV[3])
redis.call('SADD', KEYS[3], ARGV[4])
redis.call('PEXPIRE', KEYS[3], ARGV[3])
local nl = string.find(ARGV[2], '\n', 1, true)
if added == 1 and nl > 1 then
  redis.call('HINCRBY', KEYS[5], ARGV[4] .. '\n' .. string.sub(ARGV[2], 1, nl - 1), 1)
  redis.call('PEXPIRE', KEYS[5], ARGV[3])
end
if added == 1 and ARGV[6] == '1' then
  redis.call('PUBLISH', ARGV[8], 'J\n' .. string.sub(ARGV[2], nl + 1))
end
return added
";

/// Removes a member; publishes its `leave` if it was there and notices are
/// on. KEYS: `pr:{c}`, `prn:{run}`, `pru:{c}`. ARGV: field, notify,
/// pub/sub name, channel, run. Returns 1 when removed.
const LEAVE: &str = r"
local value = redis.call('HGET', KEYS[1], ARGV[1])
if not value then return 0 end
redis.call('HDEL', KEYS[1], ARGV[1])
if redis.call('HINCRBY', KEYS[2], ARGV[4], -1) <= 0 then
  redis.call('HDEL', KEYS[2], ARGV[4])
end
local nl = string.find(value, '\n', 1, true)
if nl > 1 then
  local user = ARGV[5] .. '\n' .. string.sub(value, 1, nl - 1)
  if redis.call('HINCRBY', KEYS[3], user, -1) <= 0 then
    redis.call('HDEL', KEYS[3], user)
  end
end
if ARGV[2] == '1' then
  redis.call('PUBLISH', ARGV[3], 'L\n' .. string.sub(value, nl + 1))
end
return 1
";

/// A channel's live members and users, counted without reading members:
/// the live runs' counts in `prn:{run}`, and the users of live runs in
/// `pru:{c}`; then, if asked, the first members of live runs found by
/// `HSCAN`, up to the limit, so that listing 1,000 of 10,000 members reads
/// about 1,000 fields, not all. KEYS: `pr:{c}`, `prnodes`, `pru:{c}`. ARGV:
/// the key prefix, the most to list (0: the counts only), the channel.
/// Returns the number of clients, of distinct users, then the listed
/// members' JSON.
const QUERY: &str = r"
local alive = {}
local clients = 0
for _, run in ipairs(redis.call('SMEMBERS', KEYS[2])) do
  if redis.call('EXISTS', ARGV[1] .. 'prlive:' .. run) == 1 then
    alive[run] = true
    local n = redis.call('HGET', ARGV[1] .. 'prn:' .. run, ARGV[3])
    if n then clients = clients + tonumber(n) end
  end
end
local users = {}
local nusers = 0
local all = redis.call('HGETALL', KEYS[3])
for i = 1, #all, 2 do
  local nl = string.find(all[i], '\n', 1, true)
  if nl and alive[string.sub(all[i], 1, nl - 1)] and tonumber(all[i + 1]) > 0 then
    local user = string.sub(all[i], nl + 1)
    if not users[user] then
      users[user] = true
      nusers = nusers + 1
    end
  end
end
local out = {clients, nusers}
local limit = tonumber(ARGV[2])
if limit > 0 then
  local seen = {}
  local listed = 0
  local cursor = '0'
  repeat
    local page = redis.call('HSCAN', KEYS[1], cursor, 'COUNT', 500)
    cursor = page[1]
    local fields = page[2]
    for i = 1, #fields, 2 do
      local field = fields[i]
      if listed < limit and not seen[field] then
        seen[field] = true
        local run = string.match(field, '^(.*)/')
        if run and alive[run] then
          local value = fields[i + 1]
          local nl = string.find(value, '\n', 1, true)
          table.insert(out, string.sub(value, nl + 1))
          listed = listed + 1
        end
      end
    end
  until cursor == '0' or listed >= limit
end
return out
";

/// Removes the members of one dead run, and publishes their `leave`s
/// where the channel's namespace has `join_leave`, in the same script: each
/// member is removed once, by one node, with one `leave`. KEYS: `prnodes`.
/// ARGV: the key prefix, `,ns1,ns2,` (the namespaces with `join_leave`),
/// `1` if the default namespace has it, the most members to remove in one
/// call. Returns the number removed, and whether a dead run is left.
const REAP: &str = r"
local runs = redis.call('SMEMBERS', KEYS[1])
local budget = tonumber(ARGV[4])
local removed = 0
for _, run in ipairs(runs) do
  if redis.call('EXISTS', ARGV[1] .. 'prlive:' .. run) == 0 then
    local prn = ARGV[1] .. 'prn:' .. run
    local channels = redis.call('HKEYS', prn)
    for _, c in ipairs(channels) do
      if removed >= budget then return {removed, 1} end
      local key = ARGV[1] .. 'pr:' .. c
      local ns = string.match(c, '^([^:]*):')
      local notify
      if ns then
        notify = string.find(ARGV[2], ',' .. ns .. ',', 1, true) ~= nil
      else
        notify = ARGV[3] == '1'
      end
      local all = redis.call('HGETALL', key)
      for i = 1, #all, 2 do
        if string.sub(all[i], 1, #run + 1) == run .. '/' then
          redis.call('HDEL', key, all[i])
          removed = removed + 1
          local value = all[i + 1]
          local nl = string.find(value, '\n', 1, true)
          if nl > 1 then
            redis.call('HDEL', ARGV[1] .. 'pru:' .. c, run .. '\n' .. string.sub(value, 1, nl - 1))
          end
          if notify then
            redis.call('PUBLISH', ARGV[1] .. 'ch:' .. c, 'L\n' .. string.sub(value, nl + 1))
          end
        end
      end
      redis.call('HDEL', prn, c)
    end
    redis.call('DEL', prn, ARGV[1] .. 'prsync:' .. run)
    redis.call('SREM', KEYS[1], run)
    return {removed, 1}
  end
end
return {removed, 0}
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
        self.node_ttl_ms().saturating_mul(4)
    }

    fn node_ttl_ms(&self) -> u64 {
        u64::try_from(self.node_ttl.as_millis()).unwrap_or(u64::MAX)
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
            .key(self.key("pru", channel))
            .arg(self.field(conn))
            .arg(value(member))
            .arg(self.keys_ttl_ms())
            .arg(&self.run)
            .arg(channel)
            .arg(u8::from(notify))
            .arg(max_members)
            .arg(pubsub)
            .arg(self.node_ttl_ms());
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
            .key(self.key("prn", &self.run))
            .key(self.key("pru", channel))
            .arg(self.field(conn))
            .arg(u8::from(notify))
            .arg(pubsub)
            .arg(channel)
            .arg(&self.run);
        let mut conn = self.node.connection();
        let _: i64 = self.run(call.invoke_async(&mut conn)).await?;
        Ok(())
    }

    /// `channel`'s live members, the first `limit` of them listed (none:
    /// the counts only, without reading a member).
    ///
    /// # Errors
    ///
    /// [`StreamError::Unavailable`] when Redis does not answer.
    pub async fn query(&self, channel: &str, limit: usize) -> Result<Found, StreamError> {
        let mut call = self.query.prepare_invoke();
        call.key(self.key("pr", channel))
            .key(format!("{}prnodes", self.node.prefix()))
            .key(self.key("pru", channel))
            .arg(self.node.prefix())
            .arg(limit)
            .arg(channel);
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
    /// Redis no longer has this run's members as written (it lost its data,
    /// or reaped the run while it was slow): they must be written again,
    /// then [`RedisPresence::synced`].
    ///
    /// The mark of a complete write is a key of its own, which only a
    /// complete write sets and a reap or a data loss removes: a member that
    /// joined meanwhile recreates the other keys, not this one.
    ///
    /// # Errors
    ///
    /// [`StreamError::Unavailable`] when Redis does not answer.
    pub async fn heartbeat(&self, channels: &[Arc<str>]) -> Result<bool, StreamError> {
        let ttl = i64::try_from(self.keys_ttl_ms()).unwrap_or(i64::MAX);
        let mut pipe = redis::pipe();
        pipe.cmd("SET")
            .arg(self.key("prlive", &self.run))
            .arg(1)
            .arg("PX")
            .arg(self.node_ttl_ms())
            .ignore()
            .exists(self.key("prsync", &self.run))
            .pexpire(self.key("prsync", &self.run), ttl)
            .ignore()
            .pexpire(self.key("prn", &self.run), ttl)
            .ignore()
            .pexpire(format!("{}prnodes", self.node.prefix()), ttl)
            .ignore();
        for channel in channels {
            pipe.pexpire(self.key("pr", channel), ttl).ignore();
            pipe.pexpire(self.key("pru", channel), ttl).ignore();
        }
        let mut conn = self.node.connection();
        let (synced,): (bool,) = self.run(pipe.query_async(&mut conn)).await?;
        Ok(synced)
    }

    /// This run's members are all written (at start, or again after
    /// [`RedisPresence::heartbeat`] said they were lost).
    ///
    /// # Errors
    ///
    /// [`StreamError::Unavailable`] when Redis does not answer.
    pub async fn synced(&self) -> Result<(), StreamError> {
        let mut conn = self.node.connection();
        let _: () = self
            .run(
                redis::cmd("SET")
                    .arg(self.key("prsync", &self.run))
                    .arg(1)
                    .arg("PX")
                    .arg(self.keys_ttl_ms())
                    .query_async(&mut conn),
            )
            .await?;
        Ok(())
    }

    /// Removes the members of dead runs, at most `budget` per script (so
    /// that a large dead node does not hold Redis), their `leave`s
    /// published by the same scripts where `join_leave` (the namespaces in
    /// `notices`, and the default one if `default_notices`). Returns how
    /// many members were removed.
    ///
    /// # Errors
    ///
    /// [`StreamError::Unavailable`] when Redis does not answer.
    pub async fn reap(
        &self,
        (notices, default_notices): (&[String], bool),
        budget: usize,
    ) -> Result<u64, StreamError> {
        let namespaces = format!(",{},", notices.join(","));
        let mut total = 0;
        loop {
            let mut call = self.reap.prepare_invoke();
            call.key(format!("{}prnodes", self.node.prefix()))
                .arg(self.node.prefix())
                .arg(&namespaces)
                .arg(u8::from(default_notices))
                .arg(budget.max(1));
            let mut conn = self.node.connection();
            let (removed, more): (u64, u8) = self.run(call.invoke_async(&mut conn)).await?;
            total += removed;
            if more == 0 {
                return Ok(total);
            }
        }
    }
}
