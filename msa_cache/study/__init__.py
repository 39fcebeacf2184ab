"""Drivers over many runs: compare (grids x seeds, leaderboards), tune, statistics, the oracle
analysis, test submissions and sharing runs. Above both training modes."""
