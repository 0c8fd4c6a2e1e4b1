//! Channel streams in Redis, shared by every node: each publication and
//! each recovery is one Lua script, so no other node's command runs in
//! between and offsets have no holes.
//!
//! Keys, under `--redis-prefix`, each with a TTL:
//!
//! | key | what | TTL |
//! |---|---|---|
//! | `ch:{channel}:meta` | hash: `epoch`, `offset` | [`META_TTL`], renewed by each publication and recovery |
//! | `ch:{channel}:hist` | stream: one entry per kept publication, id `{offset}-0`, fields `d` (data), `i` (publisher, JSON or empty), `t` (Redis time, ms) | the namespace's `history_ttl`, renewed by each publication |
//! | `ch:{channel}:id:{id}` | `{epoch}:{offset}` of the publication an id made | the dedup window |
//!
//! A publication is announced with plain `PUBLISH` on `{prefix}ch:{channel}`
//! (payload: `epoch\noffset\ninfo\ndata`; the JSON of `info` and `data` is
//! compact, so it has no raw newline). Plain rather than sharded pub/sub:
//! the server talks to one Redis, not a Redis Cluster, where `SPUBLISH`
//! would only add a second subscription API; pub/sub drops what a node
//! misses while disconnected either way, which offsets and the history
//! make up for.
//!
//! The epoch is drawn by the node that finds no `meta` (first use, or Redis
//! lost its data or the key expired): offsets then start again from 1 under
//! the new epoch, and the old history is dropped with it.

use std::sync::Arc;
use std::time::Duration;

use redis::Script;

use super::{
    Position, Publication, PublishRequest, Published, PublisherInfo, Recovery, StreamError,
};
use crate::channels::namespace::Namespace;
use crate::reliable::Backend;

/// How long a channel's epoch and latest offset outlive its last
/// publication or recovery: a quiet channel keeps its epoch for a day.
pub const META_TTL: Duration = Duration::from_secs(24 * 3600);

/// Shared by the scripts: Redis's clock, and the history's age trim.
macro_rules! prelude {
    () => {
        r"
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local function trim_age(hist, ttl, now)
  while true do
    local head = redis.call('XRANGE', hist, '-', '+', 'COUNT', 1)
    if #head == 0 then return end
    local f = head[1][2]
    local t = 0
    for k = 1, #f, 2 do if f[k] == 't' then t = tonumber(f[k + 1]) end end
    if now - t < tonumber(ttl) then return end
    redis.call('XDEL', hist, head[1][1])
  end
end
local function meta_of(meta, hist, new_epoch, meta_ttl)
  local epoch = redis.call('HGET', meta, 'epoch')
  if not epoch then
    epoch = new_epoch
    redis.call('HSET', meta, 'epoch', epoch, 'offset', 0)
    redis.call('DEL', hist)
  end
  redis.call('PEXPIRE', meta, meta_ttl)
  return epoch
end
"
    };
}

/// Publishes: KEYS `meta`, `hist`, the id's key (or ''), ARGV the pub/sub
/// channel, the data, the publisher (JSON or ''), a new epoch (used if
/// there is none), the history's size and TTL, the dedup window, the meta
/// TTL. Answers `{epoch, offset, 1}` for a new publication, `{epoch,
/// offset, 0}` for an id seen within the window.
const PUBLISH: &str = concat!(
    prelude!(),
    r"
local meta, hist, idkey = KEYS[1], KEYS[2], KEYS[3]
local size, ttl = tonumber(ARGV[5]), ARGV[6]
if idkey ~= '' then
  local seen = redis.call('GET', idkey)
  if seen then
    local at = string.find(seen, ':', 1, true)
    local epoch = string.sub(seen, 1, at - 1)
    if epoch == redis.call('HGET', meta, 'epoch') then
      return {epoch, tonumber(string.sub(seen, at + 1)), 0}
    end
  end
end
local now = now_ms()
local epoch = meta_of(meta, hist, ARGV[4], ARGV[8])
local offset = redis.call('HINCRBY', meta, 'offset', 1)
if size > 0 then
  redis.call('XADD', hist, 'MAXLEN', size, offset .. '-0', 'd', ARGV[2], 'i', ARGV[3], 't', now)
  redis.call('PEXPIRE', hist, ttl)
  trim_age(hist, ttl, now)
end
if idkey ~= '' then
  redis.call('SET', idkey, epoch .. ':' .. offset, 'PX', ARGV[7])
end
redis.call('PUBLISH', ARGV[1], epoch .. '\n' .. offset .. '\n' .. ARGV[3] .. '\n' .. ARGV[2])
return {epoch, offset, 1}
",
);

/// Where a channel is and what follows an offset: KEYS `meta`, `hist`,
/// ARGV a new epoch, the meta TTL, the history's TTL, the offset after
/// which to read (-1: none). Answers `{epoch, offset, first kept, entries}`
/// where the first kept is `offset + 1` when the history is empty.
const RECOVER: &str = concat!(
    prelude!(),
    r"
local meta, hist = KEYS[1], KEYS[2]
local epoch = meta_of(meta, hist, ARGV[1], ARGV[2])
trim_age(hist, ARGV[3], now_ms())
local offset = tonumber(redis.call('HGET', meta, 'offset'))
local head = redis.call('XRANGE', hist, '-', '+', 'COUNT', 1)
local first = offset + 1
if #head > 0 then first = tonumber(string.match(head[1][1], '^(%d+)')) end
local entries = {}
local after = tonumber(ARGV[4])
if after >= 0 and after < offset then
  entries = redis.call('XRANGE', hist, '(' .. after .. '-0', '+')
end
return {epoch, offset, first, entries}
",
);

/// The channel streams in Redis.
pub struct RedisStreams {
    node: Arc<dyn Backend>,
    dedup_window: Duration,
    publish: Script,
    recover: Script,
}

impl std::fmt::Debug for RedisStreams {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStreams").finish_non_exhaustive()
    }
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis())
        .unwrap_or(u64::MAX)
        .max(1)
}

fn new_epoch() -> String {
    format!("{:016x}", rand::random::<u64>())
}

/// One Redis call of the channels (streams, presence) on `node`, within
/// its command timeout: an error or a timeout is counted for `/metrics`
/// and answered [`StreamError::Unavailable`].
pub(crate) async fn bounded<T>(
    node: &dyn Backend,
    what: &str,
    call: impl Future<Output = redis::RedisResult<T>>,
) -> Result<T, StreamError> {
    match tokio::time::timeout(node.command_timeout(), call).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(err)) => {
            node.count_redis_error();
            tracing::debug!("{what}: {err}");
            Err(StreamError::Unavailable)
        }
        Err(_) => {
            node.count_redis_error();
            Err(StreamError::Unavailable)
        }
    }
}

/// One history entry of the stream: `[id, [field, value, ...]]`.
type Entry = (String, Vec<String>);

impl RedisStreams {
    /// Streams on `node`'s Redis, answering a repeated id for `dedup_window`.
    pub fn new(node: Arc<dyn Backend>, dedup_window: Duration) -> Self {
        Self {
            node,
            dedup_window,
            publish: Script::new(PUBLISH),
            recover: Script::new(RECOVER),
        }
    }

    fn key(&self, channel: &str, what: &str) -> String {
        format!("{}ch:{channel}:{what}", self.node.prefix())
    }

    /// The pub/sub channel of `channel`'s publications.
    pub fn pubsub_channel(&self, channel: &str) -> String {
        format!("{}ch:{channel}", self.node.prefix())
    }

    async fn run<T>(
        &self,
        call: impl Future<Output = redis::RedisResult<T>>,
    ) -> Result<T, StreamError> {
        bounded(&*self.node, "channel streams", call).await
    }

    /// Publishes to `request.channel` in one script.
    ///
    /// # Errors
    ///
    /// [`StreamError::Unavailable`] when Redis does not answer in time (the
    /// publication may or may not have been made: a retry with the same id
    /// tells).
    pub async fn publish(
        &self,
        request: PublishRequest,
        namespace: &Namespace,
    ) -> Result<Published, StreamError> {
        let info = request.info.as_ref().map(info_json).unwrap_or_default();
        let mut call = self.publish.prepare_invoke();
        call.key(self.key(&request.channel, "meta"))
            .key(self.key(&request.channel, "hist"))
            .key(request.id.as_ref().map_or_else(String::new, |id| {
                self.key(&request.channel, &format!("id:{id}"))
            }))
            .arg(self.pubsub_channel(&request.channel))
            .arg(&request.data)
            .arg(&info)
            .arg(new_epoch())
            .arg(namespace.history_size)
            .arg(millis(namespace.history_ttl))
            .arg(millis(self.dedup_window))
            .arg(millis(META_TTL));
        let mut conn = self.node.connection();
        let (epoch, offset, new): (String, u64, u8) =
            self.run(call.invoke_async(&mut conn)).await?;
        let publication = (new == 1).then(|| {
            Arc::new(Publication {
                offset,
                data: request.data,
                info: request.info,
            })
        });
        Ok(Published {
            epoch,
            offset,
            publication,
        })
    }

    /// Where `channel` is, and what a subscriber at `since` missed.
    ///
    /// # Errors
    ///
    /// [`StreamError::Unavailable`] when Redis does not answer in time.
    pub async fn recover(
        &self,
        channel: &str,
        since: Option<&Position>,
        namespace: &Namespace,
    ) -> Result<(Position, Recovery), StreamError> {
        let after: i64 = since.map_or(-1, |s| i64::try_from(s.offset).unwrap_or(i64::MAX));
        let (epoch, offset, first, entries) = self.read(channel, after, namespace).await?;
        let position = Position {
            epoch: epoch.clone(),
            offset,
        };
        let recovery = Recovery::of(since, &epoch, first, || {
            entries.into_iter().filter_map(publication_of).collect()
        });
        Ok((position, recovery))
    }

    /// The last `limit` publications kept for `channel`, oldest first.
    ///
    /// # Errors
    ///
    /// [`StreamError::Unavailable`] when Redis does not answer in time.
    pub async fn history(
        &self,
        channel: &str,
        limit: usize,
        namespace: &Namespace,
    ) -> Result<Vec<Arc<Publication>>, StreamError> {
        let (_, _, _, entries) = self.read(channel, 0, namespace).await?;
        let skip = entries.len().saturating_sub(limit);
        Ok(entries
            .into_iter()
            .skip(skip)
            .filter_map(publication_of)
            .collect())
    }

    async fn read(
        &self,
        channel: &str,
        after: i64,
        namespace: &Namespace,
    ) -> Result<(String, u64, u64, Vec<Entry>), StreamError> {
        let mut call = self.recover.prepare_invoke();
        call.key(self.key(channel, "meta"))
            .key(self.key(channel, "hist"))
            .arg(new_epoch())
            .arg(millis(META_TTL))
            .arg(millis(namespace.history_ttl))
            .arg(after);
        let mut conn = self.node.connection();
        self.run(call.invoke_async(&mut conn)).await
    }
}

/// The publisher as JSON: `{"client_id":…,"user":…}`.
pub(crate) fn info_json(info: &PublisherInfo) -> String {
    let mut map = serde_json::Map::new();
    map.insert("client_id".into(), info.client_id.clone().into());
    if let Some(user) = &info.user {
        map.insert("user".into(), user.clone().into());
    }
    serde_json::Value::Object(map).to_string()
}

/// A history entry as a publication (`None` for one that is not ours).
fn publication_of((id, fields): Entry) -> Option<Arc<Publication>> {
    let offset = id.split('-').next()?.parse().ok()?;
    let mut data = None;
    let mut info = None;
    for pair in fields.chunks_exact(2) {
        match pair[0].as_str() {
            "d" => data = Some(pair[1].clone()),
            "i" if !pair[1].is_empty() => info = Some(info_from_json(&pair[1])?),
            _ => {}
        }
    }
    Some(Arc::new(Publication {
        offset,
        data: data?,
        info,
    }))
}

/// The publisher from its JSON ([`info_json`]).
pub(crate) fn info_from_json(json: &str) -> Option<PublisherInfo> {
    let value: serde_json::Value = serde_json::from_str(json).ok()?;
    Some(PublisherInfo {
        client_id: value["client_id"].as_str()?.to_owned(),
        user: value["user"].as_str().map(str::to_owned),
    })
}
