"""One command line: ``covnoise SUBCOMMAND`` or ``python -m covnoise SUBCOMMAND``.

One module per subcommand (train, data, runs, sweep, study, findings, demo), each with an
``add_parser(subparsers)``; ``main`` builds them into one parser. Nothing imports this package.
"""
