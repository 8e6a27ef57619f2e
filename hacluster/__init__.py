"""hacluster: a high-availability cluster manager.

Layout: ``hacluster.core`` is the pure decision core (no I/O, no clock reads);
``hacluster.sim`` runs many cores under a seeded discrete-event simulator;
``hacluster.cli`` is the command-line entry point.
"""

__version__ = "0.1.0"
