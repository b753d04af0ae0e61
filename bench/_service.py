"""The stand-in for `P2PService` that benchmarks run `PeerConnection`s under: one
identity, its hello, sessions without a node behind them, every connection admitted."""

from __future__ import annotations

import random
import time

from meshchain.core.crypto.keys import SecretKey, SignatureVerifier
from meshchain.core.peers.limits import BandwidthLimits, GlobalBandwidth
from meshchain.core.transport.identity import new_noise_static_key
from meshchain.core.transport.session import (
    PROTOCOL_VERSION,
    AdmissionPolicy,
    LocalPeer,
    SecureSession,
)
from meshchain.core.wire.messages import Hello
from meshchain.runtime.network import P2PService, PeerConnection, Traffic


class BenchService(P2PService):
    """What a `PeerConnection` asks of its `P2PService`; subclasses add `on_event`."""

    def __init__(self, seed: int, chain_id: bytes) -> None:
        # No P2PService.__init__: no node, driver, dialers or connection table.
        self.clock = time.time
        identity = SecretKey.generate(random.Random(seed))
        hello = Hello(PROTOCOL_VERSION, chain_id, identity.public_key, "", 0, 0, bytes(32), "b")
        self.local = LocalPeer(identity, new_noise_static_key(), hello)
        self.rng, self.verifier = random.Random(seed), SignatureVerifier()
        self.admission = AdmissionPolicy(chain_id)
        self.receive_limits = BandwidthLimits(None, None)  # a benchmark measures, uncapped
        self.bandwidth = GlobalBandwidth(self.receive_limits, self.clock())
        self.traffic = Traffic()  # counted as a node counts it, for the same cost

    def admit(self, connection: PeerConnection) -> bool:
        return True

    def forget(self, connection: PeerConnection) -> None:
        pass

    def new_session(self, connection: PeerConnection) -> SecureSession:
        return self.secure_session(connection.initiator)

    def secure_session(self, initiator: bool) -> SecureSession:
        return SecureSession(
            self.local,
            self.admission,
            initiator=initiator,
            now=self.clock(),
            rng=self.rng,
            verifier=self.verifier,
        )
