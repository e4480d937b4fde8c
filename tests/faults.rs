//! Faults a backup must survive with nothing lost: a full destination, a killed process.
//! Needs root for `mount`; each test says SKIPPED and returns where it cannot set up.

mod common;

use std::fs;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{Env, Mount, Run, mount_tmpfs, wait_until};

fn temp_files(root: &Path) -> Vec<String> {
    common::tree(root)
        .keys()
        .filter_map(|p| p.file_name())
        .map(|n| n.to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".backup-tmp."))
        .collect()
}

#[test]
fn a_full_destination_fails_the_big_file_only_and_leaves_nothing_behind() {
    let env = Env::new();
    let mnt = env.root().join("small");
    if !mount_tmpfs(&mnt, "size=1m") {
        return;
    }
    let _unmount = Mount(mnt.clone());
    for i in 0..5 {
        env.write(format!("small{i}.txt"), vec![b's'; 4096]);
    }
    let big = env.write("big.bin", vec![b'b'; 2 << 20]);
    let dst = mnt.join("dst");
    // One worker, so that the small files never race the big one for the last free blocks.
    let run_once = || {
        let out = Command::new(common::bin())
            .args(["once", "--jobs", "1"])
            .arg(&env.src)
            .arg(&dst)
            .output()
            .expect("run");
        Run::of(out, &env)
    };
    let r = run_once();
    r.code(1);
    r.stderr_has(&format!("Failed: {}: ", big.display()));
    r.stderr_has("No space left on device");
    assert_eq!(r.summary("Successfully copied"), 5);
    assert_eq!(r.summary("Failed copies"), 1);
    assert!(temp_files(&dst).is_empty(), "leftovers\n{}", r.context());
    assert!(!dst.join("big.bin").exists());

    let ok = Command::new("mount")
        .args(["-o", "remount,size=8m"])
        .arg(&mnt)
        .status()
        .expect("remount")
        .success();
    assert!(ok, "remount failed");
    let r = run_once();
    r.code(0);
    assert_eq!(
        r.copied(),
        vec![format!(
            "Copied: {} -> {}",
            big.display(),
            dst.join("big.bin").display()
        )]
    );
    assert_eq!(fs::read(dst.join("big.bin")).expect("read").len(), 2 << 20);
}

#[test]
fn a_copy_killed_midway_leaves_no_partial_file_and_the_rerun_completes() {
    // tmpfs keeps this fast and spares the disk; a sparse source costs no memory to create.
    let base = if Path::new("/dev/shm").is_dir() {
        Path::new("/dev/shm").to_path_buf()
    } else {
        std::env::temp_dir()
    };
    let env = Env::new_in(base);
    env.write("small.txt", "small");
    let big = env.src.join("big.bin");
    let size: u64 = 512 << 20;
    fs::File::create(&big)
        .and_then(|f| f.set_len(size))
        .expect("sparse file");

    let mut child = env
        .cmd("once")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    let caught = wait_until(Duration::from_secs(30), || {
        !temp_files(&env.dst).is_empty() || matches!(child.try_wait(), Ok(Some(_)))
    });
    let still_running = matches!(child.try_wait(), Ok(None));
    child.kill().expect("kill -9");
    let _ = child.wait();
    assert!(
        caught && still_running,
        "the copy finished before it could be killed; test inconclusive\n{}",
        env.listing()
    );

    // Under a final name there is either nothing or complete data, never a part.
    for (rel, node) in common::tree(&env.dst) {
        if let common::Node::File { len, .. } = node {
            let name = rel.to_string_lossy();
            if !name.starts_with(".backup-tmp.") && name.starts_with("big") {
                assert_eq!(len, size, "partial data under {name}");
            }
        }
    }

    let r = env.once(&[]);
    r.code(0);
    assert!(
        temp_files(&env.dst).is_empty(),
        "leftovers after rerun\n{}",
        r.context()
    );
    assert_eq!(
        fs::metadata(env.dst.join("big.bin")).expect("copied").len(),
        size
    );
    assert_eq!(fs::read(env.dst.join("small.txt")).expect("read"), b"small");
}
