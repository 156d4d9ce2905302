//! State shared by every request of the process: the per-instance rate budget.

pub mod ratelimit;
