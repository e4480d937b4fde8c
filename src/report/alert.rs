//! The words of what `watch` says beyond its terminal: a notification's title and message, and
//! the metrics file in Prometheus's text format.

use std::fmt::Write;
use std::time::{Duration, SystemTime};

use crate::health::{Alert, Condition, Reading};

/// What an alert is about, beside the alert itself.
pub(crate) struct About<'a> {
    pub pair: &'a str,
    pub dst: &'a str,
    /// Files that keep failing, and the first of them with its reason.
    pub failing: usize,
    pub first_failure: Option<&'a str>,
    pub lag: Duration,
    pub stale_after: Duration,
    pub pending: usize,
    /// How long DST has been away.
    pub away_for: Option<Duration>,
}

/// A notification's title and message.
pub(crate) fn words(alert: Alert, a: &About) -> (String, String) {
    let pair = a.pair;
    let waiting = match a.pending {
        0 => String::new(),
        1 => "; 1 change waits to be copied".to_string(),
        n => format!("; {n} changes wait to be copied"),
    };
    match alert {
        Alert::Trouble(Condition::Failing) => {
            let files = match a.failing {
                1 => "1 file could not be copied".to_string(),
                n => format!("{n} files could not be copied"),
            };
            let first = a
                .first_failure
                .map(|f| format!(": {f}"))
                .unwrap_or_default();
            (
                format!("backup of {pair} is failing"),
                format!("{files}{first}"),
            )
        }
        Alert::Trouble(Condition::Lost) => (
            format!("backup of {pair} has lost its destination"),
            format!(
                "{} has been away for {}{waiting}",
                a.dst,
                span(a.away_for.unwrap_or_default())
            ),
        ),
        Alert::Trouble(Condition::Full) => (
            format!("backup of {pair}: destination full"),
            format!("{} has no room left{waiting}", a.dst),
        ),
        Alert::Trouble(Condition::Stale) => (
            format!("backup of {pair} is falling behind"),
            format!(
                "the oldest change not yet copied is {} old (limit {}){waiting}",
                span(a.lag),
                span(a.stale_after)
            ),
        ),
        Alert::Trouble(Condition::Ok) => (format!("backup of {pair}"), "all is well".into()),
        Alert::Recovered { from, lasted } => {
            let was = match from {
                Condition::Failing => "failing",
                Condition::Lost => "without its destination",
                Condition::Full => "without room",
                Condition::Stale => "behind",
                Condition::Ok => "in trouble",
            };
            (
                format!("backup of {pair} has recovered"),
                format!(
                    "every change is copied again (it was {was} for {})",
                    span(lasted)
                ),
            )
        }
    }
}

/// A span as people say it: whole seconds, at most two units.
fn span(d: Duration) -> String {
    let s = d.as_secs();
    let (h, m, sec) = (s / 3600, s / 60 % 60, s % 60);
    match (h, m) {
        (0, 0) => format!("{sec}s"),
        (0, _) if sec == 0 => format!("{m}m"),
        (0, _) => format!("{m}m {sec}s"),
        (_, 0) => format!("{h}h"),
        _ => format!("{h}h {m}m"),
    }
}

/// One pair's labels in the metrics file.
pub(crate) struct Labels {
    pub pair: String,
    pub src: String,
    pub dst: String,
}

/// The metrics of every pair that writes into one file, in Prometheus's text exposition
/// format (what node_exporter's textfile collector reads).
pub(crate) fn metrics(rows: &[&(Labels, Reading)]) -> String {
    let mut out = String::new();
    type Value = fn(&Reading) -> Option<f64>;
    let gauges: [(&str, &str, &str, Value); 8] = [
        (
            "backup_last_success_timestamp_seconds",
            "gauge",
            "When the last batch ended with every file copied (Unix time).",
            |r| r.last_success.map(unix_seconds),
        ),
        (
            "backup_lag_seconds",
            "gauge",
            "Age of the oldest change not yet durable in the destination; 0 when caught up.",
            |r| Some(r.lag.as_secs_f64()),
        ),
        (
            "backup_pending_files",
            "gauge",
            "Changes seen and not yet copied.",
            |r| Some(r.pending_files as f64),
        ),
        (
            "backup_pending_bytes",
            "gauge",
            "Size of the files not yet copied (of the first 10000 of them).",
            |r| Some(r.pending_bytes as f64),
        ),
        (
            "backup_destination_reachable",
            "gauge",
            "1 when the destination takes copies now, else 0.",
            |r| Some(if r.reachable { 1.0 } else { 0.0 }),
        ),
        (
            "backup_destination_free_bytes",
            "gauge",
            "Free space in the destination.",
            |r| r.free.map(|f| f as f64),
        ),
        (
            "backup_versions",
            "gauge",
            "Versions held in the destination, counted at the last full pass.",
            |r| r.versions.map(|v| v as f64),
        ),
        (
            "backup_failures_total",
            "counter",
            "Files that failed to copy since the watch started.",
            |r| Some(r.failures_total as f64),
        ),
    ];
    for (name, kind, help, value) in gauges {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for (labels, r) in rows {
            if let Some(v) = value(r) {
                let _ = writeln!(out, "{name}{{{}}} {v}", label_set(labels, None));
            }
        }
    }
    let name = "backup_copied_total";
    let _ = writeln!(
        out,
        "# HELP {name} Files copied since the watch started.\n# TYPE {name} counter"
    );
    for (labels, r) in rows {
        let _ = writeln!(
            out,
            "{name}{{{}}} {}",
            label_set(labels, None),
            r.copied_total
        );
    }
    let name = "backup_state";
    let _ = writeln!(
        out,
        "# HELP {name} The pair's condition: 1 for the one it is in.\n# TYPE {name} gauge"
    );
    for (labels, r) in rows {
        for c in Condition::ALL {
            let on = u8::from(r.condition == c);
            let _ = writeln!(out, "{name}{{{}}} {on}", label_set(labels, Some(c.word())));
        }
    }
    out
}

fn unix_seconds(t: SystemTime) -> f64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

fn label_set(l: &Labels, state: Option<&str>) -> String {
    let mut s = format!(
        "pair=\"{}\",src=\"{}\",dst=\"{}\"",
        escaped(&l.pair),
        escaped(&l.src),
        escaped(&l.dst)
    );
    if let Some(state) = state {
        let _ = write!(s, ",state=\"{state}\"");
    }
    s
}

/// A label value as the format wants it: backslash, quote and newline escaped.
fn escaped(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_read_as_people_say_them() {
        let s = Duration::from_secs;
        assert_eq!(span(s(5)), "5s");
        assert_eq!(span(s(120)), "2m");
        assert_eq!(span(s(125)), "2m 5s");
        assert_eq!(span(s(3600)), "1h");
        assert_eq!(span(s(3600 * 26 + 60 * 3 + 4)), "26h 3m");
    }

    #[test]
    fn labels_are_escaped_and_every_state_is_listed() {
        let l = Labels {
            pair: "a\"b".into(),
            src: "/x\\y".into(),
            dst: "/d\n".into(),
        };
        let r = Reading {
            condition: Condition::Failing,
            ..Reading::default()
        };
        let text = metrics(&[&(l, r)]);
        assert!(
            text.contains(r#"backup_state{pair="a\"b",src="/x\\y",dst="/d\n",state="failing"} 1"#),
            "{text}"
        );
        assert_eq!(text.matches("backup_state{").count(), 5);
        assert!(
            !text.contains("backup_last_success_timestamp_seconds{"),
            "none yet"
        );
    }
}
