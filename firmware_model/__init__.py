"""The MSA500 controller firmware: pure, synchronous, clock-injected.

Nothing here imports asyncio, sockets or msa500_emu (ARCHITECTURE.md rule 1).
"""
