"""Subcommands of the `diffcore` command, one module each: add_parser(sub) and run(args)."""
