"""What runs beside the product and never inside it: the benchmark, the tour, the swarm, the demo, the launcher,
a throwaway PostgreSQL, and the one process harness they and the tests share. Tools import the product; the
product never imports a tool (cli.py runs demo, swarm and tour as programs of their own)."""
