"""Business logic: plain functions, primitives in, results out, Problem on failure."""
