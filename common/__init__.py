"""What every package shares: the domain errors, the settings object, and how sizes are written."""
