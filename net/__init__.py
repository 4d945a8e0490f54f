"""The wire both sides share: TLS on every hop, and RPyC's registry protocol spoken by name servers, servers and terminals."""
