//! The queue's bounds, wake-ups and counts.

use std::sync::atomic::Ordering::Relaxed;

use super::*;

fn frame(len: usize) -> Outbound {
    Outbound::Frame(Message::Binary(vec![0; len].into()))
}

#[tokio::test]
async fn a_wake_ends_the_receivers_wait_with_nothing_and_is_not_a_sender() {
    let (tx, mut rx) = channel(10, 100, Arc::new(Metrics::default()));
    let wake = tx.waker();
    let mut got = Vec::new();
    // Woken before it waits: the next wait returns at once, empty.
    wake.wake();
    assert_eq!(rx.recv_many(&mut got, 8).await, 0);
    // Woken while it waits.
    let waiting = tokio::spawn(async move {
        let mut got = Vec::new();
        let n = rx.recv_many(&mut got, 8).await;
        (n, rx)
    });
    tokio::task::yield_now().await;
    wake.wake();
    let (n, mut rx) = waiting.await.unwrap();
    assert_eq!(n, 0);
    // An item and a wake together: the item is taken.
    tx.try_send(frame(1)).unwrap();
    wake.wake();
    assert_eq!(rx.recv_many(&mut got, 8).await, 1);
    // The wake does not keep the queue open once the senders are gone.
    drop(tx);
    assert_eq!(rx.recv_many(&mut got, 8).await, 0);
    assert!(got.len() == 1);
}

#[tokio::test]
async fn one_message_enters_an_empty_queue_and_the_bound_holds_behind_it() {
    let metrics = Arc::new(Metrics::default());
    let (tx, mut rx) = channel(10, 100, metrics.clone());
    tx.try_send(frame(500)).unwrap();
    assert_eq!(tx.try_send(frame(1)), Err(TrySendError::Full));
    assert!(matches!(tx.try_reserve(), Err(TrySendError::Full)));
    assert_eq!(metrics.send_queue_bytes.load(Relaxed), 500);
    let item = rx.try_recv().unwrap();
    // Taken but not written: still counted.
    assert_eq!(tx.queued_bytes(), 500);
    rx.release(item.queued_len());
    assert_eq!(tx.queued_bytes(), 0);
    tx.try_send(frame(60)).unwrap();
    tx.try_send(frame(40)).unwrap();
    assert_eq!(tx.try_send(frame(1)), Err(TrySendError::Full));
    assert_eq!(metrics.send_queue_bytes.load(Relaxed), 100);
}

#[tokio::test]
async fn a_reserved_slot_admits_any_size_while_under_the_bound() {
    let metrics = Arc::new(Metrics::default());
    let (tx, _rx) = channel(10, 100, metrics.clone());
    tx.try_send(frame(50)).unwrap();
    tx.try_reserve().unwrap().send(frame(1000));
    assert_eq!(tx.queued_bytes(), 1050);
    assert!(matches!(tx.try_reserve(), Err(TrySendError::Full)));
}

#[tokio::test]
async fn the_connections_own_replies_go_in_whatever_the_bound() {
    let metrics = Arc::new(Metrics::default());
    let (tx, mut rx) = channel(2, 100, metrics.clone());
    assert!(tx.has_room() && tx.is_empty());
    tx.force_send(frame(80));
    tx.force_send(frame(80));
    tx.force_send(frame(80));
    // Over both bounds: counted, and no one else gets in.
    assert!(!tx.has_room() && !tx.is_empty());
    assert_eq!(tx.try_send(frame(1)), Err(TrySendError::Full));
    assert_eq!(metrics.send_queue_bytes.load(Relaxed), 240);
    let mut batch = Vec::new();
    assert_eq!(rx.recv_many(&mut batch, 10).await, 3);
    rx.release(240);
    assert!(tx.has_room() && tx.is_empty());
    drop(rx);
    // Dropped once the receiver is gone, and not counted.
    tx.force_send(frame(80));
    assert_eq!(metrics.send_queue_bytes.load(Relaxed), 0);
}

#[tokio::test]
async fn bytes_the_writer_holds_count_until_released() {
    let metrics = Arc::new(Metrics::default());
    let (tx, rx) = channel(10, 100, metrics.clone());
    rx.hold(150);
    assert_eq!(rx.queued_bytes(), 150);
    assert_eq!(metrics.send_queue_bytes.load(Relaxed), 150);
    // Over the bound: no one else gets in, and the connection reads no more.
    assert_eq!(tx.try_send(frame(1)), Err(TrySendError::Full));
    assert!(!tx.has_room());
    rx.release(150);
    assert!(tx.has_room());
    tx.try_send(frame(1)).unwrap();
    // Still held when the receiver goes: out of the gauge with it.
    rx.hold(50);
    drop(rx);
    assert_eq!(metrics.send_queue_bytes.load(Relaxed), 0);
}

#[tokio::test]
async fn the_receivers_drop_takes_what_is_left_out_of_the_gauge() {
    let metrics = Arc::new(Metrics::default());
    let (tx, rx) = channel(10, 0, metrics.clone());
    tx.try_send(frame(70)).unwrap();
    tx.try_send(frame(30)).unwrap();
    assert_eq!(metrics.send_queue_bytes.load(Relaxed), 100);
    drop(rx);
    assert_eq!(metrics.send_queue_bytes.load(Relaxed), 0);
    assert_eq!(tx.try_send(frame(1)), Err(TrySendError::Closed));
    assert_eq!(metrics.send_queue_bytes.load(Relaxed), 0);
}

#[tokio::test]
async fn slots_count_items_and_permits_until_received() {
    let metrics = Arc::new(Metrics::default());
    let (tx, mut rx) = channel(2, 0, metrics);
    let permit = tx.try_reserve().unwrap();
    tx.try_send(frame(1)).unwrap();
    assert_eq!((tx.capacity(), tx.len()), (0, 2));
    assert_eq!(tx.try_send(frame(1)), Err(TrySendError::Full));
    // An unused permit gives its slot back.
    drop(permit);
    assert_eq!(tx.capacity(), 1);
    tx.try_reserve().unwrap().send(frame(2));
    let mut batch = Vec::new();
    assert_eq!(rx.recv_many(&mut batch, 10).await, 2);
    // Received: the slots are free, the bytes are counted until released.
    assert_eq!((tx.capacity(), tx.queued_bytes()), (2, 3));
}

#[tokio::test]
async fn a_waiting_receiver_wakes_on_a_message_and_ends_with_the_last_sender() {
    let metrics = Arc::new(Metrics::default());
    let (tx, mut rx) = channel(4, 0, metrics);
    let tx2 = tx.clone();
    let receiving = tokio::spawn(async move {
        let mut batch = Vec::new();
        let first = rx.recv_many(&mut batch, 10).await;
        let second = rx.recv_many(&mut batch, 10).await;
        (first, second)
    });
    tokio::task::yield_now().await;
    tx.try_send(frame(5)).unwrap();
    drop(tx);
    tokio::task::yield_now().await;
    assert!(!receiving.is_finished(), "one sender is left");
    drop(tx2);
    assert_eq!(receiving.await.unwrap(), (1, 0));
}
