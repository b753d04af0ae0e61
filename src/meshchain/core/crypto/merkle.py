"""Merkle trees that are unambiguous under duplicated leaves (no CVE-2012-2459).

Bitcoin pairs an odd last node with itself, so `[a, b, c]` and `[a, b, c, c]` share a
root. Here an odd last node is promoted to the next level unchanged, and leaves and
inner nodes hash under different tags, so a leaf can never pose as a node. The shape
is RFC 6962's (Certificate Transparency): different leaf lists give different roots.

`MerkleTree` keeps every level so a changed leaf costs one path of hashes, which is
what the account-state root needs; `merkle_root` is the one-shot form for blocks.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from meshchain.core.crypto.hashing import tagged_hash, tagged_hasher
from meshchain.errors import CryptoError

leaf_hash = tagged_hasher("meshchain/merkle-leaf")
_node_hash = tagged_hasher("meshchain/merkle-node")
EMPTY_ROOT = tagged_hash("meshchain/merkle-empty", b"")
# A proof for a tree of at most 2**64 leaves has at most 64 siblings.
MAX_PROOF_DEPTH = 64


def node_hash(left: bytes, right: bytes) -> bytes:
    return _node_hash(left + right)


def _next_level(level: Sequence[bytes]) -> list[bytes]:
    count = len(level)
    parents = [_node_hash(level[i] + level[i + 1]) for i in range(0, count - 1, 2)]
    if count % 2:
        parents.append(level[-1])
    return parents


def merkle_root(leaf_hashes: Sequence[bytes]) -> bytes:
    """Root of already-hashed leaves (hash each item with `leaf_hash` first)."""
    if not leaf_hashes:
        return EMPTY_ROOT
    level = list(leaf_hashes)
    while len(level) > 1:
        level = _next_level(level)
    return level[0]


@dataclass(frozen=True, slots=True)
class MerkleProof:
    """Siblings from the leaf upwards; `leaf_count` tells where a node was promoted."""

    index: int
    leaf_count: int
    siblings: tuple[bytes, ...]


def _path_shape(index: int, leaf_count: int) -> list[bool]:
    """For each level, whether the node on the path has a sibling there."""
    shape: list[bool] = []
    count = leaf_count
    while count > 1:
        shape.append(not (index == count - 1 and count % 2 == 1))
        index //= 2
        count = (count + 1) // 2
    return shape


def merkle_proof(leaf_hashes: Sequence[bytes], index: int) -> MerkleProof:
    if not 0 <= index < len(leaf_hashes):
        raise CryptoError(f"leaf index {index} outside a tree of {len(leaf_hashes)}")
    siblings: list[bytes] = []
    level = list(leaf_hashes)
    position = index
    while len(level) > 1:
        sibling = position ^ 1
        if sibling < len(level):
            siblings.append(level[sibling])
        level = _next_level(level)
        position //= 2
    return MerkleProof(index, len(leaf_hashes), tuple(siblings))


def verify_proof(leaf: bytes, proof: MerkleProof, root: bytes) -> bool:
    """True when `leaf` (already leaf-hashed) sits at `proof.index` under `root`."""
    if not 0 <= proof.index < proof.leaf_count or len(proof.siblings) > MAX_PROOF_DEPTH:
        return False
    shape = _path_shape(proof.index, proof.leaf_count)
    if sum(shape) != len(proof.siblings):
        return False
    node, position, siblings = leaf, proof.index, iter(proof.siblings)
    for has_sibling in shape:
        if has_sibling:
            sibling = next(siblings)
            node = _node_hash(node + sibling) if position % 2 == 0 else _node_hash(sibling + node)
        position //= 2
    return node == root


class MerkleTree:
    """An append/pop/update Merkle tree whose root is recomputed only along changed paths."""

    __slots__ = ("_dirty", "_levels")

    def __init__(self, leaf_hashes: Sequence[bytes] = ()) -> None:
        self._levels: list[list[bytes]] = [list(leaf_hashes)]
        self._dirty: set[int] = set(range(len(leaf_hashes)))
        if leaf_hashes:
            self._rebuild()

    def __len__(self) -> int:
        return len(self._levels[0])

    def leaf(self, index: int) -> bytes:
        return self._levels[0][index]

    def append(self, leaf: bytes) -> int:
        self._levels[0].append(leaf)
        index = len(self._levels[0]) - 1
        self._dirty.add(index)
        return index

    def pop(self) -> bytes:
        leaf = self._levels[0].pop()
        count = len(self._levels[0])
        self._dirty.discard(count)  # the popped leaf's index no longer exists
        if count:
            self._dirty.add(count - 1)
        return leaf

    def update(self, index: int, leaf: bytes) -> None:
        if not 0 <= index < len(self._levels[0]):
            raise IndexError(f"leaf {index} outside a tree of {len(self._levels[0])}")
        self._levels[0][index] = leaf
        self._dirty.add(index)

    def _rebuild(self) -> None:
        levels = self._levels[:1]
        while len(levels[-1]) > 1:
            levels.append(_next_level(levels[-1]))
        self._levels = levels
        self._dirty.clear()

    def root(self) -> bytes:
        levels = self._levels
        if not levels[0]:
            self._levels = levels[:1]
            self._dirty.clear()
            return EMPTY_ROOT
        dirty = self._dirty
        if dirty and len(dirty) * 4 > len(levels[0]):
            self._rebuild()
            return self._levels[-1][0]
        depth = 0
        while len(levels[depth]) > 1:
            current = levels[depth]
            count = len(current)
            if depth + 1 == len(levels):
                levels.append([])
            parent_level = levels[depth + 1]
            parent_count = (count + 1) // 2
            del parent_level[parent_count:]
            parent_level.extend([b""] * (parent_count - len(parent_level)))
            if dirty:
                # The last node's pairing changes with the level's length, so redo it.
                dirty.add(count - 1)
            parents: set[int] = set()
            for index in dirty:
                parent = index >> 1
                if parent in parents:
                    continue
                parents.add(parent)
                left = parent << 1
                if left + 1 < count:
                    parent_level[parent] = _node_hash(current[left] + current[left + 1])
                else:
                    parent_level[parent] = current[left]
            dirty = parents
            depth += 1
        del levels[depth + 1 :]
        self._dirty = set()
        return levels[depth][0]

    def proof(self, index: int) -> MerkleProof:
        return merkle_proof(self._levels[0], index)
