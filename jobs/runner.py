"""In-process runner for the embedded default. INTERIM: ticker not yet implemented."""


def start_ticker(app):
    return None
