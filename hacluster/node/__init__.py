"""The node daemon: the decision core driven by real sockets, volumes and watchdogs."""
