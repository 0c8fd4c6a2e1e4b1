//! The two Lua scripts of [`RedisStore`] and their calls: `PERSIST`
//! writes a session's changes (fenced by its attach epoch and `last_out`),
//! `LOAD` reads a session, attaching it for a resume.

use std::sync::{Arc, Mutex};

use shared::ResumeFailure;

use super::{RedisStore, token_hash};
use crate::reliable::SessionRef;
use crate::reliable::journal::{Changes, Snapshot, Stored};
use crate::reliable::outcome::Attach;
use crate::reliable::session::Session;
use crate::reliable::store::Unwritten;

/// Writes what changed: refused (1) when the epoch or `last_out` moved on,
/// 0 when the session is gone, 2 when written. The client's pointer to
/// its session (unless it points to a newer one) and the user's set live
/// on with it.
pub(super) const PERSIST: &str = r"
local e = redis.call('HGET', KEYS[1], 'epoch')
if not e then return 0 end
if e ~= ARGV[1] or redis.call('HGET', KEYS[1], 'last_out') ~= ARGV[2] then return 1 end
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
return 2
";

/// Loads a session: `resume` checks the token hash and user, attaches it
/// (a new epoch) and returns it; `peek` returns it only while its client
/// is away, without attaching.
pub(super) const LOAD: &str = r"
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
  out = {'ok', tostring(epoch), f.node or '', f.attached or '0'}
else
  if f.attached == '1' then return {'attached'} end
  out = {'ok', f.epoch or '0', f.node or '', f.attached or '0'}
end
for _, k in ipairs({'user', 'owner', 'client_id', 'last_out', 'lost_through', 'last_in', 'pushes', 'bursts', 'detached_at'}) do
  out[#out + 1] = f[k] or ''
end
for _, v in ipairs(redis.call('LRANGE', KEYS[2], 0, -1)) do out[#out + 1] = v end
return out
";

impl RedisStore {
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
        let mut call = self.persist.prepare_invoke();
        call.key(self.key("sess", id))
            .key(self.key("hist", id))
            .key(self.key("client", &record.client_id))
            .key(user.map_or_else(String::new, |user| self.key("user", user)))
            .arg(epoch)
            .arg(base_last_out)
            .arg(self.ttl_ms(record.attached))
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
        let mut call = self.load.prepare_invoke();
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
                call.key(self.key("client", "-")).arg("peek");
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
    /// caller persists after sending: a resume meanwhile fences it).
    pub(super) async fn away(&self, id: &str) -> Option<SessionRef> {
        let (stored, _, _) = self.load(id, None).await.ok()?.ok()?;
        let session = Session::restore(stored, self.budget.clone(), self.limits)?;
        Some(Arc::new(Mutex::new(session)))
    }
}
