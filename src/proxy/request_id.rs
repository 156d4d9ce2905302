//! The request id: the caller's `X-Request-Id` when it needs no quoting anywhere, else one the
//! gateway makes. Sent to Coupa, echoed in the response, written in every log line.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

use http::header::{HeaderMap, HeaderValue};

use super::headers::{usable_request_id, X_REQUEST_ID};

/// The id of a request with head `headers`.
pub(super) fn pick(headers: &HeaderMap) -> HeaderValue {
    match headers.get(&X_REQUEST_ID) {
        Some(v) if usable_request_id(v) => v.clone(),
        _ => new_request_id(),
    }
}

/// A process-unique id: a random 32-bit prefix (distinguishes restarts and replicas) and a
/// counter, as 8+16 hex digits. No allocation beyond the header value itself.
fn new_request_id() -> HeaderValue {
    static PREFIX: OnceLock<u32> = OnceLock::new();
    static NEXT: AtomicU64 = AtomicU64::new(1);
    let prefix = *PREFIX.get_or_init(rand::random);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut out = [0u8; 25];
    for i in 0..8 {
        out[i] = HEX[((prefix >> (28 - 4 * i)) & 0xf) as usize];
    }
    out[8] = b'-';
    for i in 0..16 {
        out[9 + i] = HEX[((n >> (60 - 4 * i)) & 0xf) as usize];
    }
    HeaderValue::from_bytes(&out).expect("hex digits are a valid header value")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_usable_caller_id_is_kept_and_any_other_replaced() {
        let mut h = HeaderMap::new();
        h.insert(&X_REQUEST_ID, HeaderValue::from_static("erp-run-42"));
        assert_eq!(pick(&h), "erp-run-42");
        h.insert(&X_REQUEST_ID, HeaderValue::from_static("two words"));
        assert_eq!(pick(&h).len(), 25);
        assert_eq!(pick(&HeaderMap::new()).len(), 25);
    }

    #[test]
    fn request_ids_are_unique_and_well_formed() {
        let a = new_request_id();
        let b = new_request_id();
        assert_ne!(a, b);
        assert_eq!(a.len(), 25);
        assert!(a
            .to_str()
            .unwrap()
            .chars()
            .all(|c| c.is_ascii_hexdigit() || c == '-'));
    }
}
