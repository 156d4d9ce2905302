use super::*;

fn budget(per_second: f64, burst: u32, max_wait_ms: u64) -> Arc<Budget> {
    let settings = RateLimit {
        per_second,
        burst,
        max_queue_wait: Duration::from_millis(max_wait_ms),
    };
    Budgets::default().get("prod", &settings)
}

/// Starts a waiter of `class`; its grant (or refusal) is reported on `done` with its tag.
fn waiter(
    b: &Arc<Budget>,
    class: &'static str,
    weight: u32,
    tag: usize,
    done: &tokio::sync::mpsc::UnboundedSender<(usize, &'static str, bool)>,
) -> tokio::task::JoinHandle<()> {
    let (b, done) = (b.clone(), done.clone());
    tokio::spawn(async move {
        let ok = b.wait_turn(class, weight).await.is_ok();
        let _ = done.send((tag, class, ok));
    })
}

#[tokio::test]
async fn a_free_turn_with_nobody_waiting_goes_at_once() {
    let b = budget(10.0, 3, 1_000);
    for _ in 0..3 {
        b.wait_turn("erp", 1).await.unwrap();
    }
    assert_eq!(b.immediate.load(Ordering::Relaxed), 3);
    assert_eq!(b.queued_turns.load(Ordering::Relaxed), 0);
}

#[tokio::test]
async fn a_polite_caller_is_served_ahead_of_a_greedy_backlog() {
    let b = budget(40.0, 1, 30_000);
    let (done, mut grants) = tokio::sync::mpsc::unbounded_channel();
    b.wait_turn("bulk", 1).await.unwrap();
    let mut tasks: Vec<_> = (0..12).map(|i| waiter(&b, "bulk", 1, i, &done)).collect();
    tokio::time::sleep(Duration::from_millis(60)).await;
    tasks.push(waiter(&b, "ap-export", 1, 100, &done));
    let mut order = Vec::new();
    for _ in 0..13 {
        order.push(grants.recv().await.unwrap().1);
    }
    let position = order.iter().position(|c| *c == "ap-export").unwrap();
    assert!(position <= 4, "served {position}th: {order:?}");
    assert!(b.waiting().is_empty());
    let classes = b.classes();
    assert_eq!(classes["ap-export"].turns, 1);
    assert_eq!(classes["bulk"].turns, 12);
}

#[tokio::test]
async fn weights_set_the_shares_of_callers_that_both_wait() {
    let b = budget(100.0, 1, 30_000);
    let (done, mut grants) = tokio::sync::mpsc::unbounded_channel();
    b.wait_turn("x", 1).await.unwrap();
    let _tasks: Vec<_> = (0..30)
        .flat_map(|i| {
            [
                waiter(&b, "heavy", 2, i, &done),
                waiter(&b, "light", 1, i, &done),
            ]
        })
        .collect();
    let mut heavy = 0;
    for _ in 0..30 {
        if grants.recv().await.unwrap().1 == "heavy" {
            heavy += 1;
        }
    }
    assert!(
        (18..=22).contains(&heavy),
        "heavy got {heavy} of the first 30 turns"
    );
}

#[tokio::test]
async fn a_waiter_that_gives_up_frees_its_turn() {
    let b = budget(10.0, 1, 30_000);
    let (done, mut grants) = tokio::sync::mpsc::unbounded_channel();
    b.wait_turn("x", 1).await.unwrap();
    let quitter = waiter(&b, "quitter", 1, 0, &done);
    tokio::time::sleep(Duration::from_millis(20)).await;
    let stayer = waiter(&b, "stayer", 1, 1, &done);
    tokio::time::sleep(Duration::from_millis(10)).await;
    quitter.abort();
    let t0 = Instant::now();
    let (_, class, ok) = grants.recv().await.unwrap();
    assert_eq!((class, ok), ("stayer", true));
    // The next turn (100 ms after the first) went to the stayer, not one turn later.
    assert!(
        t0.elapsed() < Duration::from_millis(150),
        "{:?}",
        t0.elapsed()
    );
    stayer.await.unwrap();
}

#[tokio::test]
async fn a_wait_past_max_queue_wait_is_refused_at_once_without_a_turn() {
    let b = budget(10.0, 1, 250);
    b.wait_turn("x", 1).await.unwrap();
    let (done, mut grants) = tokio::sync::mpsc::unbounded_channel();
    let _a = waiter(&b, "x", 1, 0, &done);
    let _b = waiter(&b, "x", 1, 1, &done);
    tokio::time::sleep(Duration::from_millis(10)).await;
    // Two ahead of it at 100 ms each: 300 ms > 250 ms.
    let t0 = Instant::now();
    let retry = b.wait_turn("x", 1).await.unwrap_err();
    assert!(t0.elapsed() < Duration::from_millis(50));
    assert_eq!(retry, Duration::from_secs(1));
    // Another caller has nobody of its own ahead: one turn of x's, then its own.
    assert!(b.wait_turn("y", 1).await.is_ok());
    assert_eq!(b.rejected.load(Ordering::Relaxed), 1);
    for _ in 0..2 {
        assert!(grants.recv().await.unwrap().2);
    }
}
