"""End-to-end runners behind the CLI; each module defines ``HELP``, ``add_arguments`` and ``run``, except
``common`` (what they share) and ``size_sweep`` (the sweep over model sizes behind ``myopia-gap --models``)."""
