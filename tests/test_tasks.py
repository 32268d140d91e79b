"""Task arrays: ``convert --num-tasks N --task-index I`` on every task, then ``finalize``.

The promise is that the finalized directory is byte-identical to a local run of the same
options, for any N (including more tasks than shards), and that ``finalize`` refuses, in
one line naming what is wrong, whenever the parts on disk cannot make that directory.

The manifest records the output path as given, so every comparison converts locally into
``out``, moves that to ``ref``, and then runs the tasks into the same ``out``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
from click.testing import CliRunner

from hdf5_to_records import converter
from hdf5_to_records.checks.verify import verify
from hdf5_to_records.cli import main
from hdf5_to_records.converter import ConvertResult, convert, finalize
from hdf5_to_records.errors import OutputError, UsageError
from hdf5_to_records.format.manifest import MANIFEST_NAME
from hdf5_to_records.format.naming import TEMP_SUFFIX
from hdf5_to_records.planning.config import ConvertConfig, build_config
from hdf5_to_records.planning.limits import DEFAULT_LIMITS, Limits
from hdf5_to_records.scale_out.tasks import TaskSlice, _ranges, part_name
from hdf5_to_records.writing.output import STATE_NAME
from hdf5_to_records.writing.staging import stage

from records import load_manifest, read_split

ROWS = 240
SECOND_ROWS = 90
SECOND_LABELS_FROM = 10_000  # labels are unique across both files: an example's identity
SMALL = Limits(window_bytes=1024)  # below the chunked source's ~5 KB selection: --shuffle stages
OLD_MTIME_NS = 1_000_000_000 * 10**9  # 2001: any rewrite moves a file's mtime off it
DEADLINE_S = 60


def _write(path: Path, first_label: int, rows: int, **layout) -> Path:
    labels = np.arange(first_label, first_label + rows, dtype=np.int64)
    with h5py.File(path, "w") as h5:
        x = (labels[:, None] * 3 + np.arange(3)).astype(np.float32)
        h5.create_dataset("x", data=x, **layout)
        h5.create_dataset("label", data=labels, **layout)
        names = np.array([f"row-{i}".encode() for i in labels], dtype=object)
        h5.create_dataset("name", data=names, dtype=h5py.vlen_dtype(bytes), **layout)
    return path


@pytest.fixture(scope="module")
def sources(tmp_path_factory) -> dict[str, Path]:
    """Three small files with known values, never modified by the tests: ``plain``
    (contiguous), ``second`` (same features, other labels) and ``chunked`` (8-row
    gzip chunks, so a large enough shuffled selection is staged)."""
    root = tmp_path_factory.mktemp("task-sources")
    return {
        "plain": _write(root / "plain.h5", 0, ROWS),
        "second": _write(root / "second.h5", SECOND_LABELS_FROM, SECOND_ROWS),
        "chunked": _write(root / "chunked.h5", 0, ROWS, chunks=True, compression="gzip"),
    }


def config(out: Path, *paths: Path, **options) -> ConvertConfig:
    return build_config(
        {"sources": [str(p) for p in paths], "output": str(out), "workers": 1, **options}
    )


def local_reference(cfg: ConvertConfig, ref: Path, limits=DEFAULT_LIMITS) -> ConvertResult:
    """Convert ``cfg`` locally, then move the output to ``ref`` so tasks can use its path."""
    result = convert(cfg, limits=limits)
    os.rename(cfg.output, ref)
    return result


def run_tasks(
    cfg: ConvertConfig, count: int, indices=None, limits=DEFAULT_LIMITS
) -> list[ConvertResult]:
    indices = range(count) if indices is None else indices
    return [convert(cfg, task=TaskSlice(i, count), limits=limits) for i in indices]


def assert_same_files(out: Path, ref: Path, what: str = "") -> None:
    """Same file names (so no part or scratch file is left) and the same bytes."""
    assert sorted(os.listdir(out)) == sorted(os.listdir(ref)), what
    for name in sorted(os.listdir(ref)):
        assert (out / name).read_bytes() == (ref / name).read_bytes(), f"{what}: {name} differs"


def snapshot(directory: Path) -> dict[str, bytes]:
    return {name: (directory / name).read_bytes() for name in sorted(os.listdir(directory))}


def parts_in(directory: Path) -> list[str]:
    return sorted(n for n in os.listdir(directory) if n.startswith(".hdf5-to-records-task-"))


def cli(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def assert_refused(result, code: int, *fragments: str) -> str:
    """Exit ``code``, nothing on stdout, one ``Error:`` line on stderr holding each
    fragment; return that line."""
    assert result.exit_code == code, result.output
    assert "Traceback" not in result.output
    assert result.stdout == "", result.stdout
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, f"expected one line, got {result.stderr!r}"
    assert lines[0].startswith("Error: "), lines[0]
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


# --- byte identity ----------------------------------------------------------------------

CASES = {
    "copy": (("plain",), {"num_shards": 5, "rows_per_record": 7}),
    "shuffle-split": (
        ("plain",),
        {
            "shuffle": True,
            "seed": 7,
            "splits": {"train": 0.7, "test": 0.3},
            "num_shards": 3,
            "rows_per_record": 5,
        },
    ),
    "gzip": (("plain",), {"compression": "gzip", "num_shards": 4}),
    "index": (
        ("plain",),
        {"mode": "index", "features": {"x": "/x", "label": "/label"}, "num_shards": 4},
    ),
    "staged": (("chunked",), {"shuffle": True, "seed": 3, "num_shards": 4, "rows_per_record": 5}),
    "rows": (("plain",), {"rows": "7:230:3", "num_shards": 3, "rows_per_record": 4}),
    "multi-file": (("plain", "second"), {"num_shards": 5, "rows_per_record": 6}),
}


@pytest.mark.parametrize("case", CASES)
def test_tasks_then_finalize_equal_a_local_run(case, sources, tmp_path, monkeypatch):
    staged_rows: list[int] = []

    def counting_stage(selection, output, limits):
        staged_rows.append(sum(f.rows.size for f in selection.files))
        return stage(selection, output, limits)

    monkeypatch.setattr(converter, "stage", counting_stage)
    names, options = CASES[case]
    out, ref = tmp_path / "out", tmp_path / "ref"
    cfg = config(out, *(sources[n] for n in names), **options)
    plan = local_reference(cfg, ref, SMALL).plan
    assert staged_rows == ([ROWS] if case == "staged" else [])
    for count in (1, 2, 3, len(plan.shards) + 2):
        staged_rows.clear()
        results = run_tasks(cfg, count, limits=SMALL)
        if case == "staged":  # each task stages only the rows of its own shards
            own = [
                sum(s.num_examples for s in TaskSlice(i, count).shards(plan)) for i in range(count)
            ]
            assert staged_rows == [n for n in own if n], count
        assert MANIFEST_NAME not in os.listdir(out), "a task wrote the manifest"
        for i, result in enumerate(results):
            written = sorted(r.filename for r in result.written)
            assert written == sorted(s.filename for s in TaskSlice(i, count).shards(plan))
        if count > len(plan.shards):
            assert results[-1].written == ()
            assert part_name(count - 1, count) in os.listdir(out)  # an empty part, still
        assert parts_in(out) == [part_name(i, count) for i in range(count)]
        finalize(str(out))
        assert_same_files(out, ref, f"{case}, {count} task(s)")
        if count == 3:
            result = cli("verify", out, "--deep")
            assert result.exit_code == 0, result.output
            assert result.stdout.startswith("OK: "), result.stdout
        shutil.rmtree(out)


def test_cli_tasks_with_two_workers_finalize_and_verify(sources, tmp_path):
    out, ref = tmp_path / "out", tmp_path / "ref"
    args = ("convert", sources["plain"], sources["second"], "-o", out, "--num-shards", 3)
    args += ("--shuffle", "--seed", 4, "--split", "train=0.7", "--split", "test=0.3")
    args += ("--compression", "gzip")
    assert cli(*args, "--workers", 1).exit_code == 0
    os.rename(out, ref)

    first = cli(*args, "--workers", 2, "--num-tasks", 2, "--task-index", 0)
    assert first.exit_code == 0, first.output
    assert first.stdout.startswith("task 0 of 2: wrote "), first.stdout
    assert f"run `hdf5-to-records finalize {out}` once all 2 tasks are done" in first.stdout
    second = cli(*args, "--workers", 1, "--num-tasks", 2, "--task-index", 1)
    assert second.exit_code == 0, second.output
    done = cli("finalize", out)
    assert done.exit_code == 0, done.output
    assert done.stdout.startswith(f"finalized {out}: {ROWS + SECOND_ROWS} examples"), done.stdout
    assert_same_files(out, ref)
    checked = cli("verify", out, "--deep")
    assert checked.exit_code == 0, checked.output
    assert checked.stdout.startswith("OK: "), checked.stdout


# --- values -----------------------------------------------------------------------------


def test_finalized_splits_hold_every_source_row_once(sources, tmp_path, check_examples):
    out = tmp_path / "out"
    cfg = config(
        out,
        sources["plain"],
        sources["second"],
        shuffle=True,
        seed=11,
        splits={"train": 0.7, "test": 0.3},
        num_shards=2,
        rows_per_record=4,
    )
    run_tasks(cfg, 3)
    finalize(str(out))
    expected = {}
    for name in ("plain", "second"):
        with h5py.File(sources[name], "r") as h5:
            for label, x, text in zip(h5["label"][()], h5["x"][()], h5["name"][()]):
                expected[int(label)] = (x, text)
    manifest = load_manifest(str(out))
    seen = []
    for split in ("train", "test"):
        got = read_split(str(out), split)
        labels = [int(v) for v in got["label"]]
        assert len(labels) == manifest["splits"][split]["num_examples"]
        check_examples(got["x"], [expected[i][0] for i in labels], what=f"{split}/x")
        check_examples(got["name"], [expected[i][1] for i in labels], what=f"{split}/name")
        seen += labels
    assert sorted(seen) == sorted(expected)
    assert seen != sorted(seen), "--shuffle wrote the examples in source order"


def test_finalized_row_selection_reads_back_in_order(sources, tmp_path, check_examples):
    out = tmp_path / "out"
    run_tasks(config(out, sources["plain"], rows="7:230:3", num_shards=3), 2)
    finalize(str(out))
    got = read_split(str(out))
    with h5py.File(sources["plain"], "r") as h5:
        for name in ("x", "label", "name"):
            check_examples(got[name], list(h5[name][7:230:3]), what=name)


# --- refusals ---------------------------------------------------------------------------


def test_finalize_names_the_missing_tasks_in_array_syntax(sources, tmp_path):
    out = tmp_path / "out"
    cfg = config(out, sources["plain"], num_shards=8)
    run_tasks(cfg, 7, indices=(3, 4, 6))
    assert_refused(cli("finalize", out), 1, f"finalize {out}: 4 of 7 task(s) have not finished: ")
    with pytest.raises(OutputError, match=r"have not finished: --task-index 0-2,5$"):
        finalize(str(out))
    assert MANIFEST_NAME not in os.listdir(out)
    run_tasks(cfg, 7, indices=(0, 1, 2, 5))
    finalize(str(out))
    assert parts_in(out) == []


@pytest.mark.parametrize("damage", ["deleted", "truncated"])
def test_finalize_names_a_missing_or_truncated_shard(damage, sources, tmp_path):
    out, ref = tmp_path / "out", tmp_path / "ref"
    cfg = config(out, sources["plain"], num_shards=4)
    plan = local_reference(cfg, ref, SMALL).plan
    run_tasks(cfg, 2)
    victim = out / plan.shards[2].filename  # task 0's
    if damage == "deleted":
        victim.unlink()
    else:
        victim.write_bytes(victim.read_bytes()[:-1])
    line = assert_refused(cli("finalize", out), 1, "shard(s) missing or of the wrong size")
    assert line.endswith(victim.name), line
    with pytest.raises(OutputError, match=victim.name):
        finalize(str(out))
    assert MANIFEST_NAME not in os.listdir(out)
    assert len(parts_in(out)) == 2  # kept, so that rerunning task 0 is enough
    run_tasks(cfg, 2, indices=(0,))
    finalize(str(out))
    assert_same_files(out, ref)


def test_a_task_refuses_parts_of_another_plan_until_overwrite(sources, tmp_path):
    out, ref = tmp_path / "out", tmp_path / "ref"
    four = config(out, sources["plain"], num_shards=4)
    five = config(out, sources["plain"], num_shards=5)
    local_reference(five, ref)
    run_tasks(four, 2, indices=(0,))
    before = snapshot(out)
    message = r"holds task part \.hdf5-to-records-task-00000-of-00002\.json of a different"
    with pytest.raises(OutputError, match=message):
        run_tasks(five, 2, indices=(1,))
    assert_refused(
        cli(
            *("convert", sources["plain"], "-o", out, "--num-shards", 5, "--workers", 1),
            *("--num-tasks", 2, "--task-index", 1),
        ),
        1,
        f"--output {out}: holds task part {part_name(0, 2)}",
        "--overwrite",
    )
    assert snapshot(out) == before, "a refused task changed the directory"
    run_tasks(build_config({**five.to_json(), "overwrite": True}), 2, indices=(1,))
    assert parts_in(out) == [part_name(1, 2)]
    run_tasks(five, 2, indices=(0,))
    finalize(str(out))
    assert_same_files(out, ref)  # the 4-shard plan's files are gone too


def test_finalize_refuses_parts_of_different_conversions(sources, tmp_path):
    out = tmp_path / "out"
    run_tasks(config(out, sources["plain"], num_shards=4), 2, indices=(0,))
    foreign = (out / part_name(0, 2)).read_bytes()
    shutil.rmtree(out)
    run_tasks(config(out, sources["plain"], num_shards=5), 2, indices=(1,))
    (out / part_name(0, 2)).write_bytes(foreign)
    refused = cli("finalize", out)
    assert_refused(refused, 1, "1 of 2 task part(s) come from a different conversion")
    assert (part_name(0, 2) in refused.output) != (part_name(1, 2) in refused.output)
    with pytest.raises(OutputError, match="different conversion"):
        finalize(str(out))
    assert MANIFEST_NAME not in os.listdir(out)


def test_finalize_refuses_when_a_source_grew(tmp_path):
    source = tmp_path / "grow.h5"
    with h5py.File(source, "w") as h5:
        h5.create_dataset("x", data=np.arange(100.0), maxshape=(None,), chunks=(10,))
    out = tmp_path / "out"
    run_tasks(config(out, source, num_shards=3), 2)
    with h5py.File(source, "a") as h5:
        h5["x"].resize((110,))
        h5["x"][100:] = np.arange(10.0)
    assert_refused(cli("finalize", out), 1, "sources changed since the tasks ran", "rerun")
    with pytest.raises(OutputError, match="plan built from the sources now differs"):
        finalize(str(out))
    assert MANIFEST_NAME not in os.listdir(out)


def test_finalize_refuses_a_copy_of_the_tasks_directory(sources, tmp_path):
    out, copy = tmp_path / "out", tmp_path / "copy"
    run_tasks(config(out, sources["plain"], num_shards=3), 2)
    shutil.copytree(out, copy)
    assert_refused(
        cli("finalize", copy), 1, f"the tasks wrote to --output {out}; run finalize where"
    )
    assert MANIFEST_NAME not in os.listdir(copy)


def test_finalize_refuses_a_directory_without_parts(tmp_path):
    (tmp_path / "empty").mkdir()
    assert_refused(cli("finalize", tmp_path / "empty"), 1, "holds no task parts")
    assert_refused(cli("finalize", tmp_path / "absent"), 1, "no such directory")
    assert os.listdir(tmp_path / "empty") == []
    assert not (tmp_path / "absent").exists()


def test_finalize_twice_refuses_and_keeps_the_dataset(sources, tmp_path):
    out = tmp_path / "out"
    run_tasks(config(out, sources["plain"], num_shards=3), 2)
    finalize(str(out))
    before = snapshot(out)
    assert_refused(cli("finalize", out), 1, f"finalize {out}: already finalized")
    with pytest.raises(OutputError, match="already finalized"):
        finalize(str(out))
    assert snapshot(out) == before


def test_a_task_refuses_a_finalized_directory_until_overwrite(sources, tmp_path):
    out, ref = tmp_path / "out", tmp_path / "ref"
    cfg = config(out, sources["plain"], num_shards=3)
    local_reference(cfg, ref)
    run_tasks(cfg, 2)
    finalize(str(out))
    before = snapshot(out)
    with pytest.raises(OutputError, match=r"holds manifest\.json .*--overwrite"):
        run_tasks(cfg, 2, indices=(0,))
    assert_refused(
        cli(
            *("convert", sources["plain"], "-o", out, "--num-shards", 3, "--workers", 1),
            *("--num-tasks", 2, "--task-index", 0),
        ),
        1,
        "holds manifest.json",
    )
    assert snapshot(out) == before
    run_tasks(build_config({**cfg.to_json(), "overwrite": True}), 2, indices=(0,))
    assert MANIFEST_NAME not in os.listdir(out)
    run_tasks(cfg, 2, indices=(1,))
    finalize(str(out))
    assert_same_files(out, ref)


@pytest.mark.parametrize(
    "options, message",
    [
        (("--num-tasks", 2), "--num-tasks and --task-index go together"),
        (("--task-index", 0), "--num-tasks and --task-index go together"),
        (("--num-tasks", 3, "--task-index", 3), "--task-index must be in 0..2 for --num-tasks 3"),
        (("--num-tasks", 3, "--task-index", -1), "got -1"),
        (("--num-tasks", 0, "--task-index", 0), "--num-tasks must be >= 1, got 0"),
    ],
)
def test_bad_task_options_are_usage_errors(options, message, sources, tmp_path):
    out = tmp_path / "out"
    result = cli("convert", sources["plain"], "-o", out, "--workers", 1, *options)
    assert_refused(result, 2, message)
    assert not out.exists()


@pytest.mark.parametrize(
    "index, count, message",
    [(0, 0, "--num-tasks must be >= 1"), (2, 2, "0..1"), (-1, 4, "0..3")],
)
def test_task_slice_validates_itself(index, count, message):
    with pytest.raises(UsageError, match=message):
        TaskSlice(index, count)


# --- retries, --resume and concurrency ------------------------------------------------


def test_a_retried_task_rewrites_the_same_bytes(sources, tmp_path):
    out, ref = tmp_path / "out", tmp_path / "ref"
    cfg = config(out, sources["chunked"], shuffle=True, seed=1, num_shards=5)
    local_reference(cfg, ref)
    run_tasks(cfg, 3)
    before = snapshot(out)
    run_tasks(cfg, 3, indices=(1,))
    assert snapshot(out) == before
    finalize(str(out))
    assert_same_files(out, ref)


def test_an_interrupted_task_leaves_only_the_other_tasks_files(sources, tmp_path):
    out, ref = tmp_path / "out", tmp_path / "ref"
    cfg = config(out, sources["plain"], num_shards=4, rows_per_record=10)
    plan = local_reference(cfg, ref, SMALL).plan
    run_tasks(cfg, 2, indices=(0,))
    before = snapshot(out)

    def interrupt(examples: int, nbytes: int) -> None:
        raise KeyboardInterrupt  # as a scheduler's SIGTERM, mid-shard

    with pytest.raises(KeyboardInterrupt, match="^$"):  # raised bare, as by a signal
        convert(cfg, task=TaskSlice(1, 2), progress=interrupt)
    assert snapshot(out) == before
    assert not [n for n in os.listdir(out) if n.endswith(TEMP_SUFFIX)]
    assert_refused(cli("finalize", out), 1, "--task-index 1")
    (rerun,) = run_tasks(cfg, 2, indices=(1,))
    assert {r.filename for r in rerun.written} == {s.filename for s in plan.shards[1::2]}
    finalize(str(out))
    assert_same_files(out, ref)


def age(directory: Path) -> dict[str, tuple[int, int]]:
    """Set every file's mtime far back; return (inode, mtime) per file."""
    for name in os.listdir(directory):
        os.utime(directory / name, ns=(OLD_MTIME_NS, OLD_MTIME_NS))
    return {n: (os.stat(directory / n).st_ino, OLD_MTIME_NS) for n in os.listdir(directory)}


def stamps(directory: Path) -> dict[str, tuple[int, int]]:
    return {
        n: (os.stat(directory / n).st_ino, os.stat(directory / n).st_mtime_ns)
        for n in os.listdir(directory)
    }


def test_resume_of_a_complete_task_rewrites_nothing(sources, tmp_path):
    out = tmp_path / "out"
    args = ("convert", sources["plain"], "-o", out, "--num-shards", 4, "--workers", 1)
    for i in range(2):
        assert cli(*args, "--num-tasks", 2, "--task-index", i).exit_code == 0
    aged = age(out)
    result = cli(*args, "--num-tasks", 2, "--task-index", 1, "--resume")
    assert result.exit_code == 0, result.output
    assert result.stdout == f"task 1 of 2: already complete in {out}\n"
    assert stamps(out) == aged


def test_resume_rewrites_a_task_whose_shard_is_gone(sources, tmp_path):
    out, ref = tmp_path / "out", tmp_path / "ref"
    cfg = config(out, sources["plain"], num_shards=4)
    plan = local_reference(cfg, ref, SMALL).plan
    run_tasks(cfg, 2)
    (out / plan.shards[1].filename).unlink()  # task 1's
    resumed = build_config({**cfg.to_json(), "resume": True})
    aged = age(out)
    (rerun,) = run_tasks(resumed, 2, indices=(1,))
    assert {r.filename for r in rerun.written} == {plan.shards[1].filename, plan.shards[3].filename}
    untouched = {n for n in aged if n in {plan.shards[0].filename, plan.shards[2].filename}}
    assert {n: stamps(out)[n] for n in untouched} == {n: aged[n] for n in untouched}
    finalize(str(out))
    assert_same_files(out, ref)


def test_concurrent_task_processes_then_finalize_equal_a_local_run(sources, tmp_path):
    out, ref = tmp_path / "out", tmp_path / "ref"
    args = ["convert", str(sources["plain"]), str(sources["second"]), "-o", str(out)]
    args += ["--num-shards", "6", "--shuffle", "--seed", "5", "--workers", "1"]
    assert cli(*args).exit_code == 0
    os.rename(out, ref)
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "hdf5_to_records", *args, "--num-tasks", "3"]
            + ["--task-index", str(i)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(3)
    ]
    for i, proc in enumerate(procs):
        stdout, stderr = proc.communicate(timeout=DEADLINE_S)
        assert proc.returncode == 0, stderr
        assert stdout.startswith(f"task {i} of 3: wrote "), stdout
    done = cli("finalize", out)
    assert done.exit_code == 0, done.output
    assert_same_files(out, ref)


# --- pure pieces ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "indices, expected",
    [
        ([0, 1, 2, 5, 7, 8], "0-2,5,7-8"),
        ([3], "3"),
        ([0, 1], "0-1"),
        ([1, 3, 5], "1,3,5"),
        ([0, 2, 3, 4, 9], "0,2-4,9"),
    ],
)
def test_ranges_are_slurm_array_syntax(indices, expected):
    assert _ranges(indices) == expected


def test_part_names_are_hidden_and_zero_padded():
    assert part_name(2, 10) == ".hdf5-to-records-task-00002-of-00010.json"
    assert TaskSlice(2, 10).part_name == part_name(2, 10)


def test_task_slices_partition_the_plan(sources, tmp_path):
    options = CASES["shuffle-split"][1]
    plan = convert(config(tmp_path / "out", sources["plain"], **options), dry_run=True).plan
    assert len(plan.shards) == 6
    for count in range(1, len(plan.shards) + 3):
        parts = [TaskSlice(i, count).shards(plan) for i in range(count)]
        names = [s.filename for part in parts for s in part]
        assert len(names) == len(set(names)), count
        assert sorted(names) == sorted(s.filename for s in plan.shards), count
        sizes = [len(part) for part in parts]
        assert max(sizes) - min(sizes) <= 1, (count, sizes)
    assert not (tmp_path / "out").exists()


# --- found in review ---------------------------------------------------------------


def test_resume_of_a_task_without_shards_still_writes_its_part(sources, tmp_path):
    out = tmp_path / "out"
    cfg = config(out, sources["plain"], num_shards=2, resume=True)
    run_tasks(cfg, 3)  # task 2 owns no shard
    assert parts_in(out) == [part_name(i, 3) for i in range(3)]
    finalize(str(out))


def test_a_task_refuses_parts_of_another_num_tasks(sources, tmp_path):
    out = tmp_path / "out"
    cfg = config(out, sources["plain"], num_shards=4)
    run_tasks(cfg, 2, indices=(0,))
    with pytest.raises(OutputError, match=part_name(0, 2)):
        run_tasks(cfg, 3, indices=(1,))


def test_overwrite_replaces_the_parts_of_another_num_tasks(sources, tmp_path):
    out, ref = tmp_path / "out", tmp_path / "ref"
    cfg = config(out, sources["plain"], num_shards=4)
    local_reference(cfg, ref)
    run_tasks(cfg, 2, indices=(0,))
    run_tasks(build_config({**cfg.to_json(), "overwrite": True}), 3)
    finalize(str(out))
    assert_same_files(out, ref)


def test_rerunning_a_task_replaces_its_unreadable_part(sources, tmp_path):
    out, ref = tmp_path / "out", tmp_path / "ref"
    cfg = config(out, sources["plain"], num_shards=4)
    local_reference(cfg, ref)
    run_tasks(cfg, 2)
    (out / part_name(1, 2)).write_text("{")
    with pytest.raises(OutputError, match=r"is unreadable .*; rerun that task$"):
        finalize(str(out))
    run_tasks(cfg, 2, indices=(1,))
    finalize(str(out))
    assert_same_files(out, ref)


def test_a_local_overwrite_removes_task_parts(sources, tmp_path):
    out = tmp_path / "out"
    cfg = config(out, sources["plain"], num_shards=4)
    run_tasks(cfg, 2)
    convert(build_config({**cfg.to_json(), "overwrite": True}))
    assert parts_in(out) == []
    assert verify(str(out)).ok


def test_tasks_after_an_interrupted_local_run_leave_a_clean_dataset(sources, tmp_path):
    out = tmp_path / "out"
    cfg = config(out, sources["plain"], num_shards=4)

    def interrupt(examples: int, nbytes: int) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt, match="^$"):  # raised bare, as by a signal
        convert(cfg, progress=interrupt)
    assert STATE_NAME in os.listdir(out)
    try:
        run_tasks(cfg, 2)
    except OutputError:
        return  # refusing the directory is a fix too
    finalize(str(out))
    assert verify(str(out)).ok, [str(p) for p in verify(str(out)).problems]


@pytest.mark.parametrize("workers", [1, 3])
def test_the_default_shard_count_follows_the_tasks_workers(sources, tmp_path, workers):
    """Without --num-shards the shard count is a multiple of --workers: finalize and
    verify --deep must rebuild the plan with the tasks' value, not this machine's."""
    out, ref = tmp_path / "out", tmp_path / "ref"
    cfg = config(out, sources["plain"], workers=workers)
    local_reference(cfg, ref)
    assert (
        len([n for n in os.listdir(ref) if ".tfrecord-" in n and not n.endswith(".idx")]) == workers
    )
    run_tasks(cfg, 2)
    finalize(str(out))
    assert_same_files(out, ref)
    assert json.loads((out / "manifest.json").read_text())["config"]["workers"] == workers
    report = verify(str(out), deep=True)
    assert report.ok, report.problems


def test_workers_are_not_recorded_when_the_shard_count_is_fixed(sources, tmp_path):
    one = convert(config(tmp_path / "a", sources["plain"], num_shards=3)).manifest
    two = convert(
        build_config(
            {
                "sources": [str(sources["plain"])],
                "output": str(tmp_path / "a2"),
                "workers": 2,
                "num_shards": 3,
                "name": "a",
            }
        )
    ).manifest
    assert "workers" not in one["config"]
    assert [s["framing_sha256"] for s in one["splits"]["train"]["shards"]] == [
        s["framing_sha256"] for s in two["splits"]["train"]["shards"]
    ]
