//! The option values that the command line and the config file share, as plain data: how
//! durations are written, where `watch` gets its events from, and how hard it competes for the
//! machine. `cli` teaches clap to read them, `pairs` reads them from the file.

use std::time::Duration;

use crate::error::{Error, Why};

/// Where `watch` gets change events from.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Events {
    /// fanotify where it can be had (as root), else inotify.
    #[default]
    Auto,
    Fanotify,
    Inotify,
}

/// How `watch` competes for the disk and the CPU.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Priority {
    /// Idle I/O priority, nice 10.
    #[default]
    Low,
    /// As started.
    Normal,
}

/// How much free space `once` and `watch` keep in DST, pruning the oldest versions first: bytes,
/// or a share of the filesystem's size.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum KeepFree {
    Bytes(u64),
    Percent(f64),
}

impl KeepFree {
    /// In bytes, for a filesystem of `total` bytes (unknown: a share of it is nothing).
    pub(crate) fn bytes(self, total: Option<u64>) -> u64 {
        match self {
            KeepFree::Bytes(n) => n,
            KeepFree::Percent(p) => total.map_or(0, |t| (t as f64 * p / 100.0) as u64),
        }
    }
}

/// A size to keep free: `500M`, `10G`, `1.5T`, `2048` (bytes; `K`, `M`, `G`, `T` are powers of
/// 1024, with or without `B` or `iB`), or a share of DST's filesystem, `5%`.
pub(crate) fn parse_keep_free(s: &str) -> Result<KeepFree, Error> {
    let s = s.trim();
    let bad = || Error::run(Why::Size(s.to_string()));
    if let Some(p) = s.strip_suffix('%') {
        let p: f64 = p.trim().parse().map_err(|_| bad())?;
        return if (0.0..100.0).contains(&p) {
            Ok(KeepFree::Percent(p))
        } else {
            Err(bad())
        };
    }
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (number, unit) = s.split_at(split);
    let number: f64 = number.parse().map_err(|_| bad())?;
    let unit = unit.trim().to_ascii_uppercase();
    let unit = unit.trim_end_matches("IB").trim_end_matches('B');
    let scale: u64 = match unit {
        "" => 1,
        "K" => 1 << 10,
        "M" => 1 << 20,
        "G" => 1 << 30,
        "T" => 1 << 40,
        _ => return Err(bad()),
    };
    Ok(KeepFree::Bytes((number * scale as f64) as u64))
}

/// Durations as `500ms`, `2s`, `1h 30m`; a bare number is seconds.
pub(crate) fn parse_duration(s: &str) -> Result<Duration, Error> {
    let s = s.trim();
    if let Ok(secs) = s.parse::<u64>() {
        return Ok(Duration::from_secs(secs));
    }
    humantime::parse_duration(s).map_err(|e| Error::run(Why::Duration(e.to_string())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_to_keep_free_read_as_people_write_them() {
        let bytes = |s| match parse_keep_free(s) {
            Ok(KeepFree::Bytes(n)) => n,
            other => panic!("{s}: {other:?}"),
        };
        assert_eq!(bytes("2048"), 2048);
        assert_eq!(bytes("500M"), 500 << 20);
        assert_eq!(bytes("10G"), 10 << 30);
        assert_eq!(bytes("10GiB"), 10 << 30);
        assert_eq!(bytes("10 GB"), 10 << 30);
        assert_eq!(bytes("1.5K"), 1536);
        assert_eq!(parse_keep_free("5%").ok(), Some(KeepFree::Percent(5.0)));
        assert_eq!(KeepFree::Percent(5.0).bytes(Some(1000)), 50);
        assert_eq!(KeepFree::Percent(5.0).bytes(None), 0);
        for bad in ["", "lots", "10X", "150%", "-1G", "G"] {
            assert!(parse_keep_free(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn durations_read_as_people_write_them() {
        assert_eq!(parse_duration("0").ok(), Some(Duration::ZERO));
        assert_eq!(parse_duration("2").ok(), Some(Duration::from_secs(2)));
        assert_eq!(
            parse_duration("500ms").ok(),
            Some(Duration::from_millis(500))
        );
        assert_eq!(parse_duration("1h").ok(), Some(Duration::from_secs(3600)));
        assert!(parse_duration("soon").is_err());
    }
}
