"""Fault tolerance of ``hdf5-to-records convert``, run as a real process.

A conversion that is killed (SIGKILL to its whole process group), interrupted (Ctrl-C:
SIGINT to the group) or stopped by a file-size limit (writes fail with EFBIG) must never
leave a manifest or an incomplete file under a final shard name, and ``--resume`` must
then finish with output byte-identical to an uninterrupted run of the same command.

Every run writes to ``out`` relative to its own working directory: the manifest records
the output path as given, so runs in different directories compare byte for byte.
"""

import contextlib
import json
import os
import random
import re
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

from hdf5_to_records.format.manifest import MANIFEST_NAME
from hdf5_to_records.format.naming import TEMP_SUFFIX, ShardedFileTemplate
from hdf5_to_records.writing.output import STATE_NAME

ROWS = 600
INCOMPRESSIBLE_FROM = 500  # rows before are zeros: gzip shrinks shards 0-4, not shard 5
NUM_SHARDS = 6
TEMPLATE = ShardedFileTemplate("ds")
SHARDS = tuple(TEMPLATE.filename("train", i, NUM_SHARDS) for i in range(NUM_SHARDS))
SLOW_DELAY_S = 0.01  # per example: ~1 s per shard of 100 examples, ~3 s for 2 workers
POLL_S = 0.01
DEADLINE_S = 60
SLOW = ("--transform", "slowdown:identity")
INTERRUPTED = "Error: interrupted; rerun with --resume to continue"

SLOWDOWN = '''\
"""Identity transform; sleeps per example when H2R_TEST_DELAY_S is set, so that a run
lasts long enough to interrupt. Its output, and so every shard, never changes."""
import os
import time

DELAY_S = float(os.environ.get("H2R_TEST_DELAY_S", "0"))


def identity(example):
    if DELAY_S:
        time.sleep(DELAY_S)
    return example
'''

# Runs the CLI and dies by SIGKILL at the moment the state file would be renamed into
# place: what a crash (power loss, OOM killer) at that instruction leaves behind.
CRASH_AT_STATE_SAVE = """\
import os, signal, sys
from hdf5_to_records import fs
from hdf5_to_records.cli import main
from hdf5_to_records.writing.output import STATE_NAME
rename = fs.rename
def crash_before_state_rename(src, dst):
    if os.path.basename(dst) == STATE_NAME:
        os.kill(os.getpid(), signal.SIGKILL)
    rename(src, dst)
fs.rename = crash_before_state_rename
main(sys.argv[1:], prog_name="hdf5-to-records")
"""


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    """A 2.4 MB source (4 KiB rows) and the slow transform module, shared by the tests."""
    root = tmp_path_factory.mktemp("fault")
    x = np.zeros((ROWS, 1024), np.float32)
    rng = np.random.default_rng(0)
    x[INCOMPRESSIBLE_FROM:] = rng.standard_normal((ROWS - INCOMPRESSIBLE_FROM, 1024), np.float32)
    with h5py.File(root / "src.h5", "w") as h5:
        h5.create_dataset("x", data=x, chunks=(50, 1024), compression="gzip")
        h5.create_dataset("label", data=np.arange(ROWS, dtype=np.int64))
    (root / "mods").mkdir()
    (root / "mods" / "slowdown.py").write_text(SLOWDOWN)
    return root


def command(workdir: Path, *options: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "hdf5_to_records",
        "convert",
        str(workdir / "src.h5"),
        "-o",
        "out",
        "--name",
        "ds",
        "--num-shards",
        str(NUM_SHARDS),
        "--rows-per-record",
        "10",
        *options,
    ]


def environment(workdir: Path, *, delay_s: float = 0.0) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(workdir / "mods"), env.get("PYTHONPATH")) if p
    )
    env.pop("H2R_TEST_DELAY_S", None)
    if delay_s:
        env["H2R_TEST_DELAY_S"] = str(delay_s)
    return env


def run(workdir: Path, cwd: Path, *options: str, preexec_fn=None, code: str | None = None):
    """Run one conversion to completion (fast: no slowdown); return the CompletedProcess."""
    cwd.mkdir(parents=True, exist_ok=True)
    args = command(workdir, *options)
    if code is not None:  # the same CLI arguments, through a wrapper script
        args = [sys.executable, "-c", code, *args[3:]]
    return subprocess.run(
        args,
        cwd=cwd,
        env=environment(workdir),
        preexec_fn=preexec_fn,
        capture_output=True,
        text=True,
        timeout=DEADLINE_S,
    )


@pytest.fixture(scope="module")
def reference(workdir):
    """``reference(*options)``: the output directory of an uninterrupted run (cached)."""
    outputs: dict[tuple[str, ...], Path] = {}

    def get(*options: str) -> Path:
        if options not in outputs:
            cwd = workdir / f"reference-{len(outputs)}"
            result = run(workdir, cwd, *options)
            assert result.returncode == 0, result.stderr
            outputs[options] = cwd / "out"
        return outputs[options]

    return get


@pytest.fixture
def launch(workdir):
    """``launch(cwd, *options, delay_s=..., preexec_fn=...)``: start a slow conversion in
    a new session, so that its process group is the run's processes and nothing else."""
    procs: list[subprocess.Popen] = []

    def start(cwd: Path, *options: str, delay_s: float = SLOW_DELAY_S, preexec_fn=None):
        cwd.mkdir(parents=True, exist_ok=True)
        proc = subprocess.Popen(
            command(workdir, *options),
            cwd=cwd,
            env=environment(workdir, delay_s=delay_s),
            start_new_session=True,
            preexec_fn=preexec_fn,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        procs.append(proc)
        return proc

    yield start
    for proc in procs:
        if proc.returncode is None:  # not reaped: its group id is still ours
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate(timeout=DEADLINE_S)


def default_sigint() -> None:
    """Like a terminal's foreground job: a shell starts background jobs (and so maybe
    this test run) with SIGINT ignored, and Python keeps an inherited SIG_IGN."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def file_size_limit(limit: int):
    def preexec() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # writes fail with EFBIG instead
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return preexec


def names(out: Path) -> list[str]:
    return sorted(os.listdir(out)) if out.exists() else []


def final_shards(out: Path) -> list[str]:
    return [n for n in names(out) if TEMPLATE.parse(n) is not None]


def temp_shards(out: Path) -> list[str]:
    return [n for n in names(out) if n.endswith(TEMP_SUFFIX) and ".tfrecord-" in n]


def live_group(pgid: int) -> list[tuple[int, str]]:
    """(pid, command line) of the processes of group ``pgid`` that are not zombies."""
    ps = subprocess.run(
        ["ps", "-ww", "-eo", "pid=,pgid=,stat=,args="], capture_output=True, text=True, check=True
    ).stdout
    members = []
    for line in ps.splitlines():
        fields = line.split(None, 3)
        if len(fields) == 4 and fields[1] == str(pgid) and not fields[2].startswith("Z"):
            members.append((int(fields[0]), fields[3]))
    return members


def wait_until(condition, what: str, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + DEADLINE_S
    while not condition():
        if proc is not None and proc.poll() is not None:
            pytest.fail(f"the run exited ({proc.returncode}) before {what}: {proc.stderr.read()}")
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {DEADLINE_S} s waiting for {what}")
        time.sleep(POLL_S)


def exited(proc: subprocess.Popen) -> bool:
    """Whether the run's main process has exited, without reaping it: its process group
    id then cannot be reused while the test still inspects the group."""
    return os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None


class ShardChecker:
    """Checks that every file under a final shard name is the whole shard, byte for byte
    as the uninterrupted run wrote it (never a prefix), each time a new one appears."""

    def __init__(self, out: Path, ref: Path):
        self.out, self.ref, self.seen = out, ref, set()

    def check(self, *, again: bool = False) -> list[str]:
        finals = final_shards(self.out)
        for name in finals:
            if again or name not in self.seen:
                got = (self.out / name).read_bytes()
                want = (self.ref / name).read_bytes()
                assert got == want, f"{name}: {len(got)} bytes under a final name, not the shard"
                self.seen.add(name)
        return finals


def recorded_done(out: Path, ref: Path) -> set[str]:
    """Shards the resume state calls complete; each must be exactly the reference shard."""
    if not (out / STATE_NAME).exists():
        return set()
    done = json.loads((out / STATE_NAME).read_text())["done"]
    shards = json.loads((ref / MANIFEST_NAME).read_text())["splits"]["train"]["shards"]
    expected = {s["file"]: s for s in shards}
    for name, entry in done.items():
        assert entry["framing_sha256"] == expected[name]["framing_sha256"], name
        assert entry["num_bytes"] == expected[name]["num_bytes"], name
        assert (out / name).read_bytes() == (ref / name).read_bytes(), name
    return set(done)


def assert_same_output(out: Path, ref: Path) -> None:
    """Same files, same bytes (no state file, no temp file left)."""
    assert names(out) == names(ref)
    for name in names(ref):
        assert (out / name).read_bytes() == (ref / name).read_bytes(), name


def shards_at_least(checker: ShardChecker, count: int):
    """A wait_until condition that also checks every final-named file on the way."""
    return lambda: len(checker.check()) >= count


def kill_run(proc: subprocess.Popen) -> None:
    """SIGKILL the main process, the forkserver and the workers at once, wait until none
    of them runs, then reap the main process."""
    assert proc.poll() is None, "the run finished before it could be killed"
    os.killpg(proc.pid, signal.SIGKILL)
    wait_until(lambda: not live_group(proc.pid), "every process of the run to die")
    proc.communicate(timeout=DEADLINE_S)


def assert_interrupted_cleanly(out: Path, ref: Path, checker: ShardChecker) -> None:
    """No manifest; final names hold whole shards; the state claims only whole shards."""
    assert not (out / MANIFEST_NAME).exists()
    checker.check(again=True)
    recorded_done(out, ref)


def resume(workdir: Path, cwd: Path, ref: Path, *options: str) -> subprocess.CompletedProcess:
    result = run(workdir, cwd, *options, "--resume")
    assert result.returncode == 0, result.stderr
    assert_same_output(cwd / "out", ref)
    return result


def test_two_uninterrupted_runs_are_byte_identical(workdir, reference, tmp_path):
    """The baseline the other tests rely on: every file, the manifest included."""
    options = ("--workers", "2", *SLOW)
    assert run(workdir, tmp_path, *options).returncode == 0
    assert_same_output(tmp_path / "out", reference(*options))
    indexes = [name + ".idx" for name in SHARDS]
    assert names(tmp_path / "out") == sorted([*SHARDS, *indexes, MANIFEST_NAME])


# Complete shards when the run is killed, with at least one more shard being written.
KILL_POINTS = {"while-the-first-shards-are-written": 0, "2-shards-done": 2, "4-shards-done": 4}


@pytest.mark.parametrize("point", [*KILL_POINTS, "random-1", "random-2"])
def test_sigkill_then_resume_gives_the_uninterrupted_output(
    point, workdir, reference, launch, tmp_path
):
    """SIGKILL to the whole process group at some point; final names only ever hold whole
    shards, there is no manifest, and --resume gives the uninterrupted run's bytes."""
    options = ("--workers", "2", *SLOW)
    ref, out = reference(*options), tmp_path / "out"
    checker = ShardChecker(out, ref)
    proc = launch(tmp_path, *options)
    if point in KILL_POINTS:
        complete = shards_at_least(checker, KILL_POINTS[point])
        wait_until(lambda: complete() and bool(temp_shards(out)), point, proc)
    else:  # a seeded random moment: the whole run lasts over 3 s, the slowdown included
        stop = time.monotonic() + random.Random(point).uniform(0.2, 2.5)
        while time.monotonic() < stop:
            checker.check()
            time.sleep(POLL_S)
    kill_run(proc)
    assert_interrupted_cleanly(out, ref, checker)
    resume(workdir, tmp_path, ref, *options)


def test_sigkill_during_resume_then_resume_again(workdir, reference, launch, tmp_path):
    """A resume that is killed too can be resumed again."""
    options = ("--workers", "2", *SLOW)
    ref, out = reference(*options), tmp_path / "out"
    checker = ShardChecker(out, ref)
    for attempt, kill_at in enumerate([2, 4]):
        proc = launch(tmp_path, *options, *(["--resume"] if attempt else []))
        wait_until(shards_at_least(checker, kill_at), f"{kill_at} complete shards", proc)
        kill_run(proc)
        assert_interrupted_cleanly(out, ref, checker)
    resume(workdir, tmp_path, ref, *options)


@pytest.mark.parametrize(
    "workers, shards_done",
    [(2, 0), (2, 2), (1, 2)],
    ids=["2-workers-first-shards", "2-workers-after-2-shards", "1-worker-after-2-shards"],
)
def test_ctrl_c_stops_every_process_and_cleans_up(
    workers, shards_done, workdir, reference, launch, tmp_path
):
    """Ctrl-C: exit 130 with one line, no process of the run left, temp files removed,
    no manifest, the state saved so that --resume finishes the run."""
    options = ("--workers", str(workers), *SLOW)
    ref, out = reference(*options), tmp_path / "out"
    checker = ShardChecker(out, ref)
    proc = launch(tmp_path, *options, preexec_fn=default_sigint)
    # Every worker inside a shard (its temp file open), not between two of them.
    wait_until(
        lambda: len(checker.check()) >= shards_done and len(temp_shards(out)) == workers,
        f"{shards_done} shards done and {workers} being written",
        proc,
    )
    if workers > 1:
        assert len(live_group(proc.pid)) > workers  # main, forkserver and workers
    os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C sends to the foreground job
    wait_until(lambda: exited(proc), "the run to exit")
    wait_until(lambda: not live_group(proc.pid), "no process of the run left after it exited")
    _, err = proc.communicate(timeout=DEADLINE_S)
    assert proc.returncode == 130, err
    assert err.strip().splitlines() == [INTERRUPTED]
    assert not [n for n in names(out) if n.endswith(TEMP_SUFFIX)]
    assert STATE_NAME in names(out)
    assert_interrupted_cleanly(out, ref, checker)
    resume(workdir, tmp_path, ref, *options)


SIZE_LIMIT_CASES = {
    # Every uncompressed shard (~410 KB) is over the limit: the first to be written fails.
    "every-shard": (("--compression", "none"), 200_000, SHARDS),
    # Gzip shrinks the zero rows of shards 0-4 to ~1 KB; shard 5 is random and fails.
    "last-shard": (("--compression", "gzip"), 200_000, SHARDS[-1:]),
    # Every shard fits, the manifest (~4 KB) does not: the commit point itself fails.
    "manifest": (("--compression", "gzip", "--rows", "0:500"), 3_072, (MANIFEST_NAME,)),
}


@pytest.mark.parametrize("workers", [1, 2])
@pytest.mark.parametrize("case", list(SIZE_LIMIT_CASES))
def test_file_size_limit_fails_cleanly_and_resumes(case, workers, workdir, reference, tmp_path):
    """A write that fails (EFBIG, like ENOSPC) gives one line naming the file, exit 1, no
    manifest, no partial shard, no false record in the state; --resume then finishes."""
    extra, limit, failing = SIZE_LIMIT_CASES[case]
    options = ("--workers", str(workers), *extra)
    ref, out = reference(*options), tmp_path / "out"
    assert max((ref / n).stat().st_size for n in failing) > limit

    result = run(workdir, tmp_path, *options, preexec_fn=file_size_limit(limit))
    assert result.returncode == 1, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert lines[0].startswith("Error: ") and "File too large" in lines[0], lines[0]
    assert re.search(r"\bout\b", lines[0]), lines[0]  # names the output directory
    named = [n for n in failing if n in lines[0]]
    assert named, f"{lines[0]!r} names none of {failing}"
    assert not (out / MANIFEST_NAME).exists()
    assert not [n for n in names(out) if n.endswith(TEMP_SUFFIX)]
    ShardChecker(out, ref).check()
    done = recorded_done(out, ref)
    assert not done & set(named)
    if case == "last-shard" and workers == 1:  # in plan order: 0-4 done, then 5 failed
        assert done == set(SHARDS[:-1])

    resumed = resume(workdir, tmp_path, ref, *options)
    if case == "last-shard" and workers == 1:
        assert "5 shard(s) were already complete" in resumed.stdout


def test_resumed_manifest_is_byte_identical_to_an_uninterrupted_one(workdir, reference, tmp_path):
    options = ("--workers", "1")
    result = run(workdir, tmp_path, *options, "--resume")  # an empty directory: a new run
    assert result.returncode == 0, result.stderr
    manifest = (tmp_path / "out" / MANIFEST_NAME).read_bytes()
    assert manifest == (reference(*options) / MANIFEST_NAME).read_bytes()


@pytest.mark.parametrize("crashed", ["new-run", "resume-of-a-finished-run"])
def test_resume_after_a_crash_while_saving_the_state(crashed, workdir, reference, tmp_path):
    options = ("--workers", "1")
    ref, out = reference(*options), tmp_path / "out"
    again: tuple[str, ...] = ()
    if crashed == "resume-of-a-finished-run":
        assert run(workdir, tmp_path, *options).returncode == 0
        again = ("--resume",)
    crash = run(workdir, tmp_path, *options, *again, code=CRASH_AT_STATE_SAVE)
    assert crash.returncode == -signal.SIGKILL, crash.stderr
    # The state is saved before the old manifest is removed: a finished output is left
    # whole (still valid), a new one has neither; --resume goes on from both.
    assert (out / MANIFEST_NAME).exists() == (crashed == "resume-of-a-finished-run")
    assert not (out / STATE_NAME).exists()
    resume(workdir, tmp_path, ref, *options)


def _sigint_disposition(pid: int) -> str | None:
    """'default', 'caught' (a Python handler) or 'ignored', from /proc; None if gone."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    fields = dict(line.split(":\t", 1) for line in status.splitlines() if ":\t" in line)
    bit = 1 << (signal.SIGINT - 1)
    if int(fields["SigIgn"], 16) & bit:
        return "ignored"
    return "caught" if int(fields["SigCgt"], 16) & bit else "default"


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs Linux /proc")
def test_ctrl_c_during_start_up_prints_one_line(workdir, launch, tmp_path):
    proc = launch(tmp_path, "--workers", "2", *SLOW, preexec_fn=default_sigint)

    def forkserver_starting() -> bool:
        for pid, args in live_group(proc.pid):
            if "multiprocessing.forkserver" in args:
                # Started with SIGINT ignored: it never handles a Ctrl-C itself.
                assert _sigint_disposition(pid) in ("ignored", None)
                return True
        return False

    wait_until(forkserver_starting, "the forkserver to start", proc)
    os.killpg(proc.pid, signal.SIGINT)
    _, err = proc.communicate(timeout=DEADLINE_S)
    assert (proc.returncode, err.strip().splitlines()) == (130, [INTERRUPTED])
