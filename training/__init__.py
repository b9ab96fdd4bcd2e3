"""s2sr.training: generators, simulated data, losses, training loops and export."""
