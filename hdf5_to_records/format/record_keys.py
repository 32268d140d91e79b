"""The feature keys of a record, besides the features' own names.

Every record is one ``tf.train.Example`` of up to ``rows_per_record`` examples. These
keys are written into the manifest's ``records`` entry, so a reader takes them from
there and old datasets keep their own.
"""

from __future__ import annotations

COUNT_KEY = "__rows__"  # int64: how many examples the record holds
SHAPE_SUFFIX = "/shape"  # int64 list, after a ragged feature's name: each example's shape
REF_SUFFIX = "/ref"  # int64 list: (offset, size, filter mask[, CRC32C]) per byte range
TAKE_SUFFIX = "/take"  # int64 list: each example's row within the decoded ranges
FILE_KEY = "__file__"  # int64: the record's source, an index into the manifest's sources
# A sparse feature (format 4): its values as raw bytes under its name, each example's
# count of values under <name>/shape, and their int64 column indices under:
INDICES_SUFFIX = "/indices"

# What ``records.checksums`` may say: "crc32c" (format 3 on): each byte range of a
# ``/ref`` list carries the CRC32C of its bytes as stored, a fourth value; "none"
# (``--checksums none``, and every format-2 dataset): (offset, size, filter mask) only.
CHECKSUMS = ("crc32c", "none")
