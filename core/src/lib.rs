//! The sans-IO protocol core of ringmq.
#![forbid(unsafe_code)]

pub mod limits;
pub mod topic;
