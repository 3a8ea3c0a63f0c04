"""`odecli cnf`: continuous normalizing flows on 2-D toy densities."""
