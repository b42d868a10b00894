"""Host agents of the Recovery Server Option.

- `primary`: runs on the primary server (port 1); sends the heartbeat and raises the
  lost-acknowledgment alarm.
- `recovery`: the recovery server's pre-boot monitor (port 2); acknowledges, watches, and on
  timeout (or F8, `--force`) fences the primary and exits 0 so a wrapper can boot the host.

They speak SCSI through pyscsi's command layer over the project's own device backends: an
iSCSI session (`--target iscsi://...`) or a Linux SCSI generic device (`--device /dev/sgN`, so
they run inside a VM). Only the standard library and pyscsi are needed on the SG_IO path.
"""
