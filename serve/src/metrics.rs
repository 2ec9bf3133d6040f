//! The server's counters, served in Prometheus' text format on the admin listener
//! (`GET /metrics`): requests by status class, guest failures, deadline hits, requests refused
//! for a full queue, requests that waited for a worker, and the latency distribution (p50 and
//! p99 from a histogram of power-of-two buckets).

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use hyper::http::StatusCode;

/// Latency buckets: bucket `i` holds requests that took less than 2^i µs (the last: any).
const BUCKETS: usize = 28;

#[derive(Default)]
pub struct Metrics {
    requests: AtomicU64,
    /// By status class: 1xx .. 5xx.
    classes: [AtomicU64; 5],
    /// `500`s from the engine: traps, non-zero exits, failures to set up.
    guest_failures: AtomicU64,
    /// `504`s.
    deadlines: AtomicU64,
    /// `503`s: the queue was full.
    rejected: AtomicU64,
    /// Requests that waited for a worker (more than 100 µs in the queue), and their total wait.
    queue_waits: AtomicU64,
    queue_wait_us: AtomicU64,
    latency: [AtomicU64; BUCKETS],
}

impl Metrics {
    /// Counts an answered request.
    pub fn answered(&self, status: StatusCode, took: Duration) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        let class = (status.as_u16() / 100).clamp(1, 5) as usize - 1;
        self.classes[class].fetch_add(1, Ordering::Relaxed);
        let counter = match status {
            StatusCode::INTERNAL_SERVER_ERROR => Some(&self.guest_failures),
            StatusCode::GATEWAY_TIMEOUT => Some(&self.deadlines),
            StatusCode::SERVICE_UNAVAILABLE => Some(&self.rejected),
            _ => None,
        };
        if let Some(counter) = counter {
            counter.fetch_add(1, Ordering::Relaxed);
        }
        self.latency[bucket(took)].fetch_add(1, Ordering::Relaxed);
    }

    /// Counts the time a request waited in the queue.
    pub fn queued(&self, waited: Duration) {
        if waited > Duration::from_micros(100) {
            self.queue_waits.fetch_add(1, Ordering::Relaxed);
            self.queue_wait_us.fetch_add(waited.as_micros() as u64, Ordering::Relaxed);
        }
    }

    /// The latency under which `quantile` of the requests finished (a bucket's upper bound), in
    /// seconds; 0 before any request.
    fn quantile(&self, quantile: f64) -> f64 {
        let counts: Vec<u64> = self.latency.iter().map(|c| c.load(Ordering::Relaxed)).collect();
        let total: u64 = counts.iter().sum();
        if total == 0 {
            return 0.0;
        }
        let wanted = (total as f64 * quantile).ceil() as u64;
        let mut seen = 0;
        for (i, count) in counts.iter().enumerate() {
            seen += count;
            if seen >= wanted {
                return (1u64 << i) as f64 / 1e6;
            }
        }
        (1u64 << (BUCKETS - 1)) as f64 / 1e6
    }

    /// The counters in Prometheus' text format.
    pub fn render(&self) -> String {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let mut out = String::new();
        let mut counter = |name: &str, help: &str, value: String| {
            let _ = writeln!(out, "# HELP kiln_serve_{name} {help}\n# TYPE kiln_serve_{name} counter");
            out.push_str(&value);
        };
        counter("requests_total", "Requests answered.", format!("kiln_serve_requests_total {}\n", get(&self.requests)));
        let mut by_class = String::new();
        for (i, c) in self.classes.iter().enumerate() {
            let _ = writeln!(by_class, "kiln_serve_responses_total{{class=\"{}xx\"}} {}", i + 1, get(c));
        }
        counter("responses_total", "Responses by status class.", by_class);
        for (name, help, c) in [
            (
                "guest_failures_total",
                "500s: guests that trapped, exited non-zero or could not start.",
                &self.guest_failures,
            ),
            ("deadline_exceeded_total", "504s: requests stopped at their deadline.", &self.deadlines),
            ("rejected_total", "503s: requests refused because the queue was full.", &self.rejected),
            ("queue_waits_total", "Requests that waited for a worker.", &self.queue_waits),
        ] {
            counter(name, help, format!("kiln_serve_{name} {}\n", get(c)));
        }
        counter(
            "queue_wait_seconds_total",
            "Time requests waited for a worker.",
            format!("kiln_serve_queue_wait_seconds_total {}\n", get(&self.queue_wait_us) as f64 / 1e6),
        );
        let _ = writeln!(out, "# HELP kiln_serve_latency_seconds Request latency quantiles (bucket upper bounds).");
        let _ = writeln!(out, "# TYPE kiln_serve_latency_seconds gauge");
        for q in [0.5, 0.99] {
            let _ = writeln!(out, "kiln_serve_latency_seconds{{quantile=\"{q}\"}} {}", self.quantile(q));
        }
        out
    }
}

/// The latency bucket of `took`.
fn bucket(took: Duration) -> usize {
    let us = took.as_micros().max(1) as u64;
    // The smallest i with us < 2^i.
    ((64 - us.leading_zeros()) as usize).min(BUCKETS - 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_counted_by_kind_and_latency() {
        let m = Metrics::default();
        for _ in 0..98 {
            m.answered(StatusCode::OK, Duration::from_micros(300));
        }
        m.answered(StatusCode::GATEWAY_TIMEOUT, Duration::from_secs(2));
        m.answered(StatusCode::SERVICE_UNAVAILABLE, Duration::from_micros(5));
        m.queued(Duration::from_millis(3));
        m.queued(Duration::from_micros(10));
        let text = m.render();
        for line in [
            "kiln_serve_requests_total 100",
            "kiln_serve_responses_total{class=\"2xx\"} 98",
            "kiln_serve_responses_total{class=\"5xx\"} 2",
            "kiln_serve_deadline_exceeded_total 1",
            "kiln_serve_rejected_total 1",
            "kiln_serve_guest_failures_total 0",
            "kiln_serve_queue_waits_total 1",
            "kiln_serve_queue_wait_seconds_total 0.003",
            // 300 µs is below 2^9 µs: 98 of the 100 requests, so both quantiles fall there.
            "kiln_serve_latency_seconds{quantile=\"0.5\"} 0.000512",
            "kiln_serve_latency_seconds{quantile=\"0.99\"} 0.000512",
        ] {
            assert!(text.contains(line), "no {line:?} in\n{text}");
        }
        assert_eq!(bucket(Duration::from_secs(2)), 21);
    }
}
