//! The Lua scripts of [`RedisStore`] and the calls of the first two:
//! `PERSIST` writes a session's changes (fenced by its attach epoch and
//! `last_out`), `LOAD` reads a session, attaching it for a resume. The
//! sweep's (`REFRESH`, `DETACH`, `AGE`) are called from `upkeep.rs`,
//! `CREATE` and `END_USER` from `mod.rs`. Each reads and writes in one
//! script: no other client's command runs in between, so no decision
//! rests on a read another node changed since. Redis does not roll back a
//! script that fails halfway; none of these can, short of a key
//! overwritten by hand with another type (the write then fails, and the
//! connection closes as for any failed write).

use std::sync::{Arc, Mutex};

use shared::ResumeFailure;

use super::{RedisStore, token_hash};
use crate::clock::now_ms;
use crate::reliable::SessionRef;
use crate::reliable::outcome::{Attach, Unwritten};
use crate::reliable::session::{Changes, Session, Snapshot, Stored};

/// The counts of sessions, shared by the scripts that give a session's
/// keys a TTL: sorted sets of session ids scored by when their keys
/// expire (on Redis's clock, `TIME`, so that no node's clock matters),
/// one for the store (`count:all`), one per owner address
/// (`count:ip:{owner}`), one per user (`count:user:{user}`). A create
/// drops the members whose score has passed and counts the rest against
/// [`Caps`](crate::reliable::Caps), so a count shrinks as sessions expire
/// and costs no scan of the sessions. Each set lives as long as its
/// longest-lived member.
macro_rules! counts {
    () => {
        r"
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local function count_keys(prefix, owner, user)
  local keys = {prefix .. 'count:all', prefix .. 'count:ip:' .. owner}
  if user and user ~= '' then keys[3] = prefix .. 'count:user:' .. user end
  return keys
end
local function counted(prefix, id, owner, user, ttl)
  local at = now_ms() + tonumber(ttl)
  for _, k in ipairs(count_keys(prefix, owner, user)) do
    redis.call('ZADD', k, at, id)
    if redis.call('PTTL', k) < tonumber(ttl) then redis.call('PEXPIRE', k, ttl) end
  end
end
local function recount(prefix, sess, id, ttl)
  local f = redis.call('HMGET', sess, 'owner', 'user')
  if f[1] then counted(prefix, id, f[1], f[2], ttl) end
end
local function uncounted(prefix, sess, id)
  local f = redis.call('HMGET', sess, 'owner', 'user')
  if f[1] then
    for _, k in ipairs(count_keys(prefix, f[1], f[2])) do redis.call('ZREM', k, id) end
  end
end
local function prefix_of(sess, id)
  return string.sub(sess, 1, #sess - #id - 5)
end
"
    };
}

/// Creates a session, if the caps allow it: KEYS are `sess`, `hist`,
/// `client`, `user` (or ''); `ARGV` the prefix, the id, the token's hash,
/// the user (or ''), the owner, the client id, the node, the TTL, then the
/// caps: total, per address, per user (0: none, but the total). A member
/// whose score has passed is dropped only if its session is gone (and
/// then from the user's set too); one still alive (its score fell behind:
/// a node killed between its sweeps, or an older node that keeps it
/// without counting) is scored again by its keys' TTL. Answers `ok`, or
/// the cap that is reached: `sessions`, `per_ip`, `per_user`.
pub(super) const CREATE: &str = concat!(
    counts!(),
    r"
local prefix, id, user, owner, ttl = ARGV[1], ARGV[2], ARGV[4], ARGV[5], ARGV[8]
local now = now_ms()
local caps = {tonumber(ARGV[9]), tonumber(ARGV[10]), tonumber(ARGV[11])}
local names = {'sessions', 'per_ip', 'per_user'}
for i, k in ipairs(count_keys(prefix, owner, user)) do
  for _, member in ipairs(redis.call('ZRANGEBYSCORE', k, '-inf', now)) do
    local left = redis.call('PTTL', prefix .. 'sess:' .. member)
    if left > 0 then
      redis.call('ZADD', k, now + left, member)
    else
      redis.call('ZREM', k, member)
      if i == 3 and KEYS[4] ~= '' then redis.call('SREM', KEYS[4], member) end
    end
  end
  if (i == 1 or caps[i] > 0) and redis.call('ZCARD', k) >= caps[i] then return names[i] end
end
redis.call('DEL', KEYS[2])
redis.call('HSET', KEYS[1], 'token', ARGV[3], 'user', user, 'owner', owner, 'client_id', ARGV[6],
  'node', ARGV[7], 'epoch', '1', 'last_out', '0', 'lost_through', '0', 'last_in', '0',
  'pushes', '0', 'bursts', '', 'attached', '1', 'detached_at', '0')
redis.call('PEXPIRE', KEYS[1], ttl)
redis.call('SET', KEYS[3], id, 'PX', ttl)
if KEYS[4] ~= '' then
  redis.call('SADD', KEYS[4], id)
  if redis.call('PTTL', KEYS[4]) < tonumber(ttl) then redis.call('PEXPIRE', KEYS[4], ttl) end
end
counted(prefix, id, owner, user, ttl)
return 'ok'
"
);

/// Writes what changed: refused when the epoch moved on (1: another
/// attach) or only `last_out` did (3: another node wrote it meanwhile, a
/// push while this node was taken for dead, or two pushes at once), 0
/// when the session is gone, 2 when written. `ARGV[3]` is the TTL of the
/// session's keys: for a client that is away, what is left of `--session-ttl`
/// since it went away (a push does not prolong it). The client's pointer to
/// its session (unless it points to a newer one) and the user's set live
/// on with it.
pub(super) const PERSIST: &str = concat!(
    counts!(),
    r"
local e = redis.call('HGET', KEYS[1], 'epoch')
if not e then return 0 end
if e ~= ARGV[1] then return 1 end
if redis.call('HGET', KEYS[1], 'last_out') ~= ARGV[2] then return 3 end
redis.call('HSET', KEYS[1], 'client_id', ARGV[5], 'last_out', ARGV[6], 'lost_through', ARGV[7],
  'last_in', ARGV[8], 'pushes', ARGV[9], 'bursts', ARGV[10], 'attached', ARGV[11], 'detached_at', ARGV[12])
for i = 15, #ARGV do redis.call('RPUSH', KEYS[2], ARGV[i]) end
local popped = tonumber(ARGV[4])
if popped > 0 then redis.call('LTRIM', KEYS[2], popped, -1) end
redis.call('PEXPIRE', KEYS[1], ARGV[3])
redis.call('PEXPIRE', KEYS[2], ARGV[3])
local c = redis.call('GET', KEYS[3])
if not c or c == ARGV[13] then redis.call('SET', KEYS[3], ARGV[13], 'PX', ARGV[14]) end
if KEYS[4] ~= '' then redis.call('PEXPIRE', KEYS[4], ARGV[14]) end
-- Attached, the sweep's REFRESH keeps its count; away, its TTL shrinks.
if ARGV[11] == '0' then recount(prefix_of(KEYS[1], ARGV[13]), KEYS[1], ARGV[13], ARGV[3]) end
return 2
"
);

/// Loads a session: `resume` checks the token hash and user, attaches it
/// (a new epoch) and returns it; `peek` returns it only while its client
/// is away (or was attached on a node that has died: `ARGV[2]` is the
/// prefix of the nodes' keys), without attaching.
pub(super) const LOAD: &str = concat!(
    counts!(),
    r"
local r = redis.call('HGETALL', KEYS[1])
if #r == 0 then return {'unknown'} end
local f = {}
for i = 1, #r, 2 do f[r[i]] = r[i + 1] end
local out
if ARGV[1] == 'resume' then
  if f.token ~= ARGV[2] or f.user ~= ARGV[3] then return {'bad_token'} end
  local epoch = redis.call('HINCRBY', KEYS[1], 'epoch', 1)
  redis.call('HSET', KEYS[1], 'node', ARGV[4], 'attached', '1', 'client_id', ARGV[5], 'detached_at', '0')
  redis.call('PEXPIRE', KEYS[1], ARGV[6])
  redis.call('PEXPIRE', KEYS[2], ARGV[6])
  redis.call('SET', KEYS[3], ARGV[7], 'PX', ARGV[6])
  local prefix = prefix_of(KEYS[1], ARGV[7])
  counted(prefix, ARGV[7], f.owner or '', f.user, ARGV[6])
  -- Back in its user's set, should a create have dropped it meanwhile.
  if f.user and f.user ~= '' then
    local set = prefix .. 'user:' .. f.user
    redis.call('SADD', set, ARGV[7])
    if redis.call('PTTL', set) < tonumber(ARGV[6]) then redis.call('PEXPIRE', set, ARGV[6]) end
  end
  out = {'ok', tostring(epoch), f.node or '', f.attached or '0'}
else
  -- Attached on a live node: that node serves it. A node that died
  -- (its `node:` key expired) wrote no detach: its sessions are away.
  if f.attached == '1' and redis.call('EXISTS', ARGV[2] .. (f.node or '')) == 1 then
    return {'attached'}
  end
  out = {'ok', f.epoch or '0', f.node or '', f.attached or '0'}
end
for _, k in ipairs({'user', 'owner', 'client_id', 'last_out', 'lost_through', 'last_in', 'pushes', 'bursts', 'detached_at'}) do
  out[#out + 1] = f[k] or ''
end
for _, v in ipairs(redis.call('LRANGE', KEYS[2], 0, -1)) do out[#out + 1] = v end
return out
"
);

/// Ends every session of a user (`KEYS[1]`, its set; `ARGV` the prefix of
/// every key): returns how many existed, then their ids. It reads keys it
/// is not given: fine on one Redis, not on Redis Cluster (not supported).
pub(super) const END_USER: &str = concat!(
    counts!(),
    r"
local ids = redis.call('SMEMBERS', KEYS[1])
local n = 0
for _, id in ipairs(ids) do
  uncounted(ARGV[1], ARGV[1] .. 'sess:' .. id, id)
  n = n + redis.call('DEL', ARGV[1] .. 'sess:' .. id)
  redis.call('DEL', ARGV[1] .. 'hist:' .. id)
end
redis.call('DEL', KEYS[1])
table.insert(ids, 1, tostring(n))
return ids
"
);

/// The sweep's TTL refresh of the sessions attached on this node, fenced:
/// KEYS are `sess`, `hist`, `client`, `user` (or '') of each session,
/// `ARGV[1]` the TTL, `ARGV[2]` the prefix of every key, then each
/// session's epoch. Per session: 2 refreshed,
/// 1 another attach moved it on (not refreshed: a stale node must not
/// keep it alive), 0 gone.
pub(super) const REFRESH: &str = concat!(
    counts!(),
    r"
local out = {}
for i = 3, #ARGV do
  local k = (i - 3) * 4
  local e = redis.call('HGET', KEYS[k + 1], 'epoch')
  if not e then out[#out + 1] = 0
  elseif e ~= ARGV[i] then out[#out + 1] = 1
  else
    for j = 1, 3 do redis.call('PEXPIRE', KEYS[k + j], ARGV[1]) end
    if KEYS[k + 4] ~= '' then redis.call('PEXPIRE', KEYS[k + 4], ARGV[1]) end
    recount(ARGV[2], KEYS[k + 1], string.sub(KEYS[k + 1], #ARGV[2] + 6), ARGV[1])
    out[#out + 1] = 2
  end
end
return out
"
);

/// A detach written on its own (the full write failed): `sess`, `hist`;
/// `ARGV` the epoch of the connection that went away, when (wall-clock
/// ms), the TTL left, the prefix of every key and the session's id. 2
/// written, 1 another attach moved it on, 0 gone.
pub(super) const DETACH: &str = concat!(
    counts!(),
    r"
local e = redis.call('HGET', KEYS[1], 'epoch')
if not e then return 0 end
if e ~= ARGV[1] then return 1 end
if redis.call('HGET', KEYS[1], 'attached') == '1' then
  redis.call('HSET', KEYS[1], 'attached', '0', 'detached_at', ARGV[2])
  redis.call('PEXPIRE', KEYS[1], ARGV[3])
  redis.call('PEXPIRE', KEYS[2], ARGV[3])
  recount(ARGV[4], KEYS[1], ARGV[5], ARGV[3])
end
return 2
"
);

/// Ages the history of sessions whose client is away: KEYS are `sess`,
/// `hist` of each; `ARGV[1]` the cutoff (wall-clock ms): entries recorded
/// before it are dropped and `lost_through` moves past them (a `gap` on
/// resume). A session aged gets a new epoch, so that a push loaded before
/// (on any node) is refused rather than trim from a stale view. Per
/// session: 1 still away, 0 attached or gone (no longer to age from here).
pub(super) const AGE: &str = r"
local out = {}
local cutoff = tonumber(ARGV[1])
for i = 1, #KEYS, 2 do
  local f = redis.call('HMGET', KEYS[i], 'attached', 'lost_through')
  if not f[1] or f[1] == '1' then out[#out + 1] = 0
  else
    local lost, n = f[2], 0
    while true do
      local line = redis.call('LINDEX', KEYS[i + 1], 0)
      if not line then break end
      local seq, at = string.match(line, '^(%d+) (%d+) ')
      if not seq or tonumber(at) >= cutoff then break end
      redis.call('LPOP', KEYS[i + 1])
      if tonumber(seq) > (tonumber(lost) or 0) then lost = seq end
      n = n + 1
    end
    if n > 0 then
      redis.call('HSET', KEYS[i], 'lost_through', lost)
      redis.call('HINCRBY', KEYS[i], 'epoch', 1)
    end
    out[#out + 1] = 1
  end
end
return out
";

impl RedisStore {
    /// The TTL a write gives the session's keys: while the client is away,
    /// what is left of `--session-ttl` since it went away (as in memory,
    /// where pushes to it do not prolong it either).
    fn record_ttl_ms(&self, record: &Snapshot) -> u64 {
        if record.attached || record.detached_at_ms == 0 {
            return self.ttl_ms(record.attached);
        }
        let ttl = self.ttl_ms(false);
        let ends = record.detached_at_ms.saturating_add(ttl);
        // Bounded: the time of the detach may come from another node.
        ends.saturating_sub(now_ms()).clamp(1, ttl)
    }

    pub(super) async fn write(
        &self,
        id: &str,
        user: Option<&str>,
        changes: Changes,
    ) -> Result<(), Unwritten> {
        let Changes {
            epoch,
            base_last_out,
            record,
            appended,
            popped,
        } = changes;
        let mut call = self.scripts.persist.prepare_invoke();
        call.key(self.key("sess", id))
            .key(self.key("hist", id))
            .key(self.key("client", &record.client_id))
            .key(user.map_or_else(String::new, |user| self.key("user", user)))
            .arg(epoch)
            .arg(base_last_out)
            .arg(self.record_ttl_ms(&record))
            .arg(popped)
            .arg(&record.client_id)
            .arg(record.last_out)
            .arg(record.lost_through)
            .arg(record.last_in)
            .arg(record.pushes)
            .arg(&record.bursts)
            .arg(u8::from(record.attached))
            .arg(record.detached_at_ms)
            .arg(id)
            .arg(self.ttl_ms(true))
            .arg(appended);
        let mut conn = self.node.connection();
        match self.run(call.invoke_async::<i64>(&mut conn)).await? {
            2 => Ok(()),
            0 => Err(Unwritten::Gone),
            3 => Err(Unwritten::Raced),
            _ => Err(Unwritten::TakenOver),
        }
    }

    /// Loads session `id`: for a resume of connection `attach` (a new
    /// epoch), or, without one, only if its client is away.
    pub(super) async fn load(
        &self,
        id: &str,
        resume: Option<(&str, &Attach, &str)>,
    ) -> Result<Result<(Stored, String, bool), ResumeFailure>, Unwritten> {
        let mut call = self.scripts.load.prepare_invoke();
        call.key(self.key("sess", id)).key(self.key("hist", id));
        match resume {
            Some((token, attach, client_id)) => {
                call.key(self.key("client", client_id))
                    .arg("resume")
                    .arg(token_hash(token))
                    .arg(attach.user.as_deref().unwrap_or(""))
                    .arg(self.node.id())
                    .arg(client_id)
                    .arg(self.ttl_ms(true))
                    .arg(id);
            }
            None => {
                call.key(self.key("client", "-"))
                    .arg("peek")
                    .arg(self.key("node", ""));
            }
        }
        let mut conn = self.node.connection();
        let reply: Vec<String> = self.run(call.invoke_async(&mut conn)).await?;
        let mut fields = reply.into_iter();
        match fields.next().as_deref() {
            Some("ok") => {}
            Some("bad_token") => return Ok(Err(ResumeFailure::BadToken)),
            _ => return Ok(Err(ResumeFailure::UnknownSession)),
        }
        let mut next = || fields.next().unwrap_or_default();
        let epoch = next().parse().unwrap_or(0);
        let old_node = next();
        let was_attached = next() == "1";
        let user = next();
        let owner = next().parse().ok();
        let client_id = next();
        let mut number = || next().parse::<u64>().unwrap_or(0);
        let (last_out, lost_through, last_in, pushes) = (number(), number(), number(), number());
        let bursts = next();
        let detached_at_ms = next().parse().unwrap_or(0);
        let stored = Stored {
            id: id.to_owned(),
            user: (!user.is_empty()).then(|| Arc::from(user.as_str())),
            owner,
            epoch,
            record: Some(Snapshot {
                client_id,
                last_out,
                lost_through,
                last_in,
                pushes,
                bursts,
                attached: false,
                detached_at_ms,
            }),
            history: fields.collect(),
        };
        Ok(Ok((stored, old_node, was_attached)))
    }

    /// A session loaded while its client is away, for a push to it (the
    /// caller persists after sending: a resume meanwhile fences it);
    /// `None` when there is none, or it does not parse.
    ///
    /// # Errors
    ///
    /// When Redis does not answer.
    pub(super) async fn away(&self, id: &str) -> Result<Option<SessionRef>, Unwritten> {
        let Ok((stored, _, _)) = self.load(id, None).await? else {
            return Ok(None); // Unknown, or attached.
        };
        let Some(session) = Session::restore(stored, self.budget.clone(), self.limits) else {
            tracing::warn!(session = %crate::logsafe::escape(id), "a session in Redis does not parse: no push stored");
            return Ok(None);
        };
        Ok(Some(Arc::new(Mutex::new(session))))
    }
}
