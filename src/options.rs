//! The option values that the command line and the config file share, as plain data: how
//! durations are written, where `watch` gets its events from, and how hard it competes for the
//! machine. `cli` teaches clap to read them, `pairs` reads them from the file.

use std::time::Duration;

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
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    if let Ok(secs) = s.parse::<u64>() {
        return Ok(Duration::from_secs(secs));
    }
    humantime::parse_duration(s).map_err(|e| format!("{e} (try 500ms, 2s, 1m)"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_as_people_write_them() {
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
        assert_eq!(parse_duration("2"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert!(parse_duration("soon").is_err());
    }
}
