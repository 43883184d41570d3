//! Metrics as CloudWatch embedded metric format lines: on standard output in Lambda, which
//! sends a function's output to CloudWatch Logs, where the metrics are extracted from such
//! lines; appended to a file in the local runtime, which has no CloudWatch.

use engine::metrics::SendFigures;
use std::io::Write;
use std::path::PathBuf;

/// Writes each figure as embedded metric format lines: one for the dispatch, one per channel.
pub struct EmfMetrics {
    function: String,
    /// Where the lines go: standard output, or the end of this file.
    file: Option<PathBuf>,
}

impl EmfMetrics {
    /// Lines on standard output, as Lambda wants them.
    pub fn new(function: &str) -> EmfMetrics {
        EmfMetrics {
            function: function.to_string(),
            file: None,
        }
    }

    /// Lines appended to `file`.
    pub fn to_file(function: &str, file: PathBuf) -> EmfMetrics {
        EmfMetrics {
            function: function.to_string(),
            file: Some(file),
        }
    }
}

impl engine::ports::Metrics for EmfMetrics {
    fn sends(&self, figures: &SendFigures) {
        let at_ms = (time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64;
        let mut figures = figures.clone();
        figures.conflicts_retried = crate::dynamodb::counters::take_conflicts_retried();
        let mut text = figures.emf_line(&self.function, at_ms);
        text.push('\n');
        for line in figures.channel_lines(&self.function, at_ms) {
            text.push_str(&line);
            text.push('\n');
        }
        // One write of all the lines, so lines of concurrent invocations never mix; an
        // output that cannot be written loses a metric, never a send.
        let _ = match &self.file {
            None => std::io::stdout().lock().write_all(text.as_bytes()),
            Some(path) => std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .and_then(|mut f| f.write_all(text.as_bytes())),
        };
    }
}
