//! Wake-ups between tasks of one shard. Everything here is `!Send` on purpose: it
//! lives and dies on the shard that made it, so plain `Cell`s suffice.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

/// A level-triggered wake-up for one waiting task: `notify` before `notified` is
/// not lost, and many notifications collapse into one.
#[derive(Debug, Default)]
pub(crate) struct Notify {
    pending: Cell<bool>,
    waker: RefCell<Option<Waker>>,
}

impl Notify {
    pub(crate) fn notify(&self) {
        self.pending.set(true);
        if let Some(waker) = self.waker.borrow_mut().take() {
            waker.wake();
        }
    }

    pub(crate) fn notified(&self) -> Notified<'_> {
        Notified { notify: self }
    }
}

pub(crate) struct Notified<'a> {
    notify: &'a Notify,
}

impl Future for Notified<'_> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.notify.pending.replace(false) {
            return Poll::Ready(());
        }
        *self.notify.waker.borrow_mut() = Some(cx.waker().clone());
        Poll::Pending
    }
}

/// A wake-up for any number of waiting tasks: each `wait` returns after the next
/// `notify_all`. Waiters re-check their condition, so a spurious wake is harmless.
#[derive(Debug, Default)]
pub(crate) struct Event {
    generation: Cell<u64>,
    waiters: RefCell<Vec<Waker>>,
}

impl Event {
    pub(crate) fn notify_all(&self) {
        if self.waiters.borrow().is_empty() {
            return;
        }
        self.generation.set(self.generation.get().wrapping_add(1));
        for waker in self.waiters.borrow_mut().drain(..) {
            waker.wake();
        }
    }

    pub(crate) async fn wait(&self) {
        let start = self.generation.get();
        std::future::poll_fn(|cx| {
            if self.generation.get() != start {
                Poll::Ready(())
            } else {
                self.waiters.borrow_mut().push(cx.waker().clone());
                Poll::Pending
            }
        })
        .await;
    }
}

/// A one-shot value passed from one task of a shard to another.
#[derive(Debug)]
pub(crate) struct OneShot<T> {
    slot: RefCell<Option<T>>,
    notify: Notify,
}

impl<T> OneShot<T> {
    pub(crate) fn new() -> Rc<OneShot<T>> {
        Rc::new(OneShot {
            slot: RefCell::new(None),
            notify: Notify::default(),
        })
    }

    pub(crate) fn set(&self, value: T) {
        *self.slot.borrow_mut() = Some(value);
        self.notify.notify();
    }

    pub(crate) async fn wait(&self) -> T {
        loop {
            if let Some(value) = self.slot.borrow_mut().take() {
                return value;
            }
            self.notify.notified().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notify_before_wait_is_kept_and_oneshot_delivers() {
        let ex = glommio::LocalExecutorBuilder::default()
            .io_memory(256 << 10)
            .make()
            .map_err(|e| e.to_string());
        let Ok(ex) = ex else {
            panic!("executor: {ex:?}");
        };
        ex.run(async {
            let notify = Notify::default();
            notify.notify();
            notify.notify();
            notify.notified().await;
            assert!(!notify.pending.get());

            let shot: Rc<OneShot<u32>> = OneShot::new();
            let setter = Rc::clone(&shot);
            let task = glommio::spawn_local(async move { setter.set(7) });
            assert_eq!(shot.wait().await, 7);
            task.await;
        });
    }
}
