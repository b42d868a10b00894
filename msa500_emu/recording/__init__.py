"""Record and replay (docs/recording.md): a run of the array as one JSON-lines file, and re-running
it against a fresh array to find the first command whose answer differs.

`msa500-emu serve --record FILE` or `ctl RECORD START FILE` writes one (recorder.py, in the format of
format.py); `msa500-emu replay FILE` re-runs it (replay.py, cli.py).
"""
