"""The ticket server's parts behind server.py: config (flags, environment, defaults), wire (argument checks),
remote (refusals without tracebacks), counters, box_office (what connections share), transport (frames and
TLS), registrar (name-server heartbeats), sweeper (hold expiry), live (the live feed), mailer, legacy calls."""
