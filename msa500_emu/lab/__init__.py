"""The RSO lab: QEMU hosts attached to the emulated array (see docs/lab-guest.md)."""
