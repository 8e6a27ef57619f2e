"""Workloads ("VMs"): the guest program, its disk records, and the drivers that run VMs."""
