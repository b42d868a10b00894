"""Native alert sinks for the array's events: SNMP traps, syslog and webhooks, behind one table.

`table` maps each event code to its SNMP trap (the Compaq/HP MIBs the product's agents used), its
varbinds and its syslog severity; `snmp`, `syslog` and `webhook` send; `dispatch` queues so that
no sink ever blocks the event loop; `service` is what the emulator process holds (settings,
SET/SHOW ALERTS, persistence). docs/alerts.md lists the table with its sources.
"""
