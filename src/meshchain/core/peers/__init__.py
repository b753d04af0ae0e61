"""Peers: addresses, the address book, connection slots, eviction, limits and bans."""
