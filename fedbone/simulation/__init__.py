"""A whole federation on one machine: phantom sites, their configs and caches."""
