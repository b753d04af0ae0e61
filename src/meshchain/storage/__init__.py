"""Durable storage backends for the `meshchain.core.store.ChainStore` interface.

The core only sees the Protocol; these modules hold the I/O, so the core stays sans-IO.
"""
