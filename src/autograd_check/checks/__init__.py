"""The spec-driven checks, built on the API: the tutorial's (plain), losses through a model, users'
targets, the tensors they draw, and the determinism check (--repeat)."""
