"""`posbridge queue ...`: look at and act on the invoice outbox."""
from posbridge.cli import app
