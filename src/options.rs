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
