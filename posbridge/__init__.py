"""posbridge: a point-of-sale bridge between a shop's till and the Omniwallet loyalty cloud."""

__version__ = "0.1.0"
