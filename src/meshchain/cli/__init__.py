"""The `meshchain` command line."""
