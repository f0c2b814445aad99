"""Model definitions and their hand-written ports, as a porter would have them: plain framework code, no harness imports."""
