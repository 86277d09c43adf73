"""The `lockstep` command: `app` (typer commands), `errors` (one message per failure).

`main` imports the commands only when called, so importing this package costs nothing.
"""


def main() -> None:
    """The console script's entry point."""
    from pipeline.cli.app import app

    app()
