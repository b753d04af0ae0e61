"""The deterministic network simulator: the real node core on a virtual clock.

`engine` orders events; `network` moves messages with latency, bandwidth, loss and
partitions; `host` runs one real `Node` per simulated machine and executes exactly the
actions the asyncio runtime executes; `world` builds a run from a `SimConfig`.
"""
