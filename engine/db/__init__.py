"""PostgreSQL: its client tools and sessions, and the guard that reads SQL from outside before psql may."""
