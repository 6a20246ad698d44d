"""``patron secrets``: make an encryption key, re-encrypt stored secrets under the first configured key."""
import sys


def cmd_new_key(args):
    from app.platform import crypto
    print(crypto.new_key())
    return 0


def cmd_rotate(args):
    from app.cli import _app
    from app.platform import outbox
    app = _app(args)
    with app.app_context():
        n, unreadable = outbox.rotate_secrets()
    print(f"re-encrypted {n} webhook secret(s) under the first key of PATRON_SECRET_KEYS")
    if unreadable:
        print(f"error: no configured key opens the secret of webhook(s) {', '.join(map(str, unreadable))}; "
              "add the key they were encrypted with to PATRON_SECRET_KEYS and run this again", file=sys.stderr)
        return 1
    return 0


def register(root):
    from app.cli import command, group
    grp = group(root, "secrets", "keys that encrypt webhook secrets at rest")
    command(grp, "new-key", cmd_new_key, kind="write", help="print a new key for PATRON_SECRET_KEYS")
    command(grp, "rotate", cmd_rotate, kind="write",
            help="re-encrypt every stored secret under the first key (after putting a new key first)")
