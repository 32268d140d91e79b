"""Index-only mode: references to the bytes of HDF5 datasets instead of copies.

At conversion ``references`` probes each dataset's layout; at load ``source_trust``
resolves and checks the sources and ``spans`` reads and decodes the referenced bytes.
"""
