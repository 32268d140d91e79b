"""``python -m hdf5_to_records`` is the ``hdf5-to-records`` command."""

from .cli import main

main()
