"""CLI command groups: each module here defines ``register(subparsers)``; app.cli lists and mounts them."""
