"""``python -m mmedge``: the ``mmedge`` command."""
from mmedge.cli import main

main()
