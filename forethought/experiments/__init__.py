"""End-to-end runners behind the CLI; each module defines ``HELP``, ``add_arguments`` and ``run``."""
