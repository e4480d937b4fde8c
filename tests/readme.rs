//! The README's transcript, replayed: every `$ ` line of the block after "What the two runs
//! printed" is run by `sh` in a home of its own (the tree the README draws), with the drive at a
//! folder of its own, and what it prints must be the lines the README shows, but for the home
//! folder, the drive, the time in version names and the order of the copies in one pass.

mod common;

use std::fs;
use std::path::Path;
use std::process::Command;

use common::bin;

/// The README's transcript: its lines, from the block after `marker`.
fn transcript(marker: &str) -> Vec<String> {
    let readme = fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md"))
        .expect("README.md");
    let after = readme.split_once(marker).expect("the marker").1;
    let block = after
        .split_once("```\n")
        .expect("a block")
        .1
        .split_once("```")
        .expect("its end")
        .0;
    block.lines().map(str::to_string).collect()
}

/// Version stamps made alike: the time of a copy is not the README's.
fn timeless(line: &str) -> String {
    let b = line.as_bytes();
    let mut out = String::new();
    let mut i = 0;
    while i < line.len() {
        let stamp = b.len() >= i + 16
            && b[i] == b'_'
            && b[i + 1..i + 9].iter().all(u8::is_ascii_digit)
            && b[i + 9] == b'_'
            && b[i + 10..i + 16].iter().all(u8::is_ascii_digit);
        if stamp {
            out.push_str("_YYYYMMDD_HHMMSS");
            i += 16;
        } else {
            let c = line[i..].chars().next().expect("a char");
            out.push(c);
            i += c.len_utf8();
        }
    }
    out
}

/// Replays the transcript after `marker` with the home folder at `home` and the drive that the
/// README calls `drive` at `at`; a command's exit status is not checked (a transcript may show
/// a failing run), its output is.
fn replay(marker: &str, home: &Path, drive: (&str, &Path)) {
    let tmp = tempfile::tempdir().expect("tempdir");
    // `backup` on PATH is the binary under test.
    let bin_dir = tmp.path().join("bin");
    fs::create_dir_all(&bin_dir).expect("bin");
    std::os::unix::fs::symlink(bin(), bin_dir.join("backup")).expect("backup on PATH");
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let (name, at) = drive;
    let ours = |text: &str| {
        text.replace("/home/ana", &home.display().to_string())
            .replace(name, &at.display().to_string())
    };
    let theirs = |text: &str| {
        timeless(
            &text
                .replace(&home.display().to_string(), "/home/ana")
                .replace(&at.display().to_string(), name),
        )
    };
    let lines = transcript(marker);
    let mut expected: Vec<String> = Vec::new();
    let mut got: Vec<String> = Vec::new();
    let mut commands = 0;
    for line in &lines {
        let Some(command) = line.strip_prefix("$ ") else {
            expected.push(timeless(line));
            continue;
        };
        got.push(timeless(line));
        expected.push(timeless(line));
        commands += 1;
        let out = Command::new("sh")
            .arg("-c")
            // One stream, in the order a terminal shows them.
            .arg(format!("exec 2>&1; {}", ours(command)))
            .env("HOME", home)
            .env("PATH", &path)
            .output()
            .expect("sh");
        got.extend(String::from_utf8_lossy(&out.stdout).lines().map(theirs));
    }
    assert!(commands >= 1, "the transcript runs the program: {lines:?}");
    assert_eq!(in_any_order(got), in_any_order(expected));
}

#[test]
fn the_readme_transcript_is_what_the_program_prints() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let home = tmp.path().join("ana");
    let drive = tmp.path().join("disk");
    let work = home.join("work");
    fs::create_dir_all(work.join("notes")).expect("tree");
    fs::create_dir_all(&drive).expect("drive");
    fs::write(work.join("report.txt"), "Q3 numbers\n").expect("report");
    fs::write(work.join("notes/todo.md"), "- send the report\n").expect("todo");
    std::os::unix::fs::symlink("report.txt", work.join("latest")).expect("latest");
    replay("What the two runs printed:", &home, ("/mnt/disk", &drive));
}

/// The run on a drive with 2 MiB free: forty photos of 8 KiB fit, a disk image of 3 MiB does
/// not.
#[test]
fn the_readme_transcript_of_a_full_drive_is_what_the_program_prints() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let home = tmp.path().join("ana");
    let small = tmp.path().join("small");
    if !common::mount_tmpfs(&small, "size=2m") {
        return;
    }
    let _unmount = common::Mount(small.clone());
    let work = home.join("work");
    fs::create_dir_all(work.join("photos")).expect("tree");
    for i in 1..=40 {
        fs::write(
            work.join(format!("photos/img_{i:04}.jpg")),
            vec![b'j'; 8192],
        )
        .expect("photo");
    }
    fs::write(work.join("disk.img"), vec![b'd'; 3 << 20]).expect("image");
    replay(
        "everything that fits still lands",
        &home,
        ("/mnt/small", &small),
    );
}

/// The lines, each run of `Copied:` lines sorted: the workers copy in parallel, so a pass lists
/// its copies in the order they were done.
fn in_any_order(mut lines: Vec<String>) -> Vec<String> {
    let mut start = 0;
    while start < lines.len() {
        let len = lines[start..]
            .iter()
            .take_while(|l| l.starts_with("Copied: "))
            .count();
        lines[start..start + len].sort();
        start += len.max(1);
    }
    lines
}
