"""The on-disk contract: the manifest, shard file names, dtype names and record keys.

The converter writes through these modules; the reader, ``verify``, ``info``, task
arrays and Beam read through them. No other module spells a key or a file name.
"""
