//! What operators see: the admin listener (`admin`: health, readiness, metrics, status), the
//! status page, the Prometheus metrics and the access log.

pub mod access_log;
pub mod admin;
pub mod admin_stack;
pub mod budget;
pub mod metrics;
#[cfg(unix)]
pub mod sd_notify;
pub mod status_page;
pub mod telemetry;
