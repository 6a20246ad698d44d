"""CLI command groups: each module here defines ``register(root)`` (click, through app.cli.command); app.cli lists and mounts them."""
