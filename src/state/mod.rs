//! State that outlives a request: the per-instance rate budget, and the migration ledger's
//! records and the stores that keep them (memory, a local file, or Redis for a fleet).

pub mod ledger;
pub mod ratelimit;
pub mod store;
