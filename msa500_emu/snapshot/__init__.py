"""Snapshots of the whole shelf and RESET (docs/snapshots.md): files.py copies, store.py keeps them on disk,
shelf.py is the Emulator's room that quiesces, closes and reopens the controller."""
