"""meshchain: a blockchain peer-to-peer network with a sans-IO protocol core."""

__version__ = "0.1.0"
