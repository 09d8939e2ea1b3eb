//! The verifier's threads stop when the last handle is dropped, after finishing
//! what was queued. Alone in its own test binary, so the only `ringmq-auth-*`
//! threads in the process are the ones started here.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use ringmq_auth::{HashPolicy, PasswordFile, Verifier};

/// Threads of this process whose name starts with `ringmq-auth-`, read from the
/// kernel rather than from the code under test.
fn verifier_threads() -> usize {
    std::fs::read_dir("/proc/self/task")
        .unwrap()
        .filter_map(|task| std::fs::read_to_string(task.ok()?.path().join("comm")).ok())
        .filter(|name| name.starts_with("ringmq-auth-"))
        .count()
}

fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn threads_finish_the_queue_and_stop_when_the_last_handle_is_dropped() {
    let file = Arc::new(
        PasswordFile::parse(
            "alice:$plain$pw\n",
            HashPolicy {
                allow_insecure: true,
            },
        )
        .unwrap(),
    );
    let verifier = Verifier::start(3, 8).unwrap();
    // A thread names itself once it runs.
    wait_for("three named threads", || verifier_threads() == 3);
    let clone = verifier.clone();
    drop(verifier);

    let answer = clone
        .verify(file.clone(), "alice".to_owned(), Bytes::from_static(b"pw"))
        .unwrap();
    assert!(
        futures_lite::future::block_on(answer),
        "a clone keeps them serving"
    );
    assert_eq!(verifier_threads(), 3);

    // Queued, then the last handle goes: the answer still comes.
    let pending = clone
        .verify(file, "alice".to_owned(), Bytes::from_static(b"pw"))
        .unwrap();
    drop(clone);
    assert!(futures_lite::future::block_on(pending));
    wait_for("the verifier threads to exit", || verifier_threads() == 0);
}
