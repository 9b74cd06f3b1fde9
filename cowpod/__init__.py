"""What every cowpod process shares: generated API stubs (`cowpod.v1`), the
client, the CLI, config, errors, clocks and the local-cluster supervisor.

Imports none of `controller`, `scheduler`, `agent` or `hypervisor`: they build
on this package, never the other way round.
"""

__version__ = "0.1.0"
