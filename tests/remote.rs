//! Remote destinations: `s3://BUCKET/PREFIX` against real servers on 127.0.0.1, started by each
//! test: Garage (single node; and three nodes with replication factor 3, one killed mid-run)
//! and s3s-fs (which honours conditional writes). Without a server binary a test skips with
//! the reason; `.ci/run` builds them and sets `BACKUP_TEST_SERVERS=required`.

mod common;

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::stores::{self, BUCKET, Store};
use common::{Env, Run, Watch, bin, mtime_ns, set_mtime, wait_until};
use rustix::process::Signal;

const LIMIT: Duration = Duration::from_secs(60);

/// A local SRC and, as DST, the prefix `prefix` of the store's bucket.
fn pair(store: &Store, prefix: &str) -> Env {
    let mut env = Env::new();
    env.dst = store.url(prefix);
    env
}

/// `backup SUB SRC DST EXTRA…` with the store's environment.
fn run(store: &Store, env: &Env, sub: &str, extra: &[&str]) -> Run {
    let mut c = env.cmd(sub);
    store.env(&mut c).args(extra);
    Run::of(c.output().expect("run backup"), env)
}

/// `backup ARGS…` (versions, restore, verify take their own arguments).
fn backup(store: &Store, env: &Env, args: &[&std::ffi::OsStr]) -> Run {
    let mut c = Command::new(bin());
    store.env(&mut c).args(args);
    Run::of(c.output().expect("run backup"), env)
}

/// `backup verify --checksum SRC DST`, which reads every copy back, in the environment `with`
/// gives; it must find nothing amiss.
fn verify(env: &Env, with: impl FnOnce(&mut Command) -> &mut Command) -> Run {
    let mut c = Command::new(bin());
    with(&mut c)
        .args(["verify", "--checksum"])
        .arg(&env.src)
        .arg(&env.dst);
    let r = Run::of(c.output().expect("run backup verify"), env);
    r.code(0);
    r
}

fn watch(store: &Store, env: &Env, extra: &[&str]) -> Watch {
    let mut c = env.cmd("watch");
    store.env(&mut c);
    Watch::start_with(c, env, extra)
}

/// Every key under `prefix/`, as another S3 client lists them.
fn keys(store: &Store, prefix: &str) -> Vec<String> {
    let (code, body) = store.curl("GET", &format!("?list-type=2&prefix={prefix}%2F"), b"", &[]);
    assert_eq!(code, 200, "{body}");
    let mut out: Vec<String> = body
        .split("<Key>")
        .skip(1)
        .filter_map(|s| s.split("</Key>").next())
        .map(str::to_string)
        .collect();
    out.sort();
    out
}

fn restore_all(store: &Store, env: &Env, to: &Path) -> Run {
    let dst = env.dst.clone();
    backup(
        store,
        env,
        &[
            "restore".as_ref(),
            dst.as_os_str(),
            ".".as_ref(),
            "--at".as_ref(),
            "now".as_ref(),
            "--to".as_ref(),
            to.as_os_str(),
        ],
    )
}

#[test]
fn a_tree_goes_into_a_bucket_and_comes_back_as_it_was() {
    let Some(store) = stores::garage() else {
        return;
    };
    let env = pair(&store, "home");
    let a = env.write("a.txt", "one");
    env.write("sub/b.txt", "bee");
    let script = env.write("sub/run.sh", "#!/bin/sh\n");
    fs::set_permissions(&script, fs::Permissions::from_mode(0o751)).expect("chmod");
    fs::create_dir(env.src.join("empty")).expect("mkdir");
    std::os::unix::fs::symlink("a.txt", env.src.join("link")).expect("symlink");
    set_mtime(&a, 1_700_000_000, 123_456_789);

    let first = run(&store, &env, "once", &[]);
    first.code(0);
    let src = env.src.display();
    first
        .stdout_has(&format!("Copied: {src}/a.txt -> s3://{BUCKET}/home/a.txt"))
        .stdout_has(&format!(
            "Copied: {src}/sub/b.txt -> s3://{BUCKET}/home/sub/b.txt"
        ))
        .stderr_has(&format!(
            "Skipped: {src}/link (symlink: the destination cannot hold symlinks)"
        ));
    assert_eq!(
        first.summary("Successfully copied"),
        3,
        "{}",
        first.context()
    );
    assert_eq!(
        keys(&store, "home"),
        [
            "home/a.txt",
            "home/empty/",
            "home/sub/",
            "home/sub/b.txt",
            "home/sub/run.sh"
        ],
        "plain keys, an empty folder kept as a marker, no lock or temporary object left"
    );

    let again = run(&store, &env, "once", &[]);
    again.code(0);
    assert_eq!(
        again.summary("Successfully copied"),
        0,
        "{}",
        again.context()
    );
    assert_eq!(again.summary("Unchanged"), 3, "{}", again.context());

    // Without the metadata cache, the answer is the same (one HEAD per object instead).
    fs::remove_dir_all(store.cache_dir()).expect("drop the cache");
    let uncached = run(&store, &env, "once", &[]);
    assert_eq!(uncached.summary("Unchanged"), 3, "{}", uncached.context());
    assert!(
        store.cache_dir().join("backup").is_dir(),
        "the cache is written again"
    );

    fs::write(&a, "two, longer").expect("edit");
    let edited = run(&store, &env, "once", &[]);
    assert_eq!(
        edited.summary("Successfully copied"),
        1,
        "{}",
        edited.context()
    );
    let versions: Vec<String> = keys(&store, "home")
        .into_iter()
        .filter(|k| k.starts_with("home/a_"))
        .collect();
    assert_eq!(
        versions.len(),
        1,
        "the new copy beside the old one: {versions:?}"
    );
    assert!(keys(&store, "home").contains(&"home/a.txt".to_string()));

    let listed = backup(&store, &env, &["versions".as_ref(), env.dst.as_os_str()]);
    listed
        .code(0)
        .stdout_has(&format!("s3://{BUCKET}/home/a.txt\n"))
        .stdout_has("  a.txt\n");

    let status = run(&store, &env, "status", &[]);
    status
        .code(0)
        .stdout_has(&format!("-> s3://{BUCKET}/home\n"))
        .stdout_has("newest copy: ");

    let to = env.root().join("restored");
    let restored = restore_all(&store, &env, &to);
    restored.code(0);
    assert_eq!(fs::read_to_string(to.join("a.txt")).unwrap(), "two, longer");
    assert_eq!(fs::read_to_string(to.join("sub/b.txt")).unwrap(), "bee");
    assert_eq!(
        mtime_ns(&to.join("a.txt")),
        mtime_ns(&a),
        "times to the nanosecond"
    );
    let mode = fs::metadata(to.join("sub/run.sh"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o7777, 0o751, "the mode travels as metadata");

    verify(&env, |c| store.env(c)).stdout_has("Up to date: 3");
}

#[test]
fn a_store_that_ignores_conditional_writes_is_found_out_and_said_so() {
    let Some(store) = stores::garage() else {
        return;
    };
    let env = pair(&store, "p");
    env.write("x", "x");
    let r = run(&store, &env, "once", &["-v"]);
    r.code(0).stderr_has("the store ignores If-None-Match");
}

#[test]
fn a_key_taken_by_another_writer_gets_the_next_name_never_replaced() {
    let Some(store) = stores::s3s_fs() else {
        return;
    };
    let env = pair(&store, "p");
    env.write("old.txt", "old");
    let w = watch(&store, &env, &["--debounce", "50ms", "-v"]);
    assert!(
        w.stderr()
            .contains("create-only upload (If-None-Match honoured)"),
        "{}",
        w.context()
    );
    // Another client writes the very key that the next copy would take.
    let (code, body) = store.curl("PUT", "p/fresh.txt", b"not ours", &[]);
    assert_eq!(code, 200, "{body}");
    env.write("fresh.txt", "ours");
    w.wait_for("the copy under the next name", LIMIT, |w| {
        w.stdout().contains("-> s3://backups/p/fresh_")
    });
    let (code, kept) = store.curl("GET", "p/fresh.txt", b"", &[]);
    assert_eq!((code, kept.as_str()), (200, "not ours"), "never replaced");
    let (code, _, _) = w.stop(Signal::INT);
    assert_eq!(code, Some(0));
}

#[test]
fn one_writer_per_prefix() {
    let Some(store) = stores::garage() else {
        return;
    };
    let env = pair(&store, "p");
    env.write("x", "x");
    let w = watch(&store, &env, &[]);
    let second = run(&store, &env, "once", &[]);
    second
        .code(1)
        .stderr_has("another backup is already writing into this destination");
    let (code, _, _) = w.stop(Signal::TERM);
    assert_eq!(code, Some(0));
    assert!(
        !keys(&store, "p").iter().any(|k| k.contains(".backup-tmp.")),
        "the lock goes with the run: {:?}",
        keys(&store, "p")
    );
    run(&store, &env, "once", &[]).code(0);
}

/// `photos/p0.jpg` … `p7.jpg` in SRC, 1 MiB of distinct bytes each, with one size and one
/// time for all, as files written together often have; their bytes.
fn photos(env: &Env) -> Vec<Vec<u8>> {
    let files: Vec<Vec<u8>> = (0..8u32)
        .map(|f| {
            (0..1u32 << 20)
                .map(|i| (i.wrapping_add(f << 20).wrapping_mul(2_654_435_761) >> 13) as u8)
                .collect()
        })
        .collect();
    for (i, data) in files.iter().enumerate() {
        let p = env.write(format!("photos/p{i}.jpg"), data);
        set_mtime(&p, 1_700_000_000, 0);
    }
    files
}

/// A folder moved in SRC is copied on the server (a server-side copy of each object), not
/// uploaded again: what the run sends, counted by a relay in front of the store, is a small
/// part of what moved.
#[test]
fn a_folder_moved_in_src_is_not_uploaded_again() {
    let Some(store) = stores::garage() else {
        return;
    };
    let env = pair(&store, "moved");
    let files = photos(&env);
    run(&store, &env, "once", &[]).code(0);
    fs::rename(env.src.join("photos"), env.src.join("pictures")).expect("rename");

    let relay = stores::Counting::to(&store.endpoint);
    let mut c = env.cmd("once");
    store.env(&mut c).env("AWS_ENDPOINT_URL", &relay.endpoint);
    let r = Run::of(c.output().expect("run backup"), &env);
    r.code(0);
    assert_eq!(r.copied().len(), 8, "{}", r.context());
    assert!(
        relay.sent() < 512 << 10,
        "sent {} KiB for 8 MiB moved",
        relay.sent() >> 10
    );
    let listed = keys(&store, "moved");
    for i in 0..files.len() {
        let key = format!("moved/pictures/p{i}.jpg");
        assert!(listed.contains(&key), "{key}: {listed:?}");
    }
    verify(&env, |c| store.env(c));
    let to = env.root().join("restored");
    restore_all(&store, &env, &to).code(0);
    for (i, data) in files.iter().enumerate() {
        let got = fs::read(to.join(format!("pictures/p{i}.jpg"))).expect("restored");
        assert!(got == *data, "pictures/p{i}.jpg comes back whole");
    }
}

#[test]
fn a_big_file_goes_in_parts_and_leaves_no_upload_behind() {
    let Some(store) = stores::garage() else {
        return;
    };
    let env = pair(&store, "big");
    // 20 MiB that no part could be mistaken for another: parts are 8 MiB.
    let data: Vec<u8> = (0..20u32 << 20)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    env.write("disk.img", &data);
    run(&store, &env, "once", &[]).code(0);
    let to = env.root().join("restored");
    restore_all(&store, &env, &to).code(0);
    assert!(
        fs::read(to.join("disk.img")).unwrap() == data,
        "same bytes back"
    );
    let (code, uploads) = store.curl("GET", "?uploads=", b"", &[]);
    assert_eq!(code, 200, "{uploads}");
    assert!(!uploads.contains("<Upload>"), "{uploads}");
}

#[test]
fn bad_input_gets_one_line_and_no_secret_is_ever_printed() {
    let Some(store) = stores::garage() else {
        return;
    };
    let env = pair(&store, "p");
    env.write("x", "x");
    let one_line = |r: &Run, needle: &str| {
        r.code(1).stderr_has(needle);
        let errors: Vec<&str> = r
            .stderr
            .lines()
            .filter(|l| l.starts_with("error:"))
            .collect();
        assert_eq!(errors.len(), 1, "{}", r.context());
        assert!(!r.stderr.contains(stores::SECRET) && !r.stdout.contains(stores::SECRET));
    };

    let mut other = Env::new();
    other.dst = "ftp://host/x".into();
    let r = run(&store, &other, "once", &[]);
    r.code(1).stderr_has("unknown kind of destination 'ftp://'");

    let mut missing = Env::new();
    missing.dst = "s3://no-such-bucket/x".into();
    one_line(
        &run(&store, &missing, "once", &[]),
        "bucket 'no-such-bucket' not found",
    );

    let mut c = env.cmd("once");
    store.env(&mut c).env("AWS_SECRET_ACCESS_KEY", "wrong");
    let r = Run::of(c.output().expect("run"), &env);
    r.code(1).stderr_has("access denied");

    let mut c = env.cmd("once");
    let closed = format!("http://127.0.0.1:{}", stores::free_port());
    store.env(&mut c).env("AWS_ENDPOINT_URL", &closed);
    one_line(
        &Run::of(c.output().expect("run"), &env),
        "cannot list the bucket",
    );

    for extra in [&["-v"][..], &["--json"][..]] {
        let r = run(&store, &env, "once", extra);
        r.code(0);
        assert!(
            !r.stderr.contains(stores::SECRET) && !r.stdout.contains(stores::SECRET),
            "{}",
            r.context()
        );
    }
}

#[test]
fn a_store_that_goes_away_during_watch_is_waited_for() {
    let Some(mut store) = stores::garage() else {
        return;
    };
    let env = pair(&store, "p");
    env.write("first.txt", "1");
    let w = watch(&store, &env, &["--debounce", "50ms"]);
    w.wait_for("the first pass", LIMIT, |w| {
        w.stdout().contains("first.txt")
    });
    store.nodes[0].kill();
    env.write("while-away.txt", "2");
    w.wait_for("the line that says it is gone", LIMIT, |w| {
        w.stderr().contains(" cannot be reached: ")
            && w.stderr().contains("waiting for it to come back")
    });
    store.nodes[0].start();
    w.wait_for("the copy once it is back", LIMIT, |w| {
        w.stdout().contains("-> s3://backups/p/while-away.txt")
    });
    let (code, out, err) = w.stop(Signal::INT);
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(keys(&store, "p").contains(&"p/while-away.txt".to_string()));
}

#[test]
fn a_cluster_node_killed_mid_run_loses_nothing() {
    let Some(mut store) = stores::garage_cluster() else {
        return;
    };
    let env = pair(&store, "many");
    for d in 0..20 {
        for f in 0..100 {
            env.write(
                format!("d{d:02}/f{f:03}.txt"),
                format!("{d}/{f}").repeat(f + 1),
            );
        }
    }
    let mut c = env.cmd("once");
    store.env(&mut c).arg("-q");
    let child = c
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn once");
    // Killed once the run is well under way: some objects are in, most are not.
    assert!(
        wait_until(LIMIT, || keys(&store, "many").len() >= 200),
        "the run did not get going"
    );
    store.nodes[2].kill();
    let out = child.wait_with_output().expect("once");
    let r = Run::of(out, &env);
    r.code(0);
    assert_eq!(r.summary("Successfully copied"), 2000, "{}", r.context());
    verify(&env, |c| store.env(c)).stdout_has("Up to date: 2000");
}

/// An sshd on 127.0.0.1 with a throwaway host key and user key, and the ssh command that
/// knows both (`BACKUP_SSH`), as a user's `~/.ssh/config` and `known_hosts` would.
struct Ssh {
    dir: tempfile::TempDir,
    sshd: Option<std::process::Child>,
    port: u16,
    command: String,
}

impl Ssh {
    fn start() -> Option<Ssh> {
        let dir = tempfile::tempdir().expect("tempdir");
        let (sshd, port) = match common::mounts::start_sshd(dir.path()) {
            Ok(s) => s,
            Err(why) => {
                stores::unavailable(&format!("sshd: {why}"));
                return None;
            }
        };
        let host = fs::read_to_string(dir.path().join("hostkey.pub")).expect("host key");
        let host: Vec<&str> = host.split_whitespace().take(2).collect();
        let known = dir.path().join("known_hosts");
        fs::write(&known, format!("[127.0.0.1]:{port} {}\n", host.join(" "))).expect("known");
        let config = dir.path().join("ssh_config");
        fs::write(
            &config,
            format!(
                "Host *\n  IdentityFile {}\n  UserKnownHostsFile {}\n  StrictHostKeyChecking yes\n",
                dir.path().join("userkey").display(),
                known.display()
            ),
        )
        .expect("ssh config");
        let ssh = Ssh {
            command: format!("ssh -F {}", config.display()),
            dir,
            sshd: Some(sshd),
            port,
        };
        assert!(
            wait_until(LIMIT, || std::net::TcpStream::connect(("127.0.0.1", port))
                .is_ok()),
            "sshd did not listen"
        );
        Some(ssh)
    }

    fn url(&self, path: &Path) -> std::path::PathBuf {
        format!("sftp://root@127.0.0.1:{}{}", self.port, path.display()).into()
    }

    fn cmd(&self, env: &Env, sub: &str) -> Command {
        let mut c = env.cmd(sub);
        c.env("BACKUP_SSH", &self.command);
        c
    }

    /// Kills sshd and every session it started, as a server that goes down would.
    fn kill(&mut self) {
        let Some(mut sshd) = self.sshd.take() else {
            return;
        };
        // Every descendant, found before any is killed (a session's processes are reparented
        // once their parent dies).
        let parent_of = |pid: &str| {
            let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            stat.rsplit(')')
                .next()
                .and_then(|r| r.split_whitespace().nth(1))
                .map(str::to_string)
        };
        let all: Vec<String> = fs::read_dir("/proc")
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.bytes().all(|b| b.is_ascii_digit()))
            .collect();
        let mut tree = vec![sshd.id().to_string()];
        let mut i = 0;
        while i < tree.len() {
            let children: Vec<String> = all
                .iter()
                .filter(|p| parent_of(p).as_ref() == Some(&tree[i]))
                .cloned()
                .collect();
            tree.extend(children);
            i += 1;
        }
        for pid in &tree[1..] {
            let _ = Command::new("kill").arg("-9").arg(pid).status();
        }
        let _ = sshd.kill();
        let _ = sshd.wait();
    }

    fn restart(&mut self) {
        let (sshd, _) = common::mounts::start_sshd_on(self.dir.path(), self.port).expect("sshd");
        self.sshd = Some(sshd);
        let port = self.port;
        assert!(wait_until(LIMIT, || std::net::TcpStream::connect((
            "127.0.0.1",
            port
        ))
        .is_ok()));
    }
}

impl Drop for Ssh {
    fn drop(&mut self) {
        self.kill();
    }
}

#[test]
fn a_tree_goes_to_an_sftp_server_and_comes_back() {
    let Some(ssh) = Ssh::start() else { return };
    let mut env = Env::new();
    let remote = env.root().join("server/backup");
    fs::create_dir_all(remote.parent().unwrap()).expect("server folder");
    env.dst = ssh.url(&remote);
    let a = env.write("a.txt", "one");
    let script = env.write("sub/run.sh", "#!/bin/sh\n");
    fs::set_permissions(&script, fs::Permissions::from_mode(0o750)).expect("chmod");
    std::os::unix::fs::symlink("a.txt", env.src.join("link")).expect("symlink");
    set_mtime(&a, 1_700_000_000, 500_000_000);

    let first = Run::of(
        ssh.cmd(&env, "once").arg("-v").output().expect("once"),
        &env,
    );
    first
        .code(0)
        .stderr_has("sftp: times kept to 1 s; publish by hard link")
        .stdout_has(&format!("-> {}/a.txt", env.dst.display()));
    assert_eq!(fs::read_to_string(remote.join("a.txt")).unwrap(), "one");
    assert_eq!(
        fs::read_link(remote.join("link")).unwrap(),
        Path::new("a.txt")
    );
    assert_eq!(
        mtime_ns(&remote.join("a.txt")).0,
        1_700_000_000,
        "whole seconds"
    );
    let mode = fs::metadata(remote.join("sub/run.sh"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o7777, 0o750);

    let again = Run::of(ssh.cmd(&env, "once").output().expect("once"), &env);
    assert_eq!(
        again.summary("Successfully copied"),
        0,
        "{}",
        again.context()
    );
    assert_eq!(again.summary("Unchanged"), 3, "{}", again.context());

    fs::write(&a, "two").expect("edit");
    let edited = Run::of(ssh.cmd(&env, "once").output().expect("once"), &env);
    assert_eq!(
        edited.summary("Successfully copied"),
        1,
        "{}",
        edited.context()
    );
    let names: Vec<String> = fs::read_dir(&remote)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(names.iter().any(|n| n.starts_with("a_")), "{names:?}");
    assert!(
        !names.iter().any(|n| n.contains(".backup-tmp.")),
        "{names:?}"
    );
    assert_eq!(
        fs::read_to_string(remote.join("a.txt")).unwrap(),
        "one",
        "never replaced"
    );

    verify(&env, |c| c.env("BACKUP_SSH", &ssh.command)).stdout_has("Up to date: 3");
}

/// A folder moved in SRC is copied by the SSH server (`copy-data`), not sent again: what the
/// client sends, counted by `dd` between it and `ssh`, is a small part of what moved. Each new
/// copy is a file of its own (SFTP cannot tell how many names a file has, so a hard link could
/// not be broken before a change of mode), and a later change of mode reaches the newest copy
/// only.
#[test]
fn a_folder_moved_in_src_is_not_sent_to_the_sftp_server_again() {
    let Some(ssh) = Ssh::start() else { return };
    let mut env = Env::new();
    let remote = env.root().join("server/backup");
    fs::create_dir_all(remote.parent().unwrap()).expect("server folder");
    env.dst = ssh.url(&remote);
    let files = photos(&env);
    let first = Run::of(
        ssh.cmd(&env, "once").arg("-v").output().expect("once"),
        &env,
    );
    first.code(0).stderr_has("moves without copying yes");
    fs::rename(env.src.join("photos"), env.src.join("pictures")).expect("rename");

    let count = env.root().join("sent");
    let counting = env.root().join("counting-ssh");
    fs::write(
        &counting,
        format!(
            "#!/bin/sh\ndd bs=65536 2>>{} | {} \"$@\"\n",
            count.display(),
            ssh.command
        ),
    )
    .expect("script");
    fs::set_permissions(&counting, fs::Permissions::from_mode(0o755)).expect("chmod");
    let mut c = env.cmd("once");
    c.env("BACKUP_SSH", &counting);
    let moved = Run::of(c.output().expect("once"), &env);
    moved.code(0);
    assert_eq!(moved.copied().len(), 8, "{}", moved.context());
    // dd says what it passed on when the client closes the connection.
    let sent = || -> Option<u64> {
        let said = fs::read_to_string(&count).ok()?;
        let lines: Vec<&str> = said.lines().filter(|l| l.contains(" bytes")).collect();
        (!lines.is_empty()).then(|| {
            lines
                .iter()
                .filter_map(|l| l.split_whitespace().next()?.parse::<u64>().ok())
                .sum()
        })
    };
    assert!(wait_until(LIMIT, || sent().is_some()), "dd said nothing");
    let sent = sent().unwrap_or(0);
    assert!(sent < 512 << 10, "sent {} KiB for 8 MiB moved", sent >> 10);

    for (i, data) in files.iter().enumerate() {
        let old = remote.join(format!("photos/p{i}.jpg"));
        let new = remote.join(format!("pictures/p{i}.jpg"));
        assert!(
            fs::read(&new).expect("moved copy") == *data,
            "{new:?} holds its bytes"
        );
        assert_eq!(mtime_ns(&new).0, 1_700_000_000, "{new:?} keeps its time");
        let (a, b) = (
            fs::metadata(&old).expect("old"),
            fs::metadata(&new).expect("new"),
        );
        assert_ne!(a.ino(), b.ino(), "{new:?} is a file of its own");
    }
    fs::set_permissions(
        env.src.join("pictures/p0.jpg"),
        fs::Permissions::from_mode(0o600),
    )
    .expect("chmod");
    ssh.cmd(&env, "once").output().expect("once");
    let mode = |p: &str| {
        fs::metadata(remote.join(p))
            .expect("stat")
            .permissions()
            .mode()
            & 0o777
    };
    assert_eq!(mode("pictures/p0.jpg"), 0o600, "the newest copy follows");
    assert_eq!(
        mode("photos/p0.jpg"),
        0o644,
        "the older copy keeps its mode"
    );
    verify(&env, |c| c.env("BACKUP_SSH", &ssh.command)).stdout_has("Up to date: 8");
}

#[test]
fn an_unknown_host_key_is_refused_with_ssh_words() {
    let Some(ssh) = Ssh::start() else { return };
    let mut env = Env::new();
    env.dst = ssh.url(&env.root().join("b"));
    env.write("x", "x");
    let key = ssh.dir.path().join("userkey");
    let mut c = env.cmd("once");
    c.env(
        "BACKUP_SSH",
        format!(
            "ssh -i {} -o UserKnownHostsFile=/dev/null -o StrictHostKeyChecking=yes",
            key.display()
        ),
    );
    Run::of(c.output().expect("once"), &env)
        .code(1)
        .stderr_has("cannot connect: Host key verification failed");
}

#[test]
fn an_sftp_server_that_goes_away_during_watch_is_waited_for() {
    let Some(mut ssh) = Ssh::start() else { return };
    let mut env = Env::new();
    let remote = env.root().join("server");
    env.dst = ssh.url(&remote);
    env.write("first.txt", "1");
    let w = Watch::start_with(ssh.cmd(&env, "watch"), &env, &["--debounce", "50ms"]);
    w.wait_for("the first pass", LIMIT, |_| {
        remote.join("first.txt").exists()
    });
    ssh.kill();
    env.write("while-away.txt", "2");
    w.wait_for("the line that says it is gone", LIMIT, |w| {
        w.stderr().contains(" cannot be reached: ")
            && w.stderr().contains("waiting for it to come back")
    });
    ssh.restart();
    w.wait_for("the copy once it is back", LIMIT, |_| {
        fs::read_to_string(remote.join("while-away.txt")).is_ok_and(|s| s == "2")
    });
    let (code, out, err) = w.stop(Signal::INT);
    assert_eq!(code, Some(0), "{out}{err}");
}

#[test]
fn a_full_pass_lists_the_bucket_again_and_puts_back_what_was_removed() {
    let Some(store) = stores::garage() else {
        return;
    };
    let env = pair(&store, "p");
    env.write("keep.txt", "kept");
    let w = watch(&store, &env, &["--rescan-every", "6s"]);
    w.wait_for("the first pass", LIMIT, |_| {
        keys(&store, "p").contains(&"p/keep.txt".to_string())
    });
    // Removed by something else: a lifecycle rule, another tool.
    let (code, body) = store.curl("DELETE", "p/keep.txt", b"", &[]);
    assert_eq!(code, 204, "{body}");
    w.wait_for("the copy made again by a full pass", LIMIT, |_| {
        keys(&store, "p").contains(&"p/keep.txt".to_string())
    });
    let (code, _, _) = w.stop(Signal::INT);
    assert_eq!(code, Some(0));
}

/// The destination seam's promises (`src/dest/contract.rs`: publish never replaces, a dropped
/// copy leaves nothing, a taken name is reported, listings show what was published…), checked
/// on a bucket of each server and on a folder of an SSH server as on memory and a local folder.
/// Each check runs in a child process of this test binary, given the settings the program
/// reads from its environment, so that no test changes this process's environment.
#[test]
fn the_seams_promises_hold_on_buckets_and_on_an_sftp_server() {
    let mut checked = 0;
    for store in [stores::s3s_fs(), stores::garage()].into_iter().flatten() {
        let mut child = promises_child(&store.url("promises"));
        store.env(&mut child);
        run_promises(child, &store.endpoint);
        checked += 1;
    }
    if let Some(ssh) = Ssh::start() {
        let folder = tempfile::tempdir().expect("server folder");
        let mut child = promises_child(&ssh.url(folder.path()));
        child.env("BACKUP_SSH", &ssh.command);
        run_promises(child, "sftp");
        checked += 1;
    }
    if checked == 0 {
        stores::unavailable("no server to check the promises on");
    }
}

/// This test binary, to run only `promises_in_this_process` on `dst`.
fn promises_child(dst: &Path) -> Command {
    let mut c = Command::new(std::env::current_exe().expect("this test binary"));
    c.args(["promises_in_this_process", "--exact", "--nocapture"])
        .env("BACKUP_PROMISES_DST", dst);
    c
}

fn run_promises(mut child: Command, on: &str) {
    let out = child.output().expect("run the promises");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "promises broken on {on}:\n{said}");
    assert!(
        said.contains("1 passed"),
        "nothing was checked on {on}:\n{said}"
    );
}

/// The child's half of the test above: does nothing unless that test started it.
#[test]
fn promises_in_this_process() {
    if let Some(dst) = std::env::var_os("BACKUP_PROMISES_DST") {
        backup::check_destination(Path::new(&dst));
    }
}

/// `backup mount` over a bucket: the tree now and every version, read through the seam.
#[test]
fn a_bucket_mounts_and_reads() {
    if !std::path::Path::new("/dev/fuse").exists()
        || Command::new("fusermount3").arg("-V").output().is_err()
    {
        eprintln!("SKIPPED: no /dev/fuse or fusermount3");
        return;
    }
    let Some(store) = stores::garage() else {
        return;
    };
    let env = pair(&store, "mounted");
    env.write("a.txt", "first\n");
    env.write("sub/b.txt", "bee\n");
    run(&store, &env, "once", &[]).code(0);
    common::next_second();
    env.write("a.txt", "second\n");
    run(&store, &env, "once", &[]).code(0);
    let at = env.root().join("past");
    fs::create_dir(&at).expect("mount point");
    let mut c = Command::new(bin());
    store
        .env(&mut c)
        .arg("mount")
        .arg(&env.dst)
        .arg(&at)
        .stdin(std::process::Stdio::null());
    let mut child = c.spawn().expect("backup mount");
    let mounted = || {
        fs::read_to_string("/proc/self/mounts").is_ok_and(|m| {
            m.lines()
                .any(|l| l.split(' ').nth(1) == at.to_str() && l.starts_with("backup "))
        })
    };
    assert!(wait_until(LIMIT, mounted), "not mounted");
    let read = fs::read(at.join("latest/a.txt"));
    let sub = fs::read(at.join("latest/sub/b.txt"));
    let versions = fs::read_dir(at.join("versions/a.txt")).map(|d| d.count());
    common::fuse_unmount(&at);
    let exited = wait_until(LIMIT, || child.try_wait().ok().flatten().is_some());
    if !exited {
        let _ = child.kill();
    }
    assert_eq!(read.expect("latest/a.txt"), b"second\n");
    assert_eq!(sub.expect("latest/sub/b.txt"), b"bee\n");
    assert_eq!(versions.expect("versions/a.txt"), 2);
    assert!(exited, "backup mount did not exit");
}
