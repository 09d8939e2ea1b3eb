//! Password checks on worker threads, so a slow hash never stalls a shard.
//!
//! A shard hands a request to a bounded queue and awaits a oneshot reply; the
//! future is `Send` and `'static` and needs no particular executor. When the queue
//! is full the shard is told at once ([`Busy`]) instead of waiting: a flood of
//! CONNECTs with passwords then costs the attacker a refusal, not the broker a
//! growing backlog.

use std::future::Future;
use std::sync::Arc;

use bytes::Bytes;
use crossbeam_channel::{Receiver, Sender, TrySendError};
use futures_channel::oneshot;

use crate::limits::VERIFIER_THREADS_MAX;
use crate::{AuthError, PasswordFile};

/// The queue already holds its maximum of waiting requests.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("the password verifier is busy")]
pub struct Busy;

struct Request {
    file: Arc<PasswordFile>,
    user: String,
    password: Bytes,
    reply: oneshot::Sender<bool>,
}

/// A handle to the verifier threads: cheap to clone, `Send + Sync`. The threads
/// finish the requests already queued and stop when the last handle is dropped.
#[derive(Clone, Debug)]
pub struct Verifier {
    requests: Sender<Request>,
}

impl std::fmt::Debug for Request {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Request").field("user", &self.user).finish()
    }
}

impl Verifier {
    /// Starts `threads` threads named `ringmq-auth-N` behind a queue of at most
    /// `queue_max` waiting requests (0: a request is taken only when a thread is
    /// idle). `threads` must be in `1..=VERIFIER_THREADS_MAX`.
    ///
    /// Returns a `Result` where the first sketch of this API did not: a thread the
    /// OS refuses must reach the caller, not panic.
    pub fn start(threads: usize, queue_max: usize) -> Result<Verifier, AuthError> {
        if !(1..=VERIFIER_THREADS_MAX).contains(&threads) {
            return Err(AuthError::VerifierThreads {
                threads,
                max: VERIFIER_THREADS_MAX,
            });
        }
        let (requests, queue) = crossbeam_channel::bounded(queue_max);
        for index in 0..threads {
            let queue = queue.clone();
            std::thread::Builder::new()
                .name(format!("ringmq-auth-{index}"))
                .spawn(move || serve(&queue, PasswordFile::verify))
                .map_err(AuthError::Thread)?;
        }
        Ok(Verifier { requests })
    }

    /// Queues a check of `user`'s `password` against `file`; the future gives the
    /// answer. Fails at once with [`Busy`] when `queue_max` requests are waiting.
    /// A check whose future was dropped before a thread reached it is skipped.
    pub fn verify(
        &self,
        file: Arc<PasswordFile>,
        user: String,
        password: Bytes,
    ) -> Result<impl Future<Output = bool> + Send + 'static, Busy> {
        let (reply, answer) = oneshot::channel();
        let request = Request {
            file,
            user,
            password,
            reply,
        };
        match self.requests.try_send(request) {
            Ok(()) => Ok(async move { answer.await.unwrap_or(false) }),
            // Disconnected means every thread is gone (one panicked): refusing
            // is the only safe answer, and the caller already handles Busy.
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => Err(Busy),
        }
    }

    /// Requests waiting for a thread (not those being checked).
    pub fn queued(&self) -> usize {
        self.requests.len()
    }
}

/// A thread's loop; `check` is [`PasswordFile::verify`] but for tests.
fn serve(queue: &Receiver<Request>, check: impl Fn(&PasswordFile, &str, &[u8]) -> bool) {
    // Ends when every Sender (every Verifier handle) is gone and the queue is empty.
    for request in queue.iter() {
        if request.reply.is_canceled() {
            continue;
        }
        let ok = check(&request.file, &request.user, &request.password);
        // The caller may have gone meanwhile; the answer is then of no use.
        let _ = request.reply.send(ok);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
mod tests {
    use super::*;
    use crate::hash::tests::{argon2id_cheap, INSECURE};
    use std::time::{Duration, Instant};

    fn block_on_timeout<F: Future<Output = bool>>(future: F) -> bool {
        // The threads answer in milliseconds; the bound only keeps a bug from hanging.
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut future = std::pin::pin!(future);
        loop {
            if let Some(answer) =
                futures_lite::future::block_on(futures_lite::future::poll_once(future.as_mut()))
            {
                return answer;
            }
            assert!(Instant::now() < deadline, "no answer within 20 s");
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    fn file() -> Arc<PasswordFile> {
        let text = format!(
            "alice:{}\nbob:{}\n",
            argon2id_cheap("alice-pw"),
            argon2id_cheap("bob-pw")
        );
        Arc::new(PasswordFile::parse(&text, INSECURE).unwrap())
    }

    /// A file whose single entry takes long to check (bcrypt cost 12, ~0.2 s), to
    /// keep the threads busy while a test fills the queue.
    fn slow_file() -> Arc<PasswordFile> {
        let hash = bcrypt::hash_with_salt("slow", 12, *b"0123456789abcdef").unwrap();
        let text = format!("slow:{}\n", hash.format_for_version(bcrypt::Version::TwoB));
        Arc::new(PasswordFile::parse(&text, INSECURE).unwrap())
    }

    #[test]
    fn concurrent_requests_get_their_own_answers() {
        let verifier = Verifier::start(2, 64).unwrap();
        let file = file();
        let mut pending = Vec::new();
        for round in 0..8 {
            for (user, password, expected) in [
                ("alice", "alice-pw", true),
                ("bob", "bob-pw", true),
                ("alice", "bob-pw", false),
                ("carol", "alice-pw", false),
            ] {
                let future = verifier
                    .verify(file.clone(), user.to_owned(), Bytes::from(password))
                    .unwrap();
                pending.push((round, user, expected, future));
            }
        }
        // From several threads at once, as the shards would.
        let clones: Vec<_> = (0..4)
            .map(|_| {
                let verifier = verifier.clone();
                let file = file.clone();
                std::thread::spawn(move || {
                    let future = verifier
                        .verify(file, "bob".to_owned(), Bytes::from_static(b"bob-pw"))
                        .unwrap();
                    block_on_timeout(future)
                })
            })
            .collect();
        for (round, user, expected, future) in pending {
            assert_eq!(block_on_timeout(future), expected, "round {round} {user}");
        }
        for handle in clones {
            assert!(handle.join().unwrap());
        }
    }

    #[test]
    fn a_full_queue_answers_busy_at_once() {
        let verifier = Verifier::start(1, 2).unwrap();
        let file = slow_file();
        let ask = || verifier.verify(file.clone(), "slow".to_owned(), Bytes::from_static(b"slow"));
        let first = ask().unwrap();
        // Wait until the thread has taken the first request off the queue, so the
        // queue's two places are free and the third request is the one refused.
        let deadline = Instant::now() + Duration::from_secs(10);
        while verifier.queued() > 0 {
            assert!(
                Instant::now() < deadline,
                "the thread never took the request"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
        let second = ask().unwrap();
        let third = ask().unwrap();
        let started = Instant::now();
        assert!(matches!(ask(), Err(Busy)));
        assert!(
            started.elapsed() < Duration::from_millis(50),
            "Busy must not wait"
        );
        for future in [first, second, third] {
            assert!(block_on_timeout(future));
        }
        // Room again once the backlog is gone.
        assert!(block_on_timeout(ask().unwrap()));
    }

    #[test]
    fn requests_whose_future_is_gone_are_skipped() {
        let (requests, queue) = crossbeam_channel::bounded(8);
        let file = file();
        let mut kept = Vec::new();
        for index in 0..6 {
            let (reply, answer) = oneshot::channel();
            let request = Request {
                file: file.clone(),
                user: format!("user-{index}"),
                password: Bytes::new(),
                reply,
            };
            requests.send(request).unwrap();
            if index % 2 == 0 {
                kept.push((format!("user-{index}"), answer));
            }
        }
        drop(requests);
        let checked = std::sync::Mutex::new(Vec::new());
        serve(&queue, |_, user, _| {
            checked.lock().unwrap().push(user.to_owned());
            true
        });
        assert_eq!(
            checked.into_inner().unwrap(),
            ["user-0", "user-2", "user-4"],
            "only the requests someone still waits for are checked"
        );
        for (user, answer) in kept {
            assert!(
                block_on_timeout(async { answer.await.unwrap_or(false) }),
                "{user}"
            );
        }
    }

    #[test]
    fn thread_counts_are_checked() {
        assert!(matches!(
            Verifier::start(0, 1),
            Err(AuthError::VerifierThreads { threads: 0, .. })
        ));
        assert!(Verifier::start(VERIFIER_THREADS_MAX + 1, 1).is_err());
    }
}
