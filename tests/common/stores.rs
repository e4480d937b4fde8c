//! Object-store servers for the remote-destination tests, started on 127.0.0.1 by the test
//! that needs them and killed by their PID when it ends: Garage (single node, or a cluster of
//! three), and s3s-fs (which honours conditional writes, where Garage does not).
//!
//! The binaries are found through `BACKUP_TEST_GARAGE` and `BACKUP_TEST_S3S_FS`, else on PATH.
//! A test without its server skips with the reason, unless `BACKUP_TEST_SERVERS=required` (as
//! `.ci/run` sets it, after building them), where a missing server is a failure.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::wait_until;

pub const KEY: &str = "GK31c2f218a2e44f485b94239e";
pub const SECRET: &str = "b892c0665f0ada8a4755dae98baa3b133590e11dae3bcc1f9d38d1fc2b3f1e4d";
pub const BUCKET: &str = "backups";

/// Finds a server binary, or says why the test cannot run.
pub fn binary(var: &str, name: &str) -> Option<PathBuf> {
    let found = std::env::var_os(var)
        .map(PathBuf::from)
        .filter(|p| p.is_file())
        .or_else(|| {
            std::env::var_os("PATH").and_then(|paths| {
                std::env::split_paths(&paths)
                    .map(|d| d.join(name))
                    .find(|p| p.is_file())
            })
        });
    if found.is_none() {
        unavailable(&format!("{name} not found (set {var}, or put it on PATH)"));
    }
    found
}

/// A server a test needs cannot be had: the test skips with `why`, or fails where
/// `BACKUP_TEST_SERVERS=required`.
pub fn unavailable(why: &str) {
    if std::env::var("BACKUP_TEST_SERVERS").as_deref() == Ok("required") {
        panic!("{why}; BACKUP_TEST_SERVERS=required");
    }
    eprintln!("skipped: {why}");
}

/// A port on 127.0.0.1 that nothing listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

fn listening(port: u16) -> bool {
    std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
}

/// One server process, killed when dropped.
pub struct Process {
    child: Option<Child>,
    cmd: Vec<String>,
    envs: Vec<(String, String)>,
    log: PathBuf,
    port: u16,
}

impl Process {
    fn spawn(cmd: Vec<String>, envs: Vec<(String, String)>, log: PathBuf, port: u16) -> Process {
        let mut p = Process {
            child: None,
            cmd,
            envs,
            log,
            port,
        };
        p.start();
        p
    }

    /// Starts it (again, after `kill`) and waits until it listens.
    pub fn start(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("server log");
        let child = Command::new(&self.cmd[0])
            .args(&self.cmd[1..])
            .envs(self.envs.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("start server");
        self.child = Some(child);
        let port = self.port;
        assert!(
            wait_until(Duration::from_secs(30), || listening(port)),
            "server did not listen on {port}: {}",
            std::fs::read_to_string(&self.log).unwrap_or_default()
        );
    }

    /// Kills it at once (SIGKILL, by PID), as a crash or a pulled cable would.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A store to back up into: where it is and how to sign in.
pub struct Store {
    pub dir: tempfile::TempDir,
    pub endpoint: String,
    pub region: &'static str,
    pub key: &'static str,
    pub secret: &'static str,
    pub nodes: Vec<Process>,
}

impl Store {
    /// The URL of `prefix` in the test bucket.
    pub fn url(&self, prefix: &str) -> PathBuf {
        PathBuf::from(format!("s3://{BUCKET}/{prefix}"))
    }

    /// Gives `cmd` the store's endpoint and credentials as the environment says them, and a
    /// cache folder of this store's own.
    pub fn env<'a>(&self, cmd: &'a mut Command) -> &'a mut Command {
        cmd.env("AWS_ENDPOINT_URL", &self.endpoint)
            .env("AWS_REGION", self.region)
            .env("AWS_ACCESS_KEY_ID", self.key)
            .env("AWS_SECRET_ACCESS_KEY", self.secret)
            .env("XDG_CACHE_HOME", self.dir.path().join("cache"))
            .env_remove("AWS_PROFILE")
    }

    pub fn cache_dir(&self) -> PathBuf {
        self.dir.path().join("cache")
    }

    /// Waits until the test bucket answers a listing (it is made just after the port opens).
    fn wait_for_bucket(&self) {
        assert!(
            wait_until(Duration::from_secs(30), || {
                self.curl("GET", "?list-type=2&max-keys=1", b"", &[]).0 == 200
            }),
            "the bucket did not answer at {}",
            self.endpoint
        );
    }

    /// `curl` with a SigV4 signature: a request from another client than ours.
    pub fn curl(&self, method: &str, key: &str, body: &[u8], headers: &[&str]) -> (u16, String) {
        let file = self.dir.path().join("curl-body");
        std::fs::write(&file, body).expect("body");
        let hash = sha256_hex(&file);
        let mut c = Command::new("curl");
        c.args(["-s", "-w", "\n%{http_code}", "-X", method])
            .arg("--aws-sigv4")
            .arg(format!("aws:amz:{}:s3", self.region))
            .arg("--user")
            .arg(format!("{}:{}", self.key, self.secret))
            .arg("-H")
            .arg(format!("x-amz-content-sha256: {hash}"));
        for h in headers {
            c.arg("-H").arg(h);
        }
        if method == "PUT" {
            c.arg("--data-binary").arg(format!("@{}", file.display()));
        }
        c.arg(format!("{}/{BUCKET}/{key}", self.endpoint));
        let out = c.output().expect("curl");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
        (code.trim().parse().unwrap_or(0), body.to_string())
    }
}

fn sha256_hex(file: &Path) -> String {
    let out = Command::new("sha256sum")
        .arg(file)
        .output()
        .expect("sha256sum");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string()
}

fn garage_config(dir: &Path, rpc: u16, s3: u16, replication: u32, secret: &str) -> PathBuf {
    let path = dir.join("garage.toml");
    std::fs::create_dir_all(dir).expect("node dir");
    std::fs::write(
        &path,
        format!(
            "metadata_dir = \"{d}/meta\"\ndata_dir = \"{d}/data\"\ndb_engine = \"sqlite\"\n\
             replication_factor = {replication}\nrpc_bind_addr = \"127.0.0.1:{rpc}\"\n\
             rpc_public_addr = \"127.0.0.1:{rpc}\"\nrpc_secret = \"{secret}\"\n\
             [s3_api]\ns3_region = \"garage\"\napi_bind_addr = \"127.0.0.1:{s3}\"\n",
            d = dir.display()
        ),
    )
    .expect("garage.toml");
    path
}

const RPC_SECRET: &str = "4425f5c26c5e11581d3223904324dcb5b5d5dfb14e5e7f2e1e0b7e1d2b0f2f01";

/// A single-node Garage with the test bucket and key, as `garage server --single-node
/// --default-bucket` sets them up.
pub fn garage() -> Option<Store> {
    let bin = binary("BACKUP_TEST_GARAGE", "garage")?;
    let dir = tempfile::tempdir().expect("tempdir");
    let (rpc, s3) = (free_port(), free_port());
    let config = garage_config(&dir.path().join("node"), rpc, s3, 1, RPC_SECRET);
    let node = Process::spawn(
        vec![
            bin.display().to_string(),
            "-c".into(),
            config.display().to_string(),
            "server".into(),
            "--single-node".into(),
            "--default-bucket".into(),
        ],
        vec![
            ("GARAGE_DEFAULT_ACCESS_KEY".into(), KEY.into()),
            ("GARAGE_DEFAULT_SECRET_KEY".into(), SECRET.into()),
            ("GARAGE_DEFAULT_BUCKET".into(), BUCKET.into()),
        ],
        dir.path().join("node.log"),
        s3,
    );
    let store = Store {
        dir,
        endpoint: format!("http://127.0.0.1:{s3}"),
        region: "garage",
        key: KEY,
        secret: SECRET,
        nodes: vec![node],
    };
    store.wait_for_bucket();
    Some(store)
}

/// Three Garage nodes on 127.0.0.1, each holding every block (replication factor 3): a write
/// is acknowledged by two of them, so one may die.
pub fn garage_cluster() -> Option<Store> {
    let bin = binary("BACKUP_TEST_GARAGE", "garage")?;
    let dir = tempfile::tempdir().expect("tempdir");
    let mut nodes = Vec::new();
    let mut configs = Vec::new();
    let mut first_s3 = 0;
    for i in 0..3 {
        let (rpc, s3) = (free_port(), free_port());
        if i == 0 {
            first_s3 = s3;
        }
        let config = garage_config(&dir.path().join(format!("n{i}")), rpc, s3, 3, RPC_SECRET);
        nodes.push(Process::spawn(
            vec![
                bin.display().to_string(),
                "-c".into(),
                config.display().to_string(),
                "server".into(),
            ],
            Vec::new(),
            dir.path().join(format!("n{i}.log")),
            s3,
        ));
        configs.push(config);
    }
    let garage = |config: &Path, args: &[&str]| -> String {
        let out = Command::new(&bin)
            .arg("-c")
            .arg(config)
            .args(args)
            .output()
            .expect("garage cli");
        assert!(
            out.status.success(),
            "garage {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    let ids: Vec<String> = configs
        .iter()
        .map(|c| garage(c, &["node", "id", "-q"]))
        .collect();
    for id in &ids[1..] {
        garage(&configs[0], &["node", "connect", id]);
    }
    for id in &ids {
        let short = id.split('@').next().unwrap_or(id);
        garage(
            &configs[0],
            &["layout", "assign", "-z", "dc1", "-c", "1G", short],
        );
    }
    garage(&configs[0], &["layout", "apply", "--version", "1"]);
    garage(
        &configs[0],
        &["key", "import", "--yes", "-n", "test", KEY, SECRET],
    );
    garage(&configs[0], &["bucket", "create", BUCKET]);
    garage(
        &configs[0],
        &[
            "bucket", "allow", "--read", "--write", "--owner", BUCKET, "--key", "test",
        ],
    );
    let store = Store {
        dir,
        endpoint: format!("http://127.0.0.1:{first_s3}"),
        region: "garage",
        key: KEY,
        secret: SECRET,
        nodes,
    };
    store.wait_for_bucket();
    Some(store)
}

/// s3s-fs: an S3 server over a folder, which refuses a create-only write to a taken key.
pub fn s3s_fs() -> Option<Store> {
    let bin = binary("BACKUP_TEST_S3S_FS", "s3s-fs")?;
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("root");
    std::fs::create_dir_all(root.join(BUCKET)).expect("bucket folder");
    let port = free_port();
    let node = Process::spawn(
        vec![
            bin.display().to_string(),
            "--host".into(),
            "127.0.0.1".into(),
            "--port".into(),
            port.to_string(),
            "--access-key".into(),
            KEY.into(),
            "--secret-key".into(),
            SECRET.into(),
            root.display().to_string(),
        ],
        Vec::new(),
        dir.path().join("s3s.log"),
        port,
    );
    Some(Store {
        dir,
        endpoint: format!("http://127.0.0.1:{port}"),
        region: "us-east-1",
        key: KEY,
        secret: SECRET,
        nodes: vec![node],
    })
}

/// A TCP relay on 127.0.0.1 in front of a server that counts the bytes clients send through it:
/// what a run uploads, headers and all.
pub struct Counting {
    pub endpoint: String,
    sent: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl Counting {
    /// Relays every connection to `endpoint` (`http://127.0.0.1:PORT`) until the test ends.
    pub fn to(endpoint: &str) -> Counting {
        use std::sync::Arc;
        use std::sync::atomic::AtomicU64;
        let upstream = endpoint
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .to_string();
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the relay");
        let port = listener.local_addr().expect("relay address").port();
        let sent = Arc::new(AtomicU64::new(0));
        let count = Arc::clone(&sent);
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                let Ok(server) = std::net::TcpStream::connect(&upstream) else {
                    continue;
                };
                let (Ok(c2), Ok(s2)) = (client.try_clone(), server.try_clone()) else {
                    continue;
                };
                let count = Arc::clone(&count);
                std::thread::spawn(move || relay(client, server, Some(&count)));
                std::thread::spawn(move || relay(s2, c2, None));
            }
        });
        Counting {
            endpoint: format!("http://127.0.0.1:{port}"),
            sent,
        }
    }

    /// Bytes sent by clients so far.
    pub fn sent(&self) -> u64 {
        self.sent.load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// Copies `from` into `to` until either closes, adding what passed to `count`.
fn relay(
    mut from: std::net::TcpStream,
    mut to: std::net::TcpStream,
    count: Option<&std::sync::atomic::AtomicU64>,
) {
    use std::io::{Read, Write};
    let mut buf = vec![0u8; 64 << 10];
    while let Ok(n) = from.read(&mut buf) {
        if n == 0 || to.write_all(&buf[..n]).is_err() {
            break;
        }
        if let Some(c) = count {
            c.fetch_add(n as u64, std::sync::atomic::Ordering::Relaxed);
        }
    }
    let _ = to.shutdown(std::net::Shutdown::Write);
}
