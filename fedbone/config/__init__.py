"""Configuration: the site YAML, the study YAML and its sections, profiles."""
