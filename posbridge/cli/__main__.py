"""`python -m posbridge.cli` is `posbridge`."""
from posbridge.cli import main

main()
