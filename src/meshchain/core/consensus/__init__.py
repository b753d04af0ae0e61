"""Consensus engines: who may make a block, and how much a chain weighs."""

from __future__ import annotations

from meshchain.core.chain.genesis import EngineName, Genesis
from meshchain.core.consensus.bft import BftEngine
from meshchain.core.consensus.engine import ConsensusEngine
from meshchain.core.consensus.poa import ProofOfAuthority
from meshchain.core.consensus.pow import ProofOfWork
from meshchain.core.crypto.keys import SignatureVerifier
from meshchain.errors import ConfigError


def engine_for(genesis: Genesis, verifier: SignatureVerifier | None = None) -> ConsensusEngine:
    """The engine genesis names."""
    if genesis.engine is EngineName.POA:
        return ProofOfAuthority(genesis, verifier)
    if genesis.engine is EngineName.POW:
        return ProofOfWork(genesis)
    if genesis.engine is EngineName.BFT:
        return BftEngine(genesis, verifier)
    raise ConfigError(f"consensus.engine: {genesis.engine.value} is not implemented")


__all__ = ["BftEngine", "ConsensusEngine", "ProofOfAuthority", "ProofOfWork", "engine_for"]
