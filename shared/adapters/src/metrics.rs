//! Metrics as CloudWatch embedded metric format lines on standard output: Lambda sends a
//! function's output to CloudWatch Logs, which extracts the metrics from such lines.

use engine::metrics::SendFigures;
use std::io::Write;

/// Writes each figure as one line on standard output.
pub struct EmfMetrics {
    function: String,
}

impl EmfMetrics {
    pub fn new(function: &str) -> EmfMetrics {
        EmfMetrics {
            function: function.to_string(),
        }
    }
}

impl engine::ports::Metrics for EmfMetrics {
    fn sends(&self, figures: &SendFigures) {
        let at_ms = (time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64;
        let line = figures.emf_line(&self.function, at_ms);
        // One write of the whole line, so lines of concurrent invocations never mix; a
        // closed output loses a metric, never a send.
        let _ = writeln!(std::io::stdout().lock(), "{line}");
    }
}
