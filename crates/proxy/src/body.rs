//! The response body type: an upstream's streamed body or a small local page.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::{HeaderMap, HeaderValue};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use tokio::sync::OwnedSemaphorePermit;

use crate::pool::Lease;
use crate::routes::ServicePolicy;
use crate::stall::Stall;
use crate::upstream::BoxError;

/// Either an upstream body, streamed frame by frame (never buffered whole), or a
/// complete local answer.
#[derive(Debug)]
pub(crate) enum ProxyBody {
    /// Streamed from the upstream.
    Upstream(UpstreamResponse),
    /// A local page (error pages, redirects); `None` once sent.
    Full(Option<Bytes>),
}

/// An upstream's response body on its way to the client: it ends with an error when
/// the upstream sends nothing for `timeouts.idle` (the client then sees a reset or a
/// cut connection, never a body that looks complete). It holds the upstream connection
/// (back to the pool once the body has ended; closed if the body is cut or dropped
/// early) and the `limits.max_upstream_connections` slot, if one is configured.
#[derive(Debug)]
pub(crate) struct UpstreamResponse {
    inner: Incoming,
    lease: Option<Lease>,
    slot: Option<OwnedSemaphorePermit>,
    stall: Stall,
    /// Named in the log line when the upstream stalls (`None`: forward-auth answers).
    service: Option<Arc<ServicePolicy>>,
}

impl ProxyBody {
    /// An empty body.
    pub(crate) fn empty() -> ProxyBody {
        ProxyBody::Full(None)
    }

    /// A local body.
    pub(crate) fn full(data: impl Into<Bytes>) -> ProxyBody {
        let data = data.into();
        ProxyBody::Full(if data.is_empty() { None } else { Some(data) })
    }

    /// An upstream's body for `service` over the connection `lease`, ended when
    /// nothing arrives for `idle`; `slot` is released when it ends or is dropped.
    pub(crate) fn upstream(
        inner: Incoming,
        lease: Lease,
        slot: Option<OwnedSemaphorePermit>,
        idle: Duration,
        service: Option<Arc<ServicePolicy>>,
    ) -> ProxyBody {
        ProxyBody::Upstream(UpstreamResponse { inner, lease: Some(lease), slot, stall: Stall::new(idle), service })
    }
}

impl UpstreamResponse {
    /// The body ended: the connection and the slot go to the next request.
    fn done(&mut self) {
        if let Some(lease) = self.lease.take() {
            lease.finish();
        }
        self.slot.take();
    }

    /// The body broke off: the connection closes, the slot is free.
    fn cut(&mut self) {
        self.lease.take();
        self.slot.take();
    }
}

impl Drop for UpstreamResponse {
    fn drop(&mut self) {
        // hyper stops polling a body that says it has ended.
        if self.inner.is_end_stream() {
            self.done();
        }
    }
}

/// Chunks up to this size are copied out of the upstream connection's read buffer.
const DETACH_BELOW: usize = 4096;

// What hyper hands over from an upstream connection (header values, body chunks) are
// slices of that connection's 8 KiB read buffer. While the client side still holds
// one (an HTTP/2 stream's queued frames, say), the connection's next read cannot reuse
// the buffer and allocates another, so a busy connection kept several alive. Copying
// the head and small chunks out costs less than those allocations and keeps one read
// buffer per upstream connection (docs/benchmarks.md, issue 12).

/// A small chunk as its own allocation; a large one as it is.
fn detach_small(data: Bytes) -> Bytes {
    if data.len() <= DETACH_BELOW { Bytes::copy_from_slice(&data) } else { data }
}

/// The header values of an upstream's response head, moved into one allocation.
pub(crate) fn detach_headers(headers: &mut HeaderMap) {
    let mut copy = BytesMut::with_capacity(headers.values().map(HeaderValue::len).sum());
    for value in headers.values() {
        copy.extend_from_slice(value.as_bytes());
    }
    let mut copy = copy.freeze();
    for value in headers.values_mut() {
        let part = copy.split_to(value.len());
        // The bytes were a valid value a moment ago; keep the original if not.
        if let Ok(mut detached) = HeaderValue::from_maybe_shared(part) {
            detached.set_sensitive(value.is_sensitive());
            *value = detached;
        }
    }
}

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            ProxyBody::Upstream(up) => match Pin::new(&mut up.inner).poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => {
                    up.stall.moved();
                    let frame = frame.map_data(detach_small);
                    if up.inner.is_end_stream() {
                        up.done();
                    }
                    Poll::Ready(Some(Ok(frame)))
                }
                Poll::Ready(None) => {
                    up.done();
                    Poll::Ready(None)
                }
                Poll::Ready(Some(Err(e))) => {
                    up.cut();
                    Poll::Ready(Some(Err(e.into())))
                }
                Poll::Pending => match up.stall.poll_check(cx) {
                    Ok(()) => Poll::Pending,
                    Err(stalled) => {
                        up.cut();
                        if let Some(svc) = &up.service {
                            svc.stats.upstream_error();
                            tracing::info!(service = %svc.name, cause = %stalled, "response cut: the upstream stopped sending its body");
                        }
                        Poll::Ready(Some(Err(Box::new(stalled))))
                    }
                },
            },
            ProxyBody::Full(data) => Poll::Ready(data.take().map(|d| Ok(Frame::data(d)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ProxyBody::Upstream(up) => up.inner.is_end_stream(),
            ProxyBody::Full(data) => data.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ProxyBody::Upstream(up) => up.inner.size_hint(),
            ProxyBody::Full(data) => SizeHint::with_exact(data.as_ref().map_or(0, |d| d.len() as u64)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A read buffer as hyper shares it: the frozen bytes and slices of them.
    fn read_buffer(data: &[u8]) -> Bytes {
        Bytes::copy_from_slice(data)
    }

    #[test]
    fn detached_header_values_leave_the_read_buffer_unshared() {
        let buffer = read_buffer(b"text/html1024");
        let mut headers = HeaderMap::new();
        headers.insert(http::header::CONTENT_TYPE, HeaderValue::from_maybe_shared(buffer.slice(0..9)).expect("value"));
        let mut secret = HeaderValue::from_maybe_shared(buffer.slice(9..13)).expect("value");
        secret.set_sensitive(true);
        headers.insert(http::header::CONTENT_LENGTH, secret);
        let shared = buffer.try_into_mut().expect_err("the head holds the buffer");

        detach_headers(&mut headers);

        assert_eq!(headers[http::header::CONTENT_TYPE], "text/html");
        assert_eq!(headers[http::header::CONTENT_LENGTH], "1024");
        assert!(headers[http::header::CONTENT_LENGTH].is_sensitive());
        assert!(shared.try_into_mut().is_ok(), "the read buffer is free for the next response");
    }

    #[test]
    fn small_chunks_are_copied_and_large_ones_passed_on() {
        let buffer = read_buffer(&[7; 2 * DETACH_BELOW]);
        let small = detach_small(buffer.slice(..DETACH_BELOW));
        assert_eq!(small, buffer.slice(..DETACH_BELOW));
        let buffer = buffer.try_into_mut().expect("a small chunk does not hold the buffer").freeze();
        let large = detach_small(buffer.slice(..=DETACH_BELOW));
        assert_eq!(large.len(), DETACH_BELOW + 1);
        assert!(buffer.try_into_mut().is_err(), "a large chunk is not copied");
    }
}
