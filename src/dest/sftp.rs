//! A folder on an SSH server as a destination: `sftp://[USER@]HOST[:PORT]/PATH`.
//!
//! The connection is the user's own `ssh` (`ssh -s HOST sftp`, in batch mode), so keys, the
//! agent, `~/.ssh/config` and `known_hosts` apply as for every other ssh command; a host whose
//! key is unknown is refused by ssh, and its words are passed on. `BACKUP_SSH` replaces the
//! command (`ssh -F ~/.ssh/backup_config`, say). Over it, SFTP through `openssh-sftp-client`
//! (which OpenDAL's own SFTP service wraps, without setting times or publishing without
//! replacing): a copy is written under a temporary name in its folder, given its mode and times,
//! made durable (`fsync@openssh.com`), and published with a hard link
//! (`hardlink@openssh.com`), which fails rather than replaces; OpenSSH's SFTP protocol carries
//! times in whole seconds. A file moved in SRC is copied by the server (`copy-data`), where it
//! can, not sent again.

use std::ffi::OsStr;
use std::fs::File;
use std::io::{self, Read, Seek, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex, OnceLock, RwLock};

use futures_util::StreamExt;
use openssh_sftp_client::error::{Error as SftpError, SftpErrorKind};
use openssh_sftp_client::file::File as RemoteFile;
use openssh_sftp_client::metadata::{MetaData, MetaDataBuilder, Permissions};
use openssh_sftp_client::{Sftp, SftpOptions, UnixTimeStamp};
use tokio::io::AsyncReadExt;
use tokio::runtime::Runtime;

use super::{
    Capabilities, Destination, Folder, OpenError, Opened, Publish, Staged, Unavailable, scheme_of,
    temp_name,
};
use crate::error::{About, Error, Why};
use crate::meta::{Kind, Meta, Time};

/// A DST given as `sftp://[USER@]HOST[:PORT]/PATH`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Address {
    pub user: Option<String>,
    pub host: String,
    pub port: Option<u16>,
    /// The folder on the server: absolute, or relative to the login's home folder when the URL
    /// says `/~/PATH`.
    pub path: String,
}

impl Address {
    pub(crate) fn parse(text: &str) -> Result<Address, Error> {
        let bad = |why| Error::new(About::Destination(text.into()), why);
        let rest = text
            .strip_prefix("sftp://")
            .ok_or_else(|| bad(Why::UnknownScheme(scheme_of(text))))?;
        let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
        let (user, hostport) = match authority.rsplit_once('@') {
            Some((u, h)) => (Some(u.to_string()).filter(|u| !u.is_empty()), h),
            None => (None, authority),
        };
        let (host, port) = match hostport.rsplit_once(':') {
            Some((h, p)) if !h.ends_with(']') || h.starts_with('[') => {
                let port = p.parse().map_err(|_| bad(Why::BadPort))?;
                (h, Some(port))
            }
            _ => (hostport, None),
        };
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if host.is_empty() || host.starts_with('-') {
            return Err(bad(Why::NoHost));
        }
        let path = match path.strip_prefix('~') {
            Some(home) => home.trim_start_matches('/').to_string(),
            None => format!("/{path}"),
        };
        let path = path.trim_end_matches('/').to_string();
        Ok(Address {
            user,
            host: host.to_string(),
            port,
            path: if path.is_empty() { ".".into() } else { path },
        })
    }

    pub(crate) fn url(&self) -> String {
        let user = self
            .user
            .as_ref()
            .map(|u| format!("{u}@"))
            .unwrap_or_default();
        let port = self.port.map(|p| format!(":{p}")).unwrap_or_default();
        let path = if self.path.starts_with('/') {
            self.path.clone()
        } else {
            format!(
                "/~/{}",
                self.path.trim_start_matches("./").trim_start_matches('.')
            )
        };
        format!(
            "sftp://{user}{}{port}{}",
            self.host,
            path.trim_end_matches('/')
        )
    }

    /// The command that opens the SFTP subsystem on the server.
    fn command(&self) -> tokio::process::Command {
        let ssh = std::env::var("BACKUP_SSH").unwrap_or_else(|_| "ssh".into());
        let mut words = ssh.split_whitespace();
        let mut cmd = tokio::process::Command::new(words.next().unwrap_or("ssh"));
        cmd.args(words)
            // Never a prompt: a backup runs unattended, and a question would hang it.
            .args(["-o", "BatchMode=yes", "-o", "ServerAliveInterval=15"])
            .args(["-o", "ServerAliveCountMax=3"]);
        if let Some(port) = self.port {
            cmd.arg("-p").arg(port.to_string());
        }
        if let Some(user) = &self.user {
            cmd.arg("-l").arg(user);
        }
        cmd.arg("-s").arg("--").arg(&self.host).arg("sftp");
        cmd
    }
}

/// One ssh process and the SFTP session over it.
struct Conn {
    sftp: Sftp,
    child: Mutex<tokio::process::Child>,
}

struct Shared {
    addr: Address,
    url: PathBuf,
    rt: Runtime,
    conn: RwLock<Option<Arc<Conn>>>,
}

impl Shared {
    fn conn(&self) -> io::Result<Arc<Conn>> {
        self.conn
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotConnected, "not connected"))
    }

    /// Runs one SFTP request to its end.
    fn run<T, F>(&self, f: impl FnOnce(Arc<Conn>) -> F) -> io::Result<T>
    where
        F: Future<Output = Result<T, SftpError>>,
    {
        let conn = self.conn()?;
        self.rt.block_on(f(conn)).map_err(to_io)
    }

    /// Opens a new connection, in place of one that broke.
    fn connect(&self) -> io::Result<()> {
        let conn = self.rt.block_on(connect(&self.addr))?;
        *self
            .conn
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(Arc::new(conn));
        Ok(())
    }

    fn remote(&self, rel: &Path) -> PathBuf {
        let root = Path::new(&self.addr.path);
        if rel.as_os_str().is_empty() {
            root.to_path_buf()
        } else {
            root.join(rel)
        }
    }
}

async fn connect(addr: &Address) -> io::Result<Conn> {
    let mut child = addr
        .command()
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| io::Error::new(e.kind(), format!("cannot run ssh: {e}")))?;
    let (Some(stdin), Some(stdout), Some(mut stderr)) =
        (child.stdin.take(), child.stdout.take(), child.stderr.take())
    else {
        return Err(io::Error::other("ssh gave no pipes"));
    };
    match Sftp::new(stdin, stdout, SftpOptions::default()).await {
        Ok(sftp) => {
            // What ssh says later (a dropped connection) is of no use once SFTP reports it.
            tokio::spawn(async move {
                let mut sink = Vec::new();
                let _ = stderr.read_to_end(&mut sink).await;
            });
            Ok(Conn {
                sftp,
                child: Mutex::new(child),
            })
        }
        Err(_) => {
            let _ = child.wait().await;
            let mut said = String::new();
            let _ = stderr.read_to_string(&mut said).await;
            // ssh's last line says why: "Host key verification failed.", "Permission denied
            // (publickey).", "Connection refused".
            let why = said
                .lines()
                .rev()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("ssh ended before SFTP started")
                .trim()
                .trim_end_matches('.')
                .to_string();
            Err(io::Error::new(
                io::ErrorKind::ConnectionRefused,
                format!("cannot connect: {why}"),
            ))
        }
    }
}

fn to_io(e: SftpError) -> io::Error {
    match e {
        SftpError::SftpError(kind, msg) => {
            let k = match kind {
                SftpErrorKind::NoSuchFile => io::ErrorKind::NotFound,
                SftpErrorKind::PermDenied => io::ErrorKind::PermissionDenied,
                SftpErrorKind::OpUnsupported => io::ErrorKind::Unsupported,
                _ => io::ErrorKind::Other,
            };
            io::Error::new(k, msg.to_string())
        }
        SftpError::IOError(e) => e,
        SftpError::UnsupportedExtension(what) => io::Error::new(
            io::ErrorKind::Unsupported,
            format!("the server lacks {what}"),
        ),
        other => io::Error::new(io::ErrorKind::ConnectionAborted, other.to_string()),
    }
}

fn meta_of(md: &MetaData) -> Meta {
    let kind = match md.file_type() {
        Some(t) if t.is_dir() => Kind::Dir,
        Some(t) if t.is_file() => Kind::File,
        Some(t) if t.is_symlink() => Kind::Symlink,
        Some(t) if t.is_fifo() => Kind::Fifo,
        Some(t) if t.is_socket() => Kind::Socket,
        Some(t) if t.is_char_device() => Kind::CharDevice,
        Some(t) if t.is_block_device() => Kind::BlockDevice,
        _ => Kind::Unknown,
    };
    let secs = |t: Option<UnixTimeStamp>| Time {
        sec: t.map_or(0, |t| i64::from(t.into_raw())),
        nsec: 0,
    };
    let mtime = secs(md.modified());
    Meta {
        kind,
        size: md.len().unwrap_or(0),
        mode: md.permissions().map_or(0, |p| p.as_raw().bits()) & 0o7777,
        uid: md.uid().unwrap_or(0),
        gid: md.gid().unwrap_or(0),
        atime: secs(md.accessed()),
        mtime,
        ctime: mtime,
        ..Meta::default()
    }
}

/// The attributes that give an entry `meta`'s mode, and its times too if `times` (SFTP keeps
/// whole seconds).
fn attributes(meta: &Meta, times: bool) -> MetaData {
    let stamp = |t: Time| {
        UnixTimeStamp::from_raw(u32::try_from(t.sec.max(0)).unwrap_or(u32::MAX))
            .unwrap_or(UnixTimeStamp::unix_epoch())
    };
    let mut b = MetaDataBuilder::new();
    b.permissions(Permissions::from_raw(
        openssh_sftp_client::metadata::RawPermissions::from_bits_truncate(meta.mode & 0o7777),
    ));
    if times {
        b.time(stamp(meta.atime), stamp(meta.mtime));
    }
    b.create()
}

pub(crate) struct SftpDest {
    shared: Arc<Shared>,
    caps: Capabilities,
}

impl SftpDest {
    /// Connects, and makes DST if it is missing but its parent is there.
    pub(crate) fn open(addr: &Address, write: bool) -> Result<SftpDest, OpenError> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("sftp")
            .enable_all()
            .build()
            .map_err(OpenError::Open)?;
        let shared = Arc::new(Shared {
            url: PathBuf::from(addr.url()),
            addr: addr.clone(),
            rt,
            conn: RwLock::new(None),
        });
        shared.connect().map_err(OpenError::Open)?;
        let root = PathBuf::from(&addr.path);
        let found = {
            let root = root.clone();
            shared.run(|c| async move { c.sftp.fs().symlink_metadata(root).await })
        };
        match found {
            Ok(md) if meta_of(&md).kind == Kind::Dir => {}
            Ok(_) => return Err(OpenError::Open(io::Error::other("not a directory"))),
            Err(e) if e.kind() == io::ErrorKind::NotFound && write => {
                let root = root.clone();
                shared
                    .run(|c| async move { c.sftp.fs().create_dir(root).await })
                    .map_err(|e| OpenError::NotWritable(context(e, "cannot be created")))?;
            }
            Err(e) => return Err(OpenError::Open(e)),
        }
        let conn = shared.conn().map_err(OpenError::Open)?;
        let publish = if conn.sftp.support_hardlink() {
            Publish::HardLink
        } else {
            Publish::CheckThenRename
        };
        Ok(SftpDest {
            caps: capabilities(publish, conn.sftp.support_copy()),
            shared,
        })
    }
}

fn context(e: io::Error, what: &str) -> io::Error {
    io::Error::new(e.kind(), format!("{what}: {e}"))
}

fn capabilities(publish: Publish, link: bool) -> Capabilities {
    Capabilities {
        kind: "sftp".into(),
        probed: true,
        precision: Some(1_000_000_000),
        local_time: false,
        publish,
        publish_keeps_times: true,
        unnamed: false,
        symlinks: true,
        symlink_meta: false,
        permissions: true,
        owners: false,
        xattrs: false,
        case_sensitive: true,
        refuses: Vec::new(),
        max_file_size: None,
        refresh: true,
        // Each copy is made durable on its own (fsync@openssh.com): there is no sync to share.
        group_commit: false,
        clone: false,
        // A copy made by the server (`copy-data`), where it has that: a moved file is not sent
        // again (see `SftpFolder::link` for why never a hard link).
        link,
    }
}

impl Destination for SftpDest {
    fn over_network(&self) -> bool {
        true
    }

    fn path(&self) -> &Path {
        &self.shared.url
    }

    fn capabilities(&self) -> &Capabilities {
        &self.caps
    }

    fn folder(&self, rel: &Path) -> io::Result<Option<Arc<dyn Folder>>> {
        let remote = self.shared.remote(rel);
        let at = remote.clone();
        match self
            .shared
            .run(|c| async move { c.sftp.fs().symlink_metadata(at).await })
        {
            Ok(md) if meta_of(&md).kind == Kind::Dir => Ok(Some(Arc::new(SftpFolder {
                path: self.shared.url.join(rel),
                remote,
                shared: Arc::clone(&self.shared),
            }))),
            Ok(_) => Ok(None),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn still_there(&self) -> Result<(), Unavailable> {
        self.reacquire()
    }

    fn release(&self) {}

    /// Checks the connection with a look at DST, and connects again where it broke.
    fn reacquire(&self) -> Result<(), Unavailable> {
        let root = PathBuf::from(&self.shared.addr.path);
        let look = |s: &Shared| {
            let root = root.clone();
            s.run(|c| async move { c.sftp.fs().symlink_metadata(root).await })
        };
        if look(&self.shared).is_ok() {
            return Ok(());
        }
        self.shared.connect().map_err(Unavailable::Gone)?;
        look(&self.shared).map(|_| ()).map_err(Unavailable::Gone)
    }

    fn free_space(&self) -> Option<u64> {
        let root = PathBuf::from(&self.shared.addr.path);
        let st = self
            .shared
            .run(|c| async move { c.sftp.fs().statvfs(root).await })
            .ok()?;
        Some(st.bavail.saturating_mul(st.frsize))
    }

    fn sync_all(&self) -> io::Result<()> {
        Ok(())
    }
}

impl Drop for SftpDest {
    fn drop(&mut self) {
        let conn = self
            .shared
            .conn
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        if let Some(conn) = conn.and_then(|c| Arc::try_unwrap(c).ok()) {
            let Conn { sftp, child } = conn;
            let _ = self.shared.rt.block_on(sftp.close());
            if let Ok(mut child) = child.into_inner() {
                let _ = self.shared.rt.block_on(child.wait());
            }
        }
    }
}

struct SftpFolder {
    path: PathBuf,
    remote: PathBuf,
    shared: Arc<Shared>,
}

impl SftpFolder {
    fn at(&self, name: &[u8]) -> PathBuf {
        self.remote.join(OsStr::from_bytes(name))
    }

    fn lstat(&self, p: PathBuf) -> io::Result<Meta> {
        self.shared
            .run(|c| async move { c.sftp.fs().symlink_metadata(p).await })
            .map(|md| meta_of(&md))
    }

    fn exists(&self, p: &Path) -> bool {
        self.lstat(p.to_path_buf()).is_ok()
    }

    /// Every entry's name, and whether it is a folder, as the server's listing says.
    fn read_dir(&self) -> io::Result<Vec<(Vec<u8>, bool)>> {
        let p = self.remote.clone();
        self.shared.run(|c| async move {
            let mut fs = c.sftp.fs();
            let dir = fs.open_dir(p).await?;
            let mut entries = Box::pin(dir.read_dir());
            let mut out = Vec::new();
            while let Some(entry) = entries.next().await {
                let entry = entry?;
                let name = entry.filename().as_os_str().as_bytes().to_vec();
                if name != b"." && name != b".." {
                    out.push((name, entry.file_type().is_some_and(|t| t.is_dir())));
                }
            }
            Ok(out)
        })
    }

    /// A hard link to the new name (fails on a taken one), then the old name removed; where
    /// the server has no hard links, a rename after looking the new name up.
    fn link_free(&self, from: PathBuf, to: PathBuf) -> io::Result<()> {
        let (f, t) = (from.clone(), to.clone());
        let linked = self
            .shared
            .run(|c| async move { c.sftp.fs().hard_link(f, t).await });
        match linked {
            Ok(()) => {
                let _ = self
                    .shared
                    .run(|c| async move { c.sftp.fs().remove_file(from).await });
                Ok(())
            }
            Err(_) if self.exists(&to) => Err(io::Error::from(io::ErrorKind::AlreadyExists)),
            Err(e) if e.kind() == io::ErrorKind::Unsupported => {
                if self.exists(&to) {
                    return Err(io::Error::from(io::ErrorKind::AlreadyExists));
                }
                self.shared
                    .run(|c| async move { c.sftp.fs().rename(from, to).await })
            }
            Err(e) => Err(e),
        }
    }
}

impl Folder for SftpFolder {
    fn path(&self) -> &Path {
        &self.path
    }

    fn child(&self, name: &OsStr, create: bool) -> io::Result<Option<Opened>> {
        let p = self.remote.join(name);
        let mut created = false;
        if create {
            let q = p.clone();
            created = self
                .shared
                .run(|c| async move { c.sftp.fs().create_dir(q).await })
                .is_ok();
        }
        let meta = match self.lstat(p.clone()) {
            Ok(m) => m,
            Err(e) if e.kind() == io::ErrorKind::NotFound && !create => return Ok(None),
            Err(e) => return Err(e),
        };
        if meta.kind != Kind::Dir {
            let what = if meta.kind == Kind::Symlink {
                "a symlink"
            } else {
                "a file"
            };
            return Err(io::Error::new(
                io::ErrorKind::NotADirectory,
                format!("{what} is in the way of a folder"),
            ));
        }
        Ok(Some(Opened {
            folder: Arc::new(SftpFolder {
                path: self.path.join(name),
                remote: p,
                shared: Arc::clone(&self.shared),
            }),
            created,
            meta,
        }))
    }

    fn meta(&self) -> io::Result<Meta> {
        self.lstat(self.remote.clone())
    }

    fn list(&self) -> io::Result<Vec<Vec<u8>>> {
        Ok(self.read_dir()?.into_iter().map(|(name, _)| name).collect())
    }

    /// From the types the listing carries: no request per entry.
    fn subfolders(&self) -> io::Result<Vec<Vec<u8>>> {
        Ok(self
            .read_dir()?
            .into_iter()
            .filter(|(_, dir)| *dir)
            .map(|(name, _)| name)
            .collect())
    }

    fn stat(&self, name: &[u8]) -> io::Result<Meta> {
        self.lstat(self.at(name))
    }

    fn entry(&self, name: &[u8]) -> io::Result<(Meta, Option<Time>)> {
        Ok((self.stat(name)?, None))
    }

    fn read_link(&self, name: &[u8]) -> io::Result<Vec<u8>> {
        let p = self.at(name);
        self.shared
            .run(|c| async move { c.sftp.fs().read_link(p).await })
            .map(|t| t.as_os_str().as_bytes().to_vec())
    }

    /// Downloads the file into an unnamed local file.
    fn open_read(&self, name: &[u8]) -> io::Result<File> {
        let p = self.at(name);
        let mut out = tempfile::tempfile()?;
        let mut file = self
            .shared
            .run(|c| async move { c.sftp.options().read(true).open(p).await })?;
        // Part by part into the local file: memory stays at one part whatever the size.
        loop {
            let chunk = bytes::BytesMut::with_capacity(256 << 10);
            match self
                .shared
                .rt
                .block_on(file.read(256 << 10, chunk))
                .map_err(to_io)?
            {
                Some(b) if !b.is_empty() => out.write_all(&b)?,
                _ => break,
            }
        }
        self.shared.rt.block_on(file.close()).map_err(to_io)?;
        out.rewind()?;
        Ok(out)
    }

    fn remove(&self, name: &[u8]) -> io::Result<()> {
        let p = self.at(name);
        self.shared
            .run(|c| async move { c.sftp.fs().remove_file(p).await })
    }

    fn remove_leftover(&self, name: &[u8]) -> io::Result<()> {
        match self.stat(name) {
            // The probe's symlink, left by a run killed while probing, too; never a folder.
            Ok(m) if matches!(m.kind, Kind::File | Kind::Symlink) => self.remove(name),
            Ok(_) => Ok(()),
            Err(e) => Err(e),
        }
    }

    fn stage(&self, name: &[u8], _mode: u32) -> io::Result<Box<dyn Staged>> {
        let tmp = self.at(&temp_name(name));
        let t = tmp.clone();
        let file = self
            .shared
            .run(|c| async move { c.sftp.options().write(true).create_new(true).open(t).await })?;
        Ok(Box::new(Upload {
            folder: SftpFolder {
                path: self.path.clone(),
                remote: self.remote.clone(),
                shared: Arc::clone(&self.shared),
            },
            tmp,
            file: Some(file),
            spool: OnceLock::new(),
            meta: None,
            published: false,
        }))
    }

    fn symlink(&self, target: &[u8], name: &[u8], _meta: &Meta) -> io::Result<()> {
        let link = self.at(name);
        if self.exists(&link) {
            return Err(io::Error::from(io::ErrorKind::AlreadyExists));
        }
        let target = PathBuf::from(OsStr::from_bytes(target));
        let made = {
            let link = link.clone();
            self.shared
                .run(|c| async move { c.sftp.fs().symlink(target, link).await })
        };
        match made {
            Err(_) if self.exists(&link) => Err(io::Error::from(io::ErrorKind::AlreadyExists)),
            other => other,
        }
    }

    fn set_meta(&self, meta: &Meta) -> io::Result<()> {
        let p = self.remote.clone();
        let attrs = attributes(meta, true);
        self.shared
            .run(|c| async move { c.sftp.fs().set_metadata(p, attrs).await })
    }

    fn sync(&self) -> io::Result<()> {
        Ok(())
    }

    fn update_meta(&self, name: &[u8], meta: &Meta, _src: &File, times: bool) -> io::Result<()> {
        let p = self.at(name);
        let attrs = attributes(meta, times);
        self.shared
            .run(|c| async move { c.sftp.fs().set_metadata(p, attrs).await })
    }

    fn create_empty(&self, name: &[u8]) -> io::Result<()> {
        let p = self.at(name);
        let q = p.clone();
        let made = self.shared.run(|c| async move {
            let f = c
                .sftp
                .options()
                .write(true)
                .create_new(true)
                .open(q)
                .await?;
            f.close().await
        });
        match made {
            Err(_) if self.exists(&p) => Err(io::Error::from(io::ErrorKind::AlreadyExists)),
            other => other,
        }
    }

    fn set_aside(&self, name: &[u8], to: &[u8]) -> io::Result<()> {
        self.link_free(self.at(name), self.at(to))
    }

    /// A copy made by the server (`copy-data`, OpenSSH 9.0 and later) under a temporary name,
    /// given the mode and times of `from`, made durable, then published create-only: a moved
    /// file's bytes are not sent again. Never a hard link: SFTP's attributes say neither how many
    /// names a file has nor which file it is, so a later change of mode could not break the link
    /// first (it would change the older version too), and `du` could not count the file once.
    fn link(&self, from: &super::Elsewhere, name: &[u8]) -> io::Result<()> {
        let to = self.at(name);
        if self.exists(&to) {
            return Err(io::Error::from(io::ErrorKind::AlreadyExists));
        }
        let source = self
            .shared
            .remote(from.rel)
            .join(OsStr::from_bytes(from.name));
        let attrs = attributes(&self.lstat(source.clone())?, true);
        let has_fsync = self.shared.conn()?.sftp.support_fsync();
        let tmp = self.at(&temp_name(name));
        let t = tmp.clone();
        let made = self.shared.run(|c| async move {
            let mut src = c.sftp.options().read(true).open(source).await?;
            let mut dst = c
                .sftp
                .options()
                .write(true)
                .create_new(true)
                .open(t)
                .await?;
            src.copy_all_to(&mut dst).await?;
            seal(dst, Some(attrs), has_fsync).await?;
            src.close().await
        });
        let published = made.and_then(|()| self.link_free(tmp.clone(), to));
        if published.is_err() {
            let _ = self
                .shared
                .run(|c| async move { c.sftp.fs().remove_file(tmp).await });
        }
        published
    }
}

/// Gives a copy written on the server its mode and times, makes it durable where the server can
/// (`fsync@openssh.com`), and closes it: a copy that fails here is never published.
async fn seal(mut file: RemoteFile, attrs: Option<MetaData>, fsync: bool) -> Result<(), SftpError> {
    if let Some(attrs) = attrs {
        file.set_metadata(attrs).await?;
    }
    if fsync {
        file.sync_all().await?;
    }
    file.close().await
}

/// A copy written under a temporary name in its folder on the server.
struct Upload {
    folder: SftpFolder,
    tmp: PathBuf,
    file: Option<RemoteFile>,
    /// For a writer that needs a local file (SQLite's backup): sent when the copy is closed.
    spool: OnceLock<File>,
    meta: Option<Meta>,
    published: bool,
}

impl Upload {
    fn write_from(&mut self, mut src: &File) -> io::Result<u64> {
        let Some(mut file) = self.file.take() else {
            return Err(io::Error::other("the copy is closed"));
        };
        let mut total = 0u64;
        let mut buf = vec![0u8; 256 << 10];
        let result = loop {
            let n = match src.read(&mut buf) {
                Ok(0) => break Ok(total),
                Ok(n) => n,
                Err(e) => break Err(e),
            };
            let chunk = &buf[..n];
            let sent = self
                .folder
                .shared
                .rt
                .block_on(file.write_all(chunk))
                .map_err(to_io);
            if let Err(e) = sent {
                break Err(e);
            }
            total += n as u64;
        };
        self.file = Some(file);
        result
    }
}

impl Staged for Upload {
    fn copy_from(&mut self, mut src: &File, _size: u64) -> io::Result<u64> {
        src.rewind()?;
        self.write_from(src)
    }

    fn set_meta(&mut self, meta: &Meta, _src: &File) -> io::Result<()> {
        self.meta = Some(*meta);
        Ok(())
    }

    fn file(&self) -> io::Result<&File> {
        if let Some(f) = self.spool.get() {
            return Ok(f);
        }
        let f = tempfile::tempfile()?;
        Ok(self.spool.get_or_init(|| f))
    }

    /// Sends what was spooled, gives the copy its mode and times, makes it durable, and closes
    /// it: a copy that fails here is never published.
    fn close(&mut self) -> io::Result<()> {
        if let Some(mut spool) = self.spool.take() {
            spool.rewind()?;
            self.write_from(&spool)?;
        }
        let Some(file) = self.file.take() else {
            return Ok(());
        };
        let attrs = self.meta.as_ref().map(|m| attributes(m, true));
        let has_fsync = self.folder.shared.conn()?.sftp.support_fsync();
        self.folder
            .shared
            .rt
            .block_on(seal(file, attrs, has_fsync))
            .map_err(to_io)
    }

    fn sync(&self) -> io::Result<()> {
        Ok(())
    }

    fn publish(&mut self, name: &[u8]) -> io::Result<()> {
        let to = self.folder.at(name);
        self.folder.link_free(self.tmp.clone(), to)?;
        self.published = true;
        Ok(())
    }
}

impl Drop for Upload {
    fn drop(&mut self) {
        if !self.published {
            if let Some(file) = self.file.take() {
                let _ = self.folder.shared.rt.block_on(file.close());
            }
            let tmp = self.tmp.clone();
            let _ = self
                .folder
                .shared
                .run(|c| async move { c.sftp.fs().remove_file(tmp).await });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses() {
        let a = Address::parse("sftp://ana@nas.local:2222/srv/backup/").unwrap();
        assert_eq!(a.user.as_deref(), Some("ana"));
        assert_eq!(a.host, "nas.local");
        assert_eq!(a.port, Some(2222));
        assert_eq!(a.path, "/srv/backup");
        assert_eq!(a.url(), "sftp://ana@nas.local:2222/srv/backup");
        let home = Address::parse("sftp://nas/~/backup").unwrap();
        assert_eq!((home.user.as_deref(), home.port), (None, None));
        assert_eq!(home.path, "backup");
        assert_eq!(home.url(), "sftp://nas/~/backup");
        let no_host = Address::parse("sftp:///x").unwrap_err();
        assert!(matches!(*no_host.why, Why::NoHost), "{no_host}");
        let port = Address::parse("sftp://h:xx/x").unwrap_err();
        assert!(matches!(*port.why, Why::BadPort), "{port}");
        assert!(
            Address::parse("sftp://-oProxyCommand=x/y").is_err(),
            "no ssh option as a host"
        );
    }
}
