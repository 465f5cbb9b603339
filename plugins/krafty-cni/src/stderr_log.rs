//! The plugins' diagnostics: each `tracing` event as one line on stderr, never on stdout (stdout
//! carries the CNI protocol).
//!
//! Written here rather than taken from tracing-subscriber, whose fmt layer and span registry
//! cost every plugin binary tens of kilobytes. The lines are those the fmt layer printed:
//! `2026-11-22T08:30:00.123456Z  WARN target: message field=value`.

use std::fmt::{self, Write as _};
use std::time::SystemTime;

use tracing::field::{Field, Visit};
use tracing::level_filters::LevelFilter;
use tracing::span::{Attributes, Id, Record};
use tracing::subscriber::Interest;
use tracing::{Event, Level, Metadata, Subscriber};

use crate::invocation_log::rfc3339;

/// Sends the events at `level` and above to stderr, for the rest of the process.
pub fn init(level: Level) {
    let log = LineLog {
        level,
        write: |line: &str| {
            use std::io::Write;
            // One write per line keeps the lines of concurrent threads whole; a closed stderr
            // is no reason to fail the invocation.
            let _ = std::io::stderr().write_all(line.as_bytes());
        },
    };
    // Only fails when a subscriber is already installed, which then keeps the events.
    let _ = tracing::subscriber::set_global_default(log);
}

/// A subscriber that formats each enabled event as a line and hands it to `write`.
struct LineLog<W> {
    level: Level,
    write: W,
}

impl<W: Fn(&str) + Send + Sync + 'static> Subscriber for LineLog<W> {
    fn register_callsite(&self, metadata: &'static Metadata<'static>) -> Interest {
        if self.enabled(metadata) {
            Interest::always()
        } else {
            Interest::never()
        }
    }

    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        *metadata.level() <= self.level
    }

    fn max_level_hint(&self) -> Option<LevelFilter> {
        Some(LevelFilter::from_level(self.level))
    }

    fn event(&self, event: &Event<'_>) {
        let metadata = event.metadata();
        let mut line = rfc3339(SystemTime::now());
        let _ = write!(
            line,
            " {:>5} {}: ",
            metadata.level().as_str(),
            metadata.target()
        );
        event.record(&mut Fields {
            line: &mut line,
            first: true,
        });
        line.push('\n');
        (self.write)(&line);
    }

    // krafty opens no spans: they are accepted and not shown.
    fn new_span(&self, _: &Attributes<'_>) -> Id {
        Id::from_u64(1)
    }

    fn record(&self, _: &Id, _: &Record<'_>) {}

    fn record_follows_from(&self, _: &Id, _: &Id) {}

    fn enter(&self, _: &Id) {}

    fn exit(&self, _: &Id) {}
}

/// Writes an event's message as is and its other fields as ` name=value` (`Debug`).
struct Fields<'a> {
    line: &'a mut String,
    first: bool,
}

impl Visit for Fields<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.record_debug(field, &format_args!("{value}"));
        } else {
            self.record_debug(field, &value);
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if !self.first {
            self.line.push(' ');
        }
        self.first = false;
        let mut out = Escaped(self.line);
        let _ = match field.name() {
            "message" => write!(out, "{value:?}"),
            name => write!(out, "{}={value:?}", name.strip_prefix("r#").unwrap_or(name)),
        };
    }
}

/// Spells out the control characters that could drive a terminal, so that text from a config
/// or the kernel cannot.
struct Escaped<'a>(&'a mut String);

impl fmt::Write for Escaped<'_> {
    fn write_str(&mut self, text: &str) -> fmt::Result {
        for c in text.chars() {
            match c {
                '\x1b' | '\x07' | '\x08' | '\x0c' | '\x7f' => {
                    write!(self.0, "\\x{:02x}", u32::from(c))?
                }
                '\u{80}'..='\u{9f}' => write!(self.0, "\\u{{{:x}}}", u32::from(c))?,
                c => self.0.push(c),
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    /// The lines a `LineLog` at `level` writes while `emit` runs, without their timestamps.
    fn lines(level: Level, emit: impl FnOnce()) -> Vec<String> {
        let written = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&written);
        let log = LineLog {
            level,
            write: move |line: &str| sink.lock().unwrap().push(line.to_string()),
        };
        tracing::subscriber::with_default(log, emit);
        let lines = written.lock().unwrap().clone();
        lines
            .into_iter()
            .map(|line| {
                let (time, rest) = line.split_once(' ').unwrap();
                assert_eq!(time.len(), "2026-11-22T08:30:00.123456Z".len(), "{line}");
                rest.to_string()
            })
            .collect()
    }

    #[test]
    fn lines_are_level_target_message_and_fields() {
        let name = "net1";
        let got = lines(Level::INFO, || {
            tracing::warn!("{name} exists");
            tracing::error!(target: "t", code = 7, r#type = "veth", "failed");
            tracing::info!(target: "t", message = "plain", n = 1);
            tracing::debug!("not shown");
        });
        assert_eq!(
            got,
            [
                " WARN krafty_cni::stderr_log::tests: net1 exists\n",
                "ERROR t: failed code=7 type=\"veth\"\n",
                " INFO t: plain n=1\n",
            ]
        );
    }

    #[test]
    fn control_characters_are_spelled_out() {
        let got = lines(Level::WARN, || {
            tracing::warn!(target: "t", "a\x1b[31mb\u{9b}c\td");
        });
        assert_eq!(got, [" WARN t: a\\x1b[31mb\\u{9b}c\td\n"]);
    }
}
