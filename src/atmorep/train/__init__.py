"""atmorep.train."""
