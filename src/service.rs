//! `backup service`: `watch` over the config file as a systemd user service, started at login,
//! restarted on failure, at low CPU and I/O priority. Where systemd does not run (or cannot be
//! reached), the unit is still written and printed, so that it can be installed by hand.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::config::Service as Job;
use crate::error::{About, Error, Status, Why};
use crate::pairs;
use crate::report::{Message, Reporter, Service, Style};

/// The unit's name.
const UNIT: &str = "backup.service";

pub(crate) fn run(job: Job) -> Status {
    let mut out = Reporter::stdio(Style::default());
    let result = match job {
        Job::Install { config } => install(config, &mut out),
        Job::Uninstall => uninstall(&mut out),
        Job::Status => return systemctl(&["status", UNIT], &mut out, true),
    };
    match result {
        Ok(status) => status,
        Err(e) => {
            out.error(&e);
            Status::Failure
        }
    }
}

/// Where user units go: `$XDG_CONFIG_HOME/systemd/user`, or `~/.config/systemd/user`.
fn unit_folder() -> Result<PathBuf, Error> {
    std::env::var_os("XDG_CONFIG_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))
        .map(|base| base.join("systemd").join("user"))
        .ok_or(Error::run(Why::NoHome))
}

fn install(config: Option<PathBuf>, out: &mut Reporter) -> Result<Status, Error> {
    let config = match config {
        Some(c) => c,
        None => pairs::default_path().ok_or(Error::run(Why::NoConfig))?,
    };
    let config = std::fs::canonicalize(&config)
        .map_err(|e| Error::new(About::Config(config), Why::Io(e)))?;
    // The service would only fail over and over on a file that does not hold.
    let pairs = pairs::load(&config, &[])?;
    let exe = std::env::current_exe().map_err(|e| Error::run(Why::NoProgram(e)))?;
    let sources: Vec<PathBuf> = pairs.iter().map(|p| p.src.clone()).collect();
    let text = unit(&exe, &config, &sources);
    let folder = unit_folder()?;
    std::fs::create_dir_all(&folder)
        .map_err(|e| Error::new(About::Path(folder.clone()), Why::Io(e)))?;
    let path = folder.join(UNIT);
    write_atomically(&path, &text)?;
    out.say(&Message::Service(Service::Wrote(&path)));
    if !systemd_runs() {
        out.say(&Message::Service(Service::NotEnabled {
            unit: &text,
            name: UNIT,
        }));
        return Ok(Status::Success);
    }
    let reloaded = systemctl(&["daemon-reload"], out, false);
    if reloaded != Status::Success {
        return Ok(reloaded);
    }
    let enabled = systemctl(&["enable", "--now", UNIT], out, false);
    if enabled == Status::Success {
        out.say(&Message::Service(Service::Enabled { name: UNIT }));
    }
    Ok(enabled)
}

fn uninstall(out: &mut Reporter) -> Result<Status, Error> {
    let path = unit_folder()?.join(UNIT);
    if systemd_runs() {
        let _ = systemctl(&["disable", "--now", UNIT], out, false);
    }
    match std::fs::remove_file(&path) {
        Ok(()) => out.say(&Message::Service(Service::Removed(&path))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            out.say(&Message::Service(Service::NotInstalled(&path)));
        }
        Err(e) => return Err(Error::new(About::Path(path), Why::Io(e))),
    }
    if systemd_runs() {
        let _ = systemctl(&["daemon-reload"], out, false);
    }
    Ok(Status::Success)
}

/// Whether this user's systemd manager can be reached.
fn systemd_runs() -> bool {
    Path::new("/run/systemd/system").is_dir()
        && Command::new("systemctl")
            .args(["--user", "is-system-running"])
            .output()
            .is_ok_and(|o| !o.stdout.is_empty())
}

/// Runs `systemctl --user ARGS`; with `show`, its output is the command's own.
fn systemctl(args: &[&str], out: &mut Reporter, show: bool) -> Status {
    let mut cmd = Command::new("systemctl");
    cmd.arg("--user").args(args);
    if !show {
        cmd.stdout(std::process::Stdio::null());
    }
    match cmd.status() {
        Ok(s) if s.success() => Status::Success,
        Ok(_) => Status::Failure,
        Err(e) => {
            out.error(&Error::run(Why::Systemctl {
                args: args.join(" "),
                error: e,
            }));
            Status::Failure
        }
    }
}

fn write_atomically(path: &Path, text: &str) -> Result<(), Error> {
    let temp = path.with_extension("service.new");
    std::fs::write(&temp, text)
        .and_then(|()| std::fs::rename(&temp, path))
        .map_err(|e| Error::new(About::Path(path.to_path_buf()), Why::Io(e)))
}

/// A word of a command line as systemd reads it: quoted, with `\`, `"` and `%` escaped.
fn quoted(word: &Path) -> String {
    let text = word.to_string_lossy();
    let escaped = text
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('%', "%%");
    format!("\"{escaped}\"")
}

/// The unit: `watch` over the config file, restarted on failure, at idle I/O and low CPU
/// priority. It waits for the source folders' mounts, not the destinations': a drive that is
/// not there yet is waited for by `watch` itself, which says so and catches up when it comes.
pub(crate) fn unit(exe: &Path, config: &Path, sources: &[PathBuf]) -> String {
    let mounts: Vec<String> = sources.iter().map(|s| quoted(s)).collect();
    format!(
        "[Unit]\n\
         Description=backup: live, versioned mirrors of the folders in {config}\n\
         After=local-fs.target network-online.target\n\
         RequiresMountsFor={mounts}\n\
         \n\
         [Service]\n\
         Type=simple\n\
         ExecStart={exe} watch --config {config_q}\n\
         Restart=on-failure\n\
         RestartSec=30\n\
         Nice=10\n\
         IOSchedulingClass=idle\n\
         \n\
         [Install]\n\
         WantedBy=default.target\n",
        config = config.to_string_lossy().replace('%', "%%"),
        mounts = mounts.join(" "),
        exe = quoted(exe),
        config_q = quoted(config),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_unit_watches_the_config_file_at_low_priority() {
        let text = unit(
            Path::new("/usr/bin/backup"),
            Path::new("/home/ana/.config/backup/config.toml"),
            &[PathBuf::from("/home/ana/My Documents")],
        );
        assert!(text.contains(
            "ExecStart=\"/usr/bin/backup\" watch --config \"/home/ana/.config/backup/config.toml\"\n"
        ));
        assert!(text.contains("RequiresMountsFor=\"/home/ana/My Documents\"\n"));
        assert!(text.contains("Restart=on-failure\n"));
        assert!(text.contains("IOSchedulingClass=idle\n"));
        assert_eq!(quoted(Path::new("100%\"")), "\"100%%\\\"\"");
    }
}
