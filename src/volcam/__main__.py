"""``python -m volcam``: the ``volcam`` command."""

from volcam.cli import main

main()
