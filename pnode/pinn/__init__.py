"""Physics-informed models (collocation, TS-integrated, neural Galerkin)."""
