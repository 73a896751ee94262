"""End-to-end runners behind the CLI.

Each runner module defines ``run(command)``, taking its command's dataclass from :mod:`.commands` (torch-free: one
dataclass per command, whose fields are its options). Besides them: ``common`` (what runners share),
``presets`` (the myopia-gap presets) and ``size_sweep`` (the sweep over model sizes behind
``myopia-gap --models``).
"""
