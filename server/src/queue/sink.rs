//! The queue as the hub's sink for the connection's channels: a frame is
//! written into the socket at once when the connection is idle (see
//! `serve::link`), else queued within the bounds; one that does not fit
//! closes the connection as a slow consumer.

use std::sync::Weak;

use axum::extract::ws::Message;

use super::{Outbound, Shared, TrySendError, message_len};
use crate::channels::hub::Sink;
use crate::metrics::Metrics;
use crate::registry::CloseRequest;
use crate::serve::{DIRECT_MAX, Wrote};

impl Shared {
    /// Sends a channel's `frame`: written into the socket now if the
    /// connection is idle (nothing queued, its task waiting), else queued
    /// if there is room. `Ok(true)`: written (in part at least: the rest is
    /// queued for the writer to flush, see [`Outbound::Rest`]). `Full`
    /// fails the queue for channel frames for good.
    fn try_send_frame(&self, frame: &Message) -> Result<bool, TrySendError> {
        let mut state = self.lock();
        if state.closed || state.failed {
            return Err(TrySendError::Closed);
        }
        if let Some(link) = &self.link
            && state.items.is_empty()
            && state.reserved == 0
            && message_len(frame) <= DIRECT_MAX
        {
            match link.write_frame(frame) {
                Wrote::Nothing => {}
                wrote => {
                    state.written += 1;
                    if let Wrote::Part { rest } = wrote {
                        self.push(state, Outbound::Rest { len: rest }, rest);
                    }
                    return Ok(true);
                }
            }
        }
        let item = Outbound::Frame(frame.clone());
        let len = item.queued_len();
        if !(self.slot_free(&state) && self.bytes_fit(&state, len)) {
            state.failed = true;
            return Err(TrySendError::Full);
        }
        self.push(state, item, len);
        Ok(false)
    }
}

/// The connection as a channel's subscriber: a frame that does not fit
/// closes it (1013, slow consumer) rather than leave a hole, and no later
/// one gets in; its client comes back and recovers by offset, with
/// nothing lost.
impl Sink<Message> for Shared {
    fn send(&self, frame: &Message) -> bool {
        match self.try_send_frame(frame) {
            Ok(false) => true,
            // Written by this call (the writer counts what it writes; the
            // queue counted this one for the client).
            Ok(true) => {
                Metrics::add(&self.metrics.messages_out, 1);
                Metrics::add(&self.metrics.bytes_out, message_len(frame) as u64);
                true
            }
            Err(TrySendError::Full) => {
                if let Some(client) = self.client.get().and_then(Weak::upgrade) {
                    client.request_close(CloseRequest {
                        code: shared::close_code::TRY_AGAIN_LATER,
                        reason: crate::connection::end::SLOW_CONSUMER.into(),
                    });
                }
                false
            }
            Err(TrySendError::Closed) => false,
        }
    }

    fn send_own(&self, frame: &Message) {
        let state = self.lock();
        if state.closed || state.failed {
            return;
        }
        let item = Outbound::Frame(frame.clone());
        let len = item.queued_len();
        self.push(state, item, len);
    }
}
