#!/usr/bin/env python3
"""Benchmarks `backup` against its peers in one run: cp -a, rsync -a, and lsyncd for watching.

Prints medians and ratios; timings on a shared machine are noisy, so only ratios against a peer
measured in the same run mean anything. Needs root (it mounts a loop ext4 filesystem, so that
deleting trees between rounds is fast and the measurement is not skewed by the host's mount
options) and rsync; lsyncd is used where installed. See bench/README.md.
"""

import argparse
import multiprocessing
import os
import platform
import random
import re
import shutil
import statistics
import subprocess
import sys
import tarfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def sh(*args, **kw):
    return subprocess.run(args, check=True, **kw)


# `--cold`: every run starts with the page cache dropped (after a sync), as a nightly `once` from
# cron or the first pass after a reboot does.
COLD = False


def sync():
    os.sync()
    if COLD:
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("3\n")


def timed(cmd, **kw):
    sync()
    t = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, **kw)
    return time.perf_counter() - t


def rmtree(p):
    if p.exists():
        shutil.rmtree(p)


class Fs:
    """A loop-mounted ext4 filesystem for the trees, or a plain folder where mounting fails."""

    def __init__(self, size_gib, base, inodes=4194304, inline=False):
        self.image = Path(base) / "backup-bench.img"
        self.mnt = Path(base) / "backup-bench-mnt"
        self.mounted = False
        self.inline = inline
        self.mnt.mkdir(parents=True, exist_ok=True)
        try:
            with open(self.image, "wb") as f:
                f.truncate(size_gib << 30)
            # Inodes for the biggest tree and its copies, more than the default ratio gives; with
            # `inline`, files of up to 60 bytes are kept in their inode (ext4's inline_data), so
            # that millions of 1-byte files need no blocks.
            features = ["-O", "inline_data", "-I", "256"] if inline else []
            sh("mkfs.ext4", "-q", "-F", "-N", str(inodes), *features, str(self.image),
               stdout=subprocess.DEVNULL)
            sh("mount", "-o", "loop", str(self.image), str(self.mnt))
            self.mounted = True
        except (subprocess.CalledProcessError, OSError) as e:
            print(f"note: no loop mount ({e}); using {self.mnt} on the host filesystem")
            self.image.unlink(missing_ok=True)

    def describe(self):
        if self.mounted:
            return f"loop-mounted ext4 image ({self.image}{', inline_data' if self.inline else ''})"
        return f"host filesystem under {self.mnt}"

    def close(self):
        if self.mounted:
            subprocess.run(["umount", str(self.mnt)])
            self.image.unlink(missing_ok=True)
        shutil.rmtree(self.mnt, ignore_errors=True)


# --- trees -----------------------------------------------------------------------------------

def make_small(root, files, per_dir, seed=1, max_size=16384):
    """Many small files, 0-16 KiB (or up to `max_size`), in folders two levels deep."""
    rnd = random.Random(seed)
    blob = rnd.randbytes(1 << 20)
    n = 0
    d = 0
    while n < files:
        folder = root / f"g{d // 20:03}" / f"d{d:04}"
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(min(per_dir, files - n)):
            size = rnd.randint(0, max_size)
            off = rnd.randint(0, len(blob) - size)
            (folder / f"f{i:03}.dat").write_bytes(blob[off:off + size])
            n += 1
        d += 1


def make_large(root, count, size, seed=2):
    rnd = random.Random(seed)
    chunk = rnd.randbytes(1 << 20)
    root.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        with open(root / f"big{i}.bin", "wb") as f:
            for _ in range(size >> 20):
                f.write(chunk)


def make_source_like(root, seed=3):
    """A source-code-like tree: deep folders, many small text files, a few larger blobs."""
    rnd = random.Random(seed)
    words = [rnd.randbytes(6).hex() for _ in range(500)]
    for pkg in range(40):
        for sub in range(rnd.randint(2, 8)):
            d = root / f"pkg{pkg}" / "src" / f"mod{sub}" / ("tests" if sub % 3 == 0 else "")
            d.mkdir(parents=True, exist_ok=True)
            for f in range(rnd.randint(5, 60)):
                lines = rnd.randint(10, 400)
                text = "\n".join(" ".join(rnd.choices(words, k=8)) for _ in range(lines))
                (d / f"file{f}.rs").write_text(text)
        (root / f"pkg{pkg}" / "README.md").write_text("readme " * rnd.randint(10, 500))
        if pkg % 10 == 0:
            (root / f"pkg{pkg}" / "asset.bin").write_bytes(rnd.randbytes(rnd.randint(1, 4) << 20))


def count_files(root):
    return sum(len(fs) for _, _, fs in os.walk(root))


# --- results ---------------------------------------------------------------------------------

RESULTS = []


class Sample(float):
    """A median that remembers the fastest round: on a shared machine the fastest round is the
    one least disturbed, so the ratio of the minima is printed beside that of the medians."""

    def __new__(cls, samples):
        s = super().__new__(cls, statistics.median(samples))
        s.best = min(samples)
        return s


def report(case, samples, unit="s"):
    med = Sample(samples)
    RESULTS.append((case, float(med), unit))
    spread = f"(min {min(samples):.3f}, max {max(samples):.3f}, n={len(samples)})"
    print(f"  {case:<52} {med:9.3f} {unit} {spread}", flush=True)
    return med


def ratio(label, ours, peer, goal=None):
    r = ours / peer if peer else float("inf")
    best = ""
    if isinstance(ours, Sample) and isinstance(peer, Sample) and peer.best:
        best = f" (fastest rounds: {ours.best / peer.best:5.2f}x)"
    g = "" if goal is None else f"   goal <= {goal:g}x: {'met' if r <= goal else 'NOT met'}"
    line = f"  ratio {label:<46} {r:6.2f}x{best}{g}"
    RESULTS.append((f"ratio {label}", r, "x"))
    print(line, flush=True)
    return r


# --- copy benchmarks -------------------------------------------------------------------------

def each_into_empty(tools, rounds, work, prefix, run):
    """`rounds` rounds, each running every tool once in a shuffled order into an empty folder
    (`cp -a` wants it made), after a sync: `run(tool, folder)` times it."""
    for r in range(rounds):
        order = list(tools)
        if COLD:
            # Cold, the one that runs first after the tree was made may find some of it cached
            # still: the order is reversed every other round.
            if r % 2:
                order.reverse()
        else:
            random.Random(r).shuffle(order)
        for t in order:
            d = work / f"{prefix}-{t.replace(' ', '')}"
            rmtree(d)
            sync()
            if t == "cp -a":
                d.mkdir()
            run(t, d)


def bench_copy(bin_, work, name, src, rounds, touch_fraction=0.01):
    print(f"\n== {name}: {count_files(src)} files ==", flush=True)
    tools = {
        "backup": lambda d: [bin_, "once", str(src), str(d)],
        "cp -a": lambda d: ["cp", "-a", f"{src}/.", str(d)],
        "rsync -a": lambda d: ["rsync", "-a", f"{src}/", f"{d}/"],
    }
    first = {t: [] for t in tools}
    # backup's copies are on stable storage when it prints its summary; the peers' are not
    # until a `sync`, timed with them for a durable-vs-durable comparison.
    first["cp -a + sync"] = []
    first["rsync -a + sync"] = []
    def timed_first(t, d):
        t0 = time.perf_counter()
        subprocess.run(tools[t](d), check=True, stdout=subprocess.DEVNULL)
        first[t].append(time.perf_counter() - t0)
        if t != "backup":
            os.sync()
            first[f"{t} + sync"].append(time.perf_counter() - t0)

    each_into_empty(tools, rounds, work, "dst", timed_first)
    med = {t: report(f"{name} first copy, {t}", s) for t, s in first.items()}
    # Goals against the durable peers: (rsync -a + sync, cp -a + sync).
    goals = {"small": (0.7, 1.0), "large": (None, 1.1), "million": (0.8, None)}
    goals = goals.get(name.split()[0], (None, None))
    ratio(f"{name} first: backup / (rsync -a + sync)", med["backup"], med["rsync -a + sync"],
          goals[0])
    ratio(f"{name} first: backup / (cp -a + sync)", med["backup"], med["cp -a + sync"], goals[1])
    ratio(f"{name} first: backup / rsync -a", med["backup"], med["rsync -a"])
    ratio(f"{name} first: backup / cp -a", med["backup"], med["cp -a"])

    # No-change reruns (DSTs hold the last first copy).
    rerun = {"backup": [], "rsync -a": []}
    for r in range(rounds):
        for t in (reversed(list(rerun)) if COLD and r % 2 else list(rerun)):
            d = work / f"dst-{t.replace(' ', '')}"
            rerun[t].append(timed(tools[t](d)))
    m = {t: report(f"{name} no-change rerun, {t}", s) for t, s in rerun.items()}
    ratio(f"{name} rerun: backup / rsync -a", m["backup"], m["rsync -a"], 0.5 if name.startswith("small") else None)

    if touch_fraction:
        all_files = sorted(p for p in src.rglob("*") if p.is_file())
        touched = {"backup": [], "rsync -a": []}
        rnd = random.Random(7)
        for r in range(rounds):
            for p in rnd.sample(all_files, max(1, int(len(all_files) * touch_fraction))):
                with open(p, "ab") as f:
                    f.write(b"+")
            for t in touched:
                d = work / f"dst-{t.replace(' ', '')}"
                touched[t].append(timed(tools[t](d)))
        m = {t: report(f"{name} rerun after touching 1%, {t}", s) for t, s in touched.items()}
        ratio(f"{name} 1% touched: backup / rsync -a", m["backup"], m["rsync -a"])
    for t in tools:
        rmtree(work / f"dst-{t.replace(' ', '')}")


def bench_restore(bin_, work, name, src, rounds):
    """A whole tree restored from DST, against `cp -a` of the same copies (DST holds one version
    of each file, so both read and write the same bytes); both then synced, since a restore's
    files are durable when it says so."""
    print(f"\n== restore, {name}: {count_files(src)} files ==", flush=True)
    dst = work / "restore-dst"
    rmtree(dst)
    subprocess.run([bin_, "once", "-q", str(src), str(dst)], check=True,
                   stdout=subprocess.DEVNULL)
    tools = {
        "backup restore": lambda d: [bin_, "restore", "-q", str(dst), ".", "--to", str(d)],
        "cp -a": lambda d: ["cp", "-a", f"{dst}/.", str(d)],
    }
    times = {t: [] for t in tools}

    def timed_synced(t, d):
        t0 = time.perf_counter()
        subprocess.run(tools[t](d), check=True, stdout=subprocess.DEVNULL)
        os.sync()
        times[t].append(time.perf_counter() - t0)

    each_into_empty(tools, rounds, work, "restored", timed_synced)
    med = {t: report(f"restore {name}, {t} + sync", s) for t, s in times.items()}
    ratio(f"restore {name}: backup restore / cp -a", med["backup restore"], med["cp -a"], 1.0)
    for t in tools:
        rmtree(work / f"restored-{t.replace(' ', '')}")
    rmtree(dst)


# --- what versions cost ----------------------------------------------------------------------

class Image:
    """A loop-mounted filesystem of kind `kind` (btrfs, xfs with reflink, ext4) for DST."""

    def __init__(self, kind, size_mib, base):
        self.kind = kind
        self.image = Path(base) / f"backup-bench-{kind}.img"
        self.mnt = Path(base) / f"backup-bench-{kind}-mnt"
        self.mnt.mkdir(parents=True, exist_ok=True)
        with open(self.image, "wb") as f:
            f.truncate(size_mib << 20)
        mkfs = {"btrfs": ["mkfs.btrfs", "-q", "-f"], "xfs": ["mkfs.xfs", "-q", "-f", "-m", "reflink=1"],
                "ext4": ["mkfs.ext4", "-q", "-F"]}[kind]
        sh(*mkfs, str(self.image), stdout=subprocess.DEVNULL)
        # XFS's speculative preallocation past the end of a file growing is given back later,
        # which would show as space freed: a small one keeps the figures honest.
        opts = "loop,allocsize=64k" if kind == "xfs" else "loop"
        sh("mount", "-o", opts, str(self.image), str(self.mnt))

    def used(self):
        os.sync()
        st = os.statvfs(self.mnt)
        return (st.f_blocks - st.f_bfree) * st.f_frsize

    def close(self):
        subprocess.run(["umount", str(self.mnt)])
        self.image.unlink(missing_ok=True)
        shutil.rmtree(self.mnt, ignore_errors=True)


def rewrite(path, at, length, seed):
    """Rewrites `length` bytes of `path` at `at` in place, and moves its time on."""
    with open(path, "r+b") as f:
        f.seek(at)
        f.write(random.Random(seed).randbytes(length))
    t = time.time() + 1
    os.utime(path, (t, t))


def bench_versions(bin_, work, base, size_mib=256, changed_mib=1, versions=5, folder_mib=1024):
    """What versions cost, per filesystem of DST: a file of `size_mib` with `changed_mib`
    rewritten `versions` times, each followed by `backup once`; then a folder of `folder_mib`
    renamed in SRC and one pass. DST's growth and the time of each pass, against a whole copy
    (`cp`) and against restic doing the same work into a repository on the same filesystem."""
    have_restic = shutil.which("restic") is not None
    print(f"\n== what versions cost: {size_mib} MiB, {changed_mib} MiB rewritten, {versions} "
          f"versions; a {folder_mib} MiB folder renamed ==", flush=True)
    src = work / "versions-src"
    rmtree(src)
    src.mkdir()
    big = src / "disk.img"
    with open(big, "wb") as f:
        rnd = random.Random(11)
        for _ in range(size_mib):
            f.write(rnd.randbytes(1 << 20))
    photos = src / "photos"
    photos.mkdir()
    for i in range(folder_mib // 64):
        with open(photos / f"p{i:02}.raw", "wb") as f:
            rnd = random.Random(100 + i)
            for _ in range(64):
                f.write(rnd.randbytes(1 << 20))
    # Enough for every version as a whole copy, the folder twice, and restic's repository.
    need = size_mib * (versions + 1) * 2 + folder_mib * 4 + 512
    env = dict(os.environ, RESTIC_PASSWORD="bench", RESTIC_CACHE_DIR=str(work / "restic-cache"))
    for k, kind in enumerate(["btrfs", "xfs", "ext4"]):
        img = Image(kind, need, base)
        try:
            dst, repo = img.mnt / "dst", img.mnt / "repo"
            sh(bin_, "once", "-q", str(src), str(dst), stdout=subprocess.DEVNULL)
            if have_restic:
                sh("restic", "init", "-q", "--repo", str(repo), env=env, stdout=subprocess.DEVNULL)
                sh("restic", "backup", "-q", "--repo", str(repo), str(src), env=env,
                   stdout=subprocess.DEVNULL)
            ours, theirs, t_ours, t_theirs = 0, 0, [], []
            for v in range(1, versions + 1):
                # New bytes every time (a rewrite with the bytes already there changes only
                # the time, which is no new version).
                seed = 10 * k + v
                rewrite(big, random.Random(seed).randrange(0, (size_mib - changed_mib) << 20),
                        changed_mib << 20, seed)
                before = img.used()
                t_ours.append(timed([bin_, "once", "-q", str(src), str(dst)]))
                ours += img.used() - before
                if have_restic:
                    before = img.used()
                    t_theirs.append(timed(["restic", "backup", "-q", "--repo", str(repo), str(src)],
                                          env=env))
                    theirs += img.used() - before
            kept = sorted(p.name for p in dst.iterdir() if p.name.startswith("disk"))
            if len(kept) != versions + 1:
                sys.exit(f"{kind}: expected {versions + 1} copies of disk.img, found {kept}")
            mib = lambda b: b / (1 << 20)
            print(f"  {kind}: DST grew {mib(ours):8.1f} MiB for {versions} versions "
                  f"(floor {versions * changed_mib} MiB; whole copies {versions * size_mib} MiB)",
                  flush=True)
            RESULTS.append((f"versions {kind}: DST growth", mib(ours), "MiB"))
            report(f"versions {kind}: backup once, a version", t_ours)
            if have_restic:
                print(f"  {kind}: restic's repository grew {mib(theirs):8.1f} MiB", flush=True)
                RESULTS.append((f"versions {kind}: restic growth", mib(theirs), "MiB"))
                report(f"versions {kind}: restic backup, a version", t_theirs)
            # The folder renamed.
            os.rename(photos, src / "pictures")
            before = img.used()
            t = timed([bin_, "once", "-q", str(src), str(dst)])
            grew = img.used() - before
            print(f"  {kind}: a {folder_mib} MiB folder renamed: DST grew {mib(grew):8.1f} MiB "
                  f"({100 * grew / (folder_mib << 20):.2f} %; goal <= 1 %) in {t:.2f} s", flush=True)
            RESULTS.append((f"rename {kind}: DST growth", mib(grew), "MiB"))
            if have_restic:
                before = img.used()
                t = timed(["restic", "backup", "-q", "--repo", str(repo), str(src)], env=env)
                print(f"  {kind}: the same rename, restic: repository grew "
                      f"{mib(img.used() - before):8.1f} MiB in {t:.2f} s", flush=True)
            os.rename(src / "pictures", photos)
            # A whole copy, durable as backup's are, for the time a version takes; last, since
            # XFS gives the space of a removed file back in the background.
            whole = timed(["sh", "-c", f"cp '{big}' '{img.mnt / 'whole.img'}' && sync"])
            report(f"versions {kind}: cp of the whole file + sync", [whole])
        finally:
            img.close()
    rmtree(src)
    rmtree(work / "restic-cache")


# --- the past, mounted ------------------------------------------------------------------------

def mounted(at):
    return any(l.split()[1] == str(at) for l in Path("/proc/self/mounts").read_text().splitlines())


def bench_mount(bin_, work, name, src, rounds):
    """`backup mount`: how soon it is ready, `ls -R`, `ls -lR` and reading every file through `latest/`
    against the same on DST directly, and the mount's peak RSS after reading it all."""
    print(f"\n== mount, {name}: {count_files(src)} files ==", flush=True)
    dst = work / "mount-dst"
    rmtree(dst)
    subprocess.run([bin_, "once", "-q", str(src), str(dst)], check=True, stdout=subprocess.DEVNULL)
    at = work / "mount-at"
    times = {k: [] for k in ["ready", "ls direct", "ls mount", "ls -l direct", "ls -l mount",
                             "read direct", "read mount"]}
    rss = []
    read_all = "find {} -type f -exec cat {{}} + > /dev/null"
    # A user's mount cannot hand reads to the kernel (passthrough needs CAP_SYS_ADMIN): timed
    # too, as nobody, where /dev/fuse is open to users as distributions ship it.
    as_user = os.stat("/dev/fuse").st_mode & 0o006 == 0o006 and shutil.which("setpriv")
    nobody = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
    if as_user:
        times["read mount, user"] = []
    else:
        print("  (no reads as a user: /dev/fuse is not open to users here)")
    for r in range(rounds):
        at.mkdir(exist_ok=True)
        t0 = time.perf_counter()
        p = subprocess.Popen([bin_, "mount", str(dst), str(at)], stderr=subprocess.DEVNULL)
        while not mounted(at):
            if p.poll() is not None or time.perf_counter() - t0 > 30:
                raise RuntimeError("backup mount did not mount")
            time.sleep(0.001)
        subprocess.run(["ls", str(at)], check=True, stdout=subprocess.DEVNULL)
        times["ready"].append(time.perf_counter() - t0)
        # at/: the first listing reads every folder of DST; the next, once the mount looks
        # again (after ten times as long as the first took, or a second), only those changed.
        for label in ["ls at/, first", "ls at/, again"]:
            if label == "ls at/, again":
                time.sleep(max(1.1, 10 * times["ls at/, first"][-1] + 0.1))
            t = time.perf_counter()
            subprocess.run(["ls", str(at / "at")], check=True, stdout=subprocess.DEVNULL)
            times.setdefault(label, []).append(time.perf_counter() - t)
        pairs = [("ls direct", ["ls", "-R", str(dst)]), ("ls mount", ["ls", "-R", str(at / "latest")]),
                 ("ls -l direct", ["ls", "-lR", str(dst)]),
                 ("ls -l mount", ["ls", "-lR", str(at / "latest")]),
                 ("read direct", ["sh", "-c", read_all.format(dst)]),
                 ("read mount", ["sh", "-c", read_all.format(at / "latest")])]
        for label, cmd in (pairs if r % 2 == 0 else pairs[::-1]):
            t = time.perf_counter()
            subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
            times[label].append(time.perf_counter() - t)
        for line in Path(f"/proc/{p.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                rss.append(int(line.split()[1]) / 1024)
        subprocess.run(["fusermount3", "-u", str(at)], check=True)
        p.wait(timeout=30)
        if as_user:
            at_user = work / "mount-at-user"
            at_user.mkdir(exist_ok=True)
            os.chown(at_user, 65534, 65534)
            p = subprocess.Popen(nobody + [bin_, "mount", str(dst), str(at_user)],
                                 stderr=subprocess.DEVNULL)
            t0 = time.perf_counter()
            while not mounted(at_user):
                if p.poll() is not None or time.perf_counter() - t0 > 30:
                    raise RuntimeError("backup mount as nobody did not mount")
                time.sleep(0.001)
            t = time.perf_counter()
            subprocess.run(nobody + ["sh", "-c", read_all.format(at_user / "latest")], check=True,
                           stdout=subprocess.DEVNULL)
            times["read mount, user"].append(time.perf_counter() - t)
            subprocess.run(nobody + ["fusermount3", "-u", str(at_user)], check=True)
            p.wait(timeout=30)
    med = {k: report(f"mount {name}: {k}", v) for k, v in times.items()}
    report(f"mount {name}: peak RSS after reading all", rss, unit="MiB")
    ratio(f"mount {name}: ls -R through latest/ / on DST", med["ls mount"], med["ls direct"], 2.0)
    ratio(f"mount {name}: ls -lR through latest/ / on DST", med["ls -l mount"], med["ls -l direct"], 2.0)
    ratio(f"mount {name}: reading all through latest/ / on DST", med["read mount"], med["read direct"], 2.0)
    if as_user:
        ratio(f"mount {name}: reading all through latest/, as a user / on DST",
              med["read mount, user"], med["read direct"], 2.0)
    rmtree(dst)


# --- watch benchmarks ------------------------------------------------------------------------

class Watcher:
    def __init__(self, cmd, ready, log):
        self.log = open(log, "w+b")
        self.p = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT)
        self.logpath = log
        deadline = time.time() + 300
        while ready not in Path(log).read_text(errors="replace"):
            if self.p.poll() is not None or time.time() > deadline:
                raise RuntimeError(f"{cmd[0]} did not start:\n{Path(log).read_text()}")
            time.sleep(0.05)

    def rss_peak_kib(self):
        for line in Path(f"/proc/{self.p.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
        return 0

    def stop(self):
        self.p.send_signal(2)
        try:
            self.p.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.p.kill()
        self.log.close()


def start_backup(bin_, src, dst, work, extra=()):
    w = Watcher([bin_, "watch", *extra, str(src), str(dst)], "Watching ", work / "backup.log")
    # Let the initial pass finish.
    deadline = time.time() + 600
    while " batch: " not in (work / "backup.log").read_text(errors="replace") and count_files(src):
        if time.time() > deadline:
            break
        time.sleep(0.05)
    return w


def start_lsyncd(src, dst, work):
    conf = work / "lsyncd.lua"
    conf.write_text(
        'settings { nodaemon = true, maxDelays = 1, inotifyMode = "CloseWrite or Modify" }\n'
        f'sync {{ default.rsync, source = "{src}", target = "{dst}", delay = 0, '
        "rsync = { archive = true } }\n"
    )
    return Watcher(["lsyncd", "-log", "Normal", str(conf)], "finished", work / "lsyncd.log")


def latency(src, dst, n, gap=(0.02, 0.05)):
    (src / "lat").mkdir(exist_ok=True)
    rnd = random.Random(5)
    out = []
    deadline_each = 30
    for i in range(n):
        p = src / "lat" / f"f{i:04}.txt"
        target = dst / "lat" / f"f{i:04}.txt"
        with open(p, "wb") as f:
            f.write(b"x" * rnd.randint(1, 4096))
        t0 = time.perf_counter()
        while not target.exists():
            if time.perf_counter() - t0 > deadline_each:
                break
            time.sleep(0.0002)
        out.append((time.perf_counter() - t0) * 1000)
        time.sleep(rnd.uniform(*gap))
    out.sort()
    return out[len(out) // 2], out[min(len(out) - 1, int(len(out) * 0.99))]


def bench_latency(bin_, work, n_fast, n_default, have_lsyncd):
    print("\n== watch: write -> mirrored latency ==", flush=True)
    cases = [("backup --debounce 0", ["--debounce", "0"], n_fast),
             ("backup --debounce 10ms", ["--debounce", "10ms"], n_fast),
             ("backup default debounce (1s)", [], n_default)]
    res = {}
    for label, extra, n in cases:
        src, dst = work / "lsrc", work / "ldst"
        rmtree(src), rmtree(dst)
        src.mkdir()
        w = start_backup(bin_, src, dst, work, extra)
        p50, p99 = latency(src, dst, n)
        w.stop()
        print(f"  {label:<40} p50 {p50:8.1f} ms   p99 {p99:8.1f} ms  (n={n})", flush=True)
        RESULTS.append((f"latency p50 {label}", p50, "ms"))
        RESULTS.append((f"latency p99 {label}", p99, "ms"))
        res[label] = (p50, p99)
    zero = res["backup --debounce 0"]
    print(f"  goal --debounce 0: p50 <= 5 ms: {'met' if zero[0] <= 5 else 'NOT met'}, "
          f"p99 <= 10 ms: {'met' if zero[1] <= 10 else 'NOT met'}")
    fast = res["backup --debounce 10ms"]
    print(f"  goal --debounce 10ms: p50 <= 25 ms: {'met' if fast[0] <= 25 else 'NOT met'}, "
          f"p99 <= 60 ms: {'met' if fast[1] <= 60 else 'NOT met'}")
    dflt = res["backup default debounce (1s)"][0]
    print(f"  goal default: p50 <= 1015 ms: {'met' if dflt <= 1015 else 'NOT met'}")
    if shutil.which("inotifywait"):
        # The floor: an event straight to a plain `cp` (not durable, no versions, no checks).
        src, dst = work / "lsrc", work / "ldst"
        rmtree(src), rmtree(dst)
        (src / "lat").mkdir(parents=True), (dst / "lat").mkdir(parents=True)
        script = (f'inotifywait -m -e close_write --format %f "{src}/lat" | '
                  f'while read -r f; do cp "{src}/lat/$f" "{dst}/lat/"; done')
        w = Watcher(["sh", "-c", script], "Watches established", work / "floor.log")
        p50, p99 = latency(src, dst, n_fast)
        w.stop()
        subprocess.run(["pkill", "-f", f"inotifywait -m -e close_write --format %f {src}/lat"])
        print(f"  {'floor: inotifywait + cp':<40} p50 {p50:8.1f} ms   p99 {p99:8.1f} ms  (n={n_fast})")
        RESULTS.append(("latency p50 inotifywait+cp", p50, "ms"))
        RESULTS.append(("latency p99 inotifywait+cp", p99, "ms"))
    if have_lsyncd:
        src, dst = work / "lsrc", work / "ldst"
        rmtree(src), rmtree(dst)
        src.mkdir(), dst.mkdir()
        w = start_lsyncd(src, dst, work)
        p50, p99 = latency(src, dst, n_fast)
        w.stop()
        print(f"  {'lsyncd (delay 0)':<40} p50 {p50:8.1f} ms   p99 {p99:8.1f} ms  (n={n_fast})")
        RESULTS.append(("latency p50 lsyncd", p50, "ms"))
        RESULTS.append(("latency p99 lsyncd", p99, "ms"))
    rmtree(work / "lsrc"), rmtree(work / "ldst")


def make_storm_tar(work, files=10_000, folders=500):
    stage = work / "storm-stage"
    rmtree(stage)
    per = files // folders
    for d in range(folders):
        folder = stage / "storm" / f"s{d:03}"
        folder.mkdir(parents=True)
        for f in range(per):
            (folder / f"f{f:02}.txt").write_bytes(f"{d}/{f}\n".encode() * 20)
    tar = work / "storm.tar"
    with tarfile.open(tar, "w") as t:
        t.add(stage / "storm", arcname="storm")
    return tar, stage / "storm", files


def storm_run(src, dst, tar, files, limit=120):
    sync()
    t0 = time.perf_counter()
    sh("tar", "-xf", str(tar), "-C", str(src))
    t_tar = time.perf_counter() - t0
    found = 0
    while time.perf_counter() - t0 < limit:
        found = count_files(dst / "storm") if (dst / "storm").exists() else 0
        if found >= files:
            break
        time.sleep(0.05)
    return time.perf_counter() - t0, files - min(found, files), t_tar


def bench_storm(bin_, work, rounds, have_lsyncd):
    print("\n== watch: storm of 10,000 files in 500 new folders (tar -xf) ==", flush=True)
    tar, staged, files = make_storm_tar(work)
    cp_times = []
    for _ in range(rounds):
        d = work / "storm-cp"
        rmtree(d)
        cp_times.append(timed(["cp", "-a", str(staged), str(d)]))
        rmtree(d)
    cp = report("cp -a of the same files", cp_times)
    res = {}
    peers = [("backup", lambda s, d: start_backup(bin_, s, d, work, ["--debounce", "100ms"]))]
    if have_lsyncd:
        peers.append(("lsyncd", lambda s, d: start_lsyncd(s, d, work)))
    for label, start in peers:
        times, missing, tars = [], [], []
        for _ in range(rounds):
            src, dst = work / "ssrc", work / "sdst"
            rmtree(src), rmtree(dst)
            src.mkdir(), dst.mkdir()
            w = start(src, dst)
            t, m, tt = storm_run(src, dst, tar, files)
            w.stop()
            times.append(t), missing.append(m), tars.append(tt)
        res[label] = report(f"storm mirrored, {label} (tar -xf {statistics.median(tars):.2f} s)", times)
        print(f"  storm missing files, {label}: {max(missing)} (worst round)")
        RESULTS.append((f"storm missing {label}", max(missing), "files"))
    ratio("storm: backup / cp -a", res["backup"], cp, 4.0)
    if "lsyncd" in res:
        ratio("storm: backup / lsyncd", res["backup"], res["lsyncd"], 0.3)
    rmtree(work / "ssrc"), rmtree(work / "sdst"), rmtree(work / "storm-stage")


def bench_rss(bin_, work, files):
    print(f"\n== watch: peak memory watching {files:,} files ==", flush=True)
    src, dst = work / "rsrc", work / "rdst"
    rmtree(src), rmtree(dst)
    for d in range(files // 100):
        folder = src / f"g{d // 100:02}" / f"d{d:04}"
        folder.mkdir(parents=True)
        for f in range(100):
            (folder / f"f{f:02}").write_bytes(b"x")
    w = start_backup(bin_, src, dst, work)
    time.sleep(1)
    peak = w.rss_peak_kib() / 1024
    w.stop()
    print(f"  peak RSS (VmHWM), initial pass + watching: {peak:.1f} MiB   "
          f"goal <= 64 MiB: {'met' if peak <= 64 else 'NOT met'}")
    RESULTS.append((f"peak RSS watching {files} files", peak, "MiB"))
    rmtree(src), rmtree(dst)


# --- watch budget: trees with more folders than inotify watches ---------------------------------

def cpu_seconds(pid):
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wait_for_file(path, limit):
    t = time.perf_counter()
    while not path.exists():
        if time.perf_counter() - t > limit:
            return float("inf")
        time.sleep(0.005)
    return time.perf_counter() - t


def last_copied(log):
    """The count of the last rolling line's `since start: copied N`, reading only the log's end
    (the log of a million-file first pass is over 100 MB; reading it whole at every poll would
    take a core from the run being timed)."""
    with open(log, "rb") as f:
        f.seek(0, os.SEEK_END)
        f.seek(max(0, f.tell() - 65536))
        found = re.findall(rb"since start: copied (\d+)", f.read())
    return int(found[-1]) if found else 0


def make_budget_folders(src, numbers, per):
    for d in numbers:
        folder = f"{src}/g{d // 100:03}/d{d:05}"
        os.makedirs(folder, exist_ok=True)
        for f in range(per):
            fd = os.open(f"{folder}/f{f:03}", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            os.write(fd, b"x")
            os.close(fd)


def bench_watch_budget(bin_, work, files, folders, limit, rounds, scratch):
    """`watch` over a tree of `folders` folders with fs.inotify.max_user_watches = `limit`:
    watched + polled (inotify), and one fanotify mark. Idle CPU over 30 s, RSS, and the delay of
    a change in a shallow folder and in the deepest, oldest one. Each round runs both, the
    second round in the other order (the first run of a round finds a colder cache); each run
    copies into a DST of its own, so that no deletion is being written out while one is timed.
    On a `scratch` filesystem (thrown away after) the trees are not deleted: that takes minutes
    at millions of files."""
    print(f"\n== watch over {files:,} files in {folders:,} folders, max_user_watches = {limit:,} ==",
          flush=True)
    src = work / "bsrc"
    rmtree(src)
    per = max(1, files // folders)
    # Made by one process per CPU, with bare system calls: a tree of 5M files takes minutes
    # with `Path.write_bytes`.
    with multiprocessing.Pool(os.cpu_count()) as pool:
        pool.starmap(make_budget_folders,
                     [(str(src), range(i, folders, os.cpu_count()), per)
                      for i in range(os.cpu_count())])
    old_time = time.time() - 400 * 86400
    deep = src / f"g{(folders - 1) // 100:03}" / f"d{folders - 1:05}"
    sysctl = Path("/proc/sys/fs/inotify/max_user_watches")
    saved = sysctl.read_text().strip()
    dsts = []
    try:
        sysctl.write_text(str(limit))
        orders = [("fanotify", "inotify"), ("inotify", "fanotify")]
        for r in range(rounds):
            order = orders[r % 2]
            for events in order:
                dst = work / f"bdst-{r}-{events}"
                dsts.append(dst)
                log = work / "backup.log"
                # The last run's change made the deep folder new again: old once more, so that
                # it is the one polled first.
                os.utime(deep, (old_time, old_time))
                # The tree (or the last run's copies) are written out before the clock starts.
                os.sync()
                time.sleep(5)
                t0 = time.perf_counter()
                w = Watcher([bin_, "watch", "--debounce", "50ms", "--events", events, str(src),
                             str(dst)], "Watching ", log)
                ready = time.perf_counter() - t0
                # The first pass is done when its rolling lines have counted every file.
                total = per * folders
                deadline = time.time() + 3600
                while last_copied(log) < total and time.time() < deadline:
                    time.sleep(0.01)
                first_pass = time.perf_counter() - t0
                # Idle CPU is measured once the delay of the polled folders is said: the rounds
                # before it are slower (the first is made during the first pass).
                deadline = time.time() + 900
                while events == "inotify" and limit < folders \
                        and " are polled" not in log.read_text(errors="replace"):
                    if time.time() > deadline:
                        break
                    time.sleep(0.1)
                line = next((l for l in log.read_text(errors="replace").splitlines()
                             if " are polled" in l), "")
                said = time.perf_counter() - t0
                time.sleep(2)
                c0 = cpu_seconds(w.p.pid)
                time.sleep(30)
                idle = (cpu_seconds(w.p.pid) - c0) / 30 * 100
                (src / "top.txt").write_text("shallow")
                shallow = wait_for_file(dst / "top.txt", 60)
                (deep / "late.txt").write_text("deep")
                deep_s = wait_for_file(dst / deep.relative_to(src) / "late.txt", 600)
                rss = w.rss_peak_kib() / 1024
                w.stop()
                (src / "top.txt").unlink()
                (deep / "late.txt").unlink()
                print(f"  {events}: watching after {ready:.2f} s, first pass done after "
                      f"{first_pass:.1f} s; idle CPU {idle:.2f} % of a core, peak RSS {rss:.1f} MiB, "
                      f"shallow change {shallow * 1000:.0f} ms, deep old folder {deep_s:.2f} s",
                      flush=True)
                if line:
                    print(f"    said after {said:.0f} s: "
                          f"{line.strip()[line.find('does not'):][:150]}", flush=True)
                RESULTS.append((f"watch budget {events} first pass", first_pass, "s"))
                RESULTS.append((f"watch budget {events} idle CPU", idle, "%"))
                RESULTS.append((f"watch budget {events} RSS", rss, "MiB"))
    finally:
        sysctl.write_text(saved)
        for tree in [] if scratch else [src, *dsts]:
            rmtree(tree)


# --- remote: an S3 bucket on a local Garage, against rclone -----------------------------------

GARAGE_KEY = "GK31c2f218a2e44f485b94239e"
GARAGE_SECRET = "b892c0665f0ada8a4755dae98baa3b133590e11dae3bcc1f9d38d1fc2b3f1e4d"


class Garage:
    """A single-node Garage on 127.0.0.1 with its data on the bench filesystem."""

    def __init__(self, binary, work):
        self.dir = work / "garage"
        rmtree(self.dir)
        self.dir.mkdir()
        port, rpc = 3990, 3991
        conf = self.dir / "garage.toml"
        conf.write_text(
            f'metadata_dir = "{self.dir}/meta"\ndata_dir = "{self.dir}/data"\n'
            f'db_engine = "sqlite"\nreplication_factor = 1\n'
            f'rpc_bind_addr = "127.0.0.1:{rpc}"\nrpc_public_addr = "127.0.0.1:{rpc}"\n'
            f'rpc_secret = "{"ab" * 32}"\n[s3_api]\ns3_region = "garage"\n'
            f'api_bind_addr = "127.0.0.1:{port}"\n')
        env = dict(os.environ, GARAGE_DEFAULT_ACCESS_KEY=GARAGE_KEY,
                   GARAGE_DEFAULT_SECRET_KEY=GARAGE_SECRET, GARAGE_DEFAULT_BUCKET="backups")
        self.log = open(self.dir / "log", "wb")
        self.p = subprocess.Popen([binary, "-c", str(conf), "server", "--single-node",
                                   "--default-bucket"], env=env, stdout=self.log,
                                  stderr=subprocess.STDOUT)
        self.endpoint = f"http://127.0.0.1:{port}"
        self.env = dict(os.environ, AWS_ENDPOINT_URL=self.endpoint, AWS_REGION="garage",
                        AWS_ACCESS_KEY_ID=GARAGE_KEY, AWS_SECRET_ACCESS_KEY=GARAGE_SECRET,
                        XDG_CACHE_HOME=str(work / "cache"),
                        RCLONE_S3_PROVIDER="Other", RCLONE_S3_ENDPOINT=self.endpoint,
                        RCLONE_S3_REGION="garage", RCLONE_S3_ACCESS_KEY_ID=GARAGE_KEY,
                        RCLONE_S3_SECRET_ACCESS_KEY=GARAGE_SECRET)
        # Debian's rclone refuses to start while AWS_CA_BUNDLE is set.
        self.env.pop("AWS_CA_BUNDLE", None)
        for _ in range(300):
            if subprocess.run(["rclone", "lsd", ":s3:backups"], env=self.env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode == 0:
                return
            time.sleep(0.1)
        sys.exit("garage did not start: see " + str(self.dir / "log"))

    def run(self, cmd):
        """Runs `cmd`; returns (seconds, peak RSS in MiB)."""
        t = time.perf_counter()
        p = subprocess.Popen(cmd, env=self.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        _, status, ru = os.wait4(p.pid, 0)
        elapsed = time.perf_counter() - t
        if status != 0:
            sys.exit(f"{cmd} failed ({status})")
        return elapsed, ru.ru_maxrss / 1024

    def close(self):
        self.p.terminate()
        self.p.wait()
        self.log.close()
        rmtree(self.dir)


def bench_remote(bin_, work, name, src, rounds, garage):
    print(f"\n== {name} to S3 (single-node Garage): {count_files(src)} files ==", flush=True)
    tools = {
        "backup": lambda p: [bin_, "once", "-q", str(src), f"s3://backups/{p}"],
        "rclone copy": lambda p: ["rclone", "copy", str(src), f":s3:backups/{p}"],
    }
    first = {t: [] for t in tools}
    rerun = {t: [] for t in tools}
    rss = []
    for r in range(rounds):
        order = list(tools)
        random.Random(r).shuffle(order)
        for t in order:
            prefix = f"{name.split()[0]}-{r}-{t.split()[0]}"
            sync()
            elapsed, peak = garage.run(tools[t](prefix))
            first[t].append(elapsed)
            if t == "backup":
                rss.append(peak)
            sync()
            rerun[t].append(garage.run(tools[t](prefix))[0])
    f = {t: report(f"{name} to S3 first copy, {t}", s) for t, s in first.items()}
    m = {t: report(f"{name} to S3 no-change rerun, {t}", s) for t, s in rerun.items()}
    ratio(f"{name} S3 first: backup / rclone", f["backup"], f["rclone copy"], 1.0)
    ratio(f"{name} S3 rerun: backup / rclone", m["backup"], m["rclone copy"], 0.2)
    print(f"  peak RSS of backup, first copy: {max(rss):.1f} MiB", flush=True)
    RESULTS.append((f"{name} S3 peak RSS", max(rss), "MiB"))


def machine():
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / (1 << 30)
    return f"{os.cpu_count()} CPUs ({cpu}), {mem:.0f} GiB RAM, Linux {platform.release()}"


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true", help="small trees, 1 round: a smoke test")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--only", default="small,large,source,latency,storm,rss",
                    help="comma-separated; also: restore (a tree restored, against cp -a), "
                         "mount (ls -R and reading all through backup mount's latest/, against "
                         "DST directly; ls at/ first and again), mount-million (the same over the 1M-file tree, one "
                         "round, takes many minutes), "
                         "versions (what versions and a renamed folder cost in DST on Btrfs, "
                         "XFS and ext4, against restic), "
                         "million (first copy of 1M files in 20k "
                         "folders, takes minutes), remote (S3 on a local Garage, against "
                         "rclone), budget (watch over more folders than inotify watches)")
    ap.add_argument("--bin", help="backup binary (default: build target/release/backup)")
    ap.add_argument("--base", default="/var/tmp", help="where the loop image and mount go")
    ap.add_argument("--big", action="store_true",
                    help="budget: 1M files in 20k folders, max_user_watches 8192 (takes minutes)")
    ap.add_argument("--huge", action="store_true",
                    help="budget: 5M files in 100k folders, max_user_watches raised to cover "
                         "them all, on an ext4 image with inline_data; one round (takes about 20 minutes)")
    ap.add_argument("--cold", action="store_true",
                    help="drop the page cache before every run of every tool (sync first)")
    ap.add_argument("--busy", action="store_true",
                    help="keep one core busy (stress-ng --cpu 1) during the copy benchmarks")
    ap.add_argument("--garage", default=os.environ.get("BACKUP_TEST_GARAGE", "garage"),
                    help="the garage binary, for --only remote")
    args = ap.parse_args()
    global COLD
    COLD = args.cold
    if os.geteuid() != 0:
        sys.exit("run as root: the bench mounts a loop filesystem")
    for tool in ["rsync", "cp", "tar"]:
        if not shutil.which(tool):
            sys.exit(f"{tool} is needed (apt-get install {tool})")
    have_lsyncd = shutil.which("lsyncd") is not None
    bin_ = args.bin
    if not bin_:
        sh("cargo", "build", "--release", "--quiet", cwd=ROOT)
        bin_ = str(ROOT / "target" / "release" / "backup")
    only = set(args.only.split(","))
    rounds = 1 if args.quick else args.rounds
    scale = 10 if args.quick else 1

    if args.huge:
        # The tree and two copies fill the image: one round.
        rounds = 1
        fs = Fs(40, args.base, 16 << 20, inline=True)
    elif "budget" in only and args.big:
        # The tree and every DST (two a round, kept till the end): 1-byte files, 4 KiB each.
        fs = Fs(6 + 9 * rounds, args.base, (2 * rounds + 1) * 1_050_000)
    else:
        fs = Fs(24, args.base)
    work = fs.mnt
    print(f"machine: {machine()}")
    print(f"trees on: {fs.describe()}; rounds: {rounds}; lsyncd: {'yes' if have_lsyncd else 'not installed'}")
    if COLD:
        print("cold: the page cache is dropped before every run")
    busy = None
    if args.busy:
        if not shutil.which("stress-ng"):
            sys.exit("stress-ng is needed for --busy (apt-get install stress-ng)")
        busy = subprocess.Popen(["stress-ng", "--cpu", "1", "--quiet"])
        print("the other core is kept busy: stress-ng --cpu 1")
    try:
        if "small" in only:
            src = work / "small"
            make_small(src, 50_000 // scale, 50)
            bench_copy(bin_, work, f"small files ({50_000 // scale})", src, rounds)
            rmtree(src)
        if "restore" in only:
            src = work / "small"
            make_small(src, 50_000 // scale, 50)
            bench_restore(bin_, work, f"small files ({50_000 // scale})", src, rounds)
            rmtree(src)
        if "mount" in only:
            src = work / "small"
            make_small(src, 50_000 // scale, 50)
            bench_mount(bin_, work, f"small files ({50_000 // scale})", src, rounds)
            rmtree(src)
        if "mount-million" in only:
            src = work / "million"
            make_small(src, 1_000_000 // scale, 50, max_size=512)
            bench_mount(bin_, work, f"million small files ({1_000_000 // scale})", src, 1)
            rmtree(src)
        if "versions" in only:
            bench_versions(bin_, work, args.base, size_mib=256 // scale,
                           folder_mib=1024 // scale)
        if "large" in only:
            src = work / "large"
            make_large(src, 8, (256 << 20) // scale)
            bench_copy(bin_, work, "large files (8)", src, rounds, touch_fraction=0)
            rmtree(src)
        if "million" in only:
            src = work / "million"
            make_small(src, 1_000_000 // scale, 50, max_size=512)
            bench_copy(bin_, work, f"million small files ({1_000_000 // scale})", src,
                       max(1, rounds - 1), touch_fraction=0)
            rmtree(src)
        if "source" in only:
            src = work / "source"
            make_source_like(src)
            bench_copy(bin_, work, "source-like tree", src, rounds)
            rmtree(src)
        if "latency" in only:
            bench_latency(bin_, work, 300 // scale, 20 // (2 if args.quick else 1), have_lsyncd)
        if "storm" in only:
            bench_storm(bin_, work, rounds, have_lsyncd)
        if "rss" in only:
            bench_rss(bin_, work, 100_000 // scale)
        if "budget" in only:
            if args.huge:
                files, folders, limit = 5_000_000, 100_000, 200_000
            elif args.big:
                files, folders, limit = 1_000_000, 20_000, 8192
            else:
                files, folders, limit = 50_000, 2_500, 1000
            bench_watch_budget(bin_, work, files // scale, folders // scale, limit // scale,
                               rounds, fs.mounted)
        if "remote" in only:
            if not shutil.which("rclone"):
                sys.exit("rclone is needed for --only remote (apt-get install rclone)")
            garage = Garage(args.garage, work)
            try:
                src = work / "small"
                make_small(src, 50_000 // scale, 50)
                bench_remote(bin_, work, f"small files ({50_000 // scale})", src, rounds, garage)
                rmtree(src)
                src = work / "large"
                make_large(src, 8, (256 << 20) // scale)
                bench_remote(bin_, work, "large files (8)", src, rounds, garage)
                rmtree(src)
            finally:
                garage.close()
    finally:
        if busy:
            busy.terminate()
            busy.wait()
        fs.close()


if __name__ == "__main__":
    main()
