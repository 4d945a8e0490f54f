"""What runs beside the product and never inside it: the benchmark, the tour, the swarm, the launcher, a throwaway PostgreSQL."""
