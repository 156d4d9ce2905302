//! The network edges: accepting and serving connections (`server`, `drain`, `tls`, and
//! `proxy_protocol`, the client address an L4 balancer prefixes), the
//! connection wrapper that fixes request targets and bounds each connection (`conn`), the
//! per-request time bounds (`bounds`), and the way out to Coupa (`egress`, `upstream`, and
//! `pooled`, what a pooled connection knows about its reuse).

pub mod bounds;
pub mod conn;
pub mod drain;
pub mod egress;
pub mod pooled;
pub mod proxy_protocol;
pub mod server;
pub mod tls;
pub mod upstream;
