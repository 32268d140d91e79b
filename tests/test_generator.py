"""convert --generator MODULE:FACTORY: the user's own generator, written in parallel.

Shard g of K holds the first n_g examples of FACTORY(g, K); values are compared with
what the factory yields when called again here.
"""

import hashlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hdf5_to_records.cli import main
from hdf5_to_records.converter import convert
from hdf5_to_records.errors import GeneratorError, UsageError
from hdf5_to_records.format.naming import TEMP_SUFFIX
from hdf5_to_records.planning.config import build_config
from hdf5_to_records.planning.sharding import shard_bounds

from records import load_manifest, read_split

GENERATORS = textwrap.dedent("""
    import os
    import time
    import numpy as np


    class SceneGenerator:
        '''The seed pattern: a class whose generate_data() yields (X, y) forever.'''

        def __init__(self, seed):
            self.rng = np.random.default_rng(seed)

        def generate_data(self):
            while True:
                n = int(self.rng.integers(3, 9))
                points = self.rng.normal(size=(n, 3)).astype(np.float32)
                yield points, int(self.rng.integers(0, 5))


    def scenes(shard_index, num_shards):
        return SceneGenerator(seed=[7, shard_index]).generate_data()


    def records(shard_index, num_shards):
        for i in range(10**9):
            yield {
                "image": np.full((2, 2), shard_index * 1000 + i, np.uint16),
                "label": np.int64(i % 3),
                "name": f"scene-{shard_index}-{i}",
                "weight": 0.5 * i,
                "valid": i % 2 == 0,
                "shards": num_shards,
            }


    def triples(shard_index, num_shards):
        return ((np.arange(3) + i, np.float32(i), b"t%d" % i) for i in range(50))


    def finite(shard_index, num_shards):
        return [{"v": np.arange(shard_index + 1)} for _ in range(3 + shard_index)]


    def counted(shard_index, num_shards):
        # Beside this module: workers fork from a forkserver started with an older
        # environment, but with this process's working directory and sys.path.
        with open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "calls.txt"),
                  "a") as log:
            log.write(f"{shard_index}\\n")
        return records(shard_index, num_shards)


    def unseeded(shard_index, num_shards):
        return SceneGenerator(seed=None).generate_data()


    def slow(shard_index, num_shards):
        mark = f"{shard_index}-{os.getpid()}"
        open(os.path.join(os.environ["H2R_MARKS"], mark), "w").close()
        for i in range(10**9):
            time.sleep(0.01)
            yield {"v": np.arange(1000, dtype=np.float64) + i}


    def raises(shard_index, num_shards):
        for i in range(100):
            if shard_index == 1 and i == 7:
                raise ValueError("bad scene")
            yield np.zeros(3, np.float32), i


    def factory_raises(shard_index, num_shards):
        raise OSError("no such file: scenes.h5")


    def not_iterable(shard_index, num_shards):
        return 5


    def not_an_example(shard_index, num_shards):
        return iter([{"a": 1}, {"a": 2}, None])


    def other_keys(shard_index, num_shards):
        return iter([{"a": 1}] * 4 + [{"b": 1}])


    def other_dtype(shard_index, num_shards):
        return iter([{"a": np.zeros(2)}] * 4 + [{"a": np.zeros(2, np.int32)}])


    def other_rank(shard_index, num_shards):
        return iter([{"a": np.zeros(2)}] * 4 + [{"a": np.zeros((2, 1))}])


    def objects(shard_index, num_shards):
        return iter([{"a": None}])


    def uneven(shard_index, num_shards):
        return iter([{"a": [np.zeros(2), np.zeros(3)]}])


    def nothing(shard_index, num_shards):
        return iter(())
""")


@pytest.fixture
def gens(tmp_path, monkeypatch):
    (tmp_path / "my_generators.py").write_text(GENERATORS)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.chdir(tmp_path)
    monkeypatch.delitem(sys.modules, "my_generators", raising=False)
    import my_generators

    return my_generators


def run(tmp_path, generator, out="out", **options):
    options = {"workers": 1, "num_shards": 2, **options}
    return convert(build_config({"generator": generator, "output": str(tmp_path / out), **options}))


def expected_shards(factory, counts, total):
    """What shard g must hold: the first counts[g] examples of factory(g, total)."""
    shards = []
    for g, n in enumerate(counts):
        items = iter(factory(g, total))
        shards.append([next(items) for _ in range(n)])
    return shards


def split_examples(directory, split="train"):
    """A split's examples as one list per shard, each example as a dict of arrays."""
    manifest = load_manifest(directory)
    values = read_split(directory, split)
    out, start = [], 0
    for shard in manifest["splits"][split]["shards"]:
        n = shard["num_examples"]
        out.append([{k: v[i] for k, v in values.items()} for i in range(start, start + n)])
        start += n
    return out


@pytest.mark.parametrize("workers", [1, 2])
def test_pairs_are_x_y_and_shard_g_holds_the_first_examples_of_factory_g(gens, tmp_path, workers):
    run(tmp_path, "my_generators:scenes", num_examples=101, num_shards=4, workers=workers)
    counts = [b - a for a, b in shard_bounds(101, 4)]
    got = split_examples(str(tmp_path / "out"))
    assert [len(s) for s in got] == counts == [25, 25, 26, 25]
    for shard, want in zip(got, expected_shards(gens.scenes, counts, 4)):
        for example, (x, y) in zip(shard, want):
            np.testing.assert_array_equal(example["x"], x)
            assert example["y"] == y
    features = {f["name"]: f for f in load_manifest(str(tmp_path / "out"))["features"]}
    assert features["x"]["shape"] == [None, 3] and features["x"]["dtype"] == "float32"
    assert features["y"]["shape"] == [] and features["y"]["dtype"] == "int64"
    assert features["x"]["source"] == "generator:my_generators:scenes"


def test_dicts_keep_their_keys_and_scalars_become_0d(gens, tmp_path):
    run(tmp_path, "my_generators:records", num_examples=10)
    manifest = load_manifest(str(tmp_path / "out"))
    features = {f["name"]: f for f in manifest["features"]}
    assert list(features) == ["image", "label", "name", "weight", "valid", "shards"]
    assert {n: (f["dtype"], f["shape"]) for n, f in features.items()} == {
        "image": ("uint16", [2, 2]),
        "label": ("int64", []),
        "name": ("string", []),
        "weight": ("float64", []),
        "valid": ("bool", []),
        "shards": ("int64", []),
    }
    got = split_examples(str(tmp_path / "out"))
    for shard, want in zip(got, expected_shards(gens.records, [5, 5], 2)):
        for example, expected in zip(shard, want):
            np.testing.assert_array_equal(example["image"], expected["image"])
            assert example["name"] == expected["name"].encode()
            assert example["weight"] == expected["weight"]
            assert bool(example["valid"]) == expected["valid"]
            assert example["shards"] == 2


def test_names_name_a_tuples_items(gens, tmp_path):
    run(tmp_path, "my_generators:triples", num_examples=6, names=("ids", "score", "tag"))
    values = read_split(str(tmp_path / "out"))
    assert sorted(values) == ["ids", "score", "tag"]
    assert [int(v[0]) for v in values["ids"]] == [0, 1, 2, 0, 1, 2]
    assert [v.item() for v in values["tag"]] == [b"t0", b"t1", b"t2"] * 2


def test_finite_iterables_without_num_examples_write_all_they_yield(gens, tmp_path):
    run(tmp_path, "my_generators:finite", num_shards=3)
    shards = load_manifest(str(tmp_path / "out"))["splits"]["train"]["shards"]
    assert [s["num_examples"] for s in shards] == [3, 4, 5]
    got = split_examples(str(tmp_path / "out"))
    assert [[e["v"].tolist() for e in s] for s in got] == [
        [list(range(g + 1))] * (3 + g) for g in range(3)
    ]


def test_an_iterable_that_ends_early_fills_its_shard_with_what_it_yielded(gens, tmp_path):
    run(tmp_path, "my_generators:finite", num_examples=12, num_shards=3)
    manifest = load_manifest(str(tmp_path / "out"))
    assert [s["num_examples"] for s in manifest["splits"]["train"]["shards"]] == [3, 4, 4]
    assert manifest["splits"]["train"]["num_examples"] == 11


def test_splits_number_their_shards_one_after_another(gens, tmp_path):
    run(tmp_path, "my_generators:records", num_examples=20, splits=["train=0.8", "test=0.2"])
    train, test = (split_examples(str(tmp_path / "out"), s) for s in ("train", "test"))
    assert [len(s) for s in train] == [8, 8] and [len(s) for s in test] == [2, 2]
    # Four shards in all: train's are factory(0, 4) and (1, 4), test's (2, 4) and (3, 4).
    firsts = [int(s[0]["image"][0, 0]) // 1000 for s in train + test]
    assert firsts == [0, 1, 2, 3]
    assert {int(e["shards"]) for s in train + test for e in s} == {4}


def test_reruns_are_byte_identical_and_resume_redoes_only_missing_shards(gens, tmp_path):
    calls = tmp_path / "calls.txt"
    options = {"num_examples": 40, "num_shards": 4, "workers": 2, "name": "ds"}
    run(tmp_path, "my_generators:counted", out="a", **options)
    run(tmp_path, "my_generators:counted", out="b", **options)

    def digests(name):
        return {
            f: hashlib.sha256((tmp_path / name / f).read_bytes()).hexdigest()
            for f in sorted(os.listdir(tmp_path / name))
            if f != "manifest.json"
        }

    assert digests("a") == digests("b") and len(digests("a")) == 8
    shard = load_manifest(str(tmp_path / "a"))["splits"]["train"]["shards"][2]["file"]
    os.remove(tmp_path / "a" / shard)
    calls.write_text("")
    result = run(tmp_path, "my_generators:counted", out="a", resume=True, **options)
    assert result.skipped_shards == 3
    # The plan probes shard 0 for the schema; shard 2 alone is written again.
    assert sorted(calls.read_text().split()) == ["0", "2"]
    assert digests("a") == digests("b")

    # An edited module changes the plan: every shard is written again.
    source = tmp_path / "my_generators.py"
    source.write_text(source.read_text() + "\n# edited\n")
    calls.write_text("")
    result = run(tmp_path, "my_generators:counted", out="a", resume=True, **options)
    assert result.skipped_shards == 0
    assert sorted(calls.read_text().split()) == ["0", "0", "1", "2", "3"]


ERRORS = [
    ("raises", GeneratorError, r"--generator my_generators:raises failed on example 7 of "
     r"shard 1 \(out-train.tfrecord-00001-of-00002\): ValueError: bad scene"),
    ("factory_raises", GeneratorError, r"--generator my_generators:factory_raises: "
     r"factory_raises\(0, 2\) for shard 0 raised OSError: no such file: scenes.h5"),
    ("not_iterable", GeneratorError, r"not_iterable\(0, 2\) for shard 0 returned int, not "
     "an iterable"),
    # Every shard fails these: with 2 workers, either may be reported.
    ("not_an_example", GeneratorError, r"yielded NoneType for example 2 of shard (\d) "
     r"\(out-train.tfrecord-0000\1-of-00002\); expected an example"),
    ("other_keys", GeneratorError, r"returned keys \['b'\] for example 4 of shard \d .*"
     r"but \['a'\] for the first example"),
    ("other_dtype", GeneratorError, r"output 'a' has dtype int32 for example 4 of shard 0"),
    ("other_rank", GeneratorError, r"output 'a' has 2 dimensions for example 4 of shard 0"),
    ("objects", GeneratorError, r"yielded 'a' for the first example of shard 0 as "
     "NoneType, which holds Python objects"),
    ("uneven", GeneratorError, r"yielded 'a' for the first example of shard 0, which is "
     "not an array"),
    ("triples", GeneratorError, r"yielded a tuple of 3 items for the first example of shard "
     "0, with no --names; give --names with 3 names"),
    ("nothing", GeneratorError, r"shard 0 yielded no example"),
    ("nope", UsageError, r"--generator my_generators:nope: module 'my_generators' has no "
     "function 'nope'"),
]  # fmt: skip


IN_WORKERS = ("raises", "not_an_example", "other_keys")  # the rest fail the parent's probe
CASES = [(1, *e) for e in ERRORS] + [(2, *e) for e in ERRORS if e[0] in IN_WORKERS]


@pytest.mark.parametrize(
    "workers, name, error, match", CASES, ids=[f"{c[1]}-{c[0]}" for c in CASES]
)
def test_errors_name_the_factory_shard_and_example(gens, tmp_path, workers, name, error, match):
    with pytest.raises(error, match=match):
        run(tmp_path, f"my_generators:{name}", num_examples=20, workers=workers)
    out = tmp_path / "out"
    assert not (out / "manifest.json").exists()
    assert not [n for n in (os.listdir(out) if out.exists() else []) if n.endswith(TEMP_SUFFIX)]


def test_cli_errors_are_one_line(gens, tmp_path):
    runner = CliRunner()
    cases = [
        (["--generator", "my_generators:raises", "--num-examples", "20", "--workers", "2",
          "--num-shards", "2"], 1, "failed on example 7 of shard 1"),
        (["--generator", "no_such_module:f"], 2, "cannot import module 'no_such_module'"),
        (["--generator", "my_generators:scenes", "x.h5"], 2, "SOURCES cannot be used"),
        (["--generator", "my_generators:scenes", "--transform", "m:f"], 2,
         "--transform cannot be used with it; do the preprocessing in the factory"),
        (["--generator", "my_generators:scenes", "--shuffle"], 2, "reader.load"),
        (["--generator", "my_generators:scenes", "--mode", "index"], 2, "--mode index"),
        (["--generator", "my_generators:scenes", "--split", "a=0.5", "--split", "b=0.5"], 2,
         "several --split need --num-examples"),
        (["--generator", "scenes"], 2, "expected MODULE:FACTORY"),
        (["x.h5", "--num-examples", "5"], 2, "--num-examples needs --generator"),
        (["--generator", "my_generators:triples", "--names", "a,a,b"], 2,
         "--names must be unique"),
    ]  # fmt: skip
    for args, code, message in cases:
        result = runner.invoke(main, ["convert", *args, "-o", str(tmp_path / "cli")])
        assert result.exit_code == code, (args, result.output)
        lines = result.output.strip().splitlines()
        assert len(lines) == 1 and message in lines[0], (args, result.output)


def test_yaml_key_and_info(gens, tmp_path):
    (tmp_path / "gen.yaml").write_text(
        "generator: my_generators:triples\nnames: [ids, score, tag]\nnum_examples: 8\n"
        "output: yaml_out\nnum_shards: 2\nworkers: 1\n"
    )
    runner = CliRunner()
    result = runner.invoke(main, ["convert", "--config", str(tmp_path / "gen.yaml")])
    assert result.exit_code == 0, result.output
    assert load_manifest(str(tmp_path / "yaml_out"))["splits"]["train"]["num_examples"] == 8
    info = runner.invoke(main, ["info", str(tmp_path / "yaml_out")])
    assert "examples of --generator my_generators:triples" in info.output
    plan = runner.invoke(main, ["convert", "--config", str(tmp_path / "gen.yaml"), "--dry-run"])
    assert "split train: 8 examples, 2 shard(s)" in plan.output, plan.output


def test_verify_deep_runs_the_factory_again(gens, tmp_path):
    run(tmp_path, "my_generators:scenes", num_examples=30)
    run(tmp_path, "my_generators:unseeded", out="random", num_examples=30)
    runner = CliRunner()
    ok = runner.invoke(main, ["verify", "--deep", str(tmp_path / "out")])
    assert ok.exit_code == 0 and "compared with a new run of --generator" in ok.output
    bad = runner.invoke(main, ["verify", "--deep", str(tmp_path / "random")])
    assert bad.exit_code == 1 and "values differ" in bad.output
    assert runner.invoke(main, ["verify", str(tmp_path / "random")]).exit_code == 0


def test_task_array_finalize_equals_a_local_run(gens, tmp_path):
    args = ["--generator", "my_generators:scenes", "--num-examples", "30", "--num-shards", "3",
            "--name", "ds"]  # fmt: skip
    runner = CliRunner()
    for task in range(2):
        result = runner.invoke(
            main, ["convert", *args, "-o", "tasks", "--num-tasks", "2", "--task-index", str(task)]
        )
        assert result.exit_code == 0, result.output
    assert runner.invoke(main, ["finalize", "tasks"]).exit_code == 0
    assert runner.invoke(main, ["convert", *args, "-o", "local", "--workers", "1"]).exit_code == 0
    local, tasks = (load_manifest(str(tmp_path / d)) for d in ("local", "tasks"))
    assert local["splits"] == tasks["splits"]


def test_keras_fits_on_what_a_generator_wrote(gens, tmp_path):
    import tensorflow as tf

    import reader

    run(tmp_path, "my_generators:records", num_examples=64)
    ds = reader.load(str(tmp_path / "out"), batch_size=16, supervised=("image", "label"))
    model = tf.keras.Sequential(
        [tf.keras.Input((2, 2)), tf.keras.layers.Flatten(), tf.keras.layers.Dense(3)]
    )
    model.compile("sgd", tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    scaled = ds.map(lambda x, y: (tf.cast(x, tf.float32) / 1e4, y))
    history = model.fit(scaled, verbose=0, shuffle=False)
    assert len(history.history["loss"]) == 1


def test_ctrl_c_stops_the_workers_and_leaves_no_manifest(gens, tmp_path):
    marks = tmp_path / "marks"
    marks.mkdir()
    env = {**os.environ, "H2R_MARKS": str(marks), "PYTHONPATH": str(tmp_path)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "hdf5_to_records", "convert", "--generator",
         "my_generators:slow", "--num-examples", "100000", "--num-shards", "4",
         "--workers", "2", "-o", str(tmp_path / "out")],
        cwd=tmp_path, env=env, stderr=subprocess.PIPE, text=True, start_new_session=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )  # fmt: skip
    deadline = time.monotonic() + 60
    # Shard 0 is probed for the schema in the parent; wait for both workers' shards.
    while len(os.listdir(marks)) < 3 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert proc.poll() is None, proc.stderr.read()
    os.killpg(proc.pid, signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert err.strip().splitlines() == ["Error: interrupted; rerun with --resume to continue"]
    names = os.listdir(tmp_path / "out")
    assert "manifest.json" not in names and not [n for n in names if n.endswith(TEMP_SUFFIX)]
    state = json.loads((tmp_path / "out" / ".hdf5-to-records-state.json").read_text())
    assert state["done"] == {}


def test_beam_writes_the_same_shards_as_a_local_run(gens, tmp_path):
    pytest.importorskip("apache_beam")
    from hdf5_to_records.scale_out.beam_runner import convert_on_beam

    options = {"generator": "my_generators:scenes", "num_examples": 30, "num_shards": 3,
               "name": "ds", "workers": 1}  # fmt: skip
    convert(build_config({**options, "output": str(tmp_path / "local")}))
    convert_on_beam(build_config({**options, "output": str(tmp_path / "beam")}), beam_options=())
    for name in sorted(os.listdir(tmp_path / "local")):
        if name != "manifest.json":
            want = (tmp_path / "local" / name).read_bytes()
            assert (tmp_path / "beam" / name).read_bytes() == want, name
    local, beam = (load_manifest(str(tmp_path / d)) for d in ("local", "beam"))
    assert local["splits"] == beam["splits"]


PROPERTY_GENERATORS = """
DATA = []  # per shard: the examples to yield, set by the test (workers=1: in-process)


def shards(shard_index, num_shards):
    return iter(DATA[shard_index])
"""
DTYPES = ["<f4", ">f8", "<i2", ">u4", "|u1", "|b1", "<i8"]


@st.composite
def generator_cases(draw):
    dtype = np.dtype(draw(st.sampled_from(DTYPES)))
    rank = draw(st.integers(0, 2))
    num_shards = draw(st.integers(1, 3))
    data = []
    for _ in range(num_shards):
        examples = []
        for _ in range(draw(st.integers(1, 6))):
            shape = tuple(draw(st.integers(0, 3)) for _ in range(rank))
            values = draw(st.lists(st.integers(0, 100), min_size=int(np.prod(shape)),
                                   max_size=int(np.prod(shape))))  # fmt: skip
            examples.append({"v": np.array(values).astype(dtype).reshape(shape),
                             "k": np.int64(len(examples))})  # fmt: skip
        data.append(examples)
    wanted = draw(st.none() | st.integers(num_shards, 3 * num_shards))
    return data, wanted


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=generator_cases())
def test_any_small_examples_round_trip(tmp_path_factory, case):
    data, wanted = case
    directory = tmp_path_factory.mktemp("generated")
    (directory / "prop_generators.py").write_text(PROPERTY_GENERATORS)
    sys.path.insert(0, str(directory))
    sys.modules.pop("prop_generators", None)
    try:
        import prop_generators

        prop_generators.DATA = data
        convert(build_config({"generator": "prop_generators:shards", "workers": 1,
                              "num_shards": len(data), "num_examples": wanted,
                              "output": str(directory / "out")}))  # fmt: skip
    finally:
        sys.path.remove(str(directory))
        sys.modules.pop("prop_generators", None)
    counts = [len(s) for s in data]
    if wanted is not None:
        counts = [min(n, b - a) for n, (a, b) in zip(counts, shard_bounds(wanted, len(data)))]
    got = split_examples(str(directory / "out"))
    assert [len(s) for s in got] == counts
    for shard, want in zip(got, data):
        for example, expected in zip(shard, want):
            stored = expected["v"].astype(expected["v"].dtype.newbyteorder("<"))
            if stored.dtype == bool:
                stored = stored.astype(np.uint8)
            assert example["v"].shape == stored.shape
            np.testing.assert_array_equal(example["v"], stored)
            assert example["k"] == expected["k"]
