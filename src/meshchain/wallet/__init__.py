"""The wallet: keys kept encrypted under a passphrase, and transfers through a node's API."""
