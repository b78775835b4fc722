"""2D (and d-dimensional) phi^4 lattice field theory: actions, HMC, MPI HMC, observables, autocorrelation."""
