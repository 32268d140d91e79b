import pytest

from hdf5_to_records.errors import UsageError
from hdf5_to_records.format.naming import ShardedFileTemplate, ShardName, check_name, is_output_file


def test_filename_format():
    template = ShardedFileTemplate("scenes")
    assert template.filename("train", 3, 16) == "scenes-train.tfrecord-00003-of-00016"


def test_parse_round_trip():
    template = ShardedFileTemplate("my_data.v2")
    name = template.filename("test", 0, 100000)
    assert template.parse(name) == ShardName("my_data.v2", "test", 0, 100000)


@pytest.mark.parametrize(
    "filename",
    [
        "other-train.tfrecord-00000-of-00001",
        "scenes-train.tfrecord-00000",
        "manifest.json",
        ".scenes-train.tfrecord-00000-of-00001.incomplete",
    ],
)
def test_parse_rejects_foreign_names(filename):
    assert ShardedFileTemplate("scenes").parse(filename) is None


def test_index_out_of_range():
    with pytest.raises(ValueError, match=r"shard index 2 outside 0\.\.1"):
        ShardedFileTemplate("x").filename("train", 2, 2)


@pytest.mark.parametrize("bad", ["", "a-b", "-x", "a b", "a/b"])
def test_dataset_names_that_would_make_shard_names_ambiguous(bad):
    with pytest.raises(UsageError, match="dataset name"):
        ShardedFileTemplate(bad)


def test_split_names_have_no_dots():
    assert check_name("train_1", what="split") == "train_1"
    with pytest.raises(UsageError, match="split name"):
        check_name("a.b", what="split")


def test_output_files_are_recognised():
    template = ShardedFileTemplate("d")
    assert is_output_file(template.filename("train", 0, 1))
    assert is_output_file(template.temp_filename("train", 0, 1))
    assert not is_output_file("notes.txt")


def test_each_write_attempt_has_its_own_temporary_name(tmp_path):
    """A retried task or Beam bundle overlapping a straggler must not share its file."""
    from hdf5_to_records.format.naming import is_temp_of, temp_name
    from hdf5_to_records.writing.writer import temp_path

    class Spec:
        filename = "d-train.tfrecord-00000-of-00001"

    class Job:
        output = str(tmp_path)

    first, second = temp_path(Job, Spec), temp_path(Job, Spec)
    assert first != second
    for path in (first, second):
        name = path.rsplit("/", 1)[1]
        assert is_output_file(name) and is_temp_of(name, Spec.filename)
        assert not is_temp_of(name, "d-train.tfrecord-00000-of-00002")
    assert is_temp_of(temp_name(Spec.filename), Spec.filename)
    assert not is_temp_of(Spec.filename, Spec.filename)


def test_a_killed_workers_index_temp_is_swept_like_its_shard_temp(tmp_path):
    """A worker killed while writing a record index leaves its temporary file; the sweep
    and the next run's clean-up remove what ends in the temporary suffix."""
    from hdf5_to_records.format.naming import TEMP_SUFFIX
    from hdf5_to_records.planning.plan import ShardSpec
    from hdf5_to_records.writing.writer import Job, temp_path

    spec = ShardSpec("train", 0, 1, "ds-train.tfrecord-00000-of-00001", None, None, 0, 0, "")
    job = Job(str(tmp_path), None, (), (), 1, "none")
    for path in (temp_path(job, spec), temp_path(job, spec, index=True)):
        assert path.endswith(TEMP_SUFFIX) and is_output_file(path.rsplit("/", 1)[1])
    assert is_output_file(".ds-train.tfrecord-00000-of-00001.7-ab.incomplete.idx")  # as issue 15
