//! The config file: several folders, each backed up into its own destination, for `once` and
//! `watch` run without SRC and DST (and for the user service). TOML, read with serde: one
//! `[[backup]]` table per pair, with `src`, `dst`, an optional `name`, and any option that
//! `once` and `watch` take; the same options at the top are defaults for every pair. Unknown
//! keys, bad values and two pairs writing into one destination are errors that name the file,
//! the line and the key, before anything is written.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::error::{About, Error, Why};
use crate::options::{Events, KeepFree, Priority};

/// Declares a table of the file: its own fields, then every option (each optional), with
/// unknown keys refused; and `options()`, its options alone. One list of options for the top
/// of the file and for each pair, so that both take exactly the same keys.
macro_rules! table {
    ($(#[$meta:meta])* $name:ident { $($own:tt)* }) => {
        $(#[$meta])*
        #[derive(Debug, Deserialize)]
        #[serde(deny_unknown_fields, rename_all = "kebab-case")]
        struct $name {
            $($own)*
            checksum: Option<bool>,
            jobs: Option<u16>,
            exclude: Option<Vec<String>>,
            exclude_from: Option<Vec<PathBuf>>,
            no_default_ignores: Option<bool>,
            mkpath: Option<bool>,
            keep_last: Option<usize>,
            #[serde(default, deserialize_with = "duration")]
            keep_within: Option<Duration>,
            staggered: Option<bool>,
            #[serde(default, deserialize_with = "keep_free")]
            keep_free: Option<KeepFree>,
            #[serde(default, deserialize_with = "duration")]
            debounce: Option<Duration>,
            #[serde(default, deserialize_with = "duration")]
            max_delay: Option<Duration>,
            #[serde(default, deserialize_with = "duration")]
            poll: Option<Duration>,
            events: Option<Events>,
            #[serde(default, deserialize_with = "duration")]
            rescan_every: Option<Duration>,
            exit_on_lost_destination: Option<bool>,
            priority: Option<Priority>,
            notify: Option<Notify>,
            metrics_file: Option<PathBuf>,
        }

        impl $name {
            fn options(&self) -> Options {
                Options {
                    checksum: self.checksum.clone(),
                    jobs: self.jobs.clone(),
                    exclude: self.exclude.clone(),
                    exclude_from: self.exclude_from.clone(),
                    no_default_ignores: self.no_default_ignores.clone(),
                    mkpath: self.mkpath.clone(),
                    keep_last: self.keep_last.clone(),
                    keep_within: self.keep_within.clone(),
                    staggered: self.staggered.clone(),
                    keep_free: self.keep_free.clone(),
                    debounce: self.debounce.clone(),
                    max_delay: self.max_delay.clone(),
                    poll: self.poll.clone(),
                    events: self.events.clone(),
                    rescan_every: self.rescan_every.clone(),
                    exit_on_lost_destination: self.exit_on_lost_destination.clone(),
                    priority: self.priority.clone(),
                    notify: self.notify.clone(),
                    metrics_file: self.metrics_file.clone(),
                }
            }
        }
    };
}

/// The settings a pair can have, each optional: the pair's own, else the file's defaults, else
/// the built-in ones.
#[derive(Clone, Debug, Default)]
pub(crate) struct Options {
    pub checksum: Option<bool>,
    pub jobs: Option<u16>,
    pub exclude: Option<Vec<String>>,
    pub exclude_from: Option<Vec<PathBuf>>,
    pub no_default_ignores: Option<bool>,
    pub mkpath: Option<bool>,
    pub keep_last: Option<usize>,
    pub keep_within: Option<Duration>,
    pub staggered: Option<bool>,
    pub keep_free: Option<KeepFree>,
    pub debounce: Option<Duration>,
    pub max_delay: Option<Duration>,
    pub poll: Option<Duration>,
    pub events: Option<Events>,
    pub rescan_every: Option<Duration>,
    pub exit_on_lost_destination: Option<bool>,
    pub priority: Option<Priority>,
    pub notify: Option<Notify>,
    pub metrics_file: Option<PathBuf>,
}

/// A `[notify]` table: where and when a change of a pair's condition is said. At the top of
/// the file for every pair; a pair's own (`[backup.notify]`) overrides it key by key.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub(crate) struct Notify {
    pub desktop: Option<bool>,
    pub exec: Option<String>,
    #[serde(default, deserialize_with = "url")]
    pub url: Option<String>,
    pub url_json: Option<bool>,
    #[serde(default, deserialize_with = "url")]
    pub healthchecks: Option<String>,
    #[serde(default, deserialize_with = "duration")]
    pub lost_after: Option<Duration>,
    #[serde(default, deserialize_with = "duration")]
    pub stale_after: Option<Duration>,
}

impl Notify {
    fn or(self, d: Notify) -> Notify {
        Notify {
            desktop: self.desktop.or(d.desktop),
            exec: self.exec.or(d.exec),
            url: self.url.or(d.url),
            url_json: self.url_json.or(d.url_json),
            healthchecks: self.healthchecks.or(d.healthchecks),
            lost_after: self.lost_after.or(d.lost_after),
            stale_after: self.stale_after.or(d.stale_after),
        }
    }
}

impl Options {
    /// These settings, with `defaults` where they have none.
    fn or(self, defaults: &Options) -> Options {
        let d = defaults.clone();
        Options {
            checksum: self.checksum.or(d.checksum),
            jobs: self.jobs.or(d.jobs),
            exclude: self.exclude.or(d.exclude),
            exclude_from: self.exclude_from.or(d.exclude_from),
            no_default_ignores: self.no_default_ignores.or(d.no_default_ignores),
            mkpath: self.mkpath.or(d.mkpath),
            keep_last: self.keep_last.or(d.keep_last),
            keep_within: self.keep_within.or(d.keep_within),
            staggered: self.staggered.or(d.staggered),
            keep_free: self.keep_free.or(d.keep_free),
            debounce: self.debounce.or(d.debounce),
            max_delay: self.max_delay.or(d.max_delay),
            poll: self.poll.or(d.poll),
            events: self.events.or(d.events),
            rescan_every: self.rescan_every.or(d.rescan_every),
            exit_on_lost_destination: self.exit_on_lost_destination.or(d.exit_on_lost_destination),
            priority: self.priority.or(d.priority),
            notify: match (self.notify, d.notify) {
                (Some(own), Some(all)) => Some(own.or(all)),
                (own, all) => own.or(all),
            },
            metrics_file: self.metrics_file.or(d.metrics_file),
        }
    }
}

/// A URL to notify: refused here, with the line, unless it is http or https; the error never
/// repeats the URL, which may hold a token.
fn url<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    let text = String::deserialize(d)?;
    crate::health::notify::check_url(&text)
        .map(|()| Some(text))
        .map_err(serde::de::Error::custom)
}

fn keep_free<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<KeepFree>, D::Error> {
    let text = String::deserialize(d)?;
    crate::options::parse_keep_free(&text)
        .map(Some)
        .map_err(serde::de::Error::custom)
}

fn duration<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    let text = String::deserialize(d)?;
    crate::options::parse_duration(&text)
        .map(Some)
        .map_err(serde::de::Error::custom)
}

table! {
    /// One `[[backup]]` table as written.
    PairTable {
        name: Option<String>,
        src: PathBuf,
        dst: toml::Spanned<PathBuf>,
    }
}

table! {
    /// The file as written: defaults, then the pairs.
    FileTable {
        #[serde(default)]
        backup: Vec<PairTable>,
    }
}

/// One pair to back up.
#[derive(Clone, Debug)]
pub(crate) struct Pair {
    /// Its `name`, else its position (`1`, `2`, …) in the file.
    pub name: String,
    pub src: PathBuf,
    pub dst: PathBuf,
    pub options: Options,
}

/// Where the config file is unless `--config` says: `$XDG_CONFIG_HOME/backup/config.toml`, or
/// `~/.config/backup/config.toml`.
pub(crate) fn default_path() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))?;
    Some(base.join("backup").join("config.toml"))
}

/// The pairs a command without SRC and DST means: those of `config`, else of the default file
/// when there is one, keeping those named in `only`.
pub(crate) fn chosen(config: Option<&Path>, only: &[String]) -> Result<Vec<Pair>, Error> {
    let path = match config {
        Some(p) => p.to_path_buf(),
        None => default_path()
            .filter(|p| p.exists())
            .ok_or(Error::run(Why::NoPairs))?,
    };
    load(&path, only)
}

/// Reads the pairs from `path`, keeping those named in `only` (all when empty). The error is
/// the `error:` line: the file, and the line and key at fault.
pub(crate) fn load(path: &Path, only: &[String]) -> Result<Vec<Pair>, Error> {
    let named = |why| Error::new(About::Config(path.to_path_buf()), why);
    let text = std::fs::read_to_string(path).map_err(|e| named(Why::Io(e)))?;
    let file: FileTable = toml::from_str(&text).map_err(|e| named(toml_error(&text, &e)))?;
    let defaults = file.options();
    if file.backup.is_empty() {
        return Err(named(Why::NoBackupTable));
    }
    let home = std::env::var_os("HOME").map(PathBuf::from);
    let mut pairs: Vec<Pair> = Vec::new();
    let mut seen: Vec<(PathBuf, String, usize)> = Vec::new();
    for (i, table) in file.backup.into_iter().enumerate() {
        let options = table.options().or(&defaults);
        let name = table.name.unwrap_or_else(|| (i + 1).to_string());
        let line = line_of(&text, table.dst.span().start);
        let dst = expand(table.dst.into_inner(), home.as_deref());
        let key = std::path::absolute(&dst).unwrap_or_else(|_| dst.clone());
        let overlap = seen
            .iter()
            .find(|(d, _, _)| d.starts_with(&key) || key.starts_with(d));
        // The outer pair would list, verify and prune the inner pair's copies as its own, and
        // a folder of the same name in its source would mix the two.
        if let Some((theirs, other, _)) = overlap {
            let (into, inner) = if *theirs == key {
                (dst.clone(), None)
            } else {
                (theirs.clone(), Some(key.clone()))
            };
            return Err(named(Why::Overlap {
                line,
                first: other.clone(),
                second: name,
                into,
                other: inner,
            }));
        }
        seen.push((key, name.clone(), line));
        pairs.push(Pair {
            name,
            src: expand(table.src, home.as_deref()),
            dst,
            options,
        });
    }
    if let Some(missing) = only.iter().find(|n| !pairs.iter().any(|p| &p.name == *n)) {
        return Err(named(Why::NoSuchPair {
            name: missing.clone(),
            names: pairs.iter().map(|p| p.name.clone()).collect(),
        }));
    }
    pairs.retain(|p| only.is_empty() || only.contains(&p.name));
    Ok(pairs)
}

/// `~/x` as the path under the home folder.
fn expand(path: PathBuf, home: Option<&Path>) -> PathBuf {
    match (path.strip_prefix("~"), home) {
        (Ok(rest), Some(home)) => home.join(rest),
        _ => path,
    }
}

fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
}

/// toml's error as one line: `line N: <message>`, with the key it names.
fn toml_error(text: &str, e: &toml::de::Error) -> Why {
    Why::Toml {
        line: e.span().map(|span| line_of(text, span.start)),
        message: e.message().replace('\n', " "),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::escape::display;

    fn load_text(text: &str, only: &[&str]) -> Result<Vec<Pair>, String> {
        let tmp = tempfile::tempdir().expect("tempdir");
        let path = tmp.path().join("config.toml");
        std::fs::write(&path, text).expect("write");
        let only: Vec<String> = only.iter().map(|s| s.to_string()).collect();
        load(&path, &only).map_err(|e| e.to_string().replace(&display(&path), "FILE"))
    }

    #[test]
    fn a_pair_s_notify_table_overrides_the_top_one_key_by_key() {
        let pairs = load_text(
            r#"
metrics-file = "/var/lib/node-exporter/backup.prom"

[notify]
desktop = true
url = "https://ntfy.sh/topic"
lost-after = "1d"

[[backup]]
name = "documents"
src = "/home/ana/Documents"
dst = "/media/usb/documents"

[[backup]]
name = "photos"
src = "/home/ana/photos"
dst = "/media/usb/photos"

[backup.notify]
healthchecks = "https://hc-ping.com/uuid"
lost-after = "2h"
"#,
            &[],
        )
        .expect("loads");
        let n = |i: usize| pairs[i].options.notify.clone().expect("notify");
        assert_eq!(n(0).desktop, Some(true));
        assert_eq!(n(0).healthchecks, None);
        assert_eq!(n(0).lost_after, Some(Duration::from_secs(86_400)));
        assert_eq!(n(1).desktop, Some(true));
        assert_eq!(n(1).url.as_deref(), Some("https://ntfy.sh/topic"));
        assert_eq!(
            n(1).healthchecks.as_deref(),
            Some("https://hc-ping.com/uuid")
        );
        assert_eq!(n(1).lost_after, Some(Duration::from_secs(7200)));
        assert!(pairs.iter().all(|p| p.options.metrics_file.is_some()));
        let e = load_text(
            "[notify]\nurl = \"my-secret-topic\"\n[[backup]]\nsrc = \"/a\"\ndst = \"/b\"\n",
            &[],
        )
        .expect_err("not a URL");
        assert!(e.contains("line 2") && e.contains("not a URL"), "{e}");
        assert!(!e.contains("secret"), "{e}");
    }

    #[test]
    fn pairs_take_the_defaults_they_do_not_set() {
        let pairs = load_text(
            r#"
debounce = "2s"
exclude = ["*.tmp"]

[[backup]]
name = "documents"
src = "/home/ana/Documents"
dst = "/media/usb/documents"
keep-within = "90d"

[[backup]]
src = "/home/ana/photos"
dst = "/media/usb/photos"
debounce = "10s"
"#,
            &[],
        )
        .expect("valid");
        assert_eq!(pairs.len(), 2);
        assert_eq!(pairs[0].name, "documents");
        assert_eq!(pairs[1].name, "2");
        assert_eq!(pairs[0].options.debounce, Some(Duration::from_secs(2)));
        assert_eq!(pairs[1].options.debounce, Some(Duration::from_secs(10)));
        assert_eq!(
            pairs[1].options.exclude.as_deref(),
            Some(&["*.tmp".to_string()][..])
        );
        assert_eq!(
            pairs[0].options.keep_within,
            Some(Duration::from_secs(90 * 86_400))
        );
        let only = load_text(
            "[[backup]]\nname='a'\nsrc='/a'\ndst='/x'\n[[backup]]\nname='b'\nsrc='/b'\ndst='/y'\n",
            &["b"],
        )
        .expect("valid");
        assert_eq!(only.len(), 1);
        assert_eq!(only[0].src, PathBuf::from("/b"));
    }

    #[test]
    fn mistakes_name_the_file_line_and_key() {
        let unknown = load_text("[[backup]]\nsrc = '/a'\ndst = '/b'\nkeep-lats = 3\n", &[])
            .expect_err("unknown key");
        assert!(unknown.starts_with("config FILE: line "), "{unknown}");
        assert!(unknown.contains("keep-lats"), "{unknown}");
        let bad = load_text(
            "debounce = 'soon'\n[[backup]]\nsrc = '/a'\ndst = '/b'\n",
            &[],
        )
        .expect_err("bad value");
        assert!(bad.starts_with("config FILE: line 1: "), "{bad}");
        let twice = load_text(
            "[[backup]]\nsrc = '/a'\ndst = '/d'\n[[backup]]\nsrc = '/b'\ndst = '/d'\n",
            &[],
        )
        .expect_err("one destination twice");
        assert!(
            twice.starts_with("config FILE: line 6: dst: pairs 1 and 2"),
            "{twice}"
        );
        let nested = load_text(
            "[[backup]]\nsrc = '/a'\ndst = '/d/a'\n[[backup]]\nsrc = '/b'\ndst = '/d'\n",
            &[],
        )
        .expect_err("one destination inside another");
        assert!(
            nested.ends_with(
                "line 6: dst: pairs 1 and 2 write into /d/a and /d, one inside the other; each \
                 destination takes one pair"
            ),
            "{nested}"
        );
        let siblings =
            "[[backup]]\nsrc = '/a'\ndst = '/d/a'\n[[backup]]\nsrc = '/b'\ndst = '/d/ab'\n";
        assert!(load_text(siblings, &[]).is_ok(), "/d/ab is not inside /d/a");
        let none = load_text("debounce = '1s'\n", &[]).expect_err("no pairs");
        assert!(none.contains("no [[backup]] table"), "{none}");
        let only = load_text("[[backup]]\nsrc = '/a'\ndst = '/d'\n", &["x"]).expect_err("only");
        assert!(only.contains("--only x: no such pair"), "{only}");
    }
}
