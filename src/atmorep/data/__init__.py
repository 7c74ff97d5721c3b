"""atmorep.data."""
