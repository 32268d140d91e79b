"""Round trips: convert tiny HDF5 files, decode the shards with TensorFlow, and compare
every value with what h5py reads from the source.

Covers dtypes (all integer and float widths, complex, bool, enums, fixed and
variable-length strings, big-endian variants), row shapes (1-D datasets, 1-D and N-D
rows), storage layouts and filters, links, selections, multiple sources, groups,
splits, shuffling, record sizes and gzip output.
"""

from __future__ import annotations

import collections
import gzip
import hashlib
import os
import struct

import h5py
import numpy as np
import pytest

from hdf5_to_records.planning.limits import Limits

from records import load_manifest, read_split, tf

N = 7  # rows per test dataset: more than two 3-row chunks, the last one partial
NUMERIC = ("i1", "i2", "i4", "i8", "u1", "u2", "u4", "u8", "f2", "f4", "f8", "c8", "c16")
ROW_SHAPES = {"scalar": (), "vector": (3,), "tensor": (2, 3)}
BUILTIN_LAYOUTS = ("contiguous", "compact", "chunked", "gzip", "shuffle", "lzf", "fletcher32")
PLUGIN_LAYOUTS = ("lz4", "blosc", "bitshuffle", "zstd")  # skipped without hdf5plugin


def numeric_values(code: str, shape: tuple[int, ...], seed: int) -> np.ndarray:
    """``N`` rows of ``shape`` that include the dtype's extremes and special values."""
    rng = np.random.default_rng(seed)
    dtype = np.dtype(code)
    size = (N, *shape)
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        values = rng.integers(info.min, info.max, size=size, dtype=dtype, endpoint=True)
        specials = np.array([info.min, info.max, 0, 1], dtype)
    elif dtype.kind == "f":
        info = np.finfo(dtype)
        values = (rng.standard_normal(size) * 100).astype(dtype)
        specials = np.array(
            [np.nan, -np.inf, np.inf, -0.0, info.smallest_subnormal, info.max, info.min], dtype
        )
    else:
        values = (rng.standard_normal(size) + 1j * rng.standard_normal(size) * 1e3).astype(dtype)
        specials = np.array([complex(np.nan, 1), complex(-0.0, np.inf), 1e30 - 2j], dtype)
    flat = values.reshape(-1)
    k = min(flat.size, specials.size)
    flat[:k] = specials[:k]
    return values


def numeric_datasets() -> dict[str, np.ndarray]:
    """Every numeric dtype, in both byte orders, with every row shape."""
    datasets = {}
    for seed, code in enumerate(NUMERIC):
        for order, prefix in (("le", "<"), ("be", ">")):
            for shape_name, shape in ROW_SHAPES.items():
                values = numeric_values(code, shape, seed)
                datasets[f"{code}_{order}_{shape_name}"] = values.astype(
                    values.dtype.newbyteorder(prefix)
                )
    return datasets


def source_rows(path, dataset: str, rows=None) -> list:
    """What h5py reads for ``dataset``, one entry per selected row."""
    with h5py.File(path, "r") as h5:
        values = h5[dataset][()]
    if rows is None:
        rows = range(len(values))
    return [values[i] for i in rows]


@pytest.mark.parametrize("layout", BUILTIN_LAYOUTS + PLUGIN_LAYOUTS)
def test_numeric_dtypes_and_row_shapes_in_every_layout(
    tmp_path, write_h5, convert_h5, check_examples, stored, layout
):
    datasets = numeric_datasets()
    path = write_h5(tmp_path / "numeric.h5", datasets, layout)
    out = convert_h5(path, features={name: "/" + name for name in datasets})
    got = read_split(out)
    features = {f["name"]: f for f in load_manifest(out)["features"]}
    for name, values in datasets.items():
        expected = source_rows(path, name)
        check_examples([stored(v) for v in values], expected, what=f"h5py read of {name}")
        check_examples(got[name], expected, what=f"{layout} {name}")
        assert features[name]["dtype"] == values.dtype.newbyteorder("=").name
        assert features[name]["shape"] == list(values.shape[1:])
        assert features[name]["encoding"] == "raw"


def other_datasets() -> dict[str, np.ndarray]:
    """Bool, enums, and fixed and variable-length strings; 1-D and N-D."""
    utf8 = h5py.string_dtype("utf-8")
    words = ["", "x", "héllo", "日本語", "a b ", "tab\t", "long" * 20]
    fixed = np.array([b"", b"a", b"hello", b"a\x00b", b" sp ", b"\xff\xfe", b"12345"], "S5")
    red_green = h5py.enum_dtype({"RED": -1, "GREEN": 1, "BLUE": 42}, basetype="i1")
    big = h5py.enum_dtype({"LOW": 0, "HIGH": 300}, basetype=">i2")
    return {
        "flag": np.array([True, False, True, True, False, False, True]),
        "flags": np.arange(N * 6).reshape(N, 2, 3) % 3 == 0,
        "color": np.array([-1, 1, 42, 42, 1, -1, 1], dtype=red_green),
        "level": np.array([[0, 300]] * 3 + [[300, 300]] * 4, dtype=big),
        "fixed": fixed,
        "fixed_grid": np.array([[b"ab", b""], [b"c", b"xyz"]] * 3 + [[b"q", b"r"]], "S3").reshape(
            N, 2
        ),
        "fixed_utf8": np.array([w.encode()[:12] for w in words], h5py.string_dtype("utf-8", 12)),
        "text": np.array(words, dtype=utf8),
        "ascii": np.array(
            [b"", b"a", b"bc", b"d e", b"f", b"ghij", b"k"], h5py.string_dtype("ascii")
        ),
        "text_pairs": np.array([[w, w[::-1]] for w in words], dtype=utf8),
    }


# HDF5 refuses fletcher32 on variable-length data ("not suitable for filters").
@pytest.mark.parametrize("layout", [x for x in BUILTIN_LAYOUTS if x != "fletcher32"])
def test_bool_enum_and_string_dtypes(tmp_path, write_h5, convert_h5, check_examples, layout):
    datasets = other_datasets()
    path = write_h5(tmp_path / "other.h5", datasets, layout)
    out = convert_h5(path, features={name: "/" + name for name in datasets}, rows_per_record=3)
    got = read_split(out)
    features = {f["name"]: f for f in load_manifest(out)["features"]}
    for name in datasets:
        check_examples(got[name], source_rows(path, name), what=f"{layout} {name}")
    assert got["flag"][0].dtype == np.uint8 and got["flag"][0] == 1  # bool as uint8 0/1
    assert got["text"][2].item() == "héllo".encode()
    assert got["fixed"][3].item() == b"a\x00b"
    assert {features[n]["dtype"] for n in ("flag", "flags")} == {"bool"}
    assert features["color"]["dtype"] == "int8" and features["level"]["dtype"] == "int16"
    for name in ("fixed", "fixed_grid", "fixed_utf8", "text", "ascii", "text_pairs"):
        assert (features[name]["dtype"], features[name]["encoding"]) == ("string", "bytes")
    assert features["text_pairs"]["shape"] == [2]


@pytest.mark.parametrize("workers", [1, 2])
def test_soft_and_external_links_to_datasets(
    tmp_path, monkeypatch, write_h5, convert_h5, check_examples, workers
):
    target = write_h5(
        tmp_path / "target.h5",
        {
            "x": np.arange(27, dtype=">i4").reshape(9, 3) * -3,
            "names": np.array([f"n{i}" for i in range(9)], dtype=h5py.string_dtype()),
        },
        "gzip",
    )
    main = tmp_path / "main.h5"
    with h5py.File(main, "w") as h5:
        h5.create_dataset("data/y", data=np.linspace(0, 1, 9, dtype="f8"), chunks=(4,))
        h5["alias"] = h5py.SoftLink("/data/y")
        h5["ext"] = h5py.ExternalLink("target.h5", "/x")  # relative: found next to main.h5
        h5["ext_names"] = h5py.ExternalLink("target.h5", "/names")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    out = convert_h5(
        main,
        features={"soft": "/alias", "ext": "/ext", "names": "/ext_names"},
        rows="::2",
        num_shards=2,
        workers=workers,
    )
    got = read_split(out)
    rows = range(0, 9, 2)
    check_examples(got["soft"], source_rows(main, "/data/y", rows), what="soft link")
    check_examples(got["ext"], source_rows(target, "/x", rows), what="external link")
    check_examples(got["names"], source_rows(target, "/names", rows), what="external link")


SELECTION_ROWS = 23  # rows in the selection test file: 8 chunks of 3, the last partial


@pytest.mark.parametrize(
    "spec, expected",
    [
        ("5:17", list(range(5, 17))),
        ("::4", list(range(0, 23, 4))),
        ("3:20:5", [3, 8, 13, 18]),
        ("::-3", list(range(22, -1, -3))),
        ("-5:", list(range(18, 23))),
        ("7", [7]),
        ("-1", [22]),
        ("1:3,10,0,22,10", [1, 2, 10, 0, 22, 10]),
        ("9,7,8", [9, 7, 8]),  # a permuted run of rows is not a run
        ("@{dir}/unsorted.npy", [9, 3, 3, 22, 0, 17, 9, 8]),
        ("@{dir}/rows.txt", [20, 2, 2, 11]),
        ("@/index", [4, 1, 1, 19, 0]),
        ("@/mask", [i for i in range(23) if i % 5 in (1, 3)]),
    ],
)
def test_row_selections(tmp_path, write_h5, convert_h5, check_examples, spec, expected):
    rng = np.random.default_rng(3)
    path = tmp_path / "rows.h5"
    write_h5(
        path,
        {
            "x": rng.integers(-1000, 1000, (SELECTION_ROWS, 2, 2)).astype(">i4"),
            "name": np.array([f"row{i}" for i in range(SELECTION_ROWS)], h5py.string_dtype()),
            "flag": rng.random(SELECTION_ROWS) < 0.5,
        },
        "gzip",
    )
    with h5py.File(path, "a") as h5:
        h5["index"] = np.array([4, 1, 1, 19, 0], ">i4")
        h5["mask"] = np.array([i % 5 in (1, 3) for i in range(SELECTION_ROWS)])
    np.save(tmp_path / "unsorted.npy", np.array([9, 3, 3, 22, 0, 17, 9, 8]))
    (tmp_path / "rows.txt").write_text("# rows to keep\n20\n2\n2\n11\n")
    out = convert_h5(
        path,
        features={"x": "/x", "name": "/name", "flag": "/flag"},
        rows=spec.format(dir=tmp_path),
        rows_per_record=2,
    )
    got = read_split(out)
    for name in ("x", "name", "flag"):
        check_examples(got[name], source_rows(path, name, expected), what=f"{spec} {name}")
    assert load_manifest(out)["splits"]["train"]["num_examples"] == len(expected)


def _file_rows(n: int, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "x": rng.standard_normal((n, 2)).astype(">f4"),
        "tag": np.array([f"file{seed}-row{i}".encode() for i in range(n)]),
        "mask": rng.random(n) < 0.5,
    }


@pytest.mark.parametrize(
    "spec, select",
    [
        (None, lambda mask: np.arange(mask.size)),
        ("1:3", lambda mask: np.arange(1, 3)),
        ("@/mask", np.flatnonzero),
    ],
)
def test_multiple_sources_in_sorted_order_with_per_file_selections(
    tmp_path, write_h5, convert_h5, check_examples, spec, select
):
    # Created out of order, with different lengths and layouts; "c10" sorts before "c2".
    lengths = {"c2.h5": 6, "a.h5": 9, "c10.h5": 4, "b.h5": 5}
    for seed, (name, n) in enumerate(lengths.items()):
        write_h5(
            tmp_path / name, _file_rows(n, seed), ("chunked", "gzip", "contiguous", "lzf")[seed]
        )
    out = convert_h5(
        [tmp_path / "c*.h5", tmp_path / "b.h5", tmp_path / "a.h5", tmp_path / "b.h5"],
        features={"x": "/x", "tag": "/tag"},
        rows=spec,
    )
    got = read_split(out)
    expected = {"x": [], "tag": []}
    for name in sorted(lengths):  # a, b, c10, c2
        with h5py.File(tmp_path / name, "r") as h5:
            rows = select(h5["mask"][()])
        for feature in expected:
            expected[feature] += source_rows(tmp_path / name, feature, rows)
    for feature, values in expected.items():
        check_examples(got[feature], values, what=f"{spec} {feature}")
    sources = load_manifest(out)["sources"]
    assert [os.path.basename(s["path"]) for s in sources] == sorted(lengths)


def test_fixed_strings_of_different_lengths_across_files(
    tmp_path, write_h5, convert_h5, check_examples
):
    write_h5(tmp_path / "a.h5", {"s": np.array([b"a", b"bb"], "S2")})
    write_h5(tmp_path / "b.h5", {"s": np.array([b"ccccccc", b"dddddd"], "S7")})
    write_h5(tmp_path / "c.h5", {"s": np.array(["éé", "f"], h5py.string_dtype())})
    out = convert_h5(tmp_path / "*.h5", features={"s": "/s"})
    expected = [b"a", b"bb", b"ccccccc", b"dddddd", "éé".encode(), b"f"]
    check_examples(read_split(out)["s"], expected, what="strings across files")


def _write_scenes(path, seed: int, count: int) -> None:
    rng = np.random.default_rng(seed)
    with h5py.File(path, "w") as h5:
        h5.create_group("meta")["note"] = "not a scene"
        for i in range(count):
            g = h5.create_group(f"scene_{i:02d}")
            k = int(rng.integers(0, 6))
            g.create_dataset("points", data=rng.standard_normal((k, 3)).astype(">f4"))
            labels = rng.integers(0, 255, k, dtype="u1")
            g.create_dataset("labels", data=labels, chunks=(k,) if k else None)
            g["image"] = rng.integers(-5, 5, (2, 2), dtype="<i2")
            g["name"] = f"scene {seed}.{i} é"
            g["flag"] = bool(i % 2)
            g["tags"] = np.array([f"t{j}" for j in range(i % 3)], dtype=h5py.string_dtype())


@pytest.mark.parametrize("workers", [1, 2])
def test_groups_with_variable_length_datasets(tmp_path, convert_h5, check_examples, workers):
    _write_scenes(tmp_path / "a.h5", 0, 5)
    _write_scenes(tmp_path / "b.h5", 1, 4)
    out = convert_h5(
        [tmp_path / "a.h5", tmp_path / "b.h5"],
        groups="/scene_*",
        rows="::-2",
        workers=workers,
        num_shards=2,
        rows_per_record=2,
    )
    got = read_split(out)
    names = ("points", "labels", "image", "name", "flag", "tags")
    expected = {name: [] for name in names}
    for file_name, count in (("a.h5", 5), ("b.h5", 4)):
        with h5py.File(tmp_path / file_name, "r") as h5:
            for i in range(count - 1, -1, -2):
                for name in names:
                    expected[name].append(h5[f"scene_{i:02d}/{name}"][()])
    for name in names:
        check_examples(got[name], expected[name], what=f"group feature {name}")
    manifest = load_manifest(out)
    features = {f["name"]: f for f in manifest["features"]}
    assert features["points"]["shape"] == [None, 3]
    assert features["image"]["shape"] == [2, 2]
    assert features["name"]["shape"] == []
    assert all(f["ragged"] for f in features.values())
    assert manifest["mode"] == "groups"


def _id_file(tmp_path, write_h5, n: int) -> str:
    """A file whose ``id`` dataset holds each row's index, next to values derived from it."""
    ids = np.arange(n, dtype="<i8")
    return write_h5(
        tmp_path / "ids.h5",
        {
            "id": ids,
            "value": (ids[:, None] * np.array([1.5, -2.0])).astype(">f8"),
            "word": np.array([f"w{i}" for i in ids], h5py.string_dtype()),
        },
        "gzip",
    )


def _check_rows_by_id(path, got: dict[str, list], check_examples) -> list[int]:
    ids = [int(v) for v in got["id"]]
    for name in ("value", "word"):
        check_examples(got[name], source_rows(path, name, ids), what=name)
    return ids


@pytest.mark.parametrize("shuffle", [False, True])
def test_splits_partition_the_selection(tmp_path, write_h5, convert_h5, check_examples, shuffle):
    path = _id_file(tmp_path, write_h5, 41)
    selection = list(range(3, 38)) + [5, 5]  # a repeated row stays in one split
    np.save(tmp_path / "sel.npy", np.array(selection))
    splits = {"train": 0.6, "val": 0.25, "test": 0.15}
    out = convert_h5(
        path,
        rows=f"@{tmp_path}/sel.npy",
        splits=splits,
        shuffle=shuffle,
        seed=11,
        num_shards=2,
    )
    manifest = load_manifest(out)
    assert list(manifest["splits"]) == list(splits)
    seen = []
    for split in splits:
        ids = _check_rows_by_id(path, read_split(out, split), check_examples)
        assert manifest["splits"][split]["num_examples"] == len(ids)
        if not shuffle:  # a split keeps the selection's order
            remaining = iter(selection)
            assert all(row in remaining for row in ids), (split, ids)
        seen += ids
    assert collections.Counter(seen) == collections.Counter(selection)
    by_split = {s: _check_rows_by_id(path, read_split(out, s), check_examples) for s in splits}
    assert sum(ids.count(5) == 3 for ids in by_split.values()) == 1  # no leak across splits
    distinct = [len(set(by_split[s])) for s in splits]  # splits are cut by distinct rows
    assert distinct == [round(35 * 0.6), round(35 * 0.85) - round(35 * 0.6), 35 - round(35 * 0.85)]


def _shard_bytes(out: str) -> dict[str, bytes]:
    manifest = load_manifest(out)
    files = [s["file"] for split in manifest["splits"].values() for s in split["shards"]]
    return {name: open(os.path.join(out, name), "rb").read() for name in files}


def test_shuffle_is_a_seeded_permutation(tmp_path, write_h5, convert_h5, check_examples):
    path = _id_file(tmp_path, write_h5, 30)
    options = {"rows": "2:28,4,4", "shuffle": True, "seed": 7, "num_shards": 3, "name": "ds"}
    first = convert_h5(path, **options)
    ids = _check_rows_by_id(path, read_split(first), check_examples)
    selection = list(range(2, 28)) + [4, 4]
    assert collections.Counter(ids) == collections.Counter(selection)
    assert ids != selection
    again = convert_h5(path, **options)
    in_pool = convert_h5(path, **options, workers=2)
    reference = _shard_bytes(first)
    assert len(reference) == 3
    assert _shard_bytes(again) == reference
    assert _shard_bytes(in_pool) == reference
    other_seed = convert_h5(path, **{**options, "seed": 8})
    assert [int(v) for v in read_split(other_seed)["id"]] != ids


@pytest.mark.parametrize("small_windows", [False, True])
@pytest.mark.parametrize("rows_per_record", [1, 4, 1000])
def test_rows_per_record(
    tmp_path, monkeypatch, write_h5, convert_h5, check_examples, rows_per_record, small_windows
):
    # small_windows: several read windows per shard, so records straddle window edges
    limits = Limits(window_bytes=5 * 8 * 3, gap_bytes=8) if small_windows else None
    path = _id_file(tmp_path, write_h5, 26)
    out = convert_h5(
        path, rows="1:25,3,3,0", rows_per_record=rows_per_record, num_shards=2, limits=limits
    )
    ids = _check_rows_by_id(path, read_split(out), check_examples)
    assert ids == list(range(1, 25)) + [3, 3, 0]
    manifest = load_manifest(out)
    assert manifest["records"]["rows_per_record"] == rows_per_record
    for shard in manifest["splits"]["train"]["shards"]:
        records = list(tf.data.TFRecordDataset(os.path.join(out, shard["file"])))
        counts = [
            tf.train.Example.FromString(r.numpy()).features.feature["__rows__"] for r in records
        ]
        counts = [c.int64_list.value[0] for c in counts]
        k = min(rows_per_record, shard["num_examples"])
        assert counts[:-1] == [k] * (len(counts) - 1) and 0 < counts[-1] <= k
        assert sum(counts) == shard["num_examples"] and shard["num_records"] == len(counts)


def test_gzip_output_decompresses_to_the_uncompressed_shards(
    tmp_path, write_h5, convert_h5, check_examples
):
    path = _id_file(tmp_path, write_h5, 20)
    options = {"rows": "::-1", "num_shards": 2, "rows_per_record": 3, "name": "ds"}
    plain = convert_h5(path, **options)
    packed = convert_h5(path, **options, compression="gzip")
    assert load_manifest(packed)["compression"] == "gzip"
    ids = _check_rows_by_id(path, read_split(packed), check_examples)
    assert ids == list(range(19, -1, -1))
    plain_bytes = _shard_bytes(plain)
    for name, data in _shard_bytes(packed).items():
        assert data[:2] == b"\x1f\x8b"
        assert gzip.decompress(data) == plain_bytes[name]


def _framing_sha256(stream: bytes) -> str:
    """The README's definition: sha256 over each record's length, length CRC and data CRC."""
    digest, at = hashlib.sha256(), 0
    while at < len(stream):
        (length,) = struct.unpack("<Q", stream[at : at + 8])
        digest.update(stream[at : at + 12])
        digest.update(stream[at + 12 + length : at + 16 + length])
        at += 16 + length
    return digest.hexdigest()


def test_manifest_describes_the_shards_on_disk(tmp_path, write_h5, convert_h5):
    path = _id_file(tmp_path, write_h5, 12)
    out = convert_h5(path, num_shards=3, compression="gzip", splits={"a": 0.5, "b": 0.5})
    manifest = load_manifest(out)
    total = 0
    for split in manifest["splits"].values():
        for shard in split["shards"]:
            data = open(os.path.join(out, shard["file"]), "rb").read()
            assert shard["num_bytes"] == len(data)
            assert shard["framing_sha256"] == _framing_sha256(gzip.decompress(data))
            total += shard["num_examples"]
    assert total == 12
    assert manifest["records"]["byte_order"] == "little"


def test_default_sharding_keeps_the_example_order_across_worker_counts(
    tmp_path, write_h5, convert_h5
):
    # The default shard count follows --workers (one shard per worker at least), but the
    # examples, read shard after shard, come in the same order whatever the worker count.
    path = _id_file(tmp_path, write_h5, 25)
    options = {"shuffle": True, "seed": 5, "splits": {"train": 0.8, "test": 0.2}}
    one = convert_h5(path, **options)
    two = convert_h5(path, **options, workers=2)
    for split in ("train", "test"):
        first, second = read_split(one, split), read_split(two, split)
        assert [int(v) for v in first["id"]] == [int(v) for v in second["id"]]
        assert [v.item() for v in first["word"]] == [v.item() for v in second["word"]]
