"""Spin-1/2 chains: models, exact diagonalization, free fermions, exact TOBCs."""
