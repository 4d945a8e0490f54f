"""The terminal's side of the wire behind client_core.py: discovery, failover, the connection and the callback line."""
