"""``python -m inbedder``: the ``inbedder`` command."""

from inbedder.cli import main

main()
