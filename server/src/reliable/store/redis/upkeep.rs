//! The node's upkeep of the sessions it wrote to Redis, run by the store's
//! sweep (every `min(--session-ttl, --history-max-age)/4`, at most 15 s):
//!
//! * the sessions attached here: what is unwritten is written, and the
//!   TTL of their keys refreshed by `REFRESH`, in batches, fenced by their
//!   epoch. A refresh that fails (Redis paused, a timeout) closes no
//!   connection until its session's keys are in their last
//!   [`ATTACHED_GRACE`], `--session-ttl` after the last confirmed write or
//!   refresh (so the client still finds its session when it resumes); a
//!   session another node resumed (its takeover command lost, say) is not
//!   kept alive from here, and its connection here closes with 4002; one
//!   Redis no longer holds (restarted empty) closes with 1013, so that the
//!   client resumes, fails with `unknown_session` and starts over;
//! * detaches Redis did not take (it was down, or an earlier write of the
//!   session had failed): retried by `DETACH` until Redis answers, fenced
//!   by the epoch of the connection that went away, so that the record
//!   does not stay "attached" (admin pushes to the client would answer 404
//!   until its resume or TTL);
//! * the sessions away this node wrote last (their detach, or a push to
//!   them): `AGE` drops their messages older than `--history-max-age`,
//!   reported as a `gap` on resume, as the memory store's sweep does. It
//!   stops when the client is back or the session is gone. A node that
//!   dies stops aging its sessions away: a resume still ages them (the
//!   same gap), only Redis holds them until their TTL.

use std::collections::HashMap;
use std::sync::{Arc, MutexGuard};
use std::time::Instant;

use super::{ATTACHED_GRACE, RedisStore};
use crate::clock::now_ms;
use crate::reliable::outcome::Unwritten;
use crate::reliable::{SessionRef, lock};

/// Sessions away this node aged at most per script call.
const AGE_BATCH: usize = 100;

/// Sessions attached here refreshed at most per script call: one slow or
/// failed call holds up, or gives up, no more than these.
const REFRESH_BATCH: usize = 100;

/// A detach Redis did not take yet.
#[derive(Debug, Clone, Copy)]
struct Pending {
    /// The epoch of the connection that went away.
    epoch: u64,
    /// When it went away (wall-clock ms).
    at_ms: u64,
    /// When it was first tried: given up after the session's TTL.
    since: Instant,
}

/// What the sweep keeps doing for sessions no longer attached here.
#[derive(Debug, Default)]
pub(super) struct Upkeep {
    pending: HashMap<String, Pending>,
    /// Sessions away this node wrote last, and when.
    aging: HashMap<String, Instant>,
}

impl RedisStore {
    fn upkeep(&self) -> MutexGuard<'_, Upkeep> {
        self.upkeep
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A resume on another node took session `id` over at `epoch`: the
    /// connection attached to it here, if any, closes.
    pub fn taken_over(&self, id: &str, epoch: u64) {
        let cached = self.map().get(id).cloned();
        if let Some(session) = cached {
            let mut guard = lock(&session);
            if guard.epoch().is_some_and(|ours| ours < epoch) {
                guard.lost_to(epoch);
                drop(guard);
                self.uncache(id, &session);
            }
        }
    }

    /// Drops `session` from the cache, unless a resume here replaced it
    /// meanwhile (the newer one stays).
    fn uncache(&self, id: &str, session: &SessionRef) {
        let mut map = self.map();
        if map.get(id).is_some_and(|s| Arc::ptr_eq(s, session)) {
            map.remove(id);
        }
    }

    /// Sessions cached here.
    fn cached(&self) -> Vec<(String, SessionRef)> {
        self.map()
            .iter()
            .map(|(id, s)| (id.clone(), s.clone()))
            .collect()
    }

    /// Session `id` was written away from here: aged from now on.
    pub(super) fn age_later(&self, id: &str) {
        self.upkeep().aging.insert(id.to_owned(), Instant::now());
    }

    /// The connection of `session` ended (it detached): written now, or,
    /// when Redis does not take it, retried by the sweep.
    pub async fn detached(&self, session: &SessionRef) {
        match self.persist(session).await {
            Ok(()) | Err(Unwritten::TakenOver | Unwritten::Gone | Unwritten::Raced) => return,
            Err(Unwritten::Unavailable | Unwritten::Unconfirmed) => {}
        }
        let (id, epoch, at_ms) = {
            let guard = lock(session);
            (guard.id().to_owned(), guard.epoch(), guard.snapshot())
        };
        let (Some(epoch), false) = (epoch, at_ms.attached) else {
            return;
        };
        let pending = Pending {
            epoch,
            at_ms: at_ms.detached_at_ms,
            since: Instant::now(),
        };
        self.upkeep().pending.insert(id, pending);
        // Perhaps only an earlier write failed and Redis answers now.
        self.retry_detaches().await;
    }

    /// One pass of the sweep (see the module's doc).
    pub(super) async fn upkeep_now(&self) {
        let mut attached = Vec::new();
        for (id, session) in self.cached() {
            let _ = self.persist(&session).await;
            if lock(&session).is_away() {
                self.uncache(&id, &session);
            } else {
                attached.push((id, session));
            }
        }
        self.refresh(&attached).await;
        self.retry_detaches().await;
        self.age().await;
    }

    /// Refreshes the TTL of the sessions attached here, if they are still
    /// theirs, [`REFRESH_BATCH`] per call; closes the connections of those
    /// that are not. A call that fails gives up only the sessions whose
    /// keys are in their last [`ATTACHED_GRACE`]: the others' keys outlive
    /// a pause of Redis, and the next sweep refreshes them. After a failed
    /// call the sweep calls Redis no more and checks the rest the same way,
    /// so that a sweep of many batches lasts one command timeout, not one
    /// per batch, and every session is checked once per sweep period.
    async fn refresh(&self, attached: &[(String, SessionRef)]) {
        let mut batches = attached.chunks(REFRESH_BATCH);
        for batch in batches.by_ref() {
            if !self.refresh_batch(batch).await {
                break;
            }
        }
        let rest: Vec<(String, SessionRef)> = batches.flatten().cloned().collect();
        if !rest.is_empty() {
            self.give_up_overdue(&rest);
        }
    }

    /// Redis did not confirm a refresh of `sessions`: those whose keys are
    /// in their grace period close with 1013 (the client resumes elsewhere
    /// while the keys still hold its session); the others wait for the
    /// next sweep.
    fn give_up_overdue(&self, sessions: &[(String, SessionRef)]) {
        let mut lost = 0;
        for (id, session) in sessions {
            let mut guard = lock(session);
            if guard.unconfirmed_for(Instant::now()) >= self.limits.ttl {
                guard.store_lost(Unwritten::Unavailable);
                drop(guard);
                self.uncache(id, session);
                lost += 1;
            }
        }
        tracing::warn!(
            "the session store did not refresh {} session(s): closing the {lost} whose keys are in their grace period with 1013",
            sessions.len()
        );
    }

    /// One `REFRESH` call; false when Redis did not answer it.
    async fn refresh_batch(&self, batch: &[(String, SessionRef)]) -> bool {
        let mut call = self.scripts.refresh.prepare_invoke();
        call.arg(self.ttl_ms(true)).arg(self.node.prefix());
        for (id, session) in batch {
            let (client_id, user, epoch) = {
                let guard = lock(session);
                (
                    guard.client_id().to_owned(),
                    guard.user().cloned(),
                    guard.epoch(),
                )
            };
            call.key(self.key("sess", id))
                .key(self.key("hist", id))
                .key(self.key("client", &client_id))
                .key(user.map_or_else(String::new, |user| self.key("user", &user)))
                .arg(epoch.unwrap_or(0));
        }
        let sent = Instant::now();
        let mut conn = self.node.connection();
        let Ok(answers) = self.run(call.invoke_async::<Vec<i64>>(&mut conn)).await else {
            self.give_up_overdue(batch);
            return false;
        };
        for ((id, session), answer) in batch.iter().zip(answers) {
            match answer {
                1 => {
                    tracing::info!(
                        "a session attached here was resumed elsewhere: closing with 4002"
                    );
                    lock(session).lost_to(u64::MAX);
                }
                0 => {
                    tracing::warn!(
                        "the session store lost a session attached here: closing with 1013"
                    );
                    lock(session).store_lost(Unwritten::Gone);
                }
                _ => {
                    lock(session).confirmed(sent);
                    continue;
                }
            }
            self.uncache(id, session);
        }
        true
    }

    /// Writes the detaches Redis did not take; gives up on those whose
    /// session has expired anyway.
    async fn retry_detaches(&self) {
        let pending: Vec<(String, Pending)> = self
            .upkeep()
            .pending
            .iter()
            .map(|(id, p)| (id.clone(), *p))
            .collect();
        let lifetime = self.limits.ttl + ATTACHED_GRACE;
        let mut down = false;
        for (id, pending) in pending {
            let left = pending
                .at_ms
                .saturating_add(self.ttl_ms(false))
                .saturating_sub(now_ms())
                .clamp(1, self.ttl_ms(false));
            let mut call = self.scripts.detach.prepare_invoke();
            call.key(self.key("sess", &id))
                .key(self.key("hist", &id))
                .arg(pending.epoch)
                .arg(pending.at_ms)
                .arg(left)
                .arg(self.node.prefix())
                .arg(&id);
            let mut conn = self.node.connection();
            // After one that Redis did not take, the rest wait for the
            // next sweep (one command timeout per sweep, not one each).
            let done = if down {
                pending.since.elapsed() > lifetime
            } else {
                match self.run(call.invoke_async::<i64>(&mut conn)).await {
                    Ok(written) => {
                        if written == 2 {
                            self.age_later(&id);
                        }
                        true
                    }
                    Err(_) => {
                        down = true;
                        pending.since.elapsed() > lifetime
                    }
                }
            };
            if done {
                let mut upkeep = self.upkeep();
                // Unless a newer detach of it is pending meanwhile.
                if upkeep
                    .pending
                    .get(&id)
                    .is_some_and(|p| p.since == pending.since)
                {
                    upkeep.pending.remove(&id);
                }
            }
        }
    }

    /// Drops the messages older than `--history-max-age` of the sessions
    /// away this node wrote last.
    async fn age(&self) {
        let ttl = self.limits.ttl;
        let ids: Vec<String> = {
            let mut upkeep = self.upkeep();
            upkeep.aging.retain(|_, since| since.elapsed() < ttl);
            upkeep.aging.keys().cloned().collect()
        };
        let age = u64::try_from(self.limits.history_max_age.as_millis()).unwrap_or(u64::MAX);
        let cutoff = now_ms().saturating_sub(age);
        for ids in ids.chunks(AGE_BATCH) {
            let mut call = self.scripts.age.prepare_invoke();
            for id in ids {
                call.key(self.key("sess", id)).key(self.key("hist", id));
            }
            call.arg(cutoff);
            let mut conn = self.node.connection();
            let Ok(away) = self.run(call.invoke_async::<Vec<i64>>(&mut conn)).await else {
                return;
            };
            let mut upkeep = self.upkeep();
            for (id, away) in ids.iter().zip(away) {
                if away == 0 {
                    upkeep.aging.remove(id);
                }
            }
        }
    }
}
