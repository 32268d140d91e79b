"""The second half of a conversion: execute the plan's shard specs.

``executor`` runs them in worker processes; ``writer`` reads one shard's examples
(``reading``, ``staging``), encodes records (``encode``) and writes them (``sink``);
``output`` owns the output directory and the ``--resume`` state.
"""
