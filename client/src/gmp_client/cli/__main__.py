"""`python -m gmp_client.cli`: the same as `gmp`."""

from .app import main

main()
