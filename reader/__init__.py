"""reader: the tf.data pipeline over hdf5-to-records shards (``reader.load``).

The pipeline itself lands with the reader issue; this package exists so the on-disk
contract and its consumer ship together.
"""
