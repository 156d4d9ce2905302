//! Streaming routes: attachment uploads and image scans (hashed chunk by chunk, never buffered),
//! and attachment downloads (generated chunk by chunk, with the midway hold gate).
//!
//! The mock never stores upload bodies: it keeps only their size and SHA-256, so a test can
//! push hundreds of megabytes through it with flat memory. Downloads serve deterministic bytes
//! from [`attachment_bytes`], the same for every attachment id, not the uploaded content.

use std::{
    collections::BTreeMap,
    io,
    pin::Pin,
    sync::{
        atomic::{AtomicU64, Ordering},
        Mutex, OnceLock,
    },
    task::{Context, Poll},
};

use bytes::Bytes;
use http::{header, HeaderValue, Response, StatusCode};
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;

use super::{codec, faults::lock, json_response, MockBody, Shared};

/// Chunk size of downloads (and of the hashing that matches them): 64 KiB.
pub const DOWNLOAD_CHUNK: usize = 64 * 1024;

/// Deterministic attachment content: `len` bytes starting at byte `offset` of an endless
/// stream. Byte `p` is `BASE[(p + 7 * (p >> 16)) % 65536]`, where `BASE` is 64 KiB of SplitMix64
/// output: each 64 KiB window is a different rotation of `BASE` (no window repeats within
/// 4 GiB), and building a chunk is two `memcpy`s, fast even in debug builds. Any slicing of the
/// stream gives the same bytes, so a test can rebuild or hash any part of a download.
pub fn attachment_bytes(offset: u64, len: usize) -> Vec<u8> {
    const WINDOW: u64 = 1 << 16;
    let base = base_block();
    let mut out = Vec::with_capacity(len);
    let mut pos = offset;
    let end = offset + len as u64;
    while pos < end {
        let window = pos >> 16;
        let window_end = ((window + 1) * WINDOW).min(end);
        // Truncation intended: the masked value is below 65536.
        let start = ((pos + 7 * window) % WINDOW) as usize;
        let take = (window_end - pos) as usize;
        let first = take.min(base.len() - start);
        out.extend_from_slice(&base[start..start + first]);
        out.extend_from_slice(&base[..take - first]);
        pos = window_end;
    }
    out
}

/// The 64 KiB block [`attachment_bytes`] rotates, built once.
fn base_block() -> &'static [u8] {
    static BASE: OnceLock<Vec<u8>> = OnceLock::new();
    BASE.get_or_init(|| {
        (0..(1u64 << 16) / 8)
            .flat_map(|i| splitmix64(i).to_le_bytes())
            .collect()
    })
}

/// Hex SHA-256 of the first `size` bytes of [`attachment_bytes`], i.e. of a download of that
/// size (what the `x-mock-sha256` header carries).
pub fn attachment_sha256(size: u64) -> String {
    let mut hasher = Sha256::new();
    let mut offset = 0;
    while offset < size {
        let len = (size - offset).min(DOWNLOAD_CHUNK as u64) as usize;
        hasher.update(attachment_bytes(offset, len));
        offset += len as u64;
    }
    codec::hex(&hasher.finalize())
}

fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

struct AttachmentMeta {
    parent: &'static str,
    parent_id: u64,
    size: u64,
    sha256: String,
}

/// Uploaded attachments' metadata and the cached hash of the current download size.
#[derive(Default)]
pub(super) struct Attachments {
    next_id: AtomicU64,
    meta: Mutex<BTreeMap<u64, AttachmentMeta>>,
    /// `(size, hex sha256)` of the last download size hashed: hashing a large body is slow,
    /// and the size changes rarely.
    sha_cache: Mutex<Option<(u64, String)>>,
}

impl Attachments {
    fn add(&self, parent: &'static str, parent_id: u64, size: u64, sha256: String) -> u64 {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed) + 1;
        lock(&self.meta).insert(
            id,
            AttachmentMeta {
                parent,
                parent_id,
                size,
                sha256,
            },
        );
        id
    }

    /// Rows for `GET /api/{parent}/{id}/attachments`.
    pub(super) fn of_parent(&self, parent: &str, parent_id: u64) -> Vec<Value> {
        lock(&self.meta)
            .iter()
            .filter(|(_, m)| m.parent == parent && m.parent_id == parent_id)
            .map(|(id, m)| attachment_json(*id, m.size, &m.sha256))
            .collect()
    }

    async fn download_sha(&self, size: u64) -> String {
        if let Some((cached_size, sha)) = lock(&self.sha_cache).as_ref() {
            if *cached_size == size {
                return sha.clone();
            }
        }
        // Hashing many megabytes would stall the runtime thread; do it on the blocking pool.
        let sha = tokio::task::spawn_blocking(move || attachment_sha256(size))
            .await
            .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()));
        *lock(&self.sha_cache) = Some((size, sha.clone()));
        sha
    }
}

fn attachment_json(id: u64, size: u64, sha256: &str) -> Value {
    json!({ "id": id, "file-size": size, "sha256": sha256 })
}

/// Reads a request body frame by frame, hashing it and bumping the upload counter per frame,
/// so tests can watch bytes arrive while the client is still sending.
async fn consume(shared: &Shared, mut body: Incoming) -> Result<(u64, String), hyper::Error> {
    let mut hasher = Sha256::new();
    let mut size = 0u64;
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame?.into_data() {
            hasher.update(&data);
            size += data.len() as u64;
            shared.faults.add_upload_bytes(data.len() as u64);
        }
    }
    Ok((size, codec::hex(&hasher.finalize())))
}

fn upload_failed(e: &hyper::Error) -> Response<MockBody> {
    tracing::debug!(error = %e, "mock upload body failed");
    json_response(
        StatusCode::BAD_REQUEST,
        &json!({ "errors": { "attachment": [format!("upload failed: {e}")] } }),
    )
}

/// `POST /api/{parent}/{id}/attachments`: 201 `{"id", "file-size", "sha256"}` (always JSON),
/// where the hash and size cover the raw request body (the whole multipart envelope if the
/// client sent one).
pub(super) async fn upload_attachment(
    shared: &Shared,
    parent: &'static str,
    parent_id: u64,
    body: Incoming,
) -> Response<MockBody> {
    match consume(shared, body).await {
        Ok((size, sha)) => {
            let id = shared.attachments.add(parent, parent_id, size, sha.clone());
            json_response(StatusCode::CREATED, &attachment_json(id, size, &sha))
        }
        Err(e) => upload_failed(&e),
    }
}

/// `PUT /api/invoices/{id}/image_scan`: 200 `{"id": <invoice id>, "file-size", "sha256"}`.
pub(super) async fn upload_image_scan(
    shared: &Shared,
    invoice_id: u64,
    body: Incoming,
) -> Response<MockBody> {
    match consume(shared, body).await {
        Ok((size, sha)) => json_response(StatusCode::OK, &attachment_json(invoice_id, size, &sha)),
        Err(e) => upload_failed(&e),
    }
}

/// `GET /api/attachments/{id}`: `download_size` generated bytes in [`DOWNLOAD_CHUNK`] chunks,
/// with `Content-Length` and `x-mock-sha256`. If the hold gate is set when the body reaches its
/// midpoint (`size / 2` bytes sent), it waits there until released.
pub(super) async fn download(shared: &Shared, head_only: bool) -> Response<MockBody> {
    let size = shared.faults.download_size();
    let sha = shared.attachments.download_sha(size).await;
    let body = if head_only {
        super::full_body(Bytes::new())
    } else {
        let (tx, rx) = mpsc::channel(2);
        let gate = shared.faults.download_gate();
        tokio::spawn(produce(size, tx, gate));
        ChannelBody {
            rx,
            remaining: size,
        }
        .boxed()
    };
    let mut resp = Response::new(body);
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(size));
    if let Ok(v) = HeaderValue::from_str(&sha) {
        h.insert("x-mock-sha256", v);
    }
    resp
}

/// Feeds a download's chunks into the body channel. Stops early if the client goes away (the
/// receiver is dropped), including while parked at the gate.
async fn produce(size: u64, tx: mpsc::Sender<Bytes>, mut gate: tokio::sync::watch::Receiver<bool>) {
    let half = size / 2;
    let mut offset = 0u64;
    while offset < size {
        if offset == half {
            tokio::select! {
                // An error means the mock itself is gone; finishing the body is still fine.
                _ = gate.wait_for(|held| !*held) => {}
                () = tx.closed() => return,
            }
        }
        // Chunks never straddle the midpoint, so exactly `half` bytes precede the gate.
        let stop = if offset < half { half } else { size };
        let len = (stop - offset).min(DOWNLOAD_CHUNK as u64) as usize;
        let chunk = Bytes::from(attachment_bytes(offset, len));
        if tx.send(chunk).await.is_err() {
            return;
        }
        offset += len as u64;
    }
}

/// A response body fed by a channel, with an exact size so hyper frames it with
/// `Content-Length` and can tell a short body from a complete one.
struct ChannelBody {
    rx: mpsc::Receiver<Bytes>,
    remaining: u64,
}

impl Body for ChannelBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        let this = self.get_mut();
        match this.rx.poll_recv(cx) {
            Poll::Ready(Some(chunk)) => {
                this.remaining = this.remaining.saturating_sub(chunk.len() as u64);
                Poll::Ready(Some(Ok(Frame::data(chunk))))
            }
            Poll::Ready(None) if this.remaining > 0 => Poll::Ready(Some(Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "download producer stopped early",
            )))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.remaining == 0
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.remaining)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attachment_bytes_slice_consistently() {
        let n = 3 * 65_536 + 100;
        let whole = attachment_bytes(0, n);
        assert_eq!(whole.len(), n);
        for (off, len) in [
            (0, 1),
            (3, 7),
            (13, 50),
            (65_530, 12),
            (65_536, 65_536),
            (1000, 2 * 65_536),
            (n - 1, 1),
            (5, 0),
        ] {
            assert_eq!(attachment_bytes(off as u64, len), whole[off..off + len]);
        }
        // Windows are distinct rotations, not copies.
        assert_ne!(whole[..65_536], whole[65_536..2 * 65_536]);
        assert_eq!(whole[65_536..65_536 + 100], base_block()[7..107]);
    }

    #[test]
    fn sha_matches_whole_buffer() {
        let size = DOWNLOAD_CHUNK as u64 * 2 + 17;
        let direct = codec::hex(&Sha256::digest(attachment_bytes(0, size as usize)));
        assert_eq!(attachment_sha256(size), direct);
        assert_eq!(
            attachment_sha256(0),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }
}
