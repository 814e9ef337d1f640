//! The passthrough's own metrics: requests by outcome, and how long the
//! upstream node_exporter took to answer.

use prometheus_client::{
    encoding::{EncodeLabelSet, EncodeLabelValue},
    metrics::{
        counter::Counter,
        family::Family,
        histogram::{Histogram, exponential_buckets},
    },
    registry::Registry,
};

/// How a passthrough request ended.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(
    non_camel_case_types,
    reason = "the variants are the `outcome` label values, written as the metric shows them"
)]
pub enum Outcome {
    /// The exporter's answer was passed on.
    ok,
    unauthorized,
    query_rejected,
    unknown_site,
    unknown_host,
    disabled,
    /// 502: no connection or no HTTP answer.
    unreachable,
    /// 504: no answer within `passthrough.timeout`.
    timeout,
    /// The exporter answered non-2xx; its status was passed on.
    upstream_error,
    /// 502: the announced body is larger than `max_body_bytes`.
    too_large,
    /// The body was cut off after the status was sent (too large, too slow, or broken).
    aborted,
    /// 503: every upstream fetch slot stayed taken until the deadline.
    busy,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    pub outcome: Outcome,
}

#[derive(Clone)]
pub struct PassthroughMetrics {
    pub requests: Family<OutcomeLabels, Counter>,
    /// Request sent to response head received.
    pub upstream_seconds: Histogram,
}

impl PassthroughMetrics {
    pub fn register(registry: &mut Registry) -> Self {
        let m = Self {
            requests: Family::default(),
            // 1 ms to about 16 s.
            upstream_seconds: Histogram::new(exponential_buckets(0.001, 2.0, 15)),
        };
        let r = registry.sub_registry_with_prefix("scanner_agent");
        r.register(
            "passthrough_requests",
            "node_exporter passthrough requests, by outcome",
            m.requests.clone(),
        );
        r.register(
            "passthrough_upstream_duration_seconds",
            "Time until the upstream node_exporter's response head arrived",
            m.upstream_seconds.clone(),
        );
        m
    }

    pub fn count(&self, outcome: Outcome) {
        self.requests
            .get_or_create(&OutcomeLabels { outcome })
            .inc();
    }
}
