"""The background sink: order, hashes, gzip, barriers and errors."""

import gzip
import io

import numpy as np
import pytest

from hdf5_to_records.writing.sink import BackgroundSink


def pieces():
    return [b"head", memoryview(np.arange(1000, dtype=np.uint8)), b"tail" * 100]


@pytest.mark.parametrize("compress", [False, True])
def test_writes_in_order_and_counts_what_reaches_the_file(compress):
    raw = io.BytesIO()
    sink = BackgroundSink(raw, compress=compress)
    all_pieces = list(pieces())
    sink.write(all_pieces[0])
    sink.write_all(all_pieces[1:])
    sink.barrier().wait()
    size = sink.close()
    data = raw.getvalue()
    assert size == len(data)
    expected = b"".join(bytes(p) for p in pieces())
    assert (gzip.decompress(data) if compress else data) == expected


def test_write_errors_reach_the_caller():
    class Full(io.BytesIO):
        def write(self, data):
            raise OSError(28, "No space left on device")

    sink = BackgroundSink(Full(), compress=False)
    sink.write(b"x")
    sink.barrier().wait()
    with pytest.raises(OSError, match="No space left"):
        sink.write(b"y")
    sink.abandon()
