//! The connect storm: open connections as fast as allowed (or on a schedule with
//! `--connect-rate`), measure each one's time to CONNACK, hold them all until the
//! run ends.
//!
//! Each thread runs `--connect-concurrency` workers that take the thread's next
//! connection from a shared cursor. With a rate, connection `i` (numbered over all
//! threads) is due at `start + i / rate`, and its time is measured from then, so a
//! slow broker shows up as time to CONNACK, not as a slower schedule.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::atomic::Ordering;

use crate::clock::{self, now_ns};
use crate::link::Link;
use crate::load::{self, CLOSE_TIMEOUT};
use crate::plan::{LinkPlan, Role};
use crate::run::ThreadCtx;

/// Runs this thread's share of the storm, then waits for the end of the run and
/// closes every connection.
pub async fn run(ctx: Rc<ThreadCtx>, links: Vec<LinkPlan>) {
    if links.is_empty() {
        return;
    }
    ctx.start.raised().await;
    if ctx.aborted() {
        return;
    }
    let links = Rc::new(links);
    let cursor = Rc::new(Cell::new(0usize));
    let open: Rc<RefCell<Vec<Link>>> = Rc::new(RefCell::new(Vec::with_capacity(links.len())));
    let workers: Vec<_> = (0..ctx.config.connect_concurrency.min(links.len()))
        .map(|_| {
            glommio::spawn_local(worker(
                Rc::clone(&ctx),
                Rc::clone(&links),
                Rc::clone(&cursor),
                Rc::clone(&open),
            ))
        })
        .collect();
    for worker in workers {
        worker.await;
    }
    ctx.finish.raised().await;
    let closing: Vec<_> = open
        .borrow_mut()
        .drain(..)
        .map(|link| glommio::spawn_local(link.close(CLOSE_TIMEOUT)))
        .collect();
    for close in closing {
        close.await;
    }
}

async fn worker(
    ctx: Rc<ThreadCtx>,
    links: Rc<Vec<LinkPlan>>,
    cursor: Rc<Cell<usize>>,
    open: Rc<RefCell<Vec<Link>>>,
) {
    let window = ctx.window();
    loop {
        if ctx.finish.is_set() || now_ns() >= window.drain_end_ns {
            return;
        }
        let next = cursor.get();
        cursor.set(next + 1);
        let Some(plan) = links.get(next) else {
            return;
        };
        let Role::Storm { index } = plan.role else {
            continue;
        };
        let begin_ns = match ctx.config.connect_rate {
            Some(rate) => {
                let due = window.start_ns + (f64::from(index) * 1e9 / rate) as u64;
                glommio::timer::sleep(clock::until(due)).await;
                due
            }
            None => now_ns(),
        };
        match load::connect(&ctx, plan.endpoint, &plan.client_id).await {
            Ok((link, _)) => {
                let done = now_ns();
                {
                    let mut stats = ctx.stats.borrow_mut();
                    stats
                        .connack
                        .saturating_record(done.saturating_sub(begin_ns).max(1));
                    stats.last_connack_ns = stats.last_connack_ns.max(done);
                }
                open.borrow_mut().push(link);
                ctx.control.ready.fetch_add(1, Ordering::AcqRel);
            }
            Err(e) => {
                ctx.control.failed.fetch_add(1, Ordering::AcqRel);
                ctx.control.error(format!("{}: {e:#}", plan.client_id));
            }
        }
    }
}
