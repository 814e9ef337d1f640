//! The upstream body passed on frame by frame, never held whole: cut off
//! when it grows past `max_body_bytes` or outlives the fetch's deadline.
//! It holds the fetch's turn (see `handler::MAX_UPSTREAM_FETCHES`) until
//! it is dropped.

use std::{
    pin::Pin,
    task::{Context, Poll, ready},
};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use tokio::{
    sync::OwnedSemaphorePermit,
    time::{Instant, Sleep, sleep_until},
};

use super::{
    PassthroughError,
    metrics::{Outcome, PassthroughMetrics},
};

pub struct Capped {
    inner: Incoming,
    left: u64,
    limit: u64,
    deadline: Pin<Box<Sleep>>,
    metrics: PassthroughMetrics,
    failed: bool,
    _turn: OwnedSemaphorePermit,
}

impl Capped {
    pub fn new(
        inner: Incoming,
        limit: u64,
        deadline: Instant,
        metrics: PassthroughMetrics,
        turn: OwnedSemaphorePermit,
    ) -> Self {
        Self {
            inner,
            left: limit,
            limit,
            deadline: Box::pin(sleep_until(deadline)),
            metrics,
            failed: false,
            _turn: turn,
        }
    }

    fn fail(
        &mut self,
        e: PassthroughError,
    ) -> Poll<Option<Result<Frame<Bytes>, PassthroughError>>> {
        tracing::warn!("passthrough body cut off: {e}");
        self.failed = true;
        self.metrics.count(Outcome::aborted);
        Poll::Ready(Some(Err(e)))
    }
}

impl Body for Capped {
    type Data = Bytes;
    type Error = PassthroughError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, PassthroughError>>> {
        let this = self.get_mut();
        if this.failed {
            return Poll::Ready(None);
        }
        if this.deadline.as_mut().poll(cx).is_ready() {
            return this.fail(PassthroughError::BodyTimeout);
        }
        match ready!(Pin::new(&mut this.inner).poll_frame(cx)) {
            Some(Ok(frame)) => {
                let len = frame.data_ref().map_or(0, |d| d.len() as u64);
                if len > this.left {
                    return this.fail(PassthroughError::BodyTooLarge(this.limit));
                }
                this.left -= len;
                Poll::Ready(Some(Ok(frame)))
            }
            Some(Err(e)) => this.fail(PassthroughError::Body(e)),
            None => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.failed || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
