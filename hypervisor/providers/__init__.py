"""One package per hypervisor provider, each exposing a `PLUGIN` (see hypervisor/registry.py)."""
