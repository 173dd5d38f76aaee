"""``python -m mmedge.cli``."""
from mmedge.cli import main

main()
