"""The SCSI command set the controller executes (SPC-4 / SBC-3)."""
