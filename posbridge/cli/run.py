"""`posbridge run`: start the daemon."""
from posbridge.cli import app
