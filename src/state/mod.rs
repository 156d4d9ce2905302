//! State that outlives a request: each instance's rate budget (local, or shared by a fleet
//! through Redis), and the migration ledger's records and the stores that keep them (memory, a
//! local file, or Redis).

pub mod budget;
pub mod ledger;
pub mod store;
