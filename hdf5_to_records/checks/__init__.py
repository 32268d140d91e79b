"""Looking at data: ``verify`` (CI data checks), ``inspect`` (an HDF5 file's tree)
and ``summary`` (``info`` on a converted dataset)."""
