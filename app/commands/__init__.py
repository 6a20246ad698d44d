"""CLI command groups: each module here defines ``register(subparsers)``; app.cli mounts them all."""
