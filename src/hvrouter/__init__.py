"""hvrouter: turn a Linux hypervisor into a router for its VMs."""

__version__ = "0.1.0"
