"""The ``discanalysis`` command line. One module per subcommand; see :mod:`DiscAnalysisLib.cli.main`."""
