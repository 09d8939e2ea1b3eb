//! `ringmq-bench`, the load generator of ringmq.
//!
//! Layout:
//! - [`flags`]: the command line, validated in one place into a [`flags::Config`];
//!   every `*_MAX` limit of the tool.
//! - [`plan`]: the links of a run (role, topic, client id, host, thread), pure data.
//! - [`run`]: one glommio executor per generator thread and the coordinator that
//!   moves them through set-up, warm-up, the measured window, drain and finish.
//! - [`link`]: one MQTT client connection driven by one task (reads, writes, timer
//!   and stop signal polled together).
//! - [`load`]: publishers (open loop or max rate, QoS 1/2 windows) and subscribers
//!   (latency, sequence tracking); the retained scenario's roles.
//! - [`storm`]: the connect storm.
//! - [`stamp`]: the 16-byte payload stamp and the per-publisher sequence tracker.
//! - [`clock`]: the process-wide monotonic clock every stamp uses.
//! - [`procstat`]: the broker's CPU time and peak RSS from `/proc`.
//! - [`report`]: merging, the human summary, JSON and the exit code.
//! - [`summary`]: `summarize`, a markdown table of many JSON reports.
//! - [`results`]: a results folder of `scripts/perf-test.sh` read back (runs by case
//!   and broker, medians, cost-per-message measurements and their differences).
//! - [`compare`]: `compare`, that folder's scenario x broker tables and the targets
//!   of issue #4, met or not.
//! - [`plot`]: `plot`, its SVG plots (throughput bars, latency percentile curves).
//!
//! MQTT framing is ringmq's own codec (`ringmq_core::codec`). See `bench/README.md`
//! for usage.

pub mod clock;
pub mod compare;
pub mod flags;
pub mod link;
pub mod load;
pub mod plan;
pub mod plot;
pub mod procstat;
pub mod report;
pub mod results;
pub mod run;
pub mod stamp;
pub mod storm;
pub mod summary;
