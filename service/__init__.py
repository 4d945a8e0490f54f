"""The ticket server's parts behind server.py: argument checks at the wire, the live feed, the mailer."""
