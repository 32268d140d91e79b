import pytest

from hdf5_to_records.errors import UsageError
from hdf5_to_records.planning.config import (
    ConvertConfig,
    FeatureSpec,
    SplitSpec,
    build_config,
    parse_feature,
    parse_split,
)


def test_parse_feature_and_split():
    assert parse_feature("points=/scenes/data") == FeatureSpec("points", "/scenes/data")
    assert parse_split("train=0.8") == SplitSpec("train", 0.8)


@pytest.mark.parametrize(
    "text, match",
    [
        ("points", "expected NAME=/path"),
        ("1x=/a", "feature names"),
        ("x/shape=/a", "feature names"),
        ("__rows__=/a", "feature names"),
        ("x=", "empty"),
    ],
)
def test_parse_feature_errors(text, match):
    with pytest.raises(UsageError, match=match):
        parse_feature(text)


@pytest.mark.parametrize(
    "text, match",
    [
        ("train", "expected NAME=FRACTION"),
        ("train=abc", "expected NAME=FRACTION"),
        ("train=0", r"fraction must be in \(0, 1\]"),
        ("train=1.5", "fraction"),
        ("a.b=0.5", "split name"),
    ],
)
def test_parse_split_errors(text, match):
    with pytest.raises(UsageError, match=match):
        parse_split(text)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"sources": ()}, "no SOURCES"),
        ({"output": ""}, "--output is required"),
        ({"num_shards": 2, "shard_size": 10}, "mutually exclusive"),
        ({"num_shards": 0}, "--num-shards must be >= 1"),
        ({"rows_per_record": 0}, "--rows-per-record"),
        ({"workers": 0}, "--workers"),
        ({"compression": "zip"}, "--compression"),
        ({"overwrite": True, "resume": True}, "mutually exclusive"),
        ({"splits": (SplitSpec("a", 0.7), SplitSpec("b", 0.7))}, "sum to at most 1"),
        ({"splits": (SplitSpec("a", 0.5), SplitSpec("a", 0.5))}, "unique"),
        ({"features": (FeatureSpec("x", "/a"), FeatureSpec("x", "/b"))}, "more than once"),
        ({"features": (FeatureSpec("x", "a"),)}, "must be absolute"),
        ({"groups": "scenes/*"}, "must start with '/'"),
        ({"transform": "module_only"}, "module:function"),
    ],
)
def test_invalid_configs_cannot_exist(kwargs, match):
    base = {"sources": ("a.h5",), "output": "out"}
    with pytest.raises(UsageError, match=match):
        ConvertConfig(**{**base, **kwargs})


def test_dataset_name_defaults_to_output_dir():
    assert ConvertConfig(("a.h5",), "/tmp/my-records/").dataset_name == "my_records"
    assert ConvertConfig(("a.h5",), "/tmp/x", name="scenes").dataset_name == "scenes"


def test_yaml_config_with_flags_overriding(tmp_path):
    config_file = tmp_path / "conf.yaml"
    config_file.write_text(
        "sources: [data/a.h5]\noutput: out\nfeatures: {points: /data}\n"
        "split: {train: 0.9, test: 0.1}\nshuffle: true\nseed: 3\nshard-size: 64MB\n"
        "rows: '@idx.npy'\nworkers: 2\n"
    )
    config = build_config({"seed": 7, "output": "/elsewhere"}, yaml_path=str(config_file))
    assert config.sources == (str(tmp_path / "data" / "a.h5"),)  # relative to the YAML file
    assert config.output == "/elsewhere"  # the flag wins
    assert config.seed == 7
    assert config.features == (FeatureSpec("points", "/data"),)
    assert config.splits == (SplitSpec("train", 0.9), SplitSpec("test", 0.1))
    assert config.shuffle is True
    assert config.shard_size == 64 * 10**6
    assert config.rows == "@" + str(tmp_path / "idx.npy")
    assert config.workers == 2


@pytest.mark.parametrize(
    "text, match",
    [
        ("bogus_key: 1\n", "unknown config key 'bogus_key'"),
        ("- a\n- b\n", "expected a mapping"),
        ("shuffle: maybe\n", "expected true or false"),
        ("seed: x\n", "--seed"),
        ("a: [unclosed\n", "not valid YAML"),
        ("shard_size: big\n", "--shard-size"),
    ],
)
def test_bad_yaml(tmp_path, text, match):
    config_file = tmp_path / "conf.yaml"
    config_file.write_text(text)
    with pytest.raises(UsageError, match=match):
        build_config({"sources": ["a.h5"], "output": "o"}, yaml_path=str(config_file))


def test_missing_yaml(tmp_path):
    with pytest.raises(UsageError, match="file not found"):
        build_config({}, yaml_path=str(tmp_path / "nope.yaml"))


def test_to_json_records_effective_values():
    config = ConvertConfig(("a.h5",), "out", features=(FeatureSpec("x", "/x"),), seed=5)
    data = config.to_json()
    assert data["features"] == {"x": "/x"} and data["seed"] == 5 and data["name"] == "out"


def test_yaml_aliases_merge_with_flags(tmp_path):
    config_file = tmp_path / "conf.yaml"
    config_file.write_text(
        "source: a.h5\noutput: o\nfeature: {x: /x}\nsplits: {train: 0.5, test: 0.5}\n"
    )
    config = build_config({"feature": ("y=/y",), "split": ("all=1.0",)}, yaml_path=str(config_file))
    assert config.sources == (str(tmp_path / "a.h5"),)
    assert config.features == (FeatureSpec("y", "/y"),)
    assert config.splits == (SplitSpec("all", 1.0),)
    flags = build_config({"sources": ("b.h5",)}, yaml_path=str(config_file))
    assert flags.sources == ("b.h5",)


@pytest.mark.parametrize(
    "text, match",
    [
        ("seed: 1.9\n", "--seed: expected an integer, got 1.9"),
        ("workers: true\n", "--workers: expected an integer"),
        ("seed: -1\n", "--seed must be >= 0"),
    ],
)
def test_integer_keys_are_checked(tmp_path, text, match):
    config_file = tmp_path / "conf.yaml"
    config_file.write_text(text)
    with pytest.raises(UsageError, match=match):
        build_config({"sources": ["a.h5"], "output": "o"}, yaml_path=str(config_file))
