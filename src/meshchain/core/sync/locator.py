"""Block locators: a short list of hashes from which a peer finds where our chains part.

The asking side lists its chain newest first, one block at a time for the newest few and
then with steps that double, down to genesis (Bitcoin's `CChain::GetLocator`): a few
dozen hashes describe a chain of any length, and the answer starts at most about as far
below the real fork point as the fork is deep. The answering side takes the first hash
it has on its own best chain and sends the headers after it (`headers_after`).
"""

from __future__ import annotations

from collections.abc import Callable

from meshchain.core.chain.block import BlockHeader
from meshchain.core.chain.chainstate import ChainState
from meshchain.core.wire.codec import MAX_MESSAGE_SIZE, encode
from meshchain.core.wire.messages import MAX_HEADERS_RESULTS, MAX_LOCATOR_SIZE

# Bitcoin's GetLocator: the newest blocks one by one before the steps start doubling.
LOCATOR_DENSE_STEPS = 10
# Room for the Headers message's own framing (type id, array and list headers) in
# MAX_MESSAGE_SIZE: a few bytes; 64 leaves plenty.
HEADERS_MESSAGE_OVERHEAD = 64
# What the headers of one Headers message may take together.
HEADERS_BYTE_BUDGET = MAX_MESSAGE_SIZE - HEADERS_MESSAGE_OVERHEAD


def locator_heights(height: int) -> list[int]:
    """The heights a locator for a chain of this height names, newest first: ten one
    apart, then steps that double, then genesis (74 entries at the largest height, so
    always within MAX_LOCATOR_SIZE)."""
    heights: list[int] = []
    step = 1
    while height > 0:
        heights.append(height)
        if len(heights) >= LOCATOR_DENSE_STEPS:
            step *= 2
        height -= step
    heights.append(0)
    return heights[:MAX_LOCATOR_SIZE]


def block_locator(height: int, hash_at: Callable[[int], bytes]) -> list[bytes]:
    """The locator of the chain whose block at each height `hash_at` gives."""
    return [hash_at(h) for h in locator_heights(height)]


def fork_height(chain: ChainState, locator: list[bytes]) -> int:
    """The height of the first locator hash on our best chain (genesis if none is)."""
    for block_hash in locator:
        entry = chain.entry(block_hash)
        if entry is not None and chain.hash_at(entry.height) == block_hash:
            return entry.height
    return 0


def headers_after(chain: ChainState, locator: list[bytes], stop: bytes) -> list[BlockHeader]:
    """Our best chain's headers after the fork point the locator names, as GetHeaders
    asks: up to MAX_HEADERS_RESULTS and HEADERS_BYTE_BUDGET bytes, ending at `stop`."""
    headers: list[BlockHeader] = []
    size = 0
    height = fork_height(chain, locator) + 1
    while height <= chain.height and len(headers) < MAX_HEADERS_RESULTS:
        block_hash = chain.hash_at(height)
        header = chain.header(block_hash) if block_hash is not None else None
        if header is None:
            break
        size += len(encode(header))
        if size > HEADERS_BYTE_BUDGET:
            break
        headers.append(header)
        if block_hash == stop:
            break
        height += 1
    return headers


def batch_was_cut(count: int, size: int, largest_header: int) -> bool:
    """Whether a Headers answer of `count` headers and `size` bytes may have more behind
    it: it is full, or its sender could not fit another header of the largest size."""
    return count >= MAX_HEADERS_RESULTS or size + largest_header > HEADERS_BYTE_BUDGET
