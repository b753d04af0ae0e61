"""Drivers that run the sans-IO core on real time, sockets and disks (asyncio)."""
