//! coupa-gateway: an authenticating reverse proxy that lets integrations written for Coupa's
//! retired `X-COUPA-API-KEY` keep working against the OAuth 2.0 client-credentials API.
//!
//! The binary (`src/main.rs`) is a thin CLI over this library; tests, the demo and the benches
//! drive the same code through [`net::server::Gateway`] and `coupa_mock::MockCoupa` (the
//! `mock/` workspace crate, which cannot import the gateway).
//!
//! Folders by domain, each importing only from those listed before it:
//! [`errors`], [`config`] and the counter and histogram types of [`ops::metrics`]; [`state`] (state shared by requests), [`token`] (OAuth tokens),
//! [`migration`] (who calls, what they need, the verdicts); the low half of [`net`] (the
//! connection wrapper and request bounds, TLS, egress and the upstream pool) and of [`ops`]
//! (metrics, access log); [`runtime`] (the snapshot a request reads, reloads); [`proxy`] (the
//! request path); then [`net::server`] and [`ops::admin`], which serve them; [`commands`].
#![forbid(unsafe_code)]
#![deny(rust_2018_idioms)]
#![warn(missing_docs)]

pub mod commands;
pub mod config;
pub mod errors;
pub mod migration;
pub mod net;
pub mod ops;
pub mod proxy;
pub mod runtime;
pub mod state;
pub mod token;
