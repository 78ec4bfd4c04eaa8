"""The adapters of the ports (`mailproxy.ports`): `aws` and `sqlite`, the only code that knows storage."""
