"""`python -m posbridge` is `posbridge`."""
from posbridge.cli import main

main()
