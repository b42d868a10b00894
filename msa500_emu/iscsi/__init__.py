"""iSCSI (RFC 7143, ErrorRecoveryLevel 0): sans-I/O protocol plus a thin asyncio portal."""
