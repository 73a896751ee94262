"""End-to-end runners behind the CLI.

Each runner module defines ``run(args)``, and :mod:`.arguments` (torch-free) defines every subcommand's options,
derived from the config dataclasses by :mod:`.config_cli`. Besides them: ``common`` (what runners share),
``presets`` (the myopia-gap presets) and ``size_sweep`` (the sweep over model sizes behind
``myopia-gap --models``).
"""
