//! Real filesystems for the tests: loop images formatted and mounted with the kernel's drivers
//! (ext4, XFS, Btrfs) or Debian's FUSE drivers (ntfs-3g, exfat-fuse, fusefat), and sshfs to an
//! sshd started on 127.0.0.1 with a throwaway key. Everything is unmounted, detached, stopped
//! and removed when the value is dropped, on every exit path.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A filesystem to mount.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fs {
    Ext4,
    Xfs,
    Btrfs,
    Ntfs,
    Exfat,
    Fat,
    Sshfs,
}

impl Fs {
    pub fn name(self) -> &'static str {
        match self {
            Fs::Ext4 => "ext4",
            Fs::Xfs => "xfs",
            Fs::Btrfs => "btrfs",
            Fs::Ntfs => "ntfs (ntfs-3g)",
            Fs::Exfat => "exfat (exfat-fuse)",
            Fs::Fat => "fat32 (fusefat)",
            Fs::Sshfs => "sshfs",
        }
    }
}

/// A mounted filesystem; `path` is its root.
pub struct Mounted {
    pub path: PathBuf,
    fs: Fs,
    image: PathBuf,
    /// The image, its loop device, and the folder they live in.
    dir: tempfile::TempDir,
    loop_dev: Option<String>,
    sshd: Option<Child>,
}

impl Drop for Mounted {
    fn drop(&mut self) {
        // A FUSE daemon may need a moment to let go; a lazy unmount never leaves the path busy.
        let ok = run(
            "umount",
            &[self.path.as_os_str().to_str().unwrap_or_default()],
        )
        .is_ok();
        if !ok {
            let _ = run("umount", &["-l", self.path.to_str().unwrap_or_default()]);
        }
        if let Some(dev) = &self.loop_dev {
            let _ = run("losetup", &["-d", dev]);
        }
        if let Some(mut sshd) = self.sshd.take() {
            let _ = sshd.kill();
            let _ = sshd.wait();
        }
        let _ = &self.dir;
    }
}

fn run(cmd: &str, args: &[&str]) -> Result<String, String> {
    let out = Command::new(cmd)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("{cmd}: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    } else {
        Err(format!(
            "{cmd} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

fn have(cmd: &str) -> Result<(), String> {
    let found = std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).any(|p| p.join(cmd).is_file()))
        .unwrap_or(false);
    if found {
        Ok(())
    } else {
        Err(format!("{cmd} is not installed (.ci/run installs it)"))
    }
}

/// Mounts `fs` and a SRC on tmpfs with DST at `sub` below the mount's root (empty: the mount
/// point itself); `None`, with the reason printed, where that cannot be done here.
pub fn env_on(fs: Fs, sub: &str) -> Option<(Mounted, super::Env)> {
    let m = match mount(fs) {
        Ok(m) => m,
        Err(why) => {
            eprintln!("SKIPPED: {}: {why}", fs.name());
            return None;
        }
    };
    let mut env = super::Env::on_tmpfs();
    env.dst = if sub.is_empty() {
        m.path.clone()
    } else {
        m.path.join(sub)
    };
    Some((m, env))
}

/// Formats and mounts `fs` in a new temporary folder (on tmpfs where there is one, so that the
/// images cost no disk); `Err` says why it cannot be done here.
pub fn mount(fs: Fs) -> Result<Mounted, String> {
    let base = if Path::new("/dev/shm").is_dir() {
        "/dev/shm"
    } else {
        "/tmp"
    };
    let dir = tempfile::tempdir_in(base).map_err(|e| e.to_string())?;
    let root = std::fs::canonicalize(dir.path()).map_err(|e| e.to_string())?;
    let (img, mnt) = (root.join("fs.img"), root.join("mnt"));
    std::fs::create_dir(&mnt).map_err(|e| e.to_string())?;
    let mnt_s = path_str(&mnt);
    let mut mounted = Mounted {
        path: mnt.clone(),
        fs,
        image: img.clone(),
        dir,
        loop_dev: None,
        sshd: None,
    };
    format(fs, &img)?;
    match fs {
        Fs::Ext4 | Fs::Xfs | Fs::Btrfs | Fs::Ntfs | Fs::Exfat | Fs::Fat => mounted.attach(&img)?,
        Fs::Sshfs => {
            have("sshfs")?;
            let sshd = start_sshd(&root)?;
            let port = sshd.1;
            mounted.sshd = Some(sshd.0);
            let remote = root.join("remote");
            std::fs::create_dir(&remote).map_err(|e| e.to_string())?;
            let key = path_str(&root.join("userkey"));
            let opts = format!(
                "IdentityFile={key},StrictHostKeyChecking=no,UserKnownHostsFile=/dev/null,BatchMode=yes"
            );
            let target = format!("root@127.0.0.1:{}", path_str(&remote));
            let mut last = String::new();
            // sshd may take a moment to listen.
            let port = port.to_string();
            let args = ["-p", &port, "-o", &opts, &target, &mnt_s];
            if super::wait_until(Duration::from_secs(5), || match run("sshfs", &args) {
                Ok(_) => true,
                Err(e) => {
                    last = e;
                    false
                }
            }) {
                last.clear();
            }
            if !last.is_empty() {
                return Err(last);
            }
        }
    }
    Ok(mounted)
}

/// Makes an image file and formats it as `fs` (nothing for sshfs).
fn format(fs: Fs, img: &Path) -> Result<(), String> {
    let img_s = path_str(img);
    let (mkfs, mib, args): (&str, u64, &[&str]) = match fs {
        Fs::Ext4 => ("mkfs.ext4", 64, &["-q", "-F"]),
        Fs::Xfs => ("mkfs.xfs", 320, &["-q", "-f"]),
        Fs::Btrfs => ("mkfs.btrfs", 256, &["-q", "-f"]),
        Fs::Ntfs => ("mkntfs", 64, &["-F", "-Q", "-q"]),
        Fs::Exfat => ("mkfs.exfat", 64, &[]),
        Fs::Fat => ("mkfs.vfat", 64, &["-F", "32"]),
        Fs::Sshfs => return Ok(()),
    };
    have(mkfs)?;
    std::fs::File::create(img)
        .and_then(|f| f.set_len(mib << 20))
        .map_err(|e| e.to_string())?;
    run(mkfs, &[args, &[img_s.as_str()]].concat()).map(|_| ())
}

impl Mounted {
    /// Mounts the image `img` at `path` with this filesystem's driver.
    fn attach(&mut self, img: &Path) -> Result<(), String> {
        let (img_s, mnt_s) = (path_str(img), path_str(&self.path));
        match self.fs {
            Fs::Ext4 | Fs::Xfs | Fs::Btrfs => run("mount", &["-o", "loop", &img_s, &mnt_s]),
            Fs::Ntfs => {
                have("ntfs-3g")?;
                run("ntfs-3g", &[&img_s, &mnt_s])
            }
            Fs::Exfat => {
                have("mount.exfat-fuse")?;
                // exfat-fuse wants a block device.
                let dev = run("losetup", &["-f", "--show", &img_s])?;
                self.loop_dev = Some(dev.clone());
                run("mount.exfat-fuse", &[&dev, &mnt_s])
            }
            Fs::Fat => {
                have("fusefat")?;
                run("fusefat", &["-o", "rw+", &img_s, &mnt_s])
            }
            Fs::Sshfs => Err("sshfs is not an image".into()),
        }
        .map(|_| ())
    }

    /// `umount` (with `lazy`, `umount -l`), tried for up to two seconds: a batch that the test
    /// saw end may still be letting go of its handles, and a FUSE daemon may take a moment. A
    /// destination held open between batches stays busy and fails this.
    pub fn unmount(&mut self, lazy: bool) -> Result<(), String> {
        let mnt = path_str(&self.path);
        let args: Vec<&str> = if lazy { vec!["-l", &mnt] } else { vec![&mnt] };
        let mut last = String::new();
        let done = super::wait_until(Duration::from_secs(2), || match run("umount", &args) {
            Ok(_) => true,
            Err(e) => {
                last = e;
                false
            }
        });
        if done {
            if let Some(dev) = self.loop_dev.take() {
                let _ = run("losetup", &["-d", &dev]);
            }
            return Ok(());
        }
        Err(last)
    }

    /// Mounts the same image again at the same path.
    pub fn mount_again(&mut self) -> Result<(), String> {
        let img = self.image.clone();
        self.attach(&img)
    }

    /// Mounts a new, empty filesystem of the same kind at the same path.
    pub fn mount_another(&mut self) -> Result<(), String> {
        let other = self.image.with_file_name("other.img");
        format(self.fs, &other)?;
        self.attach(&other)
    }
}

fn path_str(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

/// Starts sshd on a free port of 127.0.0.1 with a fresh host key, letting in a fresh user key
/// (written to `dir/userkey`) as root; returns the process and the port.
pub fn start_sshd(dir: &Path) -> Result<(Child, u16), String> {
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_err(|e| e.to_string())?
        .port();
    start_sshd_on(dir, port)
}

/// Starts sshd on `port` with the keys in `dir`, making them where they are missing (so that a
/// server stopped can be started again as the same server).
pub fn start_sshd_on(dir: &Path, port: u16) -> Result<(Child, u16), String> {
    have("sshd").or_else(|_| {
        Path::new("/usr/sbin/sshd")
            .is_file()
            .then_some(())
            .ok_or("sshd is not installed (.ci/run installs openssh-server)".to_string())
    })?;
    have("ssh-keygen")?;
    for key in ["hostkey", "userkey"] {
        if dir.join(key).exists() {
            continue;
        }
        run(
            "ssh-keygen",
            &[
                "-q",
                "-t",
                "ed25519",
                "-N",
                "",
                "-f",
                &path_str(&dir.join(key)),
            ],
        )?;
    }
    std::fs::copy(dir.join("userkey.pub"), dir.join("authorized_keys"))
        .map_err(|e| e.to_string())?;
    let config = format!(
        "Port {port}\nListenAddress 127.0.0.1\nHostKey {host}\nAuthorizedKeysFile {auth}\n\
         PasswordAuthentication no\nKbdInteractiveAuthentication no\n\
         PermitRootLogin prohibit-password\nStrictModes no\nUsePAM no\nPidFile none\n\
         Subsystem sftp internal-sftp\n",
        host = path_str(&dir.join("hostkey")),
        auth = path_str(&dir.join("authorized_keys")),
    );
    std::fs::write(dir.join("sshd_config"), config).map_err(|e| e.to_string())?;
    // Privilege separation needs this folder to exist.
    let _ = std::fs::create_dir_all("/run/sshd");
    let sshd = if Path::new("/usr/sbin/sshd").is_file() {
        "/usr/sbin/sshd"
    } else {
        "sshd"
    };
    let child = Command::new(sshd)
        .args(["-D", "-e", "-f"])
        .arg(dir.join("sshd_config"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("sshd: {e}"))?;
    Ok((child, port))
}
