//! The response body type: an upstream's streamed body or a small local page.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use tokio::sync::OwnedSemaphorePermit;

/// Either an upstream body, streamed frame by frame (never buffered whole), or a
/// complete local answer.
#[derive(Debug)]
pub enum ProxyBody {
    /// Streamed from the upstream, holding the upstream connection slot (see
    /// `upstream::Slots`) until the body ends or is dropped.
    Upstream(Incoming, Option<OwnedSemaphorePermit>),
    /// A local page (error pages, redirects); `None` once sent.
    Full(Option<Bytes>),
}

impl ProxyBody {
    /// An empty body.
    pub fn empty() -> ProxyBody {
        ProxyBody::Full(None)
    }

    /// A local body.
    pub fn full(data: impl Into<Bytes>) -> ProxyBody {
        let data = data.into();
        ProxyBody::Full(if data.is_empty() { None } else { Some(data) })
    }
}

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        match self.get_mut() {
            ProxyBody::Upstream(inner, slot) => {
                let frame = Pin::new(inner).poll_frame(cx);
                if matches!(frame, Poll::Ready(None | Some(Err(_)))) {
                    // The upstream connection is idle (or gone): let the next request have it.
                    slot.take();
                }
                frame
            }
            ProxyBody::Full(data) => Poll::Ready(data.take().map(|d| Ok(Frame::data(d)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ProxyBody::Upstream(inner, _) => inner.is_end_stream(),
            ProxyBody::Full(data) => data.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ProxyBody::Upstream(inner, _) => inner.size_hint(),
            ProxyBody::Full(data) => SizeHint::with_exact(data.as_ref().map_or(0, |d| d.len() as u64)),
        }
    }
}
