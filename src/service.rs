//! `backup service`: `watch` over the config file as a systemd user service, started at login,
//! restarted on failure, at low CPU and I/O priority. Where systemd does not run (or cannot be
//! reached), the unit is still written and printed, so that it can be installed by hand.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::config::Service;
use crate::error::{Status, reason};
use crate::escape::display;
use crate::pairs;
use crate::report::{Reporter, Style};

/// The unit's name.
const UNIT: &str = "backup.service";

pub(crate) fn run(command: Service) -> Status {
    let mut out = Reporter::stdio(Style::default());
    let result = match command {
        Service::Install { config } => install(config, &mut out),
        Service::Uninstall => uninstall(&mut out),
        Service::Status => return systemctl(&["status", UNIT], &mut out, true),
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
fn unit_folder() -> Result<PathBuf, String> {
    std::env::var_os("XDG_CONFIG_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))
        .map(|base| base.join("systemd").join("user"))
        .ok_or_else(|| "neither XDG_CONFIG_HOME nor HOME is set".to_string())
}

fn install(config: Option<PathBuf>, out: &mut Reporter) -> Result<Status, String> {
    let config = match config {
        Some(c) => c,
        None => pairs::default_path().ok_or("no config file: give --config FILE")?,
    };
    let config = std::fs::canonicalize(&config)
        .map_err(|e| format!("config {}: {}", display(&config), reason(&e)))?;
    // The service would only fail over and over on a file that does not hold.
    let pairs = pairs::load(&config, &[])?;
    let exe = std::env::current_exe().map_err(|e| format!("cannot find this program: {e}"))?;
    let sources: Vec<PathBuf> = pairs.iter().map(|p| p.src.clone()).collect();
    let text = unit(&exe, &config, &sources);
    let folder = unit_folder()?;
    std::fs::create_dir_all(&folder)
        .map_err(|e| format!("{}: {}", display(&folder), reason(&e)))?;
    let path = folder.join(UNIT);
    write_atomically(&path, &text)?;
    out.info(&format!("Wrote {}", display(&path)));
    if !systemd_runs() {
        out.info(&format!(
            "systemd is not running for this user, so the service was not enabled; the unit \
             is:\n\n{text}\nWith systemd: systemctl --user daemon-reload && systemctl --user \
             enable --now {UNIT}"
        ));
        return Ok(Status::Success);
    }
    let reloaded = systemctl(&["daemon-reload"], out, false);
    if reloaded != Status::Success {
        return Ok(reloaded);
    }
    let enabled = systemctl(&["enable", "--now", UNIT], out, false);
    if enabled == Status::Success {
        out.info(&format!(
            "Enabled and started {UNIT}: `backup service status` shows how it runs"
        ));
    }
    Ok(enabled)
}

fn uninstall(out: &mut Reporter) -> Result<Status, String> {
    let path = unit_folder()?.join(UNIT);
    if systemd_runs() {
        let _ = systemctl(&["disable", "--now", UNIT], out, false);
    }
    match std::fs::remove_file(&path) {
        Ok(()) => out.info(&format!("Removed {}", display(&path))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            out.info(&format!("{} was not installed", display(&path)));
        }
        Err(e) => return Err(format!("{}: {}", display(&path), reason(&e))),
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
            out.error(&format!(
                "systemctl --user {}: {} (is systemd running?)",
                args.join(" "),
                reason(&e)
            ));
            Status::Failure
        }
    }
}

fn write_atomically(path: &Path, text: &str) -> Result<(), String> {
    let temp = path.with_extension("service.new");
    std::fs::write(&temp, text)
        .and_then(|()| std::fs::rename(&temp, path))
        .map_err(|e| format!("{}: {}", display(path), reason(&e)))
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
