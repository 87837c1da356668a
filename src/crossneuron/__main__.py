"""``python -m crossneuron``: the same CLI as the ``crossneuron`` command (for machines without the venv)."""

from .cli import main

main()
