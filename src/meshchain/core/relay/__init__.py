"""Gossip: how transactions and blocks spread (announce then fetch, trickle, compact
blocks, Dandelion++), with `flood` kept as the baseline to compare against."""
