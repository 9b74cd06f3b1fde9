"""The `docker` provider: VMs as long-running containers on the local engine
(`provider.py`), with warm shells, the zygote that forks a warm agent into a
clone (`zygote*.py`, `nsenter.py`) and giving a taken shell its identity
(`vm_identity.py`). `plugin.py` is its registry entry."""
