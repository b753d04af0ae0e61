"""The sans-IO protocol core: pure state machines, no asyncio, socket, time or global random.

Time comes in as `now` (float seconds); randomness as an injected `random.Random`;
storage behind the `typing.Protocol`s of `meshchain.core.store`.
"""
