//! One writer per prefix, kept as well as a store allows: a lock object under the prefix,
//! created create-only, holding a random run id and refreshed every minute while the run
//! lives. A lock not refreshed for `STALE` is from a run that died and may be taken over. On a
//! store that ignores conditional writes two runs starting in the same instant could both
//! write it; the read-back after writing leaves only the one whose id stayed.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crossbeam_channel::{Sender, bounded};
use opendal::Operator;
use tokio::runtime::Runtime;

/// The lock's key under the prefix: shaped like a temporary name, so that the naming rule never
/// takes it for a version and `versions` never lists it.
pub(crate) const LOCK_NAME: &str = ".backup-tmp.000000000000.lock";
const STALE: Duration = Duration::from_secs(300);
const REFRESH: Duration = Duration::from_secs(60);

pub(crate) struct Lock {
    op: Operator,
    rt: Arc<Runtime>,
    run: String,
    stop: Option<Sender<()>>,
}

/// Why the lock could not be had.
pub(crate) enum Refused {
    /// Another live run holds it.
    Held,
    Store(opendal::Error),
}

impl Lock {
    /// Takes the lock, or says who holds it, then keeps it fresh from a thread of its own.
    pub(crate) fn take(op: &Operator, rt: &Arc<Runtime>) -> Result<Lock, Refused> {
        let mut lock = Lock {
            op: op.clone(),
            rt: Arc::clone(rt),
            run: run_id(),
            stop: None,
        };
        lock.ensure()?;
        let (tx, rx) = bounded::<()>(0);
        let (op, rt, run) = (lock.op.clone(), Arc::clone(&lock.rt), lock.run.clone());
        std::thread::spawn(move || {
            while let Err(crossbeam_channel::RecvTimeoutError::Timeout) = rx.recv_timeout(REFRESH) {
                // Refreshed only while still ours; a failure here shows at the next batch.
                if let Ok(Some((held, _))) = read(&op, &rt)
                    && held == run
                {
                    let _ = rt.block_on(op.write(LOCK_NAME, body(&run)));
                }
            }
        });
        lock.stop = Some(tx);
        Ok(lock)
    }

    /// Makes sure the lock is this run's: takes it when free or stale, or refuses.
    pub(crate) fn ensure(&self) -> Result<(), Refused> {
        let held = read(&self.op, &self.rt).map_err(Refused::Store)?;
        let write = match held {
            // Still ours: the refreshing thread keeps it fresh.
            Some((run, _)) if run == self.run => return Ok(()),
            Some((_, at)) if age(at) < STALE => return Err(Refused::Held),
            Some(_) => self.op.write(LOCK_NAME, body(&self.run)),
            None => {
                let w = self
                    .op
                    .write_with(LOCK_NAME, body(&self.run))
                    .if_not_exists(true);
                match self.rt.block_on(w.into_future()) {
                    Ok(_) => return self.confirm(),
                    Err(e) if e.kind() == opendal::ErrorKind::ConditionNotMatch => {
                        return Err(Refused::Held);
                    }
                    Err(e) => return Err(Refused::Store(e)),
                }
            }
        };
        self.rt.block_on(write).map_err(Refused::Store)?;
        self.confirm()
    }

    fn confirm(&self) -> Result<(), Refused> {
        match read(&self.op, &self.rt).map_err(Refused::Store)? {
            Some((run, _)) if run == self.run => Ok(()),
            _ => Err(Refused::Held),
        }
    }
}

impl Drop for Lock {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Ok(Some((run, _))) = read(&self.op, &self.rt)
            && run == self.run
        {
            let _ = self.rt.block_on(self.op.delete(LOCK_NAME));
        }
    }
}

/// The lock as stored: its run id and when it was last refreshed, or `None` when there is none.
fn read(op: &Operator, rt: &Runtime) -> Result<Option<(String, u64)>, opendal::Error> {
    match rt.block_on(op.read(LOCK_NAME)) {
        Ok(buf) => Ok(Some(parse(&String::from_utf8_lossy(&buf.to_vec())))),
        Err(e) if e.kind() == opendal::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

fn parse(text: &str) -> (String, u64) {
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name).map(str::trim))
            .unwrap_or_default()
            .to_string()
    };
    (field("run "), field("at ").parse().unwrap_or(0))
}

fn body(run: &str) -> Vec<u8> {
    let host = rustix::system::uname();
    format!(
        "backup is writing into this prefix; this object is removed when it stops\nrun {run}\n\
         host {}\npid {}\nat {}\n",
        host.nodename().to_string_lossy(),
        std::process::id(),
        now()
    )
    .into_bytes()
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn age(at: u64) -> Duration {
    Duration::from_secs(now().saturating_sub(at))
}

fn run_id() -> String {
    let mut b = [0u8; 8];
    let _ = rustix::rand::getrandom(&mut b, rustix::rand::GetRandomFlags::empty());
    format!(
        "{:016x}",
        u64::from_le_bytes(b) ^ u64::from(std::process::id())
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lock_reads_back() {
        let text = String::from_utf8(body("abc")).unwrap();
        let (run, at) = parse(&text);
        assert_eq!(run, "abc");
        assert!(age(at) < Duration::from_secs(5));
        assert_eq!(parse("nonsense"), (String::new(), 0));
        assert!(crate::dest::is_temp_name(LOCK_NAME.as_bytes()));
    }
}
