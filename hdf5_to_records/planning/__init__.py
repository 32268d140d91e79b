"""The first half of a conversion: config, sources, row selection, schema, and the plan.

Nothing here writes a byte: the result is an immutable :class:`plan.Plan` that the
``writing`` stage executes, ``--dry-run`` prints and ``--resume`` compares against.
"""
