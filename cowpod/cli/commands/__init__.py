"""One module per verb (or family of verbs). Each has `add_parser(sub, parents)`,
which registers its argparse subcommand with `func=run`, and `async def run(ctx, args) -> int`."""
