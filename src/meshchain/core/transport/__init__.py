"""Encrypted transport for peer sessions: the Noise Protocol Framework (sans-IO).

`noise` holds CipherState, SymmetricState and HandshakeState; `noise_patterns` holds the
handshake pattern table they interpret.
"""
