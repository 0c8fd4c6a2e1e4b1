//! The bounded FIFO of messages sent while the socket is not open.

use std::collections::VecDeque;

use crate::config::Overflow;
use crate::message::{Message, SendError};

/// A bounded FIFO with an optional byte limit and an overflow policy.
#[derive(Debug, Clone)]
pub struct Queue {
    items: VecDeque<Message>,
    bytes: usize,
    capacity: usize,
    max_bytes: Option<usize>,
    overflow: Overflow,
    /// Messages and bytes held elsewhere that count against the limits
    /// (reliable mode's unacknowledged messages).
    reserved: (usize, usize),
}

impl Queue {
    /// An empty queue.
    pub fn new(capacity: usize, max_bytes: Option<usize>, overflow: Overflow) -> Self {
        Self {
            items: VecDeque::with_capacity(capacity.min(1024)),
            bytes: 0,
            capacity,
            max_bytes,
            overflow,
            reserved: (0, 0),
        }
    }

    /// Counts `count` messages of `bytes` held elsewhere against the limits.
    pub fn set_reserved(&mut self, count: usize, bytes: usize) {
        self.reserved = (count, bytes);
    }

    /// Whether a message of `size` bytes fits beside what is queued and reserved.
    pub fn has_room(&self, size: usize) -> bool {
        self.items.len() + self.reserved.0 < self.capacity
            && self
                .max_bytes
                .is_none_or(|max| self.bytes + self.reserved.1 + size <= max)
    }

    /// Queues `message`; returns the messages dropped to make room (only with
    /// [`Overflow::DropOldest`]).
    ///
    /// # Errors
    ///
    /// [`SendError::TooLarge`] when the message alone exceeds the byte limit;
    /// [`SendError::QueueFull`] when it does not fit and the policy is
    /// [`Overflow::RejectNew`], or the capacity is 0.
    pub fn push(&mut self, message: Message) -> Result<Vec<Message>, SendError> {
        let size = message.len();
        if self.max_bytes.is_some_and(|max| size > max) {
            return Err(SendError::TooLarge(message));
        }
        if self.capacity == 0 {
            return Err(SendError::QueueFull(message));
        }
        let fits = |q: &Self| q.has_room(size);
        // What is reserved cannot be dropped: if it alone leaves no room, refuse.
        let fits_when_empty = self.reserved.0 < self.capacity
            && self
                .max_bytes
                .is_none_or(|max| self.reserved.1 + size <= max);
        let mut dropped = Vec::new();
        if !fits(self) {
            match self.overflow {
                Overflow::RejectNew => return Err(SendError::QueueFull(message)),
                Overflow::DropOldest if !fits_when_empty => {
                    return Err(SendError::QueueFull(message));
                }
                Overflow::DropOldest => {
                    while !fits(self) {
                        match self.pop() {
                            Some(old) => dropped.push(old),
                            None => break,
                        }
                    }
                }
            }
        }
        self.bytes += size;
        self.items.push_back(message);
        Ok(dropped)
    }

    /// Takes the oldest message.
    pub fn pop(&mut self) -> Option<Message> {
        let message = self.items.pop_front()?;
        self.bytes -= message.len();
        Some(message)
    }

    /// Puts a message back at the head (a flush that could not send it).
    pub fn unpop(&mut self, message: Message) {
        self.bytes += message.len();
        self.items.push_front(message);
    }

    /// Puts a message back at position `index` from the head (at the tail
    /// if the queue is shorter): the `index`-th of several handed back.
    pub fn put_back_at(&mut self, index: usize, message: Message) {
        self.bytes += message.len();
        self.items.insert(index.min(self.items.len()), message);
    }

    /// Changes the capacity; returns the newest messages that no longer fit,
    /// so the caller can report them (nothing is dropped silently).
    pub fn set_capacity(&mut self, capacity: usize) -> Vec<Message> {
        self.capacity = capacity;
        let mut evicted = Vec::new();
        while self.items.len() > capacity {
            if let Some(message) = self.items.pop_back() {
                self.bytes -= message.len();
                evicted.push(message);
            }
        }
        evicted.reverse();
        evicted
    }

    /// Takes every queued message out, oldest first.
    pub fn take_all(&mut self) -> Vec<Message> {
        self.bytes = 0;
        self.items.drain(..).collect()
    }

    /// Number of queued messages.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// Whether nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Queued bytes.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// The capacity in messages.
    pub fn capacity(&self) -> usize {
        self.capacity
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(s: &str) -> Message {
        Message::Text(s.into())
    }

    fn drain(q: &mut Queue) -> Vec<Message> {
        std::iter::from_fn(|| q.pop()).collect()
    }

    #[test]
    fn reserved_messages_count_against_the_limits() {
        let mut q = Queue::new(3, Some(10), Overflow::RejectNew);
        q.set_reserved(2, 4);
        assert!(q.has_room(6));
        assert!(!q.has_room(7));
        assert_eq!(q.push(text("a")), Ok(vec![]));
        assert!(matches!(q.push(text("b")), Err(SendError::QueueFull(_))));
        // Dropping the oldest cannot make room that the reserve takes.
        let mut q = Queue::new(2, None, Overflow::DropOldest);
        q.set_reserved(2, 0);
        assert!(matches!(q.push(text("a")), Err(SendError::QueueFull(_))));
        q.set_reserved(1, 0);
        assert_eq!(q.push(text("a")), Ok(vec![]));
        assert_eq!(q.push(text("b")), Ok(vec![text("a")]));
    }

    #[test]
    fn keeps_fifo_order() {
        let mut q = Queue::new(10, None, Overflow::RejectNew);
        for s in ["a", "b", "c"] {
            assert_eq!(q.push(text(s)), Ok(vec![]));
        }
        assert_eq!(drain(&mut q), vec![text("a"), text("b"), text("c")]);
        assert!(q.is_empty());
    }

    #[test]
    fn reject_new_refuses_and_gives_the_message_back() {
        let mut q = Queue::new(2, None, Overflow::RejectNew);
        q.push(text("a")).unwrap();
        q.push(text("b")).unwrap();
        assert_eq!(q.push(text("c")), Err(SendError::QueueFull(text("c"))));
        assert_eq!(drain(&mut q), vec![text("a"), text("b")]);
    }

    #[test]
    fn drop_oldest_makes_room_and_reports_what_it_dropped() {
        let mut q = Queue::new(2, None, Overflow::DropOldest);
        q.push(text("a")).unwrap();
        q.push(text("b")).unwrap();
        assert_eq!(q.push(text("c")), Ok(vec![text("a")]));
        assert_eq!(drain(&mut q), vec![text("b"), text("c")]);
    }

    #[test]
    fn capacity_zero_never_queues() {
        for overflow in [Overflow::RejectNew, Overflow::DropOldest] {
            let mut q = Queue::new(0, None, overflow);
            assert_eq!(q.push(text("a")), Err(SendError::QueueFull(text("a"))));
        }
    }

    #[test]
    fn the_byte_limit_counts_payload_bytes() {
        let mut q = Queue::new(100, Some(5), Overflow::RejectNew);
        q.push(text("abc")).unwrap();
        assert_eq!(q.bytes(), 3);
        assert_eq!(q.push(text("def")), Err(SendError::QueueFull(text("def"))));
        q.push(Message::Binary(vec![1, 2])).unwrap();
        assert_eq!(q.bytes(), 5);
        assert_eq!(
            q.push(text("123456")),
            Err(SendError::TooLarge(text("123456")))
        );
        q.pop();
        assert_eq!(q.bytes(), 2);

        let mut q = Queue::new(100, Some(5), Overflow::DropOldest);
        q.push(text("abc")).unwrap();
        q.push(text("de")).unwrap();
        assert_eq!(q.push(text("fg")), Ok(vec![text("abc")]));
        assert_eq!(q.bytes(), 4);
        // Too large is refused whatever the policy: dropping would not help.
        assert_eq!(
            q.push(text("123456")),
            Err(SendError::TooLarge(text("123456")))
        );
    }

    #[test]
    fn capacity_changes_at_run_time_and_evictions_are_returned() {
        let mut q = Queue::new(1, None, Overflow::RejectNew);
        q.push(text("a")).unwrap();
        assert!(q.push(text("b")).is_err());
        assert_eq!(q.set_capacity(3), vec![]);
        q.push(text("b")).unwrap();
        q.push(text("c")).unwrap();
        assert_eq!(q.set_capacity(1), vec![text("b"), text("c")]);
        assert_eq!(q.len(), 1);
        assert_eq!(q.bytes(), 1);
        assert_eq!(drain(&mut q), vec![text("a")]);
    }

    #[test]
    fn take_all_and_unpop() {
        let mut q = Queue::new(5, None, Overflow::RejectNew);
        q.push(text("a")).unwrap();
        q.push(text("b")).unwrap();
        let first = q.pop().unwrap();
        q.unpop(first);
        assert_eq!(q.take_all(), vec![text("a"), text("b")]);
        assert_eq!(q.bytes(), 0);
    }
}
