"""The `edge-fl` command line (placeholder until subcommands land)."""
def main(argv=None):
    raise SystemExit("edge-fl: no subcommands yet")
