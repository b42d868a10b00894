"""msa500-emu: the process around the MSA500 firmware model (portals, management, agents)."""

__version__ = "0.1.0"
