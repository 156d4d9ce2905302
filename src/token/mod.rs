//! OAuth 2.0 client-credentials tokens: one [`TokenCell`] per configured client, written only by
//! that client's refresher task and read lock-free by the request path.
//!
//! Timing follows Coupa's guidance (docs/coupa-api.md §5): tokens live 24 h (`expires_in` 86399),
//! should be renewed every ~20 h, and should not be used in the first ~5 s after minting. The
//! refresher therefore mints long before expiry and publishes a new token only after a warm-up,
//! unless the old one would expire first. A failed refresh never removes a still-valid token.

mod cell;
mod error;
pub mod redact;
mod refresher;
mod request;

pub use cell::{Bearer, Failure, Token, TokenCell, TokenState, Unavailable};
pub use error::{FailureKind, TokenError};
pub use request::{fetch, http_client, Minted, TokenRequest};
