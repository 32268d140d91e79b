"""Fuzzing YAML config files: ``build_config`` returns a config or raises a project
error, and ``convert --config FILE --dry-run`` exits 0, 1 or 2 with one line, never a
traceback; the config a manifest records rebuilds the same config. Examples are
derandomized.
"""

from __future__ import annotations

import dataclasses
import json
import os

import h5py
import numpy as np
import pytest
import yaml
from click.testing import CliRunner
from hypothesis import event, given, settings
from hypothesis import strategies as st

from hdf5_to_records.cli import main
from hdf5_to_records.errors import Hdf5ToRecordsError, UsageError
from hdf5_to_records.planning.config import build_config

from fuzzing import FUZZ, NO_SHRINK, SPECIAL_INTS, UTF8, N

# --- config files ---------------------------------------------------------------------------

CONFIG_KEYS = [
    "sources",
    "source",
    "output",
    "features",
    "feature",
    "rows",
    "groups",
    "transform",
    "splits",
    "split",
    "shuffle",
    "seed",
    "num_shards",
    "num-shards",
    "shard_size",
    "shard-size",
    "name",
    "compression",
    "mode",
    "rows_per_record",
    "workers",
    "overwrite",
    "resume",
]
YAML_LEAVES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.sampled_from(SPECIAL_INTS),
    st.floats(),
    st.text(UTF8, max_size=10),
    st.sampled_from(
        [
            "a.h5",
            "out",
            "/x",
            "x=/x",
            "train=0.5",
            "0:10",
            "::2",
            "256MB",
            "1e400",
            "inf",
            "gzip",
            "index",
            "auto",
            "mod:fn",
            "/s/*",
        ]
    ),
)
YAML_VALUES = st.recursive(
    YAML_LEAVES,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(UTF8, max_size=6), inner, max_size=3)
    ),
    max_leaves=5,
)


@st.composite
def config_documents(draw) -> bytes:
    """A YAML config file: mostly mappings of known keys to values of any type (on top
    of valid sources and output, so later checks run too), with unknown keys, or
    another YAML value, or text and bytes that may not even parse."""
    kind = draw(st.sampled_from(["mapping", "mapping", "mapping", "value", "text", "bytes"]))
    if kind == "bytes":
        return draw(st.binary(max_size=40))
    if kind == "text":
        return draw(st.text(UTF8, max_size=40)).encode()
    if kind == "value":
        return yaml.safe_dump(draw(YAML_VALUES)).encode()
    document = draw(st.sampled_from([{}, {"sources": ["a.h5"], "output": "out"}]))
    document = {
        **document,
        **draw(st.dictionaries(st.sampled_from(CONFIG_KEYS), YAML_VALUES, max_size=4)),
    }
    if draw(st.booleans()):
        document.update(
            draw(st.dictionaries(st.text(UTF8, min_size=1, max_size=8), YAML_VALUES, max_size=2))
        )
    return yaml.safe_dump(document, allow_unicode=True).encode()


def build_from(tmp_path_factory, content: bytes):
    path = tmp_path_factory.mktemp("config") / "config.yaml"
    path.write_bytes(content)
    return build_config({}, yaml_path=str(path))


@settings(FUZZ, max_examples=300, phases=NO_SHRINK)
@given(content=config_documents())
def test_build_config_from_a_fuzzed_yaml_file_raises_only_usage_errors(tmp_path_factory, content):
    try:
        build_from(tmp_path_factory, content)
    except Hdf5ToRecordsError:
        pass


@pytest.mark.parametrize(
    "content, message",
    [
        ("- a.h5\n- out\n", "expected a mapping of option names to values"),
        ("7\n", "expected a mapping of option names to values"),
        ("sources: [a.h5\n", r"not valid YAML \(ParserError\)"),
        ("!!python/object/apply:os.system [echo]\n", r"not valid YAML \(ConstructorError\)"),
        ("sources: [a.h5]\noutput: out\nseed: true\n", "--seed: expected an integer, got True"),
        ("sources: [a.h5]\noutput: out\nworkers: 1.5\n", "--workers: expected an integer, got 1.5"),
        ("sources: [a.h5]\noutput: out\nshard_size: -5\n", "--shard-size: size must be positive"),
        ("sources: [a.h5]\noutput: out\nshard_size: lots\n", "--shard-size: expected a size"),
        ("sources: [a.h5]\noutput: out\nsplits: 0.5\n", "config key 'splits': expected a mapping"),
        ("sources: [a.h5]\noutput: out\nshuffle: yes please\n", "config key 'shuffle': expected"),
        ("sources: [a.h5]\noutput: out\nbogus: 1\n", "unknown config key 'bogus'"),
        ("output: out\n", "no SOURCES given"),
        pytest.param(
            "sources: 5\noutput: out\n",
            "sources",
            marks=(),
            id="sources-a-number",
        ),
        *[
            pytest.param(
                f"sources: [a.h5]\noutput: out\nshard_size: {value}\n",
                "--shard-size",
                marks=(),
                id=f"shard-size-{value}",
            )
            for value in ("1.5", "null", "[1]")
        ],
        *[
            pytest.param(
                f"sources: [a.h5]\noutput: out\nshard_size: {value}\n",
                "--shard-size",
                marks=(),
                id=f"shard-size-{value}",
            )
            for value in ("inf", "1e400")
        ],
        pytest.param(
            "sources: [a.h5]\noutput: out\nshard_size: true\n",
            "--shard-size",
            marks=(),
            id="shard-size-true",
        ),
        pytest.param(
            b"sources: [a.h5]\noutput: \xe9t\xe9\n",
            "--config",
            marks=(),
            id="not-utf8",
        ),
    ],
)
def test_known_config_errors(tmp_path_factory, content, message):
    if isinstance(content, str):
        content = content.encode()
    with pytest.raises(UsageError, match=message):
        build_from(tmp_path_factory, content)


def test_config_path_that_is_a_directory(tmp_path):
    with pytest.raises(UsageError, match="--config"):
        build_config({}, yaml_path=str(tmp_path))


VALID_VALUES = {
    "features": st.sampled_from([{"x": "/x"}, ["x=/x", "y=/y"], "y=/y"]),
    "rows": st.sampled_from(["0:10", "::-2", "1,3,5"]),
    "splits": st.sampled_from([{"train": 0.5, "test": 0.5}, ["train=0.8"]]),
    "shuffle": st.booleans(),
    "seed": st.integers(0, 100),
    "num_shards": st.integers(1, 4),
    "shard_size": st.sampled_from(["1MB", 4096]),
    "name": st.sampled_from(["ds", "a.b"]),
    "compression": st.sampled_from(["none", "gzip"]),
    "mode": st.sampled_from(["copy", "index", "auto"]),
    "rows_per_record": st.integers(1, 5),
    "workers": st.integers(1, 2),
    "overwrite": st.booleans(),
    "resume": st.booleans(),
}


@st.composite
def cli_documents(draw) -> str:
    """Config files for ``convert --dry-run``: each option valid or of any type. Sources
    and output come from safe values (a real file, a missing one, relative names that
    resolve under the config's directory) and transforms from a harmless list, so that
    a dry run reads only test files."""
    if draw(st.integers(0, 3)):
        document = {"sources": ["rows.h5"], "output": "out"}
    else:
        document = draw(
            st.fixed_dictionaries(
                {},
                optional={
                    "sources": st.sampled_from([["rows.h5"], "rows.h5", ["missing.h5"], [], 5]),
                    "output": st.sampled_from(["out", "", None, 7, ["out"]]),
                    "transform": st.sampled_from(["json:dumps", "nomodule:fn", "nocolon", 3]),
                },
            )
        )
    for key in draw(st.lists(st.sampled_from(sorted(VALID_VALUES)), unique=True, max_size=4)):
        document[key] = draw(VALID_VALUES[key] if draw(st.integers(0, 3)) else YAML_VALUES)
    return yaml.safe_dump(document, allow_unicode=True)


@pytest.fixture(scope="module")
def config_dir(tmp_path_factory):
    directory = tmp_path_factory.mktemp("cli")
    with h5py.File(directory / "rows.h5", "w") as h5:
        h5["x"] = np.arange(N * 3, dtype="<f4").reshape(N, 3)
        h5["y"] = np.arange(N, dtype="<i8")
    return directory


@settings(FUZZ, max_examples=40)
@given(document=cli_documents())
def test_convert_dry_run_with_a_fuzzed_config_exits_cleanly(config_dir, document):
    path = config_dir / "config.yaml"
    path.write_text(document, encoding="utf-8")
    before = sorted(os.listdir(config_dir))
    result = CliRunner().invoke(main, ["convert", "--config", str(path), "--dry-run"])
    assert result.exit_code in (0, 1, 2), (result.exit_code, result.output)
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    event(f"exit {result.exit_code}")
    assert "Traceback" not in result.output
    if result.exit_code:
        lines = result.output.splitlines()
        assert len(lines) == 1 and lines[0].startswith("Error: "), result.output
    else:
        assert result.output.startswith("plan for "), result.output
    assert sorted(os.listdir(config_dir)) == before  # a dry run writes nothing


def test_convert_dry_run_with_a_float_shard_size_is_a_usage_error(config_dir):
    path = config_dir / "float.yaml"
    path.write_text("sources: [rows.h5]\noutput: out\nshard_size: 1.5\n")
    result = CliRunner().invoke(main, ["convert", "--config", str(path), "--dry-run"])
    assert result.exit_code == 2, result.output
    assert result.output.startswith("Error: --shard-size")


# --- the config a manifest records rebuilds the same config (verify --deep relies on it) ---

NAMES = st.from_regex(r"[a-z][a-z0-9_]{0,6}", fullmatch=True)


@st.composite
def valid_options(draw) -> dict:
    options = {
        "sources": draw(st.lists(st.sampled_from(["a.h5", "d/b.h5", "c*.h5"]), min_size=1)),
        "output": draw(st.sampled_from(["out", "/tmp/x/out", "gs://bucket/out"])),
        "shuffle": draw(st.booleans()),
        "seed": draw(st.integers(0, 2**64)),
        "compression": draw(st.sampled_from(["none", "gzip"])),
        "mode": draw(st.sampled_from(["copy", "index", "auto"])),
        "workers": draw(st.integers(1, 64)),
    }
    names = draw(st.lists(NAMES, unique=True, max_size=3))
    if draw(st.booleans()):
        options["groups"] = "/s/*"
        options["features"] = {n: draw(st.sampled_from(["points", "/p", "a/b"])) for n in names}
    else:
        options["features"] = {n: "/" + n for n in names}
        options["rows"] = draw(st.sampled_from([None, "0:10", "::-2", "1,3,5", "@/idx"]))
    splits = draw(st.lists(NAMES, unique=True, min_size=1, max_size=3))
    weights = draw(st.lists(st.integers(1, 10), min_size=len(splits), max_size=len(splits)))
    options["splits"] = {s: w / sum(weights) for s, w in zip(splits, weights)}
    size = draw(st.sampled_from(["num_shards", "shard_size", None]))
    if size:
        options[size] = draw(st.integers(1, 2**40))
    for key in ("rows_per_record", "name"):
        if draw(st.booleans()):
            options[key] = draw(st.integers(1, 10_000) if key == "rows_per_record" else NAMES)
    return options


@settings(FUZZ, max_examples=100)
@given(options=valid_options())
def test_a_configs_json_rebuilds_the_same_config(options):
    config = build_config(options)
    recorded = json.loads(json.dumps(config.to_json()))  # as the manifest stores it
    rebuilt = build_config(recorded)
    assert rebuilt == dataclasses.replace(config, name=config.dataset_name)
    assert rebuilt.to_json() == config.to_json()
