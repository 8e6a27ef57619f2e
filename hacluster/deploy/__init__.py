"""Putting a pool on hosts: ``hacluster pool init`` writes a new pool's files and formats
its SR, ``hacluster node --check`` says whether a host is ready to run; the labs write
their pools with the same functions (:mod:`hacluster.deploy.poolfiles`)."""
