"""The reference-model checker of the data path (issue 10, item 2).

`reference` is the model (what each block may hold, which blocks may error), written from the
promise alone; `driver` drives a real Controller (and, thinner, an emulator over iSCSI) and
checks every answer against the model; `test_checker` runs random fault sequences with
hypothesis; `scripts/check-model` runs the same machines for longer.
"""
